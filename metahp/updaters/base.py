"""What an updater is: three pure functions over a small dict of numpy arrays (optax-style).

    state = init(values)                       values: the candidate grid, a tuple of K floats
    state = update(state, feedback)            never mutates its input
    probs = probs(state)                       a distribution over the K candidates

An updater declares which feedback it learns from (see metahp.rewards.base) and which selection rule suits
it by default. Its hyperparameters are closed over by its factory (``tampo(alpha=0.05)``), validated there.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

State = dict[str, np.ndarray]


@dataclass(frozen=True)
class Feedback:
    """advantages: a[K] (per-candidate feedback); chosen: index of the value used; reward: scalar feedback."""

    advantages: np.ndarray | None = None
    chosen: int | None = None
    reward: float | None = None


@dataclass(frozen=True)
class Updater:
    name: str
    feedback: Literal["per_candidate", "chosen"]
    selection: str
    init: Callable[[tuple[float, ...]], State]
    update: Callable[[State, Feedback], State]
    probs: Callable[[State], np.ndarray]
    options: dict = field(default_factory=dict)
    # State keys whose entries can never be negative (play counts, indices): a loaded state is checked for it.
    nonnegative: tuple[str, ...] = ()
    # The reward the knob layer uses with values per completion or per prompt when none is given (a registered
    # reward's name, of this updater's feedback kind); None: the feedback kind's default, as meta_policy alone and
    # per="batch" use (metahp.knobset.default_reward_for: one rule for every trainer and adapter).
    default_reward: str | None = None


def softmax(h: np.ndarray) -> np.ndarray:
    e = np.exp(h - h.max())
    return e / e.sum()


def uniform(k: int) -> np.ndarray:
    return np.full(k, 1.0 / k)
