"""Truncation knobs (top_p, top_k, min_p): exact truncated-support likelihoods, checked against transformers."""

import importlib
import importlib.util
from contextlib import nullcontext
from pathlib import Path
from unittest import mock

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from scipy.stats import chisquare
from transformers import LogitsProcessorList, TemperatureLogitsWarper

import metahp
from metahp import ConfigError
from metahp.knobs import KNOBS, MinP, TopK, TopP, base, make_knob, truncation
from metahp.knobs.truncation import _naive_token_logprobs
from metahp.testing import check_knob

# (knob class, a grid, a temperature) for each truncation knob; the grids include the no-truncation ends.
CASES = [
    (TopP, (0.3, 0.5, 0.8, 0.95, 1.0), 0.8),
    (TopK, (1, 2, 3, 7, 20, 100), 1.3),
    (MinP, (0.0, 0.02, 0.1, 0.3, 0.9), 0.7),
]
IDS = [cls.name for cls, _, _ in CASES]


def sample_with_transformers(knob, value, logits, n, seed):
    """n tokens per row drawn the way transformers' generate does: temperature, the warper, softmax, multinomial."""
    processors = LogitsProcessorList([TemperatureLogitsWarper(float(knob.temperature)), knob.warper(value)])
    probs = torch.softmax(processors(None, logits.clone()), dim=-1)
    return torch.multinomial(probs, n, replacement=True, generator=torch.Generator().manual_seed(seed))


def random_logits(rows, vocab, seed, ties=False):
    z = torch.randn(rows, vocab, generator=torch.Generator().manual_seed(seed)) * 3
    return z.round() if ties else z  # rounding to integers makes many exact ties


@pytest.mark.parametrize("cls, values, temperature", CASES, ids=IDS)
@pytest.mark.parametrize("ties", [False, True])
def test_tokens_sampled_by_transformers_are_possible(cls, values, temperature, ties):
    knob = cls(values, temperature=temperature)
    logits = random_logits(40, 60, seed=1, ties=ties)
    for k, value in enumerate(knob.values):
        tokens = sample_with_transformers(knob, value, logits, 8, seed=k)  # [40, 8]
        rows = logits.repeat_interleave(8, dim=0)
        logp = knob.token_logprobs(rows, tokens.reshape(-1))[:, k]
        assert torch.isfinite(logp).all(), f"{knob} value {value}: a sampled token got -inf"


@pytest.mark.parametrize("cls, values, temperature", CASES, ids=IDS)
@pytest.mark.parametrize("ties", [False, True])
@pytest.mark.parametrize("epsilon", [0.0, 0.05])
def test_matches_transformers_processors(cls, values, temperature, ties, epsilon):
    knob = cls(values, temperature=temperature, epsilon=epsilon)
    logits = random_logits(200, 50, seed=2, ties=ties)
    logits[:5, :10] = float("-inf")  # tokens banned by an earlier processor
    tokens = torch.randint(50, (200,), generator=torch.Generator().manual_seed(3))
    got, want = knob.token_logprobs(logits, tokens), _naive_token_logprobs(knob, logits, tokens)
    assert torch.equal(torch.isfinite(got), torch.isfinite(want))
    finite = torch.isfinite(want)
    assert torch.allclose(got[finite], want[finite], atol=1e-5)
    assert (got == float("-inf")).any() == (epsilon == 0)  # exact knobs do see impossible tokens here


def fits(knob, logits_row, samples):
    """Whether the tokens sampled from one row are consistent with exp(token_logprobs) (chi-square, p > 1e-3)."""
    vocab = logits_row.numel()
    logp = knob.token_logprobs(logits_row.expand(vocab, -1), torch.arange(vocab))[:, 0]
    expected = logp.double().exp().numpy() * len(samples)
    observed = np.bincount(samples.numpy(), minlength=vocab)
    if (observed[expected == 0] > 0).any():
        return False  # a sampled token was called impossible
    big = expected >= 5  # pool the sparse cells so the chi-square approximation holds
    obs = np.append(observed[big], observed[~big].sum())
    exp = np.append(expected[big], expected[~big].sum())
    if exp[-1] == 0:
        obs, exp = obs[:-1], exp[:-1]
    return chisquare(obs, exp * obs.sum() / exp.sum()).pvalue > 1e-3


