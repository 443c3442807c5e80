"""The uniform mixture: every candidate always equally likely. Ignores all feedback.

The ablation for values per completion: with ``per="completion"`` each group mixes the whole grid evenly, so a
learned per-completion strategy has to beat it to show that learning (not mixing alone) helps.
"""

from __future__ import annotations

import numpy as np
from pydantic import validate_call

from metahp.updaters.base import Feedback, State, Updater
from metahp.updaters.base import uniform as uniform_probs


@validate_call
def uniform() -> Updater:
    """Probability 1/K on each of the K candidates, forever."""

    def init(values: tuple[float, ...]) -> State:
        return {"k": np.array(len(values))}

    def update(state: State, feedback: Feedback) -> State:
        return {"k": state["k"].copy()}

    def probs(state: State) -> np.ndarray:
        return uniform_probs(int(state["k"]))

    # It ignores feedback, so its default reward is the one that costs nothing (no likelihoods, no extra forward)
    # and whose metrics (the zero-advantage share per value) are what the ablation is compared on.
    return Updater("uniform", "per_candidate", "sample", init, update, probs, {}, nonnegative=("k",),
                   default_reward="informativeness")
