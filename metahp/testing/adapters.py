"""Conformance checks for adapters, like gymnasium's ``check_env``.

``check_adapter(adapter)`` checks an attached adapter as it stands (its copies agree, its state round-trips).
``check_adapter(make_trainer, run=...)`` drives a real trainer: it builds trainers, attaches metahp with one value
per batch and one per completion, trains a step or two, and checks what matters for a run:

- each completion was sampled at the value the meta-update scores it at (``check_adapter_sampled_as_scored``);
- the saved state resumes into an identical next draw (``check_adapter_resumes``);
- no extra forward pass ran outside generation (``check_adapter_no_extra_forward``);
- detach gives the user's values back (``check_adapter_detach``).

A hyperparameter knob changes the update, not the sampling: in mode "hyperparameter" (the learning-rate multiplier)
``check_adapter_stepped_as_credited`` takes the place of the sampling check: every optimizer step ran at the
multiplier the meta-update credits, times the rate the same step has without metahp.

The probe reads sampling from the trainer's transformers models: the temperature ``generate`` was called with
(a keyword, or its ``generation_config``) times any per-row ``PerRowTemperature`` processor it was given.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import torch

from metahp.knobs.temperature import PerRowTemperature
from metahp.rows import is_per_row
from metahp.testing.checks import _ensure, _json, _named, _same

# The adapt() settings each drawing mode is driven with (a two-value grid: every group of >= 2 completions can mix it).
DRIVE = {
    "batch": dict(knob="temperature", updater="tampo", values=[0.5, 2.0], nucleus_p=1.0, seed=0),
    "completion": dict(knob="temperature", per="completion", updater="softmax_gradient", reward="informativeness",
                       values=[0.5, 2.0], seed=0),
    "hyperparameter": dict(knob="learning_rate", updater="exp3", values=[0.5, 2.0], seed=0),
}


# -- adapters ----------------------------------------------------------------------------------------------
def knob_of_copy(copy_name: str) -> str:
    """The knob a copy belongs to: the part of its name after the last "." and before any "[".

    >>> knob_of_copy("generation_config.temperature"), knob_of_copy("fused_lm_head[1].temperature")
    ('temperature', 'temperature')
    """
    return copy_name.rsplit(".", 1)[-1].split("[", 1)[0]


def _equal_values(a: Any, b: Any) -> bool:
    if is_per_row(a) or is_per_row(b):
        return (is_per_row(a) and is_per_row(b) and len(a) == len(b)
                and all(_equal_values(x, y) for x, y in zip(a, b, strict=True)))
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
    every adapted knob has at least one copy. With values per completion a copy holds either the same list or the
    knob's off value (1 for the temperature: the rows' own values act in per-row sampling and scoring)."""
    copies = adapter.applied_values()
    _ensure(isinstance(copies, dict), f"applied_values() returned {copies!r}, not a dict")
    if not copies and getattr(getattr(adapter, "trainer", None), "last_knobs", True) == {}:
        return  # a trainer that keeps its copy per batch (the reference trainer) before its first batch
    _ensure(copies, "applied_values() returned no copies")
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
        want = expected[knob]
        off = _off_value(knob) if is_per_row(want) else None
        _ensure(_equal_values(got, want) or (is_per_row(want) and _equal_values(got, off)),
                f"copy {name!r} holds {got!r} but the adapter applied {knob}={want!r}"
                + (f" (values per completion: a copy holds them or the off value {off})" if is_per_row(want) else ""))
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


def _off_value(knob: str):
    from metahp.knobs import KNOBS

    return KNOBS[knob].off_value if knob in KNOBS else None


# -- driving a real trainer ---------------------------------------------------------------------------------------
def _models(trainer) -> list[torch.nn.Module]:
    """The trainer's top-level models (policy, reference): its torch modules that have ``generate``."""
    found = []
    for value in vars(trainer).values():
        if isinstance(value, torch.nn.Module) and hasattr(value, "generate") and all(value is not m for m in found):
            found.append(value)
    return found


