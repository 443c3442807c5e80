"""Selection: drawing the next candidate index from the meta-policy's distribution.

- ``nucleus`` (TAMPO's default, p = 0.7): sort candidates by probability, keep the smallest prefix whose mass
  reaches p, renormalise, sample. Ties in probability are ordered at random, so a uniform distribution does
  not always keep the same candidates.
- ``sample``: sample from the whole distribution.
- ``greedy``: the most probable candidate (ties broken at random). Worst in TAMPO's ablation.
Every draw comes from the generator passed in (the policy's own), never from global state.
"""

from __future__ import annotations

from typing import Annotated

import numpy as np
from pydantic import Field, validate_call


def _random_tiebreak_order(probs: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Indices by decreasing probability, equal probabilities in random order."""
    perm = rng.permutation(len(probs))
    return perm[np.argsort(-probs[perm], kind="stable")]


def nucleus(probs: np.ndarray, rng: np.random.Generator, nucleus_p: float = 0.7) -> int:
    order = _random_tiebreak_order(probs, rng)
    mass = np.cumsum(probs[order])
    # Smallest prefix with mass >= p (tolerance for rounding in the cumulative sum).
    keep = order[: int(np.searchsorted(mass, nucleus_p - 1e-12)) + 1]
    kept = probs[keep] / probs[keep].sum()
    return int(keep[rng.choice(len(keep), p=kept)])


def sample(probs: np.ndarray, rng: np.random.Generator) -> int:
    return int(rng.choice(len(probs), p=probs))


def greedy(probs: np.ndarray, rng: np.random.Generator) -> int:
    return int(_random_tiebreak_order(probs, rng)[0])


SELECTIONS = {"nucleus": nucleus, "sample": sample, "greedy": greedy}


def stratified_counts(probs: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """How many of ``n`` rows go to each candidate: systematic sampling of ``probs``.

    With one uniform u in [0, 1), the points (u + j) / n, j = 0 .. n-1, fall into the bins of the cumulative
    distribution: candidate k gets floor(n p_k) or ceil(n p_k) rows, n p_k on average, so a group of G completions
    mixes the candidates in proportion to the meta-policy with far less variance than G independent draws.
    """
    points = (rng.random() + np.arange(n)) / n
    edges = np.cumsum(probs)
    # Rounding: every point lands in a bin, and none in the bin of a trailing candidate of probability 0.
    edges[np.flatnonzero(probs > 0)[-1]:] = 1.0
    return np.bincount(np.searchsorted(edges, points, side="right"), minlength=len(probs))


@validate_call
def selection_options(nucleus_p: Annotated[float, Field(gt=0, le=1)] = 0.7) -> dict:
    """Validated options of the selection rules (only nucleus has one)."""
    return {"nucleus_p": nucleus_p}