@pytest.mark.parametrize(
    "cls, value, temperature, wrong",
    [(TopP, 0.8, 1.0, {"value": 0.7}), (TopP, 0.8, 1.0, {"temperature": 0.8}),
     (TopK, 6, 1.2, {"value": 5}), (TopK, 6, 1.2, {"temperature": 1.0}),
     (MinP, 0.1, 0.9, {"value": 0.2}), (MinP, 0.1, 0.9, {"temperature": 1.1})],
)
def test_sampling_frequencies_match_likelihoods_and_a_wrong_value_is_caught(cls, value, temperature, wrong):
    logits_row = random_logits(1, 40, seed=5)[0] * 0.6
    knob = cls([value], temperature=temperature)
    samples = sample_with_transformers(knob, value, logits_row.unsqueeze(0), 20_000, seed=6)[0]
    assert fits(knob, logits_row, samples)
    # The same test rejects the likelihoods of a neighbouring value, so it cannot pass by accident.
    other = cls([wrong.get("value", value)], temperature=wrong.get("temperature", temperature))
    if "value" in wrong:  # the wrong value must really cut elsewhere on this row, or the check proves nothing
        assert support_size(other, logits_row) != support_size(knob, logits_row)
    assert not fits(other, logits_row, samples)


def support_size(knob, logits_row):
    vocab = logits_row.numel()
    return int(torch.isfinite(knob.token_logprobs(logits_row.expand(vocab, -1), torch.arange(vocab))).sum())


@st.composite
def truncation_inputs(draw):
    cls = draw(st.sampled_from([TopP, TopK, MinP]))
    vocab = draw(st.integers(1, 40))
    rows = draw(st.integers(1, 6))
    levels = draw(st.sampled_from([None, 1, 2, 4]))  # None: continuous logits; else a few values, many ties
    scale = draw(st.sampled_from([0.0, 0.5, 3.0, 20.0]))
    z = np.array(draw(st.lists(st.floats(-3, 3, width=32), min_size=rows * vocab, max_size=rows * vocab)))
    z = np.round(z * levels) / levels if levels else z
    logits = torch.tensor(z, dtype=torch.float32).reshape(rows, vocab) * scale
    if cls is TopP:
        grid = st.sampled_from([0.01, 0.1, 0.25, 0.3, 0.5, 0.7, 0.9, 0.95, 0.99, 1.0])
    elif cls is TopK:
        grid = st.integers(1, 45)
    else:
        grid = st.sampled_from([0.0, 0.01, 0.05, 0.1, 0.3, 0.5, 0.8, 0.99])
    values = draw(st.lists(grid, min_size=1, max_size=5, unique=True))
    temperature = draw(st.sampled_from([0.3, 0.7, 1.0, 1.7]))
    tokens = torch.tensor(draw(st.lists(st.integers(0, vocab - 1), min_size=rows, max_size=rows)))
    return cls(values, temperature=temperature), logits, tokens


@given(truncation_inputs(), st.sampled_from([1, 2, 64]), st.sampled_from([2, 16]), st.booleans())
def test_fast_path_equals_naive_path(inputs, first_slice, growth, sized):
    knob, logits, tokens = inputs
    # Small first slices and slow growth exercise the rows whose support outgrows a slice (top_k sizes its
    # first slice exactly, k_max + 1, and grows only past a tie group at the k_max-th logit). top_p sizes its
    # first slice from the mass profile; unsized (every row starts at FIRST_SLICE) it exercises the growth.
    module = importlib.import_module(f"metahp.knobs.{knob.name}")
    first = mock.patch.object(module, "FIRST_SLICE", first_slice) if hasattr(module, "FIRST_SLICE") else nullcontext()
    unsized = (mock.patch.object(module, "nucleus_slice_sizes", lambda probs, cut: torch.ones(len(probs)))
               if hasattr(module, "nucleus_slice_sizes") and not sized else nullcontext())
    with first, unsized, mock.patch.object(truncation, "_GROWTH", growth):
        got = knob.token_logprobs(logits, tokens)
    want = _naive_token_logprobs(knob, logits, tokens)
    assert torch.equal(torch.isfinite(got), torch.isfinite(want)), (got, want)
    finite = torch.isfinite(want)
    assert torch.allclose(got[finite], want[finite], atol=1e-5), (got, want)


def slice_sizes_used(module, knob, logits, tokens):
    """The slice sizes a knob selects, each with the number of rows it selects it for, and its output."""
    used = []
    real = module.sorted_slice

    def spy(values, size):
        used.append((size, values.shape[0]))
        return real(values, size)

    with mock.patch.object(module, "sorted_slice", spy):
        out = knob.token_logprobs(logits, tokens)
    return used, out


def test_top_p_sizes_its_slice_from_the_mass_profile_so_flat_rows_need_no_growth():
    top_p = importlib.import_module("metahp.knobs.top_p")
    # Flat rows: p = 0.95 needs 500 to 1000 of the 8192 tokens, far past the first slice of 64.
    logits = random_logits(12, 8192, seed=7)
    tokens = torch.randint(8192, (12,), generator=torch.Generator().manual_seed(8))
    knob = TopP([0.5, 0.9, 0.95, 1.0])
    used, got = slice_sizes_used(top_p, knob, logits, tokens)
    assert sum(rows for _, rows in used) == 12, f"some rows were selected twice (grown): {used}"
    assert all(size < 8192 for size, _ in used), f"a full sort was needed: {used}"
    assert max(size for size, _ in used) > 500  # the sizes do follow the rows' nuclei
    want = _naive_token_logprobs(knob, logits, tokens)
    assert torch.equal(torch.isfinite(got), torch.isfinite(want))
    assert torch.allclose(got, want, atol=1e-5)


def test_nucleus_slice_sizes_hold_the_loosest_support():
    logits = torch.cat([random_logits(20, 3000, seed=9) * s for s in (0.3, 1.0, 3.0)])
    probs = torch.softmax(logits, dim=-1)
    for p in (0.3, 0.9, 0.99, 0.999):
        sizes = truncation.nucleus_slice_sizes(probs, 1 - p)
        descending = probs.double().sort(dim=-1, descending=True).values
        mass_below = descending.sum(-1) - descending.cumsum(-1).gather(1, (sizes - 1).unsqueeze(1)).squeeze(1)
        assert (mass_below <= 1 - p).all()  # every token outside the M largest is cut
        needed = (descending.flip(-1).cumsum(-1).flip(-1) > 1 - p).sum(-1)
        assert (sizes >= needed).all() and (sizes <= 4 * needed + 64).all()  # and M is not far past the nucleus


def test_top_p_underestimated_slice_grows_to_a_full_sort_and_stays_exact():
    # If the first slice misses part of the support (forced here: every row starts at 1 token), the exact
    # check catches it and the slice grows, up to a full sort of the vocabulary, with the same result.
    top_p = importlib.import_module("metahp.knobs.top_p")
    logits = random_logits(6, 600, seed=10, ties=True) * 0.2  # flat rows with many ties
    tokens = torch.randint(600, (6,), generator=torch.Generator().manual_seed(11))
    knob = TopP([0.3, 0.95, 0.999, 1.0], temperature=1.3)
    with (mock.patch.object(top_p, "nucleus_slice_sizes", lambda probs, cut: torch.ones(len(probs))),
          mock.patch.object(top_p, "FIRST_SLICE", 1)):
        used, got = slice_sizes_used(top_p, knob, logits, tokens)
    assert 600 in [size for size, _ in used], f"no full sort: {used}"
    want = _naive_token_logprobs(knob, logits, tokens)
    assert torch.equal(torch.isfinite(got), torch.isfinite(want))
    finite = torch.isfinite(want)
    assert torch.allclose(got[finite], want[finite], atol=1e-5)


@pytest.mark.parametrize("cls, values, temperature", CASES, ids=IDS)
def test_cache_sized_blocks_do_not_change_the_result(cls, values, temperature):
    knob = cls(values, temperature=temperature)
    logits = random_logits(50, 64, seed=12, ties=True)
    tokens = torch.randint(64, (50,), generator=torch.Generator().manual_seed(13))
    whole = knob.token_logprobs(logits, tokens)
    with mock.patch.object(base, "CPU_BLOCK_ELEMENTS", 64 * 7):  # blocks of 7 rows, the last one short
        blocked = knob.token_logprobs(logits, tokens)
    assert torch.equal(whole, blocked)


def test_split_tie_group_gets_its_marginal_probability():
    # Four equal logits, top_p = 0.5: transformers keeps 2 of the 4 in an arbitrary (unstable-sort) order;
    # each token is kept with probability 1/2 and then has probability 1/2: marginal 1/4 = untruncated.
    knob = TopP([0.5, 1.0])
    logp = knob.token_logprobs(torch.zeros(4, 4), torch.arange(4))
    assert torch.allclose(logp, torch.full((4, 2), float(np.log(0.25))))
    # Top-k never splits a tie: every token tied with the k-th is kept.
    logp = TopK([1]).token_logprobs(torch.tensor([[1.0, 1.0, 0.0]]).expand(3, -1), torch.arange(3))
    assert torch.allclose(logp[:, 0].exp(), torch.tensor([0.5, 0.5, 0.0]))


