"""Shared machinery of the truncation knobs (top_p, top_k, min_p): temperature first, then a truncated support.

For a token with raw logits z, the sampler's distribution under candidate c is

    s = z / T                                   (the knob's fixed ``temperature``, applied first as in
                                                 transformers and vLLM)
    p_c(o) = exp(s_o) / sum_{v in S_c} exp(s_v)  if o in S_c, else 0

where the support S_c is cut by the candidate's rule. We compute it from the float32 probabilities
q = softmax(s) that the samplers themselves threshold, so the support is decided by the same arithmetic:

    log p_c(o) = (s_o - max s) + log q_max - log sum_{v in S_c} q_v        (q_max = 1 / sum exp(s - max s))

Cost: one softmax over the vocabulary per token, then one ``torch.topk`` of size M per token for ALL
candidates, and O(K log M) searches on the sorted slice. M starts small and grows (x16, then the whole
vocabulary, i.e. a full sort) only for the rows whose largest support did not fit. Nothing of size
[N, V, K] is built.

Ties that a cut splits (only top_p can split a group of equal logits: it keeps a count of tokens, in the
order of an unstable sort) are scored by the marginal probability under a uniformly random tie order:
each tied token gets (kept / tied) * p. Every token the sampler could have drawn gets a finite likelihood.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable

import torch

from metahp.errors import ConfigError
from metahp.knobs.base import Knob

# The first slice size for knobs that cannot size it in advance; it grows by _GROWTH up to the vocabulary.
FIRST_SLICE = 64
_GROWTH = 16
# Tie groups are counted over the full row for at most this many (row, candidate) pairs at a time.
_TIE_PAIRS_PER_PASS = 256


class RowStats:
    """Per-row quantities every truncation rule needs, computed once per chunk of tokens."""

    def __init__(self, logits: torch.Tensor, tokens: torch.Tensor, temperature: float):
        # Same op as transformers' TemperatureLogitsWarper (scores / temperature), so ties and cuts agree.
        self.scaled = logits / temperature
        self.probs = torch.softmax(self.scaled, dim=-1)
        self.row_max = self.scaled.max(dim=-1).values
        self.taken = self.scaled.gather(-1, tokens.unsqueeze(-1)).squeeze(-1)
        self.taken_prob = self.probs.gather(-1, tokens.unsqueeze(-1)).squeeze(-1)
        self.prob_max = self.probs.max(dim=-1).values
        # transformers' cumulative sums run in double on CPU; so do ours.
        self.prob_total = self.probs.sum(dim=-1, dtype=torch.float64)

    def log_prob(self, support_mass: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        """log p_c(o) from the support's probability mass [N, K] and the taken token's weight [N, K]."""
        base = (self.taken - self.row_max).double() + self.prob_max.double().log()
        return base.unsqueeze(1) - support_mass.log() + weight.log()


def sorted_slice(values: torch.Tensor, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``size`` largest entries of each row, descending, with their indices (a full sort at size = V)."""
    if size >= values.shape[-1]:
        return torch.sort(values, dim=-1, descending=True)
    return torch.topk(values, size, dim=-1, sorted=True)


def count_at_least(descending: torch.Tensor, bounds: torch.Tensor, strict: bool) -> torch.Tensor:
    """Per row, how many entries of a descending row are >= (or > when strict) each bound: [n, M], [n, K] -> [n, K]."""
    ascending = descending.flip(-1).contiguous()
    # searchsorted counts entries < bound (left) or <= bound (right) in the ascending row.
    below = torch.searchsorted(ascending, bounds.contiguous(), right=strict)
    return descending.shape[-1] - below


def grow_slices(n_rows: int, n_candidates: int, vocab: int, first: int,
                solve: Callable[[torch.Tensor, int], tuple[torch.Tensor, torch.Tensor, torch.Tensor]]
                ) -> tuple[torch.Tensor, torch.Tensor]:
    """Run ``solve(rows, size) -> (mass [n, K], weight [n, K], resolved [n])`` on growing slice sizes.

    Rows whose largest support fit in the slice keep their result; the others are solved again with a
    slice _GROWTH times larger, and finally with the whole vocabulary, where every row is resolved.
    """
    mass = torch.ones(n_rows, n_candidates, dtype=torch.float64)
    weight = torch.ones(n_rows, n_candidates, dtype=torch.float64)
    rows = torch.arange(n_rows)
    size = max(1, min(first, vocab))
    while rows.numel():
        row_mass, row_weight, resolved = solve(rows, size)
        if size >= vocab:
            resolved = torch.ones_like(resolved)
        mass[rows[resolved]] = row_mass[resolved]
        weight[rows[resolved]] = row_weight[resolved]
        rows = rows[~resolved]
        size = vocab if size * _GROWTH * 2 > vocab else size * _GROWTH
    return mass, weight


