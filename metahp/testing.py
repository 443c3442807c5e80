"""Conformance checks every knob and updater must pass (like gymnasium's check_env).

The built-ins are checked by the test suite through these same functions; a user's plug-in can be checked
with ``check_updater(my_factory())`` or ``check_knob(MyKnob())``. Each check raises AssertionError with a
message naming the broken property.
"""

from __future__ import annotations

import copy

import numpy as np
import torch

from metahp.knobs import Knob
from metahp.updaters import Feedback, Updater


def _assert_distribution(p: np.ndarray, k: int, where: str) -> None:
    p = np.asarray(p)
    assert p.shape == (k,), f"{where}: probs has shape {p.shape}, expected ({k},)"
    assert np.isfinite(p).all(), f"{where}: probs not finite: {p}"
    assert (p >= 0).all(), f"{where}: negative probability: {p}"
    assert abs(p.sum() - 1) < 1e-9, f"{where}: probs sum to {p.sum()}, not 1"


def _random_feedback(updater: Updater, k: int, rng: np.random.Generator) -> Feedback:
    if updater.feedback == "per_candidate":
        return Feedback(advantages=rng.normal(scale=rng.choice([1e-6, 0.05, 3.0]), size=k))
    return Feedback(chosen=int(rng.integers(k)), reward=float(rng.normal(scale=0.3)))


def check_updater(updater: Updater, values=(0.6, 0.8, 1.0, 1.2, 1.5), steps: int = 30, seed: int = 0) -> None:
    """Check an updater: valid distribution at every step, purity, determinism, JSON-safe state."""
    values = tuple(values)
    k = len(values)
    assert updater.feedback in ("per_candidate", "chosen"), f"{updater.name}: unknown feedback kind"
    from metahp.selection import SELECTIONS

    assert updater.selection in SELECTIONS, f"{updater.name}: default selection {updater.selection!r} unknown"
    for size in sorted({1, 2, k}):
        _assert_distribution(updater.probs(updater.init(values[:size])), size, f"{updater.name} at init, K={size}")
    rng = np.random.default_rng(seed)
    state = updater.init(values)
    for step in range(steps):
        feedback = _random_feedback(updater, k, rng)
        before = copy.deepcopy(state)
        new = updater.update(state, feedback)
        for key in before:
            assert np.array_equal(before[key], state[key]), f"{updater.name}: update mutated its input state"
        again = updater.update(before, feedback)
        for key in new:
            assert np.array_equal(new[key], again[key]), f"{updater.name}: update is not deterministic"
        assert set(new) == set(before), f"{updater.name}: update changed the state's keys"
        for key, value in new.items():
            arr = np.asarray(value)
            assert arr.dtype.kind in "fiub", f"{updater.name}: state[{key!r}] is not numeric"
            assert np.isfinite(arr.astype(float)).all(), f"{updater.name}: state[{key!r}] not finite at step {step}"
        _assert_distribution(updater.probs(new), k, f"{updater.name} after step {step}")
        state = new
    if updater.feedback == "per_candidate":
        p0 = updater.probs(state)
        p1 = updater.probs(updater.update(state, Feedback(advantages=np.zeros(k))))
        assert np.allclose(p0, p1, atol=1e-12), f"{updater.name}: all-zero advantages changed the distribution"
        # A candidate whose advantage is consistently the largest must end up the most probable.
        state = updater.init(values)
        favoured = k // 2
        for _ in range(steps):
            a = np.full(k, -0.1)
            a[favoured] = 0.1
            state = updater.update(state, Feedback(advantages=a))
        p = updater.probs(state)
        assert p[favoured] == p.max() and p[favoured] > 1 / k, f"{updater.name}: favoured candidate not preferred: {p}"


def check_knob(knob: Knob, vocab: int = 37, batch: int = 3, length: int = 5, seed: int = 0) -> None:
    """Check a knob: sorted grid, normalised per-token distributions, masking, chunking, no autograd graph."""
    values = knob.values
    assert list(values) == sorted(values) and len(set(values)) == len(values), f"{knob}: grid not sorted/unique"
    assert isinstance(knob.name, str) and knob.name, f"{type(knob).__name__}: missing name"
    gen = torch.Generator().manual_seed(seed)
    logits = torch.randn(batch, length, vocab, generator=gen) * 3
    # token_logprobs of every token of a row must be a distribution over the vocabulary for every candidate.
    rows = logits[0]  # [L, V]
    every = torch.stack([knob.token_logprobs(rows, torch.full((length,), v)) for v in range(vocab)])  # [V, L, K]
    total = torch.logsumexp(every, dim=0)
    assert torch.allclose(total, torch.zeros_like(total), atol=1e-4), f"{knob}: token probabilities do not sum to 1"
    tokens = torch.randint(vocab, (batch, length), generator=gen)
    mask = torch.ones(batch, length, dtype=torch.bool)
    mask[0, :2] = False  # left padding
    mask[-1, -1] = False
    logits.requires_grad_(True)
    out = knob.sequence_logprobs(logits, tokens, mask)
    assert out.shape == (batch, len(values)), f"{knob}: sequence_logprobs shape {tuple(out.shape)}"
    assert not out.requires_grad, f"{knob}: sequence_logprobs kept an autograd graph"
    assert (out <= 1e-6).all(), f"{knob}: a log-likelihood is positive"
    # Padding must not matter, and chunking must not change the result.
    noisy = logits.detach().clone()
    noisy[~mask] = torch.randn(int((~mask).sum()), vocab, generator=gen) * 100
    junk_tokens = tokens.clone()
    junk_tokens[~mask] = 0
    same = knob.sequence_logprobs(noisy, junk_tokens, mask, chunk_elements=1)
    assert torch.allclose(out, same, atol=1e-5), f"{knob}: padding positions or chunking changed the result"
