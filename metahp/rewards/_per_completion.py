"""What the per-completion rewards share: each candidate's mean of a per-row signal, centred on the batch."""

from __future__ import annotations

import numpy as np

from metahp.errors import InputError
from metahp.rewards.base import Batch


def candidate_means(batch: Batch, signal: np.ndarray, k: int, who: str) -> np.ndarray:
    """a_k = mean of ``signal`` over the rows sampled at candidate k, minus the mean over all rows (0 for a
    candidate no row used: no evidence, no move). Centring makes the feedback relative, as the updaters expect."""
    rows = batch.row_candidates
    if rows is None:
        raise InputError(f"{who} learns from values drawn per completion: adapt with per='completion' (or pass "
                         f"rows=[the candidate index of every completion] to update).")
    counts = np.bincount(rows, minlength=k).astype(np.float64)
    sums = np.bincount(rows, weights=signal, minlength=k)
    means = np.divide(sums, counts, out=np.zeros(k), where=counts > 0)
    return np.where(counts > 0, means - signal.mean(), 0.0) if len(signal) else np.zeros(k)
