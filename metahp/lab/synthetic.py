"""A model-free stand-in for GRPO rollouts, to watch a meta-policy learn in seconds.

A fixed random "policy" gives logits z[p, t, :] for each prompt p and step t. Completions are sampled at the
chosen temperature; a completion succeeds when at least ``threshold`` of its tokens are the policy's top
choice (a stand-in for "coherent enough to be right"). Rewards are grouped per prompt and turned into GRPO
advantages; the meta-policy then learns from the very logits that sampled the batch. Cooler sampling makes
success likelier here, so a working meta-policy moves its mass towards the low candidates.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from metahp.lab.grpo import group_advantages
from metahp.policy import MetaPolicy


@dataclass
class SyntheticRollouts:
    prompts: int = 8
    group: int = 8
    length: int = 12
    vocab: int = 16
    threshold: float = 0.75
    sharpness: float = 2.5
    seed: int = 0

    def __post_init__(self):
        self._gen = torch.Generator().manual_seed(self.seed)
        self.logits = torch.randn(self.prompts, self.length, self.vocab, generator=self._gen) * self.sharpness

    def rollout(self, temperature: float):
        """Sample G completions per prompt at ``temperature``: (logits [B, L, V], tokens [B, L], rewards [P, G])."""
        logits = self.logits.repeat_interleave(self.group, dim=0)
        probs = torch.softmax(logits / temperature, dim=-1)
        tokens = torch.multinomial(probs.reshape(-1, self.vocab), 1, generator=self._gen).reshape(logits.shape[:2])
        top = logits.argmax(dim=-1)
        rewards = ((tokens == top).float().mean(dim=1) >= self.threshold).float()
        return logits, tokens, rewards.reshape(self.prompts, self.group)


def run(policy: MetaPolicy, steps: int = 40, seed: int = 0, on_step=None) -> list[dict]:
    """Drive ``policy`` for ``steps`` synthetic batches; returns the metrics of every step."""
    env = SyntheticRollouts(seed=seed)
    history = []
    for step in range(steps):
        value = policy.sample()
        logits, tokens, rewards = env.rollout(value)
        advantages = group_advantages(rewards).reshape(-1)
        metrics = policy.update_from_logits(logits, tokens, torch.ones_like(tokens), advantages,
                                            reward=float(rewards.mean()))
        metrics["reward"] = float(rewards.mean())
        history.append(metrics)
        if on_step is not None:
            on_step(step, metrics)
    return history
