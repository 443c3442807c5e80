"""EXP3 (Auer et al., 2002): exponential weights from the scalar reward of the chosen candidate only.

    pi_k = (1 - gamma) * w_k / sum_j w_j + gamma / K
    x    = clip((r - low) / (high - low), 0, 1)            reward rescaled to [0, 1]
    w_j <- w_j * exp(gamma * (x / pi_j) / K)                j = the chosen candidate (importance-weighted)

Weights are kept as logs, shifted so the largest is 0.

The reward window [reward_low, reward_high] sets the step: a reward spread that fills the window moves the
weights by up to gamma / (K pi_j) per batch, one that fills 1% of it moves them 100 times less (rewards scaled by
0.01 learn about nothing in a few hundred batches). The default window [-0.5, 0.5] suits metahp's default scalar
reward, ``reward_improvement`` (batch mean reward minus its running mean), for task rewards in [0, 1]; for task
rewards in [0, R] use [-R/2, R/2]. A reward slightly outside the window is clipped to it; one farther outside than
the window is wide is an InputError (the window cannot match the rewards: set reward_low / reward_high).
"""

from __future__ import annotations

import math
from typing import Annotated

import numpy as np
from pydantic import Field, validate_call

from metahp.errors import ConfigError, InputError
from metahp.updaters.base import Feedback, State, Updater, softmax


@validate_call
def exp3(
    gamma: Annotated[float, Field(gt=0, le=1)] = 0.1,
    reward_low: float = -0.5,
    reward_high: float = 0.5,
) -> Updater:
    """EXP3 with exploration rate ``gamma`` for rewards expected in [reward_low, reward_high]."""
    if not (math.isfinite(reward_low) and math.isfinite(reward_high)):
        raise ConfigError(f"exp3: reward_low={reward_low}, reward_high={reward_high} must be finite: EXP3 rescales"
                          f" rewards to [0, 1] by this window (an infinite one never learns).")
    if not reward_low < reward_high:
        raise ConfigError(f"exp3: reward_low={reward_low} must be below reward_high={reward_high}.")
    width = reward_high - reward_low

    def probs(state: State) -> np.ndarray:
        k = len(state["log_weights"])
        return (1 - gamma) * softmax(state["log_weights"]) + gamma / k

    def init(values: tuple[float, ...]) -> State:
        return {"log_weights": np.zeros(len(values))}

    def update(state: State, feedback: Feedback) -> State:
        logw = state["log_weights"].copy()
        k, j = len(logw), feedback.chosen
        r = feedback.reward
        if not reward_low - width <= r <= reward_high + width:
            raise InputError(f"exp3: reward {r:.4g} is far outside the window [{reward_low}, {reward_high}] that EXP3 "
                             f"rescales to [0, 1]; set reward_low / reward_high to the range of the rewards it gets "
                             f"(with reward_improvement and task rewards in [0, R]: -R/2 and R/2).")
        x = min(1.0, max(0.0, (r - reward_low) / width))
        logw[j] += gamma * (x / probs(state)[j]) / k
        return {"log_weights": logw - logw.max()}

    return Updater("exp3", "chosen", "sample", init, update, probs,
                   {"gamma": gamma, "reward_low": reward_low, "reward_high": reward_high})


