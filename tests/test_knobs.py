import pytest
import torch

from metahp import ConfigError, InputError, Temperature
from metahp.knobs import make_knob


def naive_sequence_logprobs(logits, tokens, mask, temperatures):
    out = []
    for t in temperatures:
        lp = torch.log_softmax(logits.double() / t, dim=-1).gather(-1, tokens.unsqueeze(-1)).squeeze(-1)
        lp = (lp * mask).sum(1) / mask.sum(1).clamp(min=1)
        out.append(lp)
    return torch.stack(out, dim=1)


@pytest.mark.parametrize("scale", [0.1, 3.0, 30.0])
def test_temperature_matches_naive_log_softmax(scale):
    gen = torch.Generator().manual_seed(1)
    b, length, v = 6, 9, 50
    logits = torch.randn(b, length, v, generator=gen) * scale
    tokens = torch.randint(v, (b, length), generator=gen)
    mask = torch.rand(b, length, generator=gen) > 0.3
    mask[:, 0] = True
    knob = Temperature()
    got = knob.sequence_logprobs(logits, tokens, mask)
    want = naive_sequence_logprobs(logits, tokens, mask.double(), knob.values)
    assert torch.allclose(got.double(), want, atol=1e-5, rtol=1e-5)


def test_length_normalisation_and_masking_by_hand():
    # Two equal logits: every token has probability 1/2 at any temperature -> per-token log(1/2).
    logits = torch.zeros(2, 4, 2)
    tokens = torch.zeros(2, 4, dtype=torch.long)
    mask = torch.tensor([[1, 1, 1, 1], [0, 0, 1, 1]])
    out = Temperature([0.5, 2.0]).sequence_logprobs(logits, tokens, mask)
    assert torch.allclose(out, torch.full((2, 2), -torch.log(torch.tensor(2.0)).item()))
    # One-token completion, logits (2, 0): log p_T(token 0) = -log(1 + exp(-2 / T)).
    logits = torch.tensor([[[2.0, 0.0]]])
    out = Temperature([0.5, 1.0, 2.0]).sequence_logprobs(logits, torch.zeros(1, 1, dtype=torch.long), torch.ones(1, 1))
    want = torch.tensor([[-torch.log1p(torch.exp(torch.tensor(-2.0 / t))).item() for t in (0.5, 1.0, 2.0)]])
    assert torch.allclose(out, want, atol=1e-6)


def test_all_masked_row_is_constant_zero_and_others_unaffected():
    logits = torch.randn(3, 5, 11)
    tokens = torch.randint(11, (3, 5))
    mask = torch.ones(3, 5)
    mask[1] = 0
    out = Temperature().sequence_logprobs(logits, tokens, mask)
    assert torch.equal(out[1], torch.zeros(10))
    alone = Temperature().sequence_logprobs(logits[[0, 2]], tokens[[0, 2]], mask[[0, 2]])
    assert torch.allclose(out[[0, 2]], alone)


def test_half_precision_logits_are_upcast():
    logits = torch.randn(2, 3, 17) * 4
    tokens = torch.randint(17, (2, 3))
    mask = torch.ones(2, 3)
    full = Temperature().sequence_logprobs(logits.bfloat16().float(), tokens, mask)
    half = Temperature().sequence_logprobs(logits.bfloat16(), tokens, mask)
    assert half.dtype == torch.float32 and torch.allclose(full, half)


def test_never_allocates_a_BLVK_tensor():
    b, length, v = 4, 32, 2048
    knob = Temperature()
    logits, tokens, mask = torch.randn(b, length, v), torch.randint(v, (b, length)), torch.ones(b, length)
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU], profile_memory=True) as prof:
        knob.sequence_logprobs(logits, tokens, mask)
    largest = max(e.cpu_memory_usage for e in prof.events())
    blvk_bytes = b * length * v * len(knob) * 4
    assert 0 < largest <= b * length * v * 4 * 1.01, f"largest allocation {largest} B"
    assert largest < blvk_bytes / 5


@pytest.mark.parametrize(
    "values, match",
    [([], "empty"), ([0.7, 0.0], "not positive"), ([1.0, -1.0], "not positive"), ([0.7, 0.7], "duplicate"),
     ([float("nan")], "not finite"), (["hot"], "not a number"), ([True], "not a number")],
)
def test_bad_grids_are_refused(values, match):
    with pytest.raises(ConfigError, match=match):
        Temperature(values)


def test_grid_is_sorted_and_default_is_tampos():
    assert Temperature([1.5, 0.5, 1]).values == (0.5, 1.0, 1.5)
    assert Temperature().values == pytest.approx([0.6 + 0.1 * i for i in range(10)])


def test_unknown_knob_lists_valid_ones():
    with pytest.raises(ConfigError, match="valid knobs: .*temperature"):
        make_knob("temprature")


@pytest.mark.parametrize(
    "logits, tokens, mask, match",
    [
        (torch.randn(2, 3), torch.zeros(2, 3), torch.ones(2, 3), r"\[B, L, V\]"),
        (torch.randn(2, 3, 5), torch.zeros(2, 4), torch.ones(2, 3), "tokens has shape"),
        (torch.randn(2, 3, 5), torch.zeros(2, 3, dtype=torch.long), torch.ones(3, 3), "mask has shape"),
        (torch.randn(2, 3, 5), torch.full((2, 3), 5), torch.ones(2, 3), r"token ids must lie in \[0, 5\)"),
        (torch.full((1, 2, 4), float("nan")), torch.zeros(1, 2, dtype=torch.long), torch.ones(1, 2), "NaN"),
        (torch.full((1, 2, 4), float("inf")), torch.zeros(1, 2, dtype=torch.long), torch.ones(1, 2), r"\+inf"),
        (torch.zeros(1, 2, 4, dtype=torch.long), torch.zeros(1, 2, dtype=torch.long), torch.ones(1, 2), "floating"),
    ],
)
def test_bad_batches_get_clear_errors(logits, tokens, mask, match):
    with pytest.raises(InputError, match=match):
        Temperature().sequence_logprobs(logits, tokens, mask)


def test_nan_on_padding_is_ignored():
    logits = torch.randn(1, 3, 6)
    logits[0, 0] = float("nan")
    mask = torch.tensor([[0, 1, 1]])
    out = Temperature().sequence_logprobs(logits, torch.zeros(1, 3, dtype=torch.long), mask)
    assert torch.isfinite(out).all()


def test_minus_inf_logits_of_banned_tokens_are_allowed():
    logits = torch.randn(1, 2, 6)
    logits[..., 5] = float("-inf")
    out = Temperature().sequence_logprobs(logits, torch.zeros(1, 2, dtype=torch.long), torch.ones(1, 2))
    want = naive_sequence_logprobs(logits, torch.zeros(1, 2, dtype=torch.long), torch.ones(1, 2), Temperature().values)
    assert torch.allclose(out.double(), want, atol=1e-6)