@pytest.mark.parametrize(
    "make, match",
    [(lambda: TopP([0.0]), r"top_p: candidate 0.0 is outside \(0, 1\]"), (lambda: TopP([1.5]), "outside"),
     (lambda: TopK([0]), "top_k: candidate 0 is not an integer >= 1"), (lambda: TopK([2.5]), "not an integer"),
     (lambda: MinP([1.0]), r"min_p: candidate 1.0 is outside \[0, 1\)"), (lambda: MinP([-0.1]), "outside"),
     (lambda: TopP([0.9, 0.9]), "duplicate"), (lambda: TopK([5, 5.0]), "duplicate"),
     (lambda: TopP(temperature=0), "temperature=0 is invalid; pass a positive number"),
     (lambda: MinP(temperature=float("nan")), "temperature=nan is invalid"),
     (lambda: TopK(epsilon=1.0), r"epsilon=1.0 is invalid; pass a number in \[0, 1\)"),
     (lambda: TopP(epsilon=True), "epsilon=True is invalid")],
)
def test_bad_values_get_clear_config_errors(make, match):
    with pytest.raises(ConfigError, match=match):
        make()


def test_registered_under_backend_keywords_and_conform():
    for cls in (TopP, TopK, MinP):
        assert KNOBS[cls.name] is cls and type(make_knob(cls.name)) is cls
        check_knob(cls(temperature=0.6))
        check_knob(cls(temperature=1.4, epsilon=0.1))
    assert TopK([5.0, 2]).values == (2, 5) and TopK([5.0]).values[0].__class__ is int


def test_outside_support_is_minus_inf_and_tampo_still_favours_the_explaining_candidate():
    # Positive-advantage completions were sampled with top_p = 0.5; negative ones each contain a token outside
    # the 0.5 nucleus. Under top_p = 0.5 the negative rows are impossible (-inf), and 0.5 must gain probability.
    gen = torch.Generator().manual_seed(0)
    batch, length, vocab = 8, 6, 30
    logits = torch.randn(batch, length, vocab, generator=gen) * 2
    knob = TopP([0.5, 0.8, 1.0])
    tokens = torch.empty(batch, length, dtype=torch.long)
    for i in range(batch):
        value = 0.5 if i % 2 == 0 else 1.0
        tokens[i] = sample_with_transformers(knob, value, logits[i], 1, seed=i)[:, 0]
    odd = torch.arange(1, batch, 2)
    tokens[odd, 0] = logits[odd, 0].argmin(dim=-1)  # the least likely token: outside the 0.5 nucleus
    advantages = torch.tensor([1.0, -1.0] * (batch // 2))
    mask = torch.ones(batch, length)
    seq = knob.sequence_logprobs(logits, tokens, mask)
    assert torch.isinf(seq[odd, 0]).all() and torch.isfinite(seq[odd, -1]).all()  # argmin: only p = 1 keeps it
    assert torch.isfinite(seq[::2]).all()
    policy = metahp.meta_policy(knob="top_p", updater="tampo", values=knob.values)
    for _ in range(5):
        policy.sample()
        # update, not update_from_logits: these rows were sampled at 0.5 and 1.0, not at the policy's draw, and
        # update_from_logits leaves out rows the drawn value finds impossible (metahp.rows's one rule)
        metrics = policy.update(seq, advantages)
    assert metrics["metahp/advantage/0.5"] > 0 > metrics["metahp/advantage/1"]
    assert int(np.argmax(policy.probs)) == 0


def test_never_allocates_a_NVK_tensor():
    b, length, vocab = 4, 32, 2048
    logits, tokens, mask = torch.randn(b, length, vocab) * 3, torch.randint(vocab, (b, length)), torch.ones(b, length)
    for knob in (TopP(), TopK(), MinP()):
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU], profile_memory=True) as prof:
            knob.sequence_logprobs(logits, tokens, mask)
        largest = max(e.cpu_memory_usage for e in prof.events())
        assert largest <= b * length * vocab * 8 * 1.01, f"{knob}: largest allocation {largest} B"


def test_benchmark_smoke():
    path = Path(__file__).resolve().parents[1] / "benchmarks" / "truncation_cost.py"
    spec = importlib.util.spec_from_file_location("truncation_cost", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    result = module.main(["--smoke"])
    for name in ("top_p", "top_k", "min_p"):
        assert result["knobs"][name]["fast_s"] > 0 and result["knobs"][name]["max_abs_diff"] < 1e-4