def tie_counts(scaled: torch.Tensor, rows: torch.Tensor, bounds: torch.Tensor) -> torch.Tensor:
    """For each (row, value) pair, how many tokens of the full row have exactly that scaled logit."""
    out = torch.empty(rows.numel(), dtype=torch.float64)
    for start in range(0, rows.numel(), _TIE_PAIRS_PER_PASS):
        stop = start + _TIE_PAIRS_PER_PASS
        out[start:stop] = (scaled[rows[start:stop]] == bounds[start:stop, None]).sum(-1).double()
    return out


class TruncationKnob(Knob):
    """A knob that truncates the temperature-scaled distribution; subclasses define the cut.

    Args:
        values: candidate grid (``default_values`` when None).
        temperature: the fixed temperature applied before the cut (the rollouts' temperature).
        epsilon: when > 0, the likelihood is that of (1 - epsilon) * truncated + epsilon * untruncated (at the
            same temperature): always finite, for users who want soft scores. 0 (default): exact, -inf for a
            token outside a candidate's support ("this value could not have produced this token").
    """

    def __init__(self, values: Iterable[float] | None = None, *, temperature: float = 1.0, epsilon: float = 0.0):
        self.temperature = _check_number(self, "temperature", temperature, "a positive number such as 1.0",
                                         lambda t: t > 0)
        self.epsilon = _check_number(self, "epsilon", epsilon, "a number in [0, 1) such as 0.01 (0 = exact)",
                                     lambda e: 0 <= e < 1)
        super().__init__(values)

    def __repr__(self) -> str:
        extra = "" if self.temperature == 1.0 else f", temperature={self.temperature}"
        extra += "" if self.epsilon == 0.0 else f", epsilon={self.epsilon}"
        return f"{type(self).__name__}({list(self.values)}{extra})"

    def support(self, stats: RowStats) -> tuple[torch.Tensor, torch.Tensor]:
        """Per token and candidate: the support's probability mass (double, > 0) and the taken token's weight
        (1 inside the support, 0 outside, kept/tied for a tie group split by the cut)."""
        raise NotImplementedError

    def warper(self, value):
        """transformers' logits processor for one candidate (the naive reference and the tests use it)."""
        raise NotImplementedError

    def token_logprobs(self, logits: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            stats = RowStats(logits.float(), tokens, self.temperature)
            mass, weight = self.support(stats)
            out = stats.log_prob(mass, weight)
            if self.epsilon > 0:
                untruncated = stats.log_prob(stats.prob_total.unsqueeze(1), torch.ones(1, 1, dtype=torch.float64))
                out = torch.logaddexp(out + math.log1p(-self.epsilon), untruncated + math.log(self.epsilon))
        return out.float()


def _check_number(knob, what: str, value, fix: str, ok) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or not ok(value):
        raise ConfigError(f"{knob.name}: {what}={value!r} is invalid; pass {fix}.")
    return float(value)


def _naive_token_logprobs(knob: TruncationKnob, logits: torch.Tensor, tokens: torch.Tensor,
                          average_ties: bool = True) -> torch.Tensor:
    """Reference: transformers' own processors (temperature, then the knob's warper), one candidate at a time.

    With ``average_ties`` the probability is averaged over tokens of equal scaled logit, i.e. scored under a
    uniformly random tie order (a no-op unless the cut splits a tie group). Slow: K full passes, K sorts
    for top_p. For tests and benchmarks only.
    """
    from transformers import LogitsProcessorList, TemperatureLogitsWarper

    logits = logits.float()
    scaled = logits / knob.temperature
    out = []
    for value in knob.values:
        processors = LogitsProcessorList([TemperatureLogitsWarper(float(knob.temperature)), knob.warper(value)])
        logp = torch.log_softmax(processors(None, logits.clone()).double(), dim=-1)
        if average_ties:
            logp = _average_over_ties(logp, scaled)
        out.append(logp.gather(-1, tokens.unsqueeze(-1)).squeeze(-1))
    out = torch.stack(out, dim=1)
    if knob.epsilon > 0:
        untruncated = torch.log_softmax(scaled.double(), dim=-1).gather(-1, tokens.unsqueeze(-1))
        out = torch.logaddexp(out + math.log1p(-knob.epsilon), untruncated + math.log(knob.epsilon))
    return out.float()


def _average_over_ties(logp: torch.Tensor, scaled: torch.Tensor) -> torch.Tensor:
    averaged = torch.empty_like(logp)
    for row in range(logp.shape[0]):
        _, group = torch.unique(scaled[row], return_inverse=True)
        n_groups = int(group.max()) + 1
        total = torch.zeros(n_groups, dtype=torch.float64).index_add_(0, group, logp[row].exp())
        size = torch.zeros(n_groups, dtype=torch.float64).index_add_(0, group, torch.ones_like(logp[row]))
        mean = (total / size)[group]
        # Untied tokens keep their exact log-probability (exp/log would round it).
        averaged[row] = torch.where(size[group] > 1, mean.log(), logp[row])
    return averaged
