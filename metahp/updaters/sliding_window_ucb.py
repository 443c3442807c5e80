"""Sliding-window UCB (Garivier & Moulines, 2011), the non-stationary bandit of Agent57's meta-controller.

Over the last ``window`` (chosen index, reward) pairs, with N_k plays and mean reward mu_k of candidate k:

    UCB_k = mu_k + c * sqrt(log(n) / N_k),     n = number of pairs in the window

A candidate not played within the window is tried first. The policy is greedy on UCB (ties shared equally),
mixed with epsilon-uniform exploration: pi = (1 - epsilon) * greedy + epsilon / K.
"""

from __future__ import annotations

from typing import Annotated

import numpy as np
from pydantic import Field, validate_call

from metahp.updaters.base import Feedback, State, Updater


@validate_call
def sliding_window_ucb(
    window: Annotated[int, Field(ge=1, le=100_000)] = 50,
    exploration: Annotated[float, Field(ge=0)] = 0.1,
    epsilon: Annotated[float, Field(ge=0, le=1)] = 0.0,
) -> Updater:
    """Sliding-window UCB over the last ``window`` batches, bonus scale ``exploration``."""

    def init(values: tuple[float, ...]) -> State:
        return {"arms": np.zeros(0, dtype=np.int64), "rewards": np.zeros(0), "k": np.array(len(values))}

    def update(state: State, feedback: Feedback) -> State:
        arms = np.append(state["arms"], feedback.chosen)[-window:]
        rewards = np.append(state["rewards"], feedback.reward)[-window:]
        return {"arms": arms.astype(np.int64), "rewards": rewards, "k": state["k"]}

    def probs(state: State) -> np.ndarray:
        k, arms, rewards = int(state["k"]), state["arms"], state["rewards"]
        plays = np.bincount(arms, minlength=k).astype(float)
        unplayed = plays == 0
        if unplayed.any():
            best = unplayed
        else:
            means = np.bincount(arms, weights=rewards, minlength=k) / plays
            ucb = means + exploration * np.sqrt(np.log(len(arms)) / plays)
            best = ucb >= ucb.max() - 1e-12
        greedy = best / best.sum()
        return (1 - epsilon) * greedy + epsilon / k

    return Updater("sliding_window_ucb", "chosen", "sample", init, update, probs,
                   {"window": window, "exploration": exploration, "epsilon": epsilon}, nonnegative=("arms", "k"))
