"""Sparsemax: the Euclidean projection onto the probability simplex (Martins & Astudillo, 2016).

    sparsemax(z) = argmin_{p in simplex} ||p - z||^2
                 = max(z - tau(z), 0),   tau chosen so that the result sums to 1.

With z sorted in decreasing order, the support size is k(z) = max{k : 1 + k z_(k) > sum_{j<=k} z_(j)} and
tau(z) = (sum_{j<=k(z)} z_(j) - 1) / k(z). Unlike softmax, entries far below the maximum get exactly 0.

Entries equal to -inf (a candidate under which the observation is impossible, e.g. outside a truncated
support) are never in the support and get exactly 0; a slice must have at least one finite entry.
Written here rather than taken from a package because metahp needs this -inf behaviour pinned down.
"""

from __future__ import annotations

import torch

from metahp.errors import InputError


def sparsemax(x: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """Project each slice of ``x`` along ``dim`` onto the simplex.

    >>> sparsemax(torch.tensor([1.0, 0.9, -2.0]))
    tensor([0.5500, 0.4500, 0.0000])
    """
    x = torch.as_tensor(x)
    if not x.is_floating_point():
        x = x.to(torch.get_default_dtype())
    if x.numel() == 0:
        raise InputError("sparsemax: got an empty tensor; pass at least one entry per slice.")
    if torch.isnan(x).any() or torch.isposinf(x).any():
        raise InputError("sparsemax: input contains NaN or +inf; only finite values and -inf are allowed.")
    if (~torch.isfinite(x)).all(dim=dim).any():
        raise InputError(
            "sparsemax: a slice has no finite entry (all -inf); at least one candidate must be possible."
        )
    x = x.movedim(dim, -1)
    # Shift by the max for stability; sparsemax is invariant to adding a constant to a slice.
    z = x - x.max(dim=-1, keepdim=True).values
    z_sorted = z.sort(dim=-1, descending=True).values
    k = torch.arange(1, z.shape[-1] + 1, dtype=z.dtype, device=z.device)
    cumsum = z_sorted.cumsum(dim=-1)
    in_support = 1 + k * z_sorted > cumsum  # -inf entries give -inf > -inf = False
    support_size = in_support.sum(dim=-1, keepdim=True)  # >= 1: the max always qualifies
    tau = (cumsum.gather(-1, support_size - 1) - 1) / support_size.to(z.dtype)
    return torch.clamp(z - tau, min=0).movedim(-1, dim)
