"""epsilon's signal: the clipped fraction against a target.

With f_t the share of completion tokens whose ratio the loss clipped in this step's update (``measured[
"clip_fraction"]``: the ratio outside [1 - eps_low, 1 + eps_high] on the side where the clip binds, A < 0 below and
A > 0 above, as TRL's clip_ratio/region_mean), candidate clip range v_k scores

    a_k = (f_t - target) * log v_k

so clipping more than the target moves a softmax policy toward a wider epsilon (more of the update passes) and less
toward a narrower one. Default target 0.1: a choice, not a measured optimum (no trainer documents a target clip
fraction): the clip then binds on a minority of the tokens, acting as a trust region rather than as most of the loss.
Set it for your run. For epsilon and epsilon_high (DAPO's clip-higher upper bound) alike.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import Field, validate_call

from metahp.errors import InputError
from metahp.rewards._measured import MeasuredSignal


class ClipTarget(MeasuredSignal):
    """a_k = (clip_fraction_t - target) * log v_k, for epsilon or epsilon_high (softmax_gradient, per batch)."""

    name = "clip_target"
    measurement = "clip_fraction"
    needs_measured = ("clip_fraction",)
    fitted_knobs = ("epsilon", "epsilon_high")

    @validate_call
    def __init__(self, target: Annotated[float, Field(ge=0, lt=1)] = 0.1):
        self.target = target

    @property
    def options(self) -> dict:
        return {"target": self.target}

    def signal(self, value: float) -> float:
        if not 0 <= value <= 1:
            raise InputError(f"measured['clip_fraction'] = {value:.4g} is not a share of tokens (in [0, 1]).")
        return value - self.target
