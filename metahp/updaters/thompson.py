"""Discounted Gaussian Thompson sampling for non-stationary scalar rewards.

Each candidate k keeps discounted play counts and reward sums (discount gamma per batch):

    n_k <- gamma * n_k + [k chosen],        s_k <- gamma * s_k + [k chosen] * r

Posterior with prior N(0, prior_std^2) and noise N(0, noise_std^2):

    precision_k = 1 / prior_std^2 + n_k / noise_std^2,   mean_k = (s_k / noise_std^2) / precision_k

Thompson sampling draws theta_k from each posterior and plays the argmax. ``probs`` is the exact probability
of each candidate being that argmax, P_k = integral phi_k(x) prod_{j != k} Phi_j(x) dx, by quadrature, so
sampling from ``probs`` *is* Thompson sampling and the distribution can be logged like any other.
"""

from __future__ import annotations

from typing import Annotated

import numpy as np
from pydantic import Field, validate_call
from scipy import stats

from metahp.updaters.base import Feedback, State, Updater


def argmax_probabilities(mean: np.ndarray, std: np.ndarray, points: int = 4001) -> np.ndarray:
    """P(theta_k is the largest) for independent theta_k ~ N(mean_k, std_k^2), by trapezoid quadrature."""
    lo = float(np.min(mean - 9 * std))
    hi = float(np.max(mean + 9 * std))
    x = np.linspace(lo, hi, points)
    z = (x[None, :] - mean[:, None]) / std[:, None]
    log_cdf = stats.norm.logcdf(z)
    log_pdf = stats.norm.logpdf(z) - np.log(std)[:, None]
    integrand = np.exp(log_pdf + log_cdf.sum(axis=0, keepdims=True) - log_cdf)
    p = np.trapezoid(integrand, x, axis=1)
    return p / p.sum()


@validate_call
def thompson(
    discount: Annotated[float, Field(gt=0, le=1)] = 0.95,
    prior_std: Annotated[float, Field(gt=0)] = 0.1,
    noise_std: Annotated[float, Field(gt=0)] = 0.1,
) -> Updater:
    """Gaussian Thompson sampling with per-batch discount ``discount`` (1 = stationary)."""

    def init(values: tuple[float, ...]) -> State:
        return {"counts": np.zeros(len(values)), "sums": np.zeros(len(values))}

    def update(state: State, feedback: Feedback) -> State:
        hit = np.zeros_like(state["counts"])
        hit[feedback.chosen] = 1.0
        return {"counts": discount * state["counts"] + hit,
                "sums": discount * state["sums"] + hit * feedback.reward}

    def probs(state: State) -> np.ndarray:
        precision = 1 / prior_std**2 + state["counts"] / noise_std**2
        mean = state["sums"] / noise_std**2 / precision
        return argmax_probabilities(mean, 1 / np.sqrt(precision))

    return Updater("thompson", "chosen", "sample", init, update, probs,
                   {"discount": discount, "prior_std": prior_std, "noise_std": noise_std}, nonnegative=("counts",))
