"""Min-p sampling: keep the tokens whose probability is at least min_p times the largest."""

from __future__ import annotations

import torch

from metahp.errors import ConfigError
from metahp.knobs.truncation import FIRST_SLICE, RowStats, TruncationKnob, count_at_least, grow_slices, sorted_slice


class MinP(TruncationKnob):
    """Min-p sampling, min_p in [0, 1), after a fixed ``temperature``; transformers' MinPLogitsWarper rule.

    With q = softmax(z / T) in float32, a token is kept when q_v >= min_p * max_u q_u (the product in float32,
    as transformers computes it); the most probable token always qualifies, and min_p = 0 keeps every token.
    Tokens outside the support get log-likelihood -inf (or the epsilon mixture's, see TruncationKnob). One
    softmax and one sorted slice of the probabilities per token serve every candidate.

    >>> MinP([0.1, 0.0]).values
    (0.0, 0.1)
    """

    name = "min_p"
    off_value = 0.0
    default_values = (0.0, 0.01, 0.02, 0.05, 0.1, 0.2)
    reference_sampler = "transformers.MinPLogitsWarper"

    @classmethod
    def backend_value(cls, value):
        return None if value is None else float(value) or None  # transformers adds a MinP warper unless None

    def check_value(self, value: float) -> float:
        value = float(value)
        if not 0 <= value < 1:
            raise ConfigError(f"min_p: candidate {value} is outside [0, 1); use a fraction of the top "
                              f"probability such as 0.05 (0 = no truncation).")
        return value

    def support(self, stats: RowStats) -> tuple[torch.Tensor, torch.Tensor]:
        n, vocab = stats.probs.shape
        n_full = sum(v == 0 for v in self.values)  # min_p = 0 keeps every token; the values ascend: it comes first
        mass = stats.prob_total.unsqueeze(1).repeat(1, len(self))
        weight = torch.ones(n, len(self), dtype=torch.float64, device=stats.probs.device)
        if n_full == len(self):
            return mass, weight
        # Same float32 products as transformers' `min_p * top_probs`.
        bound = torch.stack([v * stats.prob_max for v in self.values[n_full:]], dim=1)  # [N, K']
        loosest = bound[:, 0]  # values are sorted: the smallest min_p keeps the most tokens

        def solve(rows: torch.Tensor, size: int):
            probs, _ = sorted_slice(stats.probs[rows], size)
            resolved = (probs[:, -1] < loosest[rows]) | (size >= vocab)
            kept = count_at_least(probs, bound[rows], strict=False)
            row_mass = probs.double().cumsum(1).gather(1, kept - 1)
            row_weight = (stats.taken_prob[rows].unsqueeze(1) >= bound[rows]).double()
            return row_mass, row_weight, resolved

        part_mass, part_weight = grow_slices(n, len(self) - n_full, vocab, FIRST_SLICE, solve, stats.probs.device)
        mass[:, n_full:] = part_mass
        weight[:, n_full:] = part_weight
        return mass, weight
