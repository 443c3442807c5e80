"""Conformance checks for adapters: what a trainer's adapter must keep true (copies agree, state round-trips).

Split from metahp.testing.checks so that the knob, updater and reward checks and the adapter checks can change
independently; metahp.testing exports both.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np

from metahp.testing.checks import _ensure, _json, _named, _same


# -- adapters ----------------------------------------------------------------------------------------------
def knob_of_copy(copy_name: str) -> str:
    """The knob a copy belongs to: the part of its name after the last "." and before any "[".

    >>> knob_of_copy("generation_config.temperature"), knob_of_copy("fused_lm_head[1].temperature")
    ('temperature', 'temperature')
    """
    return copy_name.rsplit(".", 1)[-1].split("[", 1)[0]


def _equal_values(a: Any, b: Any) -> bool:
    if a is None or b is None:
        return a is None and b is None
    try:
        return bool(np.isclose(float(a), float(b), rtol=1e-9, atol=0))
    except (TypeError, ValueError):
        return False


@_named
def check_adapter_copies(adapter) -> None:
    """Every copy of each adapted knob inside the trainer (``adapter.applied_values()``: {copy name: value}) equals
    the value the adapter applied (``adapter.value``: a number with one knob, {name: value} with several), and
    every adapted knob has at least one copy."""
    copies = adapter.applied_values()
    _ensure(isinstance(copies, dict) and copies, f"applied_values() returned {copies!r}, not a non-empty dict")
    value = adapter.value
    if isinstance(value, dict):
        expected = dict(value)
    else:
        names = {knob_of_copy(name) for name in copies}
        _ensure(len(names) == 1, f"adapter.value is the single value {value!r} but the copies belong to knobs "
                                 f"{sorted(names)}")
        expected = {names.pop(): value}
    for name, got in copies.items():
        knob = knob_of_copy(name)
        _ensure(knob in expected, f"copy {name!r} belongs to knob {knob!r}, which is not adapted ({sorted(expected)})")
        _ensure(_equal_values(got, expected[knob]), f"copy {name!r} holds {got!r} but the adapter applied "
                                                    f"{knob}={expected[knob]!r}")
    missing = set(expected) - {knob_of_copy(name) for name in copies}
    _ensure(not missing, f"no copy of adapted knobs {sorted(missing)} in applied_values()")


@_named
def check_adapter_state_round_trip(adapter) -> None:
    """``state_dict()`` is strict JSON and ``load_state_dict(json.loads(json.dumps(state)))`` restores it: the state
    is saved, each meta-policy then draws once (moving its random generator), the JSON copy is loaded, and
    ``state_dict()`` must equal the saved state again; the copies then still agree (``check_adapter_copies``)."""
    _ensure(callable(getattr(adapter, "load_state_dict", None)), "the adapter has no load_state_dict(state)")
    saved = _json(adapter.state_dict(), "state_dict()")
    policies = getattr(adapter, "policies", None) or {"policy": getattr(adapter, "policy", None)}
    for policy in policies.values():
        if policy is not None:
            policy.sample()
    adapter.load_state_dict(json.loads(json.dumps(saved)))
    again = _json(adapter.state_dict(), "state_dict() after load_state_dict")
    _ensure(_same(again, saved), "state_dict() after load_state_dict(json state) differs from the state loaded")
    if callable(getattr(adapter, "applied_values", None)):
        check_adapter_copies(adapter)


ADAPTER_CHECKS = (check_adapter_copies, check_adapter_state_round_trip)


def check_adapter(adapter) -> None:
    """Run every adapter check (``ADAPTER_CHECKS``) on an attached adapter."""
    for check in ADAPTER_CHECKS:
        check(adapter)