class _Probe:
    """What a trainer did while a block ran: the per-row temperature of every generate call, the ``used`` values
    of every meta-update, and the forwards of its models outside generation."""

    def __init__(self):
        self.sampled: list[list[float]] = []
        self.scored: list[Any] = []
        self.used: list[dict] = []  # every meta-update's ``used`` (the batch's settings, hyperparameters included)
        self.forwards = 0
        self._generating = self._updating = 0

    @contextlib.contextmanager
    def watching(self, trainer, adapter=None) -> Iterator[_Probe]:
        models, hooks, patched = _models(trainer), [], []
        for model in models:
            hooks.append(model.register_forward_pre_hook(self._forward))
            own = model.__dict__.get("generate")
            model.generate = self._generate(model, model.generate)
            patched.append((model, own))
        knobset = getattr(adapter, "knobset", None)
        if knobset is not None:
            for name in ("update", "update_from_logits"):
                patched.append((knobset, knobset.__dict__.get(name)))
                setattr(knobset, name, self._scoring(getattr(knobset, name)))
        try:
            yield self
        finally:
            for hook in hooks:
                hook.remove()
            for obj, own in reversed(patched):
                for name in ("generate",) if isinstance(obj, torch.nn.Module) else ("update", "update_from_logits"):
                    if own is None:
                        obj.__dict__.pop(name, None)
                    elif name == "generate" or obj.__dict__.get(name) is not own:
                        setattr(obj, name, own)
                    break

    def _forward(self, module, args):
        if not self._generating:
            self.forwards += 1

    def _generate(self, model, generate):
        def probed(*args, **kwargs):
            config = kwargs.get("generation_config") or getattr(model, "generation_config", None)
            base = kwargs.get("temperature", getattr(config, "temperature", 1.0))
            base = 1.0 if base is None else float(base)
            ids = kwargs.get("input_ids", args[0] if args else None)
            rows = torch.full((ids.size(0),), base)
            for processor in kwargs.get("logits_processor") or ():
                if isinstance(processor, PerRowTemperature):
                    rows = rows * processor.temperatures.squeeze(1).cpu()
            self.sampled.append(rows.tolist())
            self._generating += 1
            try:
                return generate(*args, **kwargs)
            finally:
                self._generating -= 1

        return probed

    def _scoring(self, update):
        def spied(*args, **kwargs):
            if not self._updating:  # update_from_logits calls update: one batch, recorded once
                self.scored.append((kwargs.get("used") or {}).get("temperature"))
                self.used.append(dict(kwargs.get("used") or {}))
            self._updating += 1
            try:
                return update(*args, **kwargs)
            finally:
                self._updating -= 1

        return spied


def _attach(trainer, attach, settings):
    if attach is None:
        import metahp

        attach = metahp.adapt
    return attach(trainer, **settings)


@_named
def check_adapter_sampled_as_scored(make_trainer: Callable, run: Callable, attach=None, settings=None,
                                    steps: int = 2) -> None:
    """Every completion of every training batch was sampled (``generate``'s temperature, per row) at the value the
    meta-update was told it used (``used`` in the knob layer's update), and the copies agree afterwards."""
    trainer = make_trainer()
    adapter = _attach(trainer, attach, settings or {})
    with _Probe().watching(trainer, adapter) as probe:
        run(trainer, steps)
    _ensure(probe.scored, "no meta-update ran during training: the adapter never scored a batch")
    _ensure(len(probe.sampled) >= len(probe.scored), f"{len(probe.scored)} meta-updates but only "
                                                     f"{len(probe.sampled)} generate calls")
    for i, (sampled, used) in enumerate(zip(probe.sampled, probe.scored, strict=False)):
        want = [float(v) for v in used] if is_per_row(used) else [float(used)] * len(sampled)
        _ensure(len(want) == len(sampled) and np.allclose(sampled, want, rtol=1e-6, atol=0),
                f"batch {i}: completions were sampled at temperatures {sampled[:8]} but scored as sampled at "
                f"{want[:8]}")
    check_adapter_copies(adapter)


