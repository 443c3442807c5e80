"""Adapter for metahp's own reference GRPO trainer (metahp.lab.grpo.GRPOTrainer).

The trainer asks for the knobs of each generation batch (``knobs_for_next_batch``) and hands back the batch, whose
raw sampling logits are already at hand: the meta-update costs no extra forward pass. Values, history and the state
envelope are the kit's (``kit.KitAdapter``); drawing, scoring and updating are the knob layer's (``KnobSet``).
"""

from __future__ import annotations

from typing import Any

from metahp.errors import ConfigError
from metahp.knobs import sampling_names
from metahp.knobset import KnobSet

from . import kit

# The adapter options (metahp.config) this adapter honours.
ADAPTER_OPTIONS = ("context",)
# What the trainer measures in its update for the rewards fitted to a hyperparameter (metahp.lab.grpo.MEASURES;
# metahp.adapt refuses a reward that needs another).
MEASURES = ("grad_alignment", "update_alignment", "kl", "clip_fraction")


def supports(trainer) -> bool:
    from metahp.lab.grpo import GRPOTrainer

    return isinstance(trainer, GRPOTrainer)


class ReferenceAdapter(kit.KitAdapter):
    """A KnobSet wired to a GRPOTrainer. ``.policy`` (one knob) or ``.policies[name]``; ``.value`` is the value(s)
    drawn for the latest batch (the configured value before the first); ``.knobset`` is the knob layer."""

    who = "reference adapter"

    def __init__(self, trainer, knobset: KnobSet):
        needed = {m for p in knobset.policies.values() for m in p.reward.needs_measured}
        if "clip_fraction" in needed and trainer.config.epochs < 2:
            raise ConfigError(f"the clipped fraction is measured from the second epoch on a batch (the first epoch's "
                              f"ratio is exactly 1: nothing clips), and this trainer runs epochs="
                              f"{trainer.config.epochs}: clip_target would never see a clipped token. Use "
                              f"GRPOConfig(epochs=2) or more, or adapt epsilon with updater='exp3'.")
        super().__init__(knobset, {name: trainer.configured(name) for name in knobset.knobs})
        self.trainer = trainer
        for name in self.knob_names:  # its one copy: what the latest batch sampled with and its loss replays
            self.copies.add(name, f"trainer.last_knobs.{name}", lambda n=name: trainer.last_knobs.get(n, None),
                            lambda v: None)  # written by the trainer from knobs_for_next_batch's answer

    @property
    def measures(self) -> tuple[str, ...]:
        """What the trainer's update must measure for these policies' rewards (the gradient is kept only if asked)."""
        return tuple(sorted({m for p in self.knobset.policies.values() for m in p.reward.needs_measured}))

    def applied_values(self) -> dict[str, Any]:
        """The trainer's copy of each adapted knob (none before its first batch)."""
        return self.copies.read() if self.trainer.last_knobs else {}

    def detach(self) -> None:
        """The trainer goes back to its configured knobs (its next batch samples without metahp)."""
        self.trainer.controller = None
        super().detach()

    # -- the trainer's hooks (metahp.lab.grpo.KnobController) --------------------------------------------------
    def knobs_for_next_batch(self, context=None) -> dict[str, Any]:
        config = self.trainer.config
        contexts = None if context is None else context.for_context(self.knobset.context_reads)
        return self.draw_and_apply(self.trainer.step, rows=config.prompts_per_step * config.num_generations,
                                   contexts=contexts)

    def after_batch(self, rollout) -> dict[str, float]:
        # A batch without an update (every advantage 0) measured nothing: each measurement None, no move.
        measured = None
        if self.measures:
            measured = rollout.measured if rollout.measured is not None else dict.fromkeys(MEASURES)
        return self.knobset.update_from_logits(rollout.logits, rollout.completion_ids, rollout.completion_mask,
                                               rollout.advantages, reward=float(rollout.rewards.mean()),
                                               used=rollout.knobs, measured=measured,
                                               contexts=None if rollout.context is None
                                               else rollout.context.for_context(self.knobset.context_reads))

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """The kit's envelope; a bare knob-set state (checkpoints written before the envelope) loads as before."""
        if isinstance(state, dict) and "value" not in state and "history" not in state:
            self.knobset.load_state_dict(state)
            return
        super().load_state_dict(state)


def attach(trainer, *, knob, updater, values, seed, combine="factored", per="batch", **options) -> ReferenceAdapter:
    """``per="completion"``: one temperature per completion, mixed within each group; ``per="prompt"``: one per
    prompt's group, from a meta-policy per context (the prompt's past pass rate, or its text with a
    ``metahp.knobset.prompt_context``) (metahp.knobset.KnobSet)."""
    from metahp.lab.grpo import HYPERPARAMETER_FIELDS

    config = trainer.config
    knobset = KnobSet(knob, updater, values, config.seed if seed is None else seed, combine=combine,
                      supported=[*sampling_names(), *HYPERPARAMETER_FIELDS], who="the reference trainer",
                      batch_size=config.prompts_per_step * config.num_generations, batch_what="a batch", per=per,
                      group_size=config.num_generations, **options)
    if "beta" in knobset.knobs and trainer.reference is None:
        raise ConfigError("adapting beta needs a reference model, which the reference trainer builds only when "
                          "kl_beta > 0 at start-up; build it with GRPOConfig(kl_beta=...) > 0 (e.g. 0.04); a candidate "
                          "beta of 0 then switches the KL term off for a batch.")
    adapter = ReferenceAdapter(trainer, knobset)
    trainer.attach(adapter)
    return adapter
