"""Non-learning temperature controllers to compare metahp against: schedules and an entropy-target controller.

Each is a ``KnobController`` for ``metahp.lab.grpo.GRPOTrainer`` (attach with ``trainer.attach(controller)``):

>>> trainer.attach(LinearSchedule(0.9, 1.5, steps=400))  # doctest: +SKIP

(the TAMPO paper's heuristic ramp), or, to hold the first batch's entropy at T = start:

>>> trainer.attach(EntropyTarget(target=None))  # doctest: +SKIP

None of them looks at rewards. Metrics are logged as ``baseline/temperature`` (and ``baseline/entropy``,
``baseline/entropy_target`` for the entropy controller).
"""

from __future__ import annotations

import math
from typing import Any

import torch

from metahp.errors import ConfigError


class LinearSchedule:
    """Temperature moved linearly from ``start`` (first batch) to ``end`` (batch ``steps``), then held.

    T_s = start + (end - start) * min(s, steps - 1) / (steps - 1), s = 0, 1, ... counted in batches.
    """

    def __init__(self, start: float, end: float, steps: int):
        if not (start > 0 and end > 0):
            raise ConfigError(f"schedule temperatures must be > 0, got start={start!r}, end={end!r}.")
        if steps < 1:
            raise ConfigError(f"schedule steps must be >= 1, got {steps!r}; pass the run's number of GRPO steps.")
        self.start, self.end, self.steps = float(start), float(end), int(steps)
        self.batch = 0

    def temperature(self, batch: int) -> float:
        frac = min(batch, self.steps - 1) / max(self.steps - 1, 1)
        return self.start + (self.end - self.start) * frac

    def knobs_for_next_batch(self, context=None) -> dict[str, float]:
        return {"temperature": self.temperature(self.batch)}

    def after_batch(self, rollout) -> dict[str, float]:
        self.batch += 1
        return {"baseline/temperature": float(rollout.knobs["temperature"])}

    def state_dict(self) -> dict[str, Any]:
        return {"batch": self.batch}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.batch = int(state["batch"])


def mean_token_entropy(logits: torch.Tensor, mask: torch.Tensor, temperature: float) -> float:
    """Mean entropy (nats) of softmax(logits / T) over the completion tokens where ``mask`` is 1."""
    logp = torch.log_softmax(logits.float() / temperature, dim=-1)
    entropy = -(logp.exp() * logp).sum(-1)
    keep = mask.bool()
    return float(entropy[keep].mean()) if keep.any() else float("nan")


class EntropyTarget:
    """Temperature nudged multiplicatively after each batch to hold the rollouts' mean token entropy at a target.

    log T <- clip(log T + gain * (log H* - log H), log lo, log hi), H measured on the batch's own logits at the
    temperature it was sampled with. ``target=None`` takes H* from the first batch (sampled at ``start``), i.e.
    the entropy of the starting policy at T = start. A proportional controller in log space: a batch 10% below
    target raises T by about ``gain`` * 10%.
    """

    def __init__(self, target: float | None = None, start: float = 1.0, gain: float = 0.5,
                 bounds: tuple[float, float] = (0.5, 1.6)):
        lo, hi = bounds
        if not 0 < lo <= start <= hi:
            raise ConfigError(f"need 0 < bounds[0] <= start <= bounds[1], got start={start!r}, bounds={bounds!r}.")
        if target is not None and not target > 0:
            raise ConfigError(f"entropy target must be > 0 nats (or None: first batch), got {target!r}.")
        if not gain > 0:
            raise ConfigError(f"gain must be > 0, got {gain!r}.")
        self.target = None if target is None else float(target)
        self.temperature = float(start)
        self.gain, self.bounds = float(gain), (float(lo), float(hi))

    def knobs_for_next_batch(self, context=None) -> dict[str, float]:
        return {"temperature": self.temperature}

    def after_batch(self, rollout) -> dict[str, float]:
        used = float(rollout.knobs["temperature"])
        entropy = mean_token_entropy(rollout.logits, rollout.completion_mask, used)
        if self.target is None:
            self.target = entropy
        if math.isfinite(entropy) and entropy > 0 and self.target > 0:
            log_t = math.log(used) + self.gain * (math.log(self.target) - math.log(entropy))
            self.temperature = float(min(max(math.exp(log_t), self.bounds[0]), self.bounds[1]))
        return {"baseline/temperature": used, "baseline/entropy": entropy, "baseline/entropy_target": self.target}

    def state_dict(self) -> dict[str, Any]:
        return {"target": self.target, "temperature": self.temperature}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.target = state["target"]
        self.temperature = float(state["temperature"])


class ERPO:
    """ERPO's rule for the temperature of each prompt: a prompt whose previous group was all correct is sampled at
    ``hot``, every other prompt (and one not seen yet) at ``base``. Needs prompts that recur: the reference
    trainer's fixed training set (``train_set_size``); with fresh problems every prompt is unseen, so all run at
    ``base``. Not learned: the per-prompt baseline for metahp's learned per-prompt values."""

    def __init__(self, base: float = 1.0, hot: float = 1.2):
        if not (base > 0 and hot > 0):
            raise ConfigError(f"ERPO temperatures must be > 0, got base={base!r}, hot={hot!r}.")
        self.base, self.hot = float(base), float(hot)

    def knobs_for_next_batch(self, context=None) -> dict[str, float | list[float]]:
        if context is None or context.problem_ids is None:
            return {"temperature": self.base}
        return {"temperature": [self.hot if rate == 1.0 else self.base
                                for rate in context.pass_rates for _ in range(context.group_size)]}

    def after_batch(self, rollout) -> dict[str, float]:
        t = rollout.knobs["temperature"]
        hot = [v == self.hot for v in t] if isinstance(t, list) else [t == self.hot]
        return {"baseline/hot_share": sum(hot) / len(hot)}

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass
