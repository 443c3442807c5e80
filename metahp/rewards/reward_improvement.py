"""Scalar bandit feedback: how much the batch's mean reward beat its running average.

    r_t = mean_reward_t - b_{t-1},       b_t = (1 - beta) * b_{t-1} + beta * mean_reward_t

with b started at the first observed mean reward (so the first feedback is 0). It credits the value used
for this batch with the improvement over recent batches; a bandit updater learns from it.
"""

from __future__ import annotations

import math
from typing import Annotated

from pydantic import Field, validate_call

from metahp.errors import InputError
from metahp.rewards.base import Batch, Reward


class RewardImprovement(Reward):
    """Mean batch reward minus an exponential moving average of earlier batches' mean rewards."""

    name = "reward_improvement"
    kind = "chosen"

    @validate_call
    def __init__(self, baseline_alpha: Annotated[float, Field(gt=0, le=1)] = 0.2):
        self.baseline_alpha = baseline_alpha

    @property
    def options(self) -> dict:
        return {"baseline_alpha": self.baseline_alpha}

    def init(self) -> dict:
        return {"baseline": None}

    def __call__(self, state: dict, batch: Batch) -> tuple[float, dict]:
        r = batch.mean_reward
        if r is None:
            raise InputError("reward_improvement needs the batch's mean task reward: pass update(reward=...).")
        if not math.isfinite(r):
            raise InputError(f"reward={r} is not finite; pass the mean of the batch's task rewards.")
        baseline = state["baseline"]
        if baseline is None:
            return 0.0, {"baseline": float(r)}
        new_baseline = (1 - self.baseline_alpha) * baseline + self.baseline_alpha * r
        return float(r - baseline), {"baseline": float(new_baseline)}
