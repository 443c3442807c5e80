"""Per-completion feedback from the immediate reward: each candidate's mean GRPO advantage.

With values drawn per completion, the completions of one GRPO group were sampled at different candidates, and
their advantages A_i = (r_i - mean_group r) / std_group r compare them on the same prompt:

    a_k = mean_{i : c_i = k} A_i  -  mean_i A_i          (0 for a candidate no completion used)

It rewards the candidate whose completions scored better now: the known-myopic baseline (cool values win it
even where hot ones teach more), kept to compare the other signals with.
"""

from __future__ import annotations

import numpy as np

from metahp.rewards._per_completion import candidate_means
from metahp.rewards.base import Batch, Reward


class WithinGroupAdvantage(Reward):
    """Each candidate's mean within-group advantage over its own completions (per="completion")."""

    name = "within_group_advantage"
    kind = "per_candidate"
    needs_rows = True

    def __call__(self, state: dict, batch: Batch) -> tuple[np.ndarray, dict]:
        advantages = np.asarray(batch.advantages, dtype=np.float64)
        return candidate_means(batch, advantages, batch.candidates, self.name), state
