"""Adapter for metahp's own reference GRPO trainer (metahp.grpo.GRPOTrainer).

The trainer asks the adapter for the knobs of each generation batch and hands back the batch, whose raw
sampling logits are already at hand: the meta-update costs no extra forward pass.
"""

from __future__ import annotations

from typing import Any

from metahp.errors import ConfigError
from metahp.policy import MetaPolicy, meta_policy


def supports(trainer) -> bool:
    from metahp.grpo import GRPOTrainer

    return isinstance(trainer, GRPOTrainer)


class ReferenceAdapter:
    """Connects one MetaPolicy to a GRPOTrainer; ``adapter.policy`` is the meta-policy."""

    def __init__(self, trainer, policy: MetaPolicy):
        self.trainer = trainer
        self.policy = policy

    def knobs_for_next_batch(self) -> dict[str, float]:
        return {self.policy.knob.name: self.policy.sample()}

    def after_batch(self, rollout) -> dict[str, float]:
        return self.policy.update_from_logits(rollout.logits, rollout.completion_ids, rollout.completion_mask,
                                              rollout.advantages, reward=float(rollout.rewards.mean()))

    def state_dict(self) -> dict[str, Any]:
        return self.policy.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.policy.load_state_dict(state)


def attach(trainer, *, knob, updater, values, seed, **options) -> ReferenceAdapter:
    name = knob if isinstance(knob, str) else getattr(knob, "name", knob)
    if name not in trainer.SUPPORTED_KNOBS:
        raise ConfigError(f"the reference trainer can adapt {list(trainer.SUPPORTED_KNOBS)}, not {name!r}.")
    policy = meta_policy(knob, updater, values, trainer.config.seed if seed is None else seed, **options)
    adapter = ReferenceAdapter(trainer, policy)
    trainer.attach(adapter)
    return adapter
