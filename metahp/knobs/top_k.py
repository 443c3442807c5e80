"""Top-k sampling: keep the k most probable tokens (and every token tied with the k-th)."""

from __future__ import annotations

import torch

from metahp.errors import ConfigError
from metahp.knobs.truncation import (
    RowStats,
    TruncationKnob,
    count_at_least,
    device_constant,
    grow_slices,
    sorted_slice,
)


class TopK(TruncationKnob):
    """Top-k sampling, k an integer >= 1, after a fixed ``temperature``; transformers' TopKLogitsWarper rule.

    A token is kept when its scaled logit is >= the k-th largest (ties with the k-th are all kept, so the
    support can hold more than k tokens); k is clamped to the vocabulary size. Tokens outside the support
    get log-likelihood -inf (or the epsilon mixture's, see TruncationKnob). One softmax and one top-(k_max + 1)
    slice per token serve every candidate.

    >>> TopK([50, 5]).values
    (5, 50)
    """

    name = "top_k"
    off_value = 0
    default_values = (5, 10, 20, 50, 100, 200, 500)
    reference_sampler = "transformers.TopKLogitsWarper"

    @classmethod
    def backend_value(cls, value):
        return None if value is None else int(value)  # generate disables top_k with 0 (its default is 50)

    def check_value(self, value: float) -> int:
        if float(value) != int(value) or value < 1:
            raise ConfigError(f"top_k: candidate {value} is not an integer >= 1; use a token count such as 50.")
        return int(value)

    def support(self, stats: RowStats) -> tuple[torch.Tensor, torch.Tensor]:
        n, vocab = stats.probs.shape
        ks = [min(int(v), vocab) for v in self.values]
        n_partial = sum(k < vocab for k in ks)  # the values ascend: those that keep every token come last
        mass = stats.prob_total.unsqueeze(1).repeat(1, len(self))
        weight = torch.ones(n, len(self), dtype=torch.float64, device=stats.probs.device)
        if n_partial == 0:
            return mass, weight
        k = device_constant(ks[:n_partial], torch.long, stats.probs.device)
        largest = max(ks[:n_partial])

        def solve(rows: torch.Tensor, size: int):
            values, index = sorted_slice(stats.scaled[rows], size)
            bound = values[:, k - 1]  # the k-th largest scaled logit, per candidate
            # Ties with the loosest bound may continue past the slice unless a smaller value ends it.
            resolved = (values[:, largest - 1] > values[:, -1]) | (size >= vocab)
            kept = count_at_least(values, bound, strict=False)
            row_mass = stats.probs[rows].gather(1, index).double().cumsum(1).gather(1, kept - 1)
            row_weight = (stats.taken[rows].unsqueeze(1) >= bound).double()
            return row_mass, row_weight, resolved

        part_mass, part_weight = grow_slices(n, n_partial, vocab, largest + 1, solve, stats.probs.device)
        mass[:, :n_partial] = part_mass
        weight[:, :n_partial] = part_weight
        return mass, weight
