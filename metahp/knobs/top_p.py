"""Top-p (nucleus) sampling: keep the most probable tokens until their mass reaches p."""

from __future__ import annotations

import numpy as np
import torch

from metahp.errors import ConfigError
from metahp.knobs.truncation import (
    FIRST_SLICE,
    RowStats,
    TruncationKnob,
    count_at_least,
    device_constant,
    grow_slices,
    nucleus_slice_sizes,
    size_classes,
    sorted_slice,
    take_rows,
    tie_counts,
)


class TopP(TruncationKnob):
    """Nucleus sampling, p in (0, 1], after a fixed ``temperature``; transformers' TopPLogitsWarper rule.

    With q = softmax(z / T) sorted ascending and C_j = q_1 + ... + q_j (float32 sums accumulated in double),
    token j is removed when C_j <= 1 - p; the most probable token is always kept (min_tokens_to_keep = 1).
    Equivalently the support is the top-ranked prefix whose tokens each have C_j > 1 - p. p = 1 keeps every
    token of non-zero float32 probability. Tokens outside the support get log-likelihood -inf (or the
    epsilon mixture's, see TruncationKnob). A tie group split by the cut is scored by its marginal
    probability under a uniformly random tie order (transformers' sort is unstable: the kept subset is
    arbitrary). All candidates share one softmax and one sorted slice per token, sized from the token's mass
    profile so that it holds the loosest candidate's support (``nucleus_slice_sizes``).

    >>> TopP([1.0, 0.9], temperature=0.7)
    TopP([0.9, 1.0], temperature=0.7)
    """

    name = "top_p"
    off_value = 1.0
    default_values = (0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 1.0)
    reference_sampler = "transformers.TopPLogitsWarper"

    @classmethod
    def is_off(cls, value) -> bool:
        return value is None or value >= 1.0

    @classmethod
    def backend_value(cls, value):
        return None if value is None else float(value)

    def check_value(self, value: float) -> float:
        value = float(value)
        if not 0 < value <= 1:
            raise ConfigError(f"top_p: candidate {value} is outside (0, 1]; use a probability mass such as 0.9 "
                              f"(1.0 = no truncation).")
        return value

    def support(self, stats: RowStats) -> tuple[torch.Tensor, torch.Tensor]:
        n, vocab = stats.probs.shape
        # The same float32 thresholds transformers compares its cumulative sums with, rounded on the host so that
        # which candidates need a sort is known without reading the device. A cut of 0 (p = 1) keeps every token
        # of non-zero probability: no sort needed; the values ascend, so that candidate is the last one.
        cuts = [float(np.float32(1 - p)) for p in self.values]
        n_partial = sum(c != 0 for c in cuts)
        mass = stats.prob_total.unsqueeze(1).repeat(1, len(self))
        weight = (stats.taken_prob > 0).double().unsqueeze(1).repeat(1, len(self))
        if n_partial == 0:
            return mass, weight
        cut = device_constant(cuts[:n_partial], torch.float32, stats.probs.device)
        loosest = min(cuts[:n_partial])  # exact in float32: compared with float32 masses as before

        def solve(rows: torch.Tensor, size: int):
            values, index = sorted_slice(take_rows(stats.scaled, rows), size)
            probs = take_rows(stats.probs, rows).gather(1, index).double()
            inclusive = probs.cumsum(1)
            total = stats.prob_total[rows].unsqueeze(1)
            # Mass at or below each rank (transformers' ascending cumulative sum); exactly 0 on a zero tail.
            below = torch.where(probs == 0, 0.0, total - inclusive + probs).float()
            beyond = torch.where(probs[:, -1] == 0, 0.0, total[:, 0] - inclusive[:, -1]).float()
            resolved = (beyond <= loosest) | (size >= vocab)
            kept = count_at_least(below, cut.expand(len(rows), -1), strict=True).clamp(min=1)
            row_mass = inclusive.gather(1, kept - 1)
            boundary = values.gather(1, kept - 1)
            taken = stats.taken[rows].unsqueeze(1)
            row_weight = (taken > boundary).double()
            tied = (taken == boundary).nonzero()
            if tied.numel():
                # The taken token has the boundary's logit (most often it IS the boundary token): it is kept
                # with probability (kept - above) / tied under a random order of its tie group.
                r, c = tied[:, 0], tied[:, 1]
                bound = boundary[r, c].unsqueeze(1)
                above = count_at_least(values[r], bound, strict=True).squeeze(1)
                through = count_at_least(values[r], bound, strict=False).squeeze(1)
                in_group = (through - above).double()
                # A group that reaches the end of the slice may go on outside it: count it over the whole row.
                open_ended = ((through == size) & (size < vocab)).nonzero().squeeze(1)
                if open_ended.numel():
                    in_group[open_ended] = tie_counts(stats.scaled, rows[r[open_ended]], bound[open_ended, 0])
                row_weight[r, c] = (kept[r, c] - above).double() / in_group
            return row_mass, row_weight, resolved

        first = size_classes(nucleus_slice_sizes(stats.probs, loosest), vocab, FIRST_SLICE)
        part_mass, part_weight = grow_slices(n, n_partial, vocab, first, solve, stats.probs.device)
        mass[:, :n_partial] = part_mass
        weight[:, :n_partial] = part_weight
        return mass, weight
