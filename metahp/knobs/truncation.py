"""Truncation knobs (top_p, top_k, min_p, and plug-ins: subclass ``TruncationKnob``): temperature first, then a
truncated support.

For a token with raw logits z, the sampler's distribution under candidate c is

    s = z / T                                   (the knob's fixed ``temperature``, applied first as in
                                                 transformers and vLLM)
    p_c(o) = exp(s_o) / sum_{v in S_c} exp(s_v)  if o in S_c, else 0

where the support S_c is cut by the candidate's rule. We compute it from the float32 probabilities
q = softmax(s) that the samplers themselves threshold, so the support is decided by the same arithmetic:

    log p_c(o) = (s_o - max s) + log q_max - log sum_{v in S_c} q_v        (q_max = 1 / sum exp(s - max s))

Cost: one softmax over the vocabulary per token, then one ``torch.topk`` of size M per token for ALL
candidates, and O(K log M) searches on the sorted slice. Each knob sizes M per token from what it can bound in
one pass (top_p: the mass profile, see ``nucleus_slice_sizes``; top_k: k_max); whether the largest support fit
is checked exactly, and M grows (x16, then the whole vocabulary, i.e. a full sort) only for the rows where it
did not. Nothing of size [N, V, K] is built; tokens are scored in cache-sized blocks (``base.in_blocks``).

Ties that a cut splits (only top_p can split a group of equal logits: it keeps a count of tokens, in the
order of an unstable sort) are scored by the marginal probability under a uniformly random tie order:
each tied token gets (kept / tied) * p. Every token the sampler could have drawn gets a finite likelihood.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable

import torch

from metahp.errors import ConfigError
from metahp.knobs.base import Knob, check_rows, in_blocks, sampler_class
from metahp.knobs.temperature import Temperature

# The smallest slice (a torch.topk of 64 costs about as much as one of 1 on a 49k row); a slice that turns out
# too small grows by _GROWTH up to the vocabulary.
FIRST_SLICE = 64
_GROWTH = 16
# Per-token slice sizes are rounded up to FIRST_SLICE * _SIZE_CLASS**i, so that a block of tokens needs only a
# few torch.topk calls (one per class) while no row selects more than _SIZE_CLASS times what it needs.
_SIZE_CLASS = 4
# Tie groups are counted over the full row for at most this many (row, candidate) pairs at a time.
_TIE_PAIRS_PER_PASS = 256


class RowStats:
    """Per-row quantities every truncation rule needs, computed once per chunk of tokens."""

    def __init__(self, logits: torch.Tensor, tokens: torch.Tensor, temperature: float):
        # Same op as transformers' TemperatureLogitsWarper (scores / temperature), so ties and cuts agree;
        # x / 1.0 == x exactly, so T = 1 skips a pass over the vocabulary.
        self.scaled = logits if temperature == 1.0 else logits / temperature
        self.probs = torch.softmax(self.scaled, dim=-1)
        self.row_max = self.scaled.amax(dim=-1)
        self.taken = self.scaled.gather(-1, tokens.unsqueeze(-1)).squeeze(-1)
        self.taken_prob = self.probs.gather(-1, tokens.unsqueeze(-1)).squeeze(-1)
        self.prob_max = self.probs.amax(dim=-1)
        # transformers' cumulative sums run in double on CPU; so do ours.
        self.prob_total = self.probs.sum(dim=-1, dtype=torch.float64)

    def log_prob(self, support_mass: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        """log p_c(o) from the support's probability mass [N, K] and the taken token's weight [N, K]."""
        base = (self.taken - self.row_max).double() + self.prob_max.double().log()
        return base.unsqueeze(1) - support_mass.log() + weight.log()


def device_constant(values: Iterable[float], dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """A 1-D tensor of Python numbers on ``device``, written by fills: ``torch.tensor(values, device=cuda)`` copies
    from pageable host memory, which synchronises the stream (waits for all queued work) on every call."""
    values = list(values)
    out = torch.empty(len(values), dtype=dtype, device=device)
    for i, value in enumerate(values):
        out[i].fill_(value)
    return out


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


def take_rows(values: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """``values[rows]`` for sorted distinct ``rows``, without a copy when they are all the rows."""
    return values if rows.numel() == values.shape[0] else values[rows]


def grow_slices(n_rows: int, n_candidates: int, vocab: int, first: int | torch.Tensor,
                solve: Callable[[torch.Tensor, int], tuple[torch.Tensor, torch.Tensor, torch.Tensor]],
                device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Run ``solve(rows, size) -> (mass [n, K], weight [n, K], resolved [n])`` on growing slice sizes.

    ``first`` is the first slice size, for all rows (int) or per row (long tensor [n_rows], best few distinct
    values, see ``size_classes``: rows of one size share one call). Rows whose largest support fit in the slice
    keep their result; the others are solved again with a slice _GROWTH times larger, and finally with the
    whole vocabulary, where every row is resolved. Everything lives on ``device``, the logits' device.
    """
    mass = torch.ones(n_rows, n_candidates, dtype=torch.float64, device=device)
    weight = torch.ones(n_rows, n_candidates, dtype=torch.float64, device=device)
    if isinstance(first, int):
        size = torch.full((n_rows,), first, dtype=torch.long, device=device)
    else:
        size = first.long().clone()
    size = size.clamp(1, vocab)
    rows = torch.arange(n_rows, device=device)
    # Device -> host syncs per round (1 round for most blocks, a few at worst): one to list the slice sizes, then
    # per size class one for its rows and one to count its resolved ones. None depends on the number of candidates.
    while rows.numel():
        pending, current = [], size[rows]
        for s in current.unique().tolist():
            group = rows[current == s]
            group_mass, group_weight, resolved = solve(group, s)
            if s >= vocab:
                resolved = torch.ones_like(resolved)
            n_done = int(resolved.sum())
            order = torch.argsort((~resolved).byte(), stable=True)  # the resolved rows first, each part in order
            done, left = order[:n_done], order[n_done:]
            mass[group[done]] = group_mass[done]
            weight[group[done]] = group_weight[done]
            pending.append(group[left])
            size[group] = vocab if s * _GROWTH * 2 > vocab else s * _GROWTH
        rows = torch.cat(pending).sort().values
    return mass, weight


def size_classes(sizes: torch.Tensor, vocab: int, smallest: int) -> torch.Tensor:
    """Round each size up to ``smallest * _SIZE_CLASS**i``, and to the whole vocabulary where that is past half
    of it (a selection that large costs about a full sort): a block of tokens then needs few torch.topk calls."""
    smallest = max(1, smallest)
    steps = (sizes.clamp(min=smallest).double() / smallest).log() / math.log(_SIZE_CLASS)
    rounded = (smallest * _SIZE_CLASS ** steps.sub(1e-9).ceil().clamp(min=0)).long()
    return torch.where(rounded * 2 > vocab, vocab, rounded).clamp(1, vocab)


def nucleus_slice_sizes(probs: torch.Tensor, cut: float) -> torch.Tensor:
    """Per row, a number M of top tokens outside which every token is provably removed by a top_p cut (a
    token is removed when its ascending cumulative sum C_j <= ``cut`` = 1 - p): a slice of the M largest then
    holds the whole support, found in one selection instead of growing ones.

    Bucket the probabilities by their float32 exponent b (q in [2^b, 2^(b+1))) and let U_b be the mass of the
    buckets <= b (one pass and one scatter). Every token ranked at or below a token j of bucket b has q <= q_j,
    so lies in a bucket <= b, hence C_j <= U_b: if U_b <= cut, all of bucket b is removed. U is non-decreasing,
    so the removed buckets are 0 .. R - 1 with R = #{b : U_b <= cut}, and M = #{tokens of exponent >= R}. The
    tokens of exponent >= R are exactly the M largest (q is monotone in the logit, and tied logits share a
    bucket). U is summed in float32, so the test uses cut * (1 - 1e-3) to absorb its rounding. M only sizes
    the slice: whether the support fit is still checked exactly (and the slice grown where it did not).
    """
    bits = probs.contiguous().view(torch.int32)
    exponent = ((bits >> 23) & 0xFF).long()  # biased exponent: 0 for 0 and subnormals, sign bit ignored
    mass = torch.zeros(probs.shape[0], 256, dtype=probs.dtype, device=probs.device).scatter_add_(1, exponent, probs)
    removed = (mass.cumsum(1) <= cut * (1 - 1e-3)).sum(1, keepdim=True)
    return (exponent >= removed).sum(1)


def tie_counts(scaled: torch.Tensor, rows: torch.Tensor, bounds: torch.Tensor) -> torch.Tensor:
    """For each (row, value) pair, how many tokens of the full row have exactly that scaled logit."""
    out = torch.empty(rows.numel(), dtype=torch.float64, device=scaled.device)
    for start in range(0, rows.numel(), _TIE_PAIRS_PER_PASS):
        stop = start + _TIE_PAIRS_PER_PASS
        out[start:stop] = (scaled[rows[start:stop]] == bounds[start:stop, None]).sum(-1).double()
    return out


