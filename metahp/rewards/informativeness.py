"""Per-completion feedback that values learning, not reward now: how much each candidate's completions make
their GRPO group informative.

A group whose completions all got the same reward has zero advantage everywhere: no gradient. A completion
contributes to its group's gradient in proportion to |A_i|, how far its reward is from its group's mean in
standard deviations (0 for every row of a uniform group). With values drawn per completion:

    a_k = mean_{i : c_i = k} |A_i|  -  mean_i |A_i|        (0 for a candidate no completion used)

A candidate gains where its completions land away from their group-mates, in either direction: a hot value that
sometimes finds a success the group lacked, or a cool one that reliably succeeds where the others fail.
"""

from __future__ import annotations

import numpy as np

from metahp.rewards._per_completion import candidate_means
from metahp.rewards.base import Batch, Reward


class Informativeness(Reward):
    """Each candidate's mean |advantage| over its own completions (per="completion", or per="prompt")."""

    name = "informativeness"
    kind = "per_candidate"
    needs_rows = True
    per_group_signal = True  # |A| differs between groups: a value that lands on informative prompts gains

    def __call__(self, state: dict, batch: Batch) -> tuple[np.ndarray, dict]:
        signal = np.abs(np.asarray(batch.advantages, dtype=np.float64))
        return candidate_means(batch, signal, batch.candidates, self.name), state
