"""Updaters: how the meta-policy's distribution moves. One file per updater plus one ``register_updater`` line.

Each factory validates its hyperparameters (pydantic) and returns an ``Updater`` of pure functions. A factory
registered from outside metahp (a user's module, a test) is built by name like a built-in one:

>>> import numpy as np
>>> from metahp.updaters import Updater, register_updater
>>> def fixed_uniform() -> Updater:
...     return Updater("fixed_uniform", "chosen", "sample", lambda values: {"n": np.zeros(len(values))},
...                    lambda state, feedback: state, lambda state: np.full(len(state["n"]), 1 / len(state["n"])))
>>> _ = register_updater(fixed_uniform)
>>> import metahp
>>> metahp.meta_policy("temperature", "fixed_uniform").probs[:2]
array([0.1, 0.1])
>>> del UPDATERS["fixed_uniform"]
"""

from __future__ import annotations

from collections.abc import Callable

from metahp.errors import ConfigError
from metahp.rewards import REWARDS
from metahp.rewards.base import FEEDBACK_KINDS
from metahp.selection import SELECTIONS
from metahp.updaters.base import Feedback, State, Updater
from metahp.updaters.constant import constant
from metahp.updaters.exp3 import exp3
from metahp.updaters.sliding_window_ucb import sliding_window_ucb
from metahp.updaters.softmax_gradient import softmax_gradient
from metahp.updaters.tampo import tampo
from metahp.updaters.thompson import thompson
from metahp.updaters.uniform import uniform

UPDATERS: dict[str, Callable[..., Updater]] = {}


def register_updater(factory: Callable[..., Updater]) -> Callable[..., Updater]:
    """Add an updater factory to ``UPDATERS`` after checking what ``meta_policy`` relies on (usable as a decorator).

    The factory must build an ``Updater`` with its default hyperparameters (``factory()``); it is registered under
    that Updater's ``name``, the name states record, and ``meta_policy(updater=name, **hyperparameters)`` calls it.
    ``metahp.testing.check_updater(factory())`` checks its behaviour (learning, purity, round trips)."""
    if isinstance(factory, Updater) or not callable(factory):
        raise ConfigError(f"register_updater takes a factory (a function returning an Updater, e.g. "
                          f"metahp.updaters.tampo), got {factory!r:.80}.")
    who = getattr(factory, "__name__", repr(factory))
    try:
        updater = factory()
    except Exception as err:  # any failure: the registry builds it by name with no options
        raise ConfigError(f"register_updater({who}): the factory must build an Updater with its default "
                          f"hyperparameters, but {who}() raised {type(err).__name__}: {err}") from None
    if not isinstance(updater, Updater):
        raise ConfigError(f"register_updater({who}): {who}() returned a {type(updater).__name__}, not a "
                          f"metahp.updaters.Updater.")
    check_updater_fields(updater, f"register_updater({who})")
    name = updater.name
    if name in UPDATERS and UPDATERS[name] is not factory:
        raise ConfigError(f"an updater named {name!r} is registered already ({UPDATERS[name].__name__}); pick "
                          f"another name.")
    UPDATERS[name] = factory
    return factory


def check_updater_fields(updater: Updater, who: str) -> None:
    """Raise ConfigError unless ``updater``'s fields are what a meta-policy reads: an identifier name, a known feedback
    kind and selection, and three functions (``who`` starts each message)."""
    name = updater.name
    if not isinstance(name, str) or not name.isidentifier():
        raise ConfigError(f"{who}: the Updater's name must be an identifier such as 'tampo' (it is how "
                          f"meta_policy(updater=...) and saved states name it), got {name!r}.")
    if updater.feedback not in FEEDBACK_KINDS:
        raise ConfigError(f"{who}: feedback must be one of {FEEDBACK_KINDS} (see metahp.rewards.base), got "
                          f"{updater.feedback!r}.")
    if updater.selection not in SELECTIONS:
        raise ConfigError(f"{who}: selection must be one of {sorted(SELECTIONS)}, got {updater.selection!r}.")
    if not all(callable(f) for f in (updater.init, updater.update, updater.probs)):
        raise ConfigError(f"{who}: init, update and probs must be functions.")
    own = updater.default_reward
    if own is not None:
        if own not in REWARDS or REWARDS[own].kind != updater.feedback:
            fits = sorted(n for n, cls in REWARDS.items() if cls.kind == updater.feedback)
            raise ConfigError(f"{who}: default_reward={own!r} must name a registered reward that gives "
                              f"{updater.feedback} feedback (what this updater learns from): one of {fits}, or None "
                              f"for the feedback kind's default.")


for _factory in (tampo, softmax_gradient, exp3, sliding_window_ucb, thompson, constant, uniform):
    register_updater(_factory)

__all__ = ["UPDATERS", "Feedback", "State", "Updater", "check_updater_fields", "register_updater", *UPDATERS]
