"""Which rows of a batch carry signal for the meta-update: the one rule every caller uses.

- A row with zero advantage (GRPO: a completion of a group whose rewards were all equal) adds nothing to
  a_k = (1/N) sum_i w_ik A_i: its likelihoods are never computed, but it still counts in N.
- A row that the candidate which sampled it gives likelihood 0 (-inf) is unscorable: only float differences
  between the sampler's arithmetic and metahp's at a truncation boundary (GPU kernels, vLLM) can cause it, so it
  is no reliable evidence and is left out (the caller counts it).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from metahp.errors import InputError


def as_real_array(x, name: str) -> np.ndarray:
    """A float64 array from a tensor, array or (nested) list of real numbers; anything else is an InputError."""
    if isinstance(x, torch.Tensor):
        if x.is_complex() or x.dtype == torch.bool:
            raise InputError(f"{name} must hold real numbers, got a {x.dtype} tensor.")
        return x.detach().cpu().double().numpy()
    try:
        arr = np.asarray(x)
    except (TypeError, ValueError) as err:
        raise InputError(f"{name} must be numeric (a tensor, array or list of numbers), got "
                         f"{type(x).__name__}.") from err
    if arr.dtype.kind not in "iuf":
        raise InputError(f"{name} must be numeric (a tensor, array or list of numbers), got "
                         f"{type(x).__name__} of dtype {arr.dtype}.")
    return arr.astype(np.float64)


def as_tensor(x, name: str) -> torch.Tensor:
    try:
        return torch.as_tensor(x)
    except (TypeError, ValueError, RuntimeError) as err:
        raise InputError(f"{name} must be a tensor (or an array / nested list of numbers), got "
                         f"{type(x).__name__}.") from err


def advantages_of(advantages, *, finite: bool = True) -> torch.Tensor:
    """[B] float64 CPU advantages, checked: real numbers, 1-D, finite (unless ``finite=False``)."""
    adv = torch.as_tensor(as_real_array(advantages, "advantages"))
    if adv.dim() != 1:
        raise InputError(f"advantages must be 1-D [B], got shape {tuple(adv.shape)}.")
    if finite and not torch.isfinite(adv).all():
        raise InputError(f"advantages contain {int((~torch.isfinite(adv)).sum())} NaN or infinite values; "
                         f"check the rewards (a group with zero reward variance must give A = 0).")
    return adv


def informative(advantages: torch.Tensor) -> torch.Tensor:
    """[B] bool: the rows whose advantage is not zero (the only ones a likelihood-based update reads)."""
    return advantages != 0


def score_informative_rows(score: Callable, logits, tokens, mask, advantages: torch.Tensor) -> torch.Tensor:
    """``score(logits, tokens, mask) -> [n, K]`` on the informative rows only; returns [B, K] with zeros elsewhere.

    Checks that logits, tokens and mask have one row per advantage, indexes each on its own device, and names the
    caller's row (not the row within the informative subset) in a knob's error about a position."""
    batch = {name: as_tensor(x, name) for name, x in (("logits", logits), ("tokens", tokens), ("mask", mask))}
    for name, x in batch.items():
        if x.dim() == 0 or x.shape[0] != len(advantages):
            raise InputError(f"advantages has {len(advantages)} entries but {name} has shape {tuple(x.shape)}; "
                             f"pass one advantage per completion (logits [B, L, V], tokens and mask [B, L]).")
    keep = informative(advantages)

    def rows(x):  # indexed on the tensor's own device (the logits may live on a GPU)
        return x[keep.to(x.device)]

    try:
        scored = score(rows(batch["logits"]), rows(batch["tokens"]), rows(batch["mask"]))
    except InputError as err:
        position = getattr(err, "position", None)
        if position is None:
            raise
        row, token = position
        original = int(keep.nonzero()[row, 0])
        raise InputError(str(err).replace(f"(row {row}, token {token})", f"(row {original}, token {token})")
                         ) from None
    out = torch.zeros(len(advantages), scored.shape[1], dtype=scored.dtype)
    out[keep] = scored
    return out


def unscorable(columns: torch.Tensor, used_index: int | torch.Tensor | None) -> torch.Tensor:
    """[B] bool: rows the candidate that sampled them finds impossible (-inf). ``used_index``: the batch's one
    candidate, or each row's ([B] long, values per completion); None: not known, nothing is left out."""
    if used_index is None:
        return torch.zeros(columns.shape[0], dtype=torch.bool)
    if isinstance(used_index, torch.Tensor):
        return torch.isneginf(columns.gather(1, used_index.view(-1, 1)).squeeze(1))
    return torch.isneginf(columns[:, used_index])


def is_per_row(value) -> bool:
    """Whether a knob's value is one value per completion (a list, tuple, tensor or array) rather than one number
    for the batch: the one notion of "a value per row" the knob layer, the adapters and the lab share."""
    return isinstance(value, list | tuple | torch.Tensor | np.ndarray)
