"""Routing of ``meta_policy(**options)`` to the component that declares each option, with clear errors."""

from __future__ import annotations

import inspect
from collections.abc import Callable

from pydantic import ValidationError

from metahp.errors import ConfigError


def accepted(factory: Callable) -> list[str]:
    return [p for p in inspect.signature(factory).parameters if p != "self"]


def route(options: dict, components: dict[str, Callable]) -> dict[str, dict]:
    """Split ``options`` by component name; every option must be declared by exactly one component."""
    routed: dict[str, dict] = {name: {} for name in components}
    for key, value in options.items():
        owners = [name for name, factory in components.items() if key in accepted(factory)]
        if not owners:
            valid = {name: accepted(f) for name, f in components.items()}
            raise ConfigError(f"unknown option {key}={value!r}; the options here are {valid}.")
        if len(owners) > 1:
            raise ConfigError(f"option {key!r} is declared by {owners}; this is a bug in metahp, please report.")
        routed[owners[0]][key] = value
    return routed


def build(what: str, factory: Callable, options: dict):
    """Call a validated factory, turning pydantic's errors into a ConfigError that names ``what``."""
    try:
        return factory(**options)
    except ValidationError as err:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'value'}={e.get('input')!r}: {e['msg']}" for e in err.errors()
        )
        raise ConfigError(f"{what}: {problems}. Valid options: {accepted(factory)}.") from None
