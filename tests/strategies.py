"""Public hypothesis strategies for meta-update inputs (imported by the property tests)."""

import numpy as np
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

K = 5
VALUES = (0.6, 0.8, 1.0, 1.2, 1.5)

log_likelihoods = st.floats(min_value=-30, max_value=0, allow_nan=False, allow_infinity=False)


@st.composite
def batches(draw, k=K, allow_minus_inf=False):
    """(seq_logprobs [B, K], advantages [B]) with GRPO-like groups, some of zero variance (A = 0)."""
    groups = draw(st.integers(1, 4))
    size = draw(st.integers(2, 4))
    rewards = draw(hnp.arrays(np.float64, (groups, size), elements=st.sampled_from([0.0, 1.0])))
    std = rewards.std(axis=1, keepdims=True)
    adv = np.where(std > 0, (rewards - rewards.mean(axis=1, keepdims=True)) / np.where(std > 0, std, 1), 0.0).ravel()
    logp = draw(hnp.arrays(np.float64, (groups * size, k), elements=log_likelihoods))
    if allow_minus_inf:
        holes = draw(hnp.arrays(np.bool_, logp.shape))
        holes[np.arange(len(holes)), logp.argmax(axis=1)] = False  # keep one possible candidate per row
        logp = np.where(holes, -np.inf, logp)
    return logp, adv
