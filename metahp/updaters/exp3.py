"""EXP3 (Auer et al., 2002): exponential weights from the scalar reward of the chosen candidate only.

    pi_k = (1 - gamma) * w_k / sum_j w_j + gamma / K
    x    = clip((r - low) / (high - low), 0, 1)            reward rescaled to [0, 1]
    w_j <- w_j * exp(gamma * (x / pi_j) / K)                j = the chosen candidate (importance-weighted)

Weights are kept as logs, shifted so the largest is 0.
"""

from __future__ import annotations

from typing import Annotated

import numpy as np
from pydantic import Field, validate_call

from metahp.errors import ConfigError
from metahp.updaters.base import Feedback, State, Updater, softmax


@validate_call
def exp3(
    gamma: Annotated[float, Field(gt=0, le=1)] = 0.1,
    reward_low: float = -0.5,
    reward_high: float = 0.5,
) -> Updater:
    """EXP3 with exploration rate ``gamma`` for rewards expected in [reward_low, reward_high]."""
    if not reward_low < reward_high:
        raise ConfigError(f"exp3: reward_low={reward_low} must be below reward_high={reward_high}.")

    def probs(state: State) -> np.ndarray:
        k = len(state["log_weights"])
        return (1 - gamma) * softmax(state["log_weights"]) + gamma / k

    def init(values: tuple[float, ...]) -> State:
        return {"log_weights": np.zeros(len(values))}

    def update(state: State, feedback: Feedback) -> State:
        logw = state["log_weights"].copy()
        k, j = len(logw), feedback.chosen
        x = min(1.0, max(0.0, (feedback.reward - reward_low) / (reward_high - reward_low)))
        logw[j] += gamma * (x / probs(state)[j]) / k
        return {"log_weights": logw - logw.max()}

    return Updater("exp3", "chosen", "sample", init, update, probs,
                   {"gamma": gamma, "reward_low": reward_low, "reward_high": reward_high})