class TruncationKnob(Knob):
    """A knob that truncates the temperature-scaled distribution; subclasses define the cut (the base of every
    truncation knob, plug-ins included: ``from metahp.knobs import TruncationKnob``).

    A subclass names the sampler's warper in ``reference_sampler`` and implements ``support`` (the fast path:
    one softmax per token for every candidate), or overrides ``token_logprobs`` directly; ``warper(value)`` is
    the cut alone, ``reference_warper(value)`` the whole reference (the temperature, the cut, the epsilon mixture).

    Args:
        values: candidate grid (``default_values`` when None).
        temperature: the fixed temperature applied before the cut (the rollouts' temperature).
        epsilon: when > 0, the likelihood is that of (1 - epsilon) * truncated + epsilon * untruncated (at the
            same temperature): always finite, for users who want soft scores. 0 (default): exact, -inf for a
            token outside a candidate's support ("this value could not have produced this token").
    """

    role = "truncates"

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

    def conditioned(self, given: dict | None) -> TruncationKnob:
        """Scored after the batch's temperature (given["temperature"]; as constructed when it is not given)."""
        temperature = (given or {}).get("temperature")
        if temperature is None or float(temperature) == self.temperature:
            return self
        return type(self)(self.values, temperature=float(temperature), epsilon=self.epsilon)

    def support(self, stats: RowStats) -> tuple[torch.Tensor, torch.Tensor]:
        """Per token and candidate: the support's probability mass (double, > 0) and the taken token's weight
        (1 inside the support, 0 outside, kept/tied for a tie group split by the cut)."""
        raise NotImplementedError

    def warper(self, value):
        """The sampler's cut alone for one candidate (``reference_sampler`` built with the value, as the base
        ``Knob.reference_warper``); override it when the warper takes other arguments."""
        return super().reference_warper(value)

    def reference_warper(self, value):
        """What this knob's likelihoods reproduce for one candidate: transformers' TemperatureLogitsWarper at the
        fixed ``temperature`` (left out at 1: x / 1 == x), then ``warper(value)``; with ``epsilon`` > 0, the
        mixture log((1 - epsilon) p_truncated + epsilon p_untruncated) of the two (float64 scores)."""
        from transformers import LogitsProcessorList

        scale = [] if self.temperature == 1.0 else [sampler_class(Temperature.reference_sampler)(self.temperature)]
        truncated = LogitsProcessorList([*scale, self.warper(value)])
        return truncated if self.epsilon == 0 else _EpsilonMixture(truncated, LogitsProcessorList(scale), self.epsilon)

    def token_logprobs(self, logits: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        check_rows(self.name, logits)
        with torch.no_grad():
            return in_blocks(self._block_logprobs, logits.float(), tokens)

    def _block_logprobs(self, logits: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        stats = RowStats(logits, tokens, self.temperature)
        mass, weight = self.support(stats)
        out = stats.log_prob(mass, weight)
        if self.epsilon > 0:
            untruncated = stats.log_prob(stats.prob_total.unsqueeze(1), stats.prob_total.new_ones(1, 1))
            out = torch.logaddexp(out + math.log1p(-self.epsilon), untruncated + math.log(self.epsilon))
        return out.float()


def _check_number(knob, what: str, value, fix: str, ok) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or not ok(value):
        raise ConfigError(f"{knob.name}: {what}={value!r} is invalid; pass {fix}.")
    return float(value)


class _EpsilonMixture:
    """Scores whose softmax is (1 - epsilon) * softmax(truncated(scores)) + epsilon * softmax(untruncated(scores))."""

    def __init__(self, truncated, untruncated, epsilon: float):
        self.truncated, self.untruncated, self.epsilon = truncated, untruncated, epsilon

    def __call__(self, input_ids, scores: torch.Tensor) -> torch.Tensor:
        truncated = torch.log_softmax(self.truncated(input_ids, scores.clone()).double(), dim=-1)
        untruncated = torch.log_softmax(self.untruncated(input_ids, scores.clone()).double(), dim=-1)
        return torch.logaddexp(truncated + math.log1p(-self.epsilon), untruncated + math.log(self.epsilon))


def _naive_token_logprobs(knob: TruncationKnob, logits: torch.Tensor, tokens: torch.Tensor,
                          average_ties: bool = True) -> torch.Tensor:
    """Reference: transformers' own processors (``knob.reference_warper``: temperature, then the knob's warper),
    one candidate at a time.

    With ``average_ties`` the probability is averaged over tokens of equal scaled logit, i.e. scored under a
    uniformly random tie order (a no-op unless the cut splits a tie group). Slow: K full passes, K sorts
    for top_p. For tests and benchmarks only.
    """
    logits = logits.float()
    scaled = logits / knob.temperature
    out = []
    for value in knob.values:
        logp = torch.log_softmax(knob.reference_warper(value)(None, logits.clone()).double(), dim=-1)
        if average_ties:
            logp = _average_over_ties(logp, scaled)
        out.append(logp.gather(-1, tokens.unsqueeze(-1)).squeeze(-1))
    return torch.stack(out, dim=1).float()


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
