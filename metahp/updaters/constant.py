"""A fixed value: the baseline every adaptive updater is compared with. Ignores all feedback."""

from __future__ import annotations

import numpy as np
from pydantic import validate_call

from metahp.errors import ConfigError
from metahp.updaters.base import Feedback, State, Updater


@validate_call
def constant(value: float | tuple[float, ...] | None = None) -> Updater:
    """Always ``value`` (which must be one of the candidates; default: the candidate nearest 1.0)."""

    def index(values: tuple[float, ...]) -> int:
        if value is None:
            if isinstance(values[0], tuple):
                raise ConfigError("constant over several knobs needs value=(...), one entry per knob, e.g. "
                                  f"value={values[0]}.")
            return int(np.argmin([abs(v - 1.0) for v in values]))
        matches = [i for i, v in enumerate(values) if np.shape(v) == np.shape(value)
                   and np.allclose(v, value, rtol=0, atol=1e-9)]
        if not matches:
            raise ConfigError(f"constant: value={value} is not among the candidates {list(values)}; add it "
                              f"to values= (e.g. values=[{value}]) or pick one of them.")
        return matches[0]

    def init(values: tuple[float, ...]) -> State:
        onehot = np.zeros(len(values))
        onehot[index(values)] = 1.0
        return {"probs": onehot}

    def update(state: State, feedback: Feedback) -> State:
        return {"probs": state["probs"].copy()}

    def probs(state: State) -> np.ndarray:
        return state["probs"].copy()

    return Updater("constant", "chosen", "greedy", init, update, probs, {"value": value}, nonnegative=("probs",))