@contextlib.contextmanager
def _optimizer_steps() -> Iterator[list[float]]:
    """The learning rate of the first parameter group at every optimizer step taken in the block (any optimizer)."""
    from torch.optim.optimizer import register_optimizer_step_pre_hook

    rates: list[float] = []
    handle = register_optimizer_step_pre_hook(lambda optimizer, args, kwargs:
                                              rates.append(float(optimizer.param_groups[0]["lr"])))
    try:
        yield rates
    finally:
        handle.remove()


def _runs(values: list[float]) -> list[float]:
    """Consecutive repeats merged: [2, 2, 0.5, 0.5, 2] -> [2, 0.5, 2]."""
    return [v for i, v in enumerate(values) if i == 0 or not np.isclose(v, values[i - 1], rtol=1e-6, atol=0)]


@_named
def check_adapter_stepped_as_credited(make_trainer: Callable, run: Callable, attach=None, settings=None,
                                      steps: int = 2) -> None:
    """The learning-rate multiplier reached the optimizer: the same training runs without and with metahp (adapting
    ``learning_rate``), and at every optimizer step the rate with metahp over the rate without is the multiplier the
    meta-update credited for that batch (the runs of equal values in order: every batch must take a step). A
    multiplier the adapter draws but never applies (ratio 1), or applies to the wrong batch, fails."""
    settings = settings or {}
    _ensure("learning_rate" in (settings.get("knob") if isinstance(settings.get("knob"), tuple)
                                else (settings.get("knob"),)), f"settings adapt {settings.get('knob')!r}, not "
                                                               f"'learning_rate'")
    rates, credited = [], []
    for with_metahp in (False, True):
        trainer = make_trainer()
        adapter = _attach(trainer, attach, settings) if with_metahp else None
        with _Probe().watching(trainer, adapter) as probe, _optimizer_steps() as stepped:
            run(trainer, steps)
        rates.append(stepped)
        credited = [float(used["learning_rate"]) for used in probe.used if "learning_rate" in used]
    without, with_ = rates
    _ensure(credited, "no meta-update was told the batch's learning_rate (used['learning_rate'])")
    _ensure(with_ and len(with_) == len(without), f"{len(with_)} optimizer steps with metahp, {len(without)} "
                                                  f"without: drive a run whose every batch takes a step")
    ratios = [a / b for a, b in zip(with_, without, strict=True)]
    same = len(_runs(ratios)) == len(_runs(credited)) and np.allclose(_runs(ratios), _runs(credited), rtol=1e-6,
                                                                      atol=0)
    _ensure(same, f"the optimizer stepped at {[f'{r:.4g}' for r in ratios[:8]]} times the unadapted rate, but the "
                  f"meta-updates credited multipliers {credited[:8]}")
    check_adapter_copies(adapter)


@_named
def check_adapter_resumes(make_trainer: Callable, run: Callable, attach=None, settings=None, steps: int = 2) -> None:
    """The state saved after training (as JSON) loads into a fresh trainer's adapter, gives back the same state, and
    the two adapters then draw identical next values."""
    trainer = make_trainer()
    adapter = _attach(trainer, attach, settings or {})
    run(trainer, steps)
    saved = _json(adapter.state_dict(), "state_dict()")
    fresh = _attach(make_trainer(), attach, settings or {})
    fresh.load_state_dict(json.loads(json.dumps(saved)))
    _ensure(_same(_json(fresh.state_dict(), "state_dict() after load"), saved),
            "a fresh adapter's state_dict() after load_state_dict(saved) differs from the saved state")
    value = adapter.value
    rows = len(value) if is_per_row(value) else None
    first, second = adapter.knobset.draw(rows=rows), fresh.knobset.draw(rows=rows)
    _ensure(_same(first, second), f"after resuming, the next draw is {second!r:.120}, not {first!r:.120} as in the "
                                  f"uninterrupted run")


