"""Adapter for metahp's own reference GRPO trainer (metahp.lab.grpo.GRPOTrainer).

The trainer asks for the knobs of each generation batch and hands back the batch, whose raw sampling logits are
already at hand: the meta-update costs no extra forward pass. Everything else (building the meta-policies,
scoring one knob given the batch's other settings, which rows count, metrics, state) is the knob layer's,
metahp.knobset.KnobSet.
"""

from __future__ import annotations

from typing import Any

from metahp.knobs import KNOBS
from metahp.knobset import KnobSet
from metahp.policy import MetaPolicy


def supports(trainer) -> bool:
    from metahp.lab.grpo import GRPOTrainer

    return isinstance(trainer, GRPOTrainer)


class ReferenceAdapter:
    """A KnobSet wired to a GRPOTrainer. ``.policy`` (one knob) or ``.policies[name]``; ``.value`` is the value(s)
    drawn for the latest batch; ``.knobset`` is the knob layer."""

    def __init__(self, trainer, knobset: KnobSet):
        self.trainer, self.knobset = trainer, knobset
        self._drawn: dict[str, Any] = {}

    @property
    def policies(self) -> dict[str, MetaPolicy]:
        return self.knobset.policies

    @property
    def policy(self) -> MetaPolicy:
        return self.knobset.policy

    @property
    def value(self):
        """The latest batch's value (a dict {name: value} with several knobs; None before the first batch)."""
        values = {name: self._drawn.get(name) for name in self.knobset.knobs}
        return next(iter(values.values())) if len(values) == 1 else values

    def applied_values(self) -> dict[str, Any]:
        """The one copy the trainer keeps of each adapted knob: the settings its latest batch sampled with, which
        its loss replays (Rollout.knobs)."""
        return {f"trainer.last_knobs.{name}": self.trainer.last_knobs.get(name) for name in self.knobset.knobs}

    # -- the trainer's hooks (metahp.lab.grpo.KnobController) --------------------------------------------------
    def knobs_for_next_batch(self, context=None) -> dict[str, Any]:
        config = self.trainer.config
        self._drawn = self.knobset.draw(rows=config.prompts_per_step * config.num_generations,
                                        contexts=None if context is None else context.pass_rates)
        return dict(self._drawn)

    def after_batch(self, rollout) -> dict[str, float]:
        return self.knobset.update_from_logits(rollout.logits, rollout.completion_ids, rollout.completion_mask,
                                               rollout.advantages, reward=float(rollout.rewards.mean()),
                                               used=rollout.knobs,
                                               contexts=None if rollout.context is None else rollout.context.pass_rates)

    def state_dict(self) -> dict[str, Any]:
        return self.knobset.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.knobset.load_state_dict(state)


def attach(trainer, *, knob, updater, values, seed, combine="factored", per="batch", **options) -> ReferenceAdapter:
    """``per="completion"``: one temperature per completion, mixed within each group; ``per="prompt"``: one per
    prompt's group, from a meta-policy per context (the prompt's past pass rate) (metahp.knobset.KnobSet)."""
    config = trainer.config
    knobset = KnobSet(knob, updater, values, config.seed if seed is None else seed, combine=combine,
                      supported=list(KNOBS), who="the reference trainer",
                      batch_size=config.prompts_per_step * config.num_generations, batch_what="a batch", per=per,
                      group_size=config.num_generations, **options)
    adapter = ReferenceAdapter(trainer, knobset)
    trainer.attach(adapter)
    return adapter
