"""Hypothesis strategies for meta-update inputs, for property tests of metahp and of your own plug-ins.

hypothesis is a development dependency: only this module imports it (``import metahp.testing`` does not).

- ``log_likelihoods``: one length-normalised log-likelihood, a float in [-30, 0].
- ``advantages(groups=(1, 4), size=(2, 4))``: GRPO advantages [groups * size] from binary rewards,
  group-normalised; a group whose rewards are all equal (zero variance) gives A = 0, as GRPO does.
- ``batches(k, allow_minus_inf)``: (seq_logprobs [B, K], advantages [B]) in GRPO-like groups.
- ``logits(batch=(1, 3), length=(1, 5), vocab=(2, 12))``: raw logits [B, L, V] (float32) with some -inf entries
  (banned tokens), never a whole position of -inf.
- ``sequence_batches(vocab=(2, 12))``: (logits [B, L, V], tokens [B, L], mask [B, L]) for a knob's
  sequence_logprobs: tokens possible under the logits, left padding in the mask.

Sizes are inclusive (low, high) ranges.
"""

from __future__ import annotations

import numpy as np
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

log_likelihoods = st.floats(min_value=-30, max_value=0, allow_nan=False, allow_infinity=False)


def group_advantages(rewards: np.ndarray) -> np.ndarray:
    """GRPO advantages of rewards [groups, size]: (r - group mean) / group std, 0 for a zero-variance group."""
    std = rewards.std(axis=1, keepdims=True)
    centred = rewards - rewards.mean(axis=1, keepdims=True)
    return np.where(std > 0, centred / np.where(std > 0, std, 1), 0.0).ravel()


@st.composite
def advantages(draw, groups=(1, 4), size=(2, 4)):
    """Advantages [groups * size] of binary task rewards, group-normalised (zero-variance groups give 0); ``groups``
    and ``size`` are inclusive (low, high) ranges."""
    g, n = draw(st.integers(*groups)), draw(st.integers(*size))
    rewards = draw(hnp.arrays(np.float64, (g, n), elements=st.sampled_from([0.0, 1.0])))
    return group_advantages(rewards)


@st.composite
def batches(draw, k=5, allow_minus_inf=False):
    """(seq_logprobs [B, K], advantages [B]) with GRPO-like groups, some of zero variance (A = 0).

    With ``allow_minus_inf`` some log-likelihoods are -inf (a candidate that cannot produce the trajectory),
    never a whole row."""
    adv = draw(advantages())
    logp = draw(hnp.arrays(np.float64, (len(adv), k), elements=log_likelihoods))
    if allow_minus_inf:
        holes = draw(hnp.arrays(np.bool_, logp.shape))
        holes[np.arange(len(holes)), logp.argmax(axis=1)] = False  # keep one possible candidate per row
        logp = np.where(holes, -np.inf, logp)
    return logp, adv


@st.composite
def logits(draw, batch=(1, 3), length=(1, 5), vocab=(2, 12), scale=10.0):
    """Raw logits [B, L, V] (float32, |z| <= scale) with some -inf entries, at least one finite per position; the
    sizes are drawn from inclusive (low, high) ranges."""
    b, n, v = draw(st.integers(*batch)), draw(st.integers(*length)), draw(st.integers(*vocab))
    z = draw(hnp.arrays(np.float32, (b, n, v), elements=st.floats(-scale, scale, width=32)))
    holes = draw(hnp.arrays(np.bool_, z.shape))
    keep = draw(hnp.arrays(np.int64, (b, n), elements=st.integers(0, v - 1)))
    holes[np.arange(b)[:, None], np.arange(n)[None, :], keep] = False
    return np.where(holes, np.float32(-np.inf), z)


@st.composite
def sequence_batches(draw, vocab=(2, 12)):
    """(logits [B, L, V], tokens [B, L], mask [B, L]) numpy arrays: tokens have finite logits, the mask is 1 on
    completion tokens with some left padding (a row may be all padding)."""
    z = draw(logits(vocab=vocab))
    b, n, _ = z.shape
    tokens = np.zeros((b, n), dtype=np.int64)
    for i in range(b):
        for j in range(n):
            possible = np.flatnonzero(np.isfinite(z[i, j]))
            tokens[i, j] = possible[draw(st.integers(0, len(possible) - 1))]
    pads = draw(hnp.arrays(np.int64, (b,), elements=st.integers(0, n)))
    mask = (np.arange(n)[None, :] >= pads[:, None]).astype(np.int64)
    return z, tokens, mask