@_named
def check_adapter_no_extra_forward(make_trainer: Callable, run: Callable, attach=None, settings=None,
                                   steps: int = 2) -> None:
    """Training with metahp attached runs as many forwards of the trainer's models outside generation as the same
    training without it (the meta-update reads the logits the trainer computes anyway)."""
    counts = []
    for with_metahp in (False, True):
        trainer = make_trainer()
        adapter = _attach(trainer, attach, settings or {}) if with_metahp else None
        with _Probe().watching(trainer, adapter) as probe:
            run(trainer, steps)
        counts.append(probe.forwards)
    _ensure(counts[0] == counts[1], f"{counts[1]} forwards outside generation with metahp, {counts[0]} without")


@_named
def check_adapter_detach(make_trainer: Callable, run: Callable, attach=None, settings=None, steps: int = 2) -> None:
    """After training, ``detach()`` puts every copy back at the value the user configured."""
    trainer = make_trainer()
    adapter = _attach(trainer, attach, settings or {})
    _ensure(callable(getattr(adapter, "detach", None)), "the adapter has no detach()")
    before = adapter.applied_values()
    run(trainer, steps)
    adapter.detach()
    after = adapter.applied_values()
    changed = {k: (before.get(k), v) for k, v in after.items() if k in before and not _equal_values(before[k], v)}
    _ensure(not changed, f"after detach() these copies do not hold the user's values (before, after): {changed}")


DRIVEN_CHECKS = (check_adapter_sampled_as_scored, check_adapter_resumes, check_adapter_no_extra_forward,
                 check_adapter_detach)
# Mode "hyperparameter": the learning rate changes the update, not the sampling.
HYPERPARAMETER_DRIVEN_CHECKS = (check_adapter_stepped_as_credited, check_adapter_resumes,
                                check_adapter_no_extra_forward, check_adapter_detach)


ADAPTER_CHECKS = (check_adapter_copies, check_adapter_state_round_trip)


def check_adapter(target, run: Callable | None = None, *, attach: Callable | None = None,
                  modes: tuple[str, ...] = ("batch", "completion"), settings: dict | None = None,
                  steps: int = 2) -> None:
    """Check an adapter: ``check_adapter(adapter)`` runs ``ADAPTER_CHECKS`` on an attached adapter;
    ``check_adapter(make_trainer, run)`` drives real training and runs ``DRIVEN_CHECKS`` in each drawing mode.

    make_trainer: () -> a fresh trainer (the same every call: seeded); run(trainer, steps): train it for ``steps``
    generation batches; attach(trainer, **settings) -> adapter (default ``metahp.adapt``); modes: the drawing modes
    to drive, with ``DRIVE``'s settings (``settings`` updates them, e.g. {"seed": 1}); mode "hyperparameter" adapts
    the learning-rate multiplier and runs ``HYPERPARAMETER_DRIVEN_CHECKS``."""
    if run is None:
        for check in ADAPTER_CHECKS:
            check(target)
        return
    trainers = _Trainers(target)
    for mode in modes:
        drive = {**DRIVE[mode], **(settings or {})}
        for check in HYPERPARAMETER_DRIVEN_CHECKS if mode == "hyperparameter" else DRIVEN_CHECKS:
            check(trainers, run, attach, drive, steps)


class _Trainers:
    """make_trainer, named after itself in a failure (``check_adapter_resumes(make_trl_trainer): ...``)."""

    def __init__(self, make_trainer: Callable):
        self.make_trainer, self.name = make_trainer, getattr(make_trainer, "__name__", "make_trainer")

    def __call__(self):
        return self.make_trainer()
