"""What the rewards fitted to a hyperparameter share: a measurement the trainer took during its update, read from
``Batch.measured`` and checked, turned into a per-candidate score along the grid's log values.

Each such reward scores candidate k as

    a_k = s_t * u_k,        u_k = log v_k

with s_t a signed signal from this step's measurement (positive: a larger value would have been better) and v_k the
candidates. A per-step constant added to every a_k does not change a softmax policy (softmax_gradient's preferences
move by lr * a_k; a shift common to all k cancels), so the scores are not centred. A candidate v_k <= 0 (beta = 0,
no KL term) has no log: it is scored at u_k = log(v_min / 2), one halving below the smallest positive candidate v_min,
so it stays the end of the grid furthest from the larger values.
"""

from __future__ import annotations

import math
from typing import ClassVar

import numpy as np

from metahp.errors import InputError
from metahp.rewards.base import Batch, Reward

# Each measurement a trainer can hand to update(measured=...): what it is, and which trainers measure it.
MEASUREMENTS = {
    "grad_alignment": ("the cosine between this step's policy gradient and the previous step's",
                       "metahp's reference trainer (GRPOTrainer, in the lab)"),
    "update_alignment": ("the cosine between this step's policy gradient and the previous optimizer step's parameter "
                         "change (theta before minus theta after)",
                         "metahp's reference trainer (GRPOTrainer, in the lab)"),
    "kl": ("the mean per-token KL of the policy to the reference model",
           "the reference trainer (with kl_beta > 0) and TRL's adapter (with beta > 0)"),
    "clip_fraction": ("the share of completion tokens whose ratio was clipped in the loss",
                      "the reference trainer and TRL's adapter (with a clipped loss_type)"),
}


def log_grid(values: np.ndarray) -> np.ndarray:
    """u_k = log v_k; a candidate <= 0 at log(v_min / 2), v_min the smallest positive candidate (all 0 if none)."""
    v = np.asarray(values, dtype=np.float64).reshape(len(values), -1)[:, 0]
    positive = v[v > 0]
    if not len(positive):
        return np.zeros(len(v))
    return np.log(np.where(v > 0, v, positive.min() / 2))


def cosine_signal(value: float, name: str, between: str) -> float:
    """A measured cosine as the signal s_t, refused with an InputError outside [-1, 1] (``between``: of what)."""
    if not -1 - 1e-6 <= value <= 1 + 1e-6:
        raise InputError(f"measured[{name!r}] = {value:.4g} is not a cosine (in [-1, 1]); pass the cosine between "
                         f"{between}.")
    return value


def measured_value(batch: Batch, name: str, who: str) -> float | None:
    """``batch.measured[name]`` as a float, None when the trainer could not measure it this step (e.g. the first
    step has no previous gradient); an InputError, saying who measures it, when it is missing or not finite."""
    what, where = MEASUREMENTS[name]
    measured = batch.measured or {}
    if name not in measured:
        raise InputError(f"reward {who!r} needs measured[{name!r}], {what}, which {where} measures; it was not "
                         f"passed to update(). Pass update(..., measured={{{name!r}: value}}) or adapt a trainer "
                         f"that measures it.")
    value = measured[name]
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float | np.number) or not math.isfinite(value):
        raise InputError(f"reward {who!r}: measured[{name!r}] = {value!r:.40} must be a finite number ({what}; "
                         f"None when it could not be measured this step).")
    return float(value)


class MeasuredSignal(Reward):
    """Base of the fitted rewards: ``signal(measurement) -> s_t``; a_k = s_t * log v_k, zeros when not measured."""

    kind = "per_candidate"
    #: The name in Batch.measured this reward reads.
    measurement: ClassVar[str]

    def signal(self, value: float) -> float:
        raise NotImplementedError

    def __call__(self, state: dict, batch: Batch) -> tuple[np.ndarray, dict]:
        if batch.values is None:
            raise InputError(f"reward {self.name!r} maps its signal onto the candidates: the batch needs values=[the "
                             f"grid] (a meta-policy's update passes them).")
        value = measured_value(batch, self.measurement, self.name)
        if value is None:  # not measurable this step: no evidence, no move
            return np.zeros(len(batch.values)), state
        return self.signal(value) * log_grid(batch.values), state
