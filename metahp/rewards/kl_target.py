"""beta's signal: the measured KL to the reference model against a target, as an adaptive KL controller reads it
(PPO's adaptive KL penalty; Ziegler et al. 2019; verl's AdaptiveKLController).

With KL_t the mean per-token KL of the policy to the reference measured in this step's update (``measured["kl"]``),
candidate beta v_k scores

    a_k = clip(log KL_t - log target, -m, m) * log v_k

so a KL above the target moves a softmax policy toward larger beta (a stronger pull to the reference) and one below
toward smaller. The log ratio is clipped to +-m (``max_log_ratio``, default 2: a factor e^2 ~ 7.4 either way), as
the adaptive controllers clip their proportional error, so a KL of exactly 0 (the first update, policy = reference)
gives -m rather than -inf. Default target 0.1: verl's ``algorithm.kl_ctrl.target_kl`` (ppo_trainer.yaml), a mean
per-token KL like the one measured here. A candidate beta = 0 is scored one halving below the smallest positive one
(metahp.rewards._measured.log_grid).
"""

from __future__ import annotations

import math
from typing import Annotated

from pydantic import Field, validate_call

from metahp.errors import InputError
from metahp.rewards._measured import MeasuredSignal


class KLTarget(MeasuredSignal):
    """a_k = clip(log(KL_t / target), -m, m) * log v_k, for beta (softmax_gradient, per batch)."""

    name = "kl_target"
    measurement = "kl"
    needs_measured = ("kl",)
    fitted_knobs = ("beta",)

    @validate_call
    def __init__(self, target: Annotated[float, Field(gt=0, allow_inf_nan=False)] = 0.1,
                 max_log_ratio: Annotated[float, Field(gt=0, allow_inf_nan=False)] = 2.0):
        self.target, self.max_log_ratio = target, max_log_ratio

    @property
    def options(self) -> dict:
        return {"target": self.target, "max_log_ratio": self.max_log_ratio}

    def signal(self, value: float) -> float:
        if value < -1e-6:  # rounding can leave a KL of 0 a hair below it; more is not a KL
            raise InputError(f"measured['kl'] = {value:.4g} is negative; pass the mean per-token k3 KL to the "
                             f"reference, exp(d) - d - 1 with d = log pi_ref - log pi, which is >= 0.")
        ratio = math.log(value / self.target) if value > 0 else -math.inf  # k3 >= 0; 0: far below any target
        return min(max(ratio, -self.max_log_ratio), self.max_log_ratio)
