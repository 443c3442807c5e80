"""Adapter for metahp's own reference GRPO trainer (metahp.lab.grpo.GRPOTrainer).

The trainer asks the adapter for the knobs of each generation batch and hands back the batch, whose raw
sampling logits are already at hand: the meta-update costs no extra forward pass.

Several knobs at once (``knob=("temperature", "top_p")``) use the factored form by default: one meta-policy
per knob, each scored with the other knobs at the values this batch actually used (the temperature's candidates
with the batch's truncation applied after them; a truncation knob's candidates after the batch's temperature).
``combine="product"`` uses one meta-policy over the product of the grids instead (metahp.knobs.ProductKnob).
"""

from __future__ import annotations

from typing import Any

from metahp.errors import ConfigError
from metahp.knobs import Knob, ProductKnob, make_knob
from metahp.knobs.temperature import Temperature
from metahp.policy import MetaPolicy, meta_policy
from metahp.several_knobs import TRUNCATION_OFF, check_knob_names, name_metrics
from metahp.state import load_policies, require_keys


def supports(trainer) -> bool:
    from metahp.lab.grpo import GRPOTrainer

    return isinstance(trainer, GRPOTrainer)


def _condition(knob: Knob, used: dict[str, float]) -> None:
    """Point ``knob``'s likelihoods at the other knobs' values this batch used."""
    active = [(name, used[name]) for name, off in TRUNCATION_OFF.items() if used.get(name, off) != off]
    if isinstance(knob, ProductKnob):
        return  # every knob the batch used is one of its components
    if isinstance(knob, Temperature):
        knob.truncation = active[0] if active else None
    else:
        knob.temperature = used["temperature"]


class ReferenceAdapter:
    """Connects meta-policies (one per adapted knob) to a GRPOTrainer.

    ``adapter.policy`` is the meta-policy when one knob is adapted; ``adapter.policies`` maps knob names to
    meta-policies in every case.
    """

    def __init__(self, trainer, policies: dict[str, MetaPolicy]):
        self.trainer = trainer
        self.policies = policies

    @property
    def policy(self) -> MetaPolicy:
        if len(self.policies) != 1:
            raise AttributeError(f"several knobs are adapted {list(self.policies)}: use adapter.policies[name].")
        return next(iter(self.policies.values()))

    def knobs_for_next_batch(self) -> dict[str, float]:
        knobs: dict[str, float] = {}
        for policy in self.policies.values():
            knobs.update(policy.knob.components(policy.sample()))
        return knobs

    def after_batch(self, rollout) -> dict[str, float]:
        metrics: dict[str, float] = {}
        for name, policy in self.policies.items():
            _condition(policy.knob, rollout.knobs)
            m = policy.update_from_logits(rollout.logits, rollout.completion_ids, rollout.completion_mask,
                                          rollout.advantages, reward=float(rollout.rewards.mean()))
            if len(self.policies) > 1:
                m = name_metrics(m, name)
            metrics.update(m)
        return metrics

    def state_dict(self) -> dict[str, Any]:
        if len(self.policies) == 1:
            return self.policy.state_dict()
        return {"policies": {name: p.state_dict() for name, p in self.policies.items()}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """All or nothing: with several knobs, every policy is checked and loaded or none is."""
        if len(self.policies) == 1:
            self.policy.load_state_dict(state)
            return
        require_keys(state, {"policies"}, "adapter state")
        load_policies(self.policies, state["policies"], "policies")


def attach(trainer, *, knob, updater, values, seed, combine="factored", **options) -> ReferenceAdapter:
    knobs = (knob,) if isinstance(knob, str | Knob) else tuple(knob)
    if combine not in ("factored", "product"):
        raise ConfigError(f"combine={combine!r}: use 'factored' (one meta-policy per knob) or 'product' (one over "
                          f"the product of the grids).")
    names = [k if isinstance(k, str) else k.name for k in knobs]
    check_knob_names(names, trainer.SUPPORTED_KNOBS, values, "the reference trainer")
    base_seed = trainer.config.seed if seed is None else seed
    if combine == "product" and len(knobs) > 1:
        product = ProductKnob(*(make_knob(k) for k in knobs))
        batch = trainer.config.prompts_per_step * trainer.config.num_generations
        if len(product) > batch:
            raise ConfigError(f"the product grid has {len(product)} candidates, more than the {batch} completions of "
                              f"a batch; use combine='factored' or smaller grids.")
        policies = {product.name: meta_policy(product, updater, None, base_seed, **options)}
    else:
        policies = {name: meta_policy(k, updater, values, base_seed + i, **options)
                    for i, (name, k) in enumerate(zip(names, knobs, strict=True))}
    adapter = ReferenceAdapter(trainer, policies)
    trainer.attach(adapter)
    return adapter
