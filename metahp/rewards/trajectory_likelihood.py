"""TAMPO's trajectory-likelihood reward: how well each candidate explains the high-advantage rollouts.

For trajectory i with advantage A_i and per-candidate log-likelihoods l_i1..l_iK:

    w_i. = normalize(l_i1, ..., l_iK)          sparsemax (TAMPO), softmax, or argmax (one-hot)
    a_k  = (1 / N) * sum_i w_ik * A_i           N = every trajectory in the batch

Trajectories with A_i = 0 contribute nothing (their likelihoods need not even be computed) but count in N.
A row with some -inf entries (candidates that could not have produced the trajectory) gives those candidates
weight 0 under every normaliser.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch
from pydantic import validate_call

from metahp.errors import InputError
from metahp.rewards.base import Batch, Reward
from metahp.sparsemax import sparsemax


def _argmax_onehot(x: torch.Tensor) -> torch.Tensor:
    # Ties split equally, so the weights stay permutation-invariant and sum to 1.
    best = x == x.max(dim=-1, keepdim=True).values
    return best.to(x.dtype) / best.sum(dim=-1, keepdim=True).to(x.dtype)


NORMALIZERS = {
    "sparsemax": lambda x: sparsemax(x, dim=-1),
    "softmax": lambda x: torch.softmax(x, dim=-1),
    "argmax": _argmax_onehot,
}


class TrajectoryLikelihood(Reward):
    """Per-candidate advantage from likelihood-weighted trajectory advantages (TAMPO, eq. a_k)."""

    name = "trajectory_likelihood"
    kind = "per_candidate"
    needs_likelihoods = True

    @validate_call
    def __init__(self, normalizer: Literal["sparsemax", "softmax", "argmax"] = "sparsemax"):
        self.normalizer = normalizer

    @property
    def options(self) -> dict:
        return {"normalizer": self.normalizer}

    def weights(self, seq_logprobs: np.ndarray) -> np.ndarray:
        """w[B, K]: each row of log-likelihoods normalised across candidates."""
        return NORMALIZERS[self.normalizer](torch.as_tensor(seq_logprobs, dtype=torch.float64)).numpy()

    def __call__(self, state: dict, batch: Batch) -> tuple[np.ndarray, dict]:
        if batch.seq_logprobs is None or batch.advantages is None:
            raise InputError("trajectory_likelihood needs seq_logprobs=[B, K] and advantages=[B]; pass both to "
                             "update(), or use update_from_logits(logits, tokens, mask, advantages).")
        logp, adv = batch.seq_logprobs, batch.advantages
        informative = adv != 0  # zero-advantage rows add 0 to every a_k: skip them
        a = np.zeros(logp.shape[1])
        if informative.any():
            w = self.weights(logp[informative])
            a = (w * adv[informative, None]).sum(axis=0)
        return a / batch.batch_size, state
