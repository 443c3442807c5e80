"""The meta-policy loop by hand, on synthetic rollouts (no model): sample -> roll out -> update.

Run:  .venv/bin/python examples/meta_policy_by_hand.py
"""

import numpy as np
import torch

import metahp
from metahp.lab.grpo import group_advantages
from metahp.lab.synthetic import SyntheticRollouts

policy = metahp.meta_policy(knob="temperature", updater="tampo", seed=0)  # TAMPO exactly
env = SyntheticRollouts(seed=0)  # success is likelier when sampling cool

for step in range(30):
    temperature = policy.sample()  # 1. pick this batch's temperature
    logits, tokens, rewards = env.rollout(temperature)  # 2. roll out the whole batch at it
    advantages = group_advantages(rewards).reshape(-1)  # 3. (the LLM's GRPO update would go here)
    policy.update_from_logits(logits, tokens, torch.ones_like(tokens), advantages)  # 4. reuse the rollouts
    if step % 5 == 4:
        print(f"step {step + 1:2d}  T={temperature:.1f}  reward={rewards.mean():.2f}  "
              f"E[T]={policy.expected_value:.2f}  probs={np.round(policy.probs, 2)}")
