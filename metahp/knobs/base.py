"""The Knob abstraction: a sampling setting with a grid of candidate values.

A knob turns the logits a completion was sampled from into, for every candidate value c_k, the
length-normalised log-likelihood of that completion had it been sampled with c_k:

    l_ik = (1 / |tau_i|) * sum_{t in tau_i} log p_{c_k}(o_t | z_t)

where z_t are the raw logits at completion step t and o_t the token taken. Subclasses implement only
``token_logprobs`` (per token, for all candidates); this class does the validation, masking, chunking and
length normalisation, so that no [B, L, V, K] tensor is ever built and no autograd graph is kept.
"""

from __future__ import annotations

import importlib
import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable
from contextlib import contextmanager
from contextvars import ContextVar
from typing import ClassVar

import numpy as np
import torch

from metahp.errors import ConfigError, InputError

# Working memory of one chunk of logits, in elements (64 MiB of float32): the block size off the CPU, and the size
# of the chunks the adapters score (one constant for every caller).
CHUNK_ELEMENTS = 1 << 24
# The largest candidate grid a knob accepts (a grid of 10^6 values took 78 s for six tokens).
MAX_CANDIDATES = 1024
# On the CPU, tokens are scored in blocks of about this many logits (4 MiB of float32, ~21 tokens at V = 49152):
# every vocabulary-sized pass of a knob (softmax, selections, sums) then reads a block that is still in cache
# from the previous pass. Measured on SmolLM2-135M logits, 2 threads: about twice as fast as 64 MiB blocks.
CPU_BLOCK_ELEMENTS = 1 << 20


class Knob(ABC):
    """A sampling knob with a validated, sorted grid of candidate values.

    Subclasses declare what every trainer adapter needs to know (the registry ``metahp.knobs.KNOBS`` is the only
    place adapters look, so a new knob is one file plus one ``register_knob`` line):

    - ``name``: the backend keyword (temperature, top_p, top_k, min_p): the argument of transformers' generate and
      vLLM's SamplingParams that takes this knob's value;
    - ``role``: ``"scales"`` (changes the logits before sampling, like the temperature) or ``"truncates"`` (cuts the
      support after the temperature, like top_p); samplers apply the scaling first, then the truncation;
    - ``off_value``: the value that leaves sampling unchanged (temperature 1.0, top_p 1.0, top_k 0, min_p 0.0);
    - ``default_values``: the candidate grid when none is given;
    - ``reference_sampler``: the dotted path of the sampler's logits processor whose distribution ``token_logprobs``
      claims to reproduce ("transformers.TopPLogitsWarper"); ``metahp.testing.check_knob_matches_sampler``
      compares the two, candidate by candidate. ``reference_warper(value)`` builds it; override that when the
      processor is not built as ``Class(value)``.

    They check the domain in ``check_value`` and compute likelihoods in ``token_logprobs``; a knob whose
    likelihood depends on the batch's other settings (a truncation after the temperature) says how in
    ``conditioned``.
    """

    name: ClassVar[str]
    role: ClassVar[str] = "scales"
    off_value: ClassVar[float | None] = None
    default_values: ClassVar[tuple[float, ...]]
    reference_sampler: ClassVar[str | None] = None

    @classmethod
    def is_off(cls, value) -> bool:
        """Whether ``value`` leaves sampling unchanged (None: not set, which is off too)."""
        return value is None or value == cls.off_value

    @classmethod
    def backend_value(cls, value):
        """``value`` as the backend keyword takes it (transformers' generate): by default unchanged."""
        return value

    def conditioned(self, given: dict | None) -> Knob:
        """This knob as it scores a batch sampled with the other settings ``given`` ({keyword: value}, every
        sampling setting of the batch). The default ignores them; a truncation knob applies the batch's temperature
        first, a temperature the batch's active truncation after it. Returns a new knob, never changes this one.

        Per-batch settings are an argument, not state: the same knob scores batches sampled under different
        settings, and (next) rows sampled under different settings, without anything to reset."""
        return self

    def __init__(self, values: Iterable[float] | None = None):
        raw = self.default_values if values is None else _grid_entries(self.name, values)
        if len(raw) == 0:
            raise ConfigError(f"{self.name}: the candidate grid is empty; pass at least one value, e.g. "
                              f"{list(self.default_values)}.")
        if len(raw) > MAX_CANDIDATES:
            raise ConfigError(f"{self.name}: {len(raw)} candidates; a grid holds at most {MAX_CANDIDATES} (every "
                              f"batch scores every candidate, and a batch of B completions says little about more "
                              f"than B of them). Use a coarser grid.")
        checked = []
        for v in raw:
            if isinstance(v, bool) or not isinstance(v, int | float):
                raise ConfigError(f"{self.name}: candidate {v!r} is not a number; pass numbers such as "
                                  f"{list(self.default_values[:3])}.")
            if not math.isfinite(float(v)):
                raise ConfigError(f"{self.name}: candidate {v!r} is not finite; remove it from the grid.")
            checked.append(self.check_value(v))
        if len(set(checked)) != len(checked):
            dups = sorted({v for v in checked if checked.count(v) > 1})
            raise ConfigError(f"{self.name}: duplicate candidates {dups}; list each value once.")
        self._values = tuple(sorted(checked))
        labels = [self.label(v) for v in self._values]
        clash = [(a, b) for a, b, la, lb in zip(self._values, self._values[1:], labels, labels[1:], strict=False)
                 if la == lb]
        if clash:
            a, b = clash[0]
            raise ConfigError(f"{self.name}: candidates {a!r} and {b!r} are indistinguishable: both are named "
                              f"{self.label(a)!r} in metrics (metahp/prob/<value>, 6 significant digits) and sample "
                              f"alike; keep one of them.")

    @property
    def values(self) -> tuple[float, ...]:
        """The candidate grid, sorted ascending."""
        return self._values

    def __len__(self) -> int:
        return len(self._values)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({list(self._values)})"

    def label(self, value) -> str:
        """How a candidate appears in metric names: metahp/prob/<label>."""
        return f"{value:g}"

    def components(self, value) -> dict[str, float]:
        """The backend keyword arguments a candidate stands for: {"temperature": 0.7}."""
        return {self.name: value}

    def reference_warper(self, value) -> Callable[[torch.Tensor | None, torch.Tensor], torch.Tensor]:
        """The reference sampler's logits processor for one candidate, as this knob scores it: a callable
        (input_ids, scores [N, V]) -> processed scores, -inf on the tokens it removes, whose log_softmax
        ``token_logprobs`` must equal. By default ``reference_sampler`` built with the value and the sampler's
        other defaults (``TopPLogitsWarper(0.9)``: min_tokens_to_keep=1, as generate samples); imports its package
        (transformers, an optional dependency) on first use."""
        if not self.reference_sampler:
            raise NotImplementedError(f"{type(self).__name__} names no reference_sampler: set it to the dotted path of "
                                      f"the logits processor its likelihoods reproduce, e.g. "
                                      f"'transformers.TopPLogitsWarper'.")
        return sampler_class(self.reference_sampler)(value)

    @abstractmethod
    def check_value(self, value: float) -> float:
        """Return ``value`` (normalised to the knob's type) or raise ConfigError if outside the domain."""

    @abstractmethod
    def token_logprobs(self, logits: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        """Per-token log-likelihood under every candidate.

        ``logits``: float32 [N, V] raw logits of N completion tokens; ``tokens``: int64 [N] on the same device.
        Returns float32 [N, K] on that device. Called under no_grad on chunks bounded in size; must not build
        [N, V, K]. Create tensors with ``device=logits.device`` (``sequence_logprobs`` already refuses rows that
        are all -inf; a direct call should do so with ``check_rows``).
        """

    def sequence_logprobs(
        self,
        logits: torch.Tensor,
        tokens: torch.Tensor,
        mask: torch.Tensor,
        *,
        given: dict | None = None,
        chunk_elements: int = CHUNK_ELEMENTS,
    ) -> torch.Tensor:
        """Length-normalised log-likelihood of each completion under every candidate.

        Args:
            logits: [B, L, V] raw (unscaled) logits that produced each completion token.
            tokens: [B, L] the completion tokens.
            mask: [B, L] 1 on completion tokens, 0 on padding.
            given: the batch's other sampling settings, e.g. {"temperature": 0.8} for a truncation knob
                (see ``conditioned``); None scores the knob as constructed.
        Returns:
            float32 [B, K] CPU tensor without autograd graph (computed on the logits' device and moved once). A
            row whose mask is all zero (an empty completion, equally likely under every candidate) is all zeros:
            every reward treats a constant row as carrying no preference, so it is in effect ignored.
        """
        if given:
            return self.conditioned(given).sequence_logprobs(logits, tokens, mask, chunk_elements=chunk_elements)
        logits, tokens, mask = _check_batch(self.name, logits, tokens, mask)
        batch, length, vocab = logits.shape
        # Everything stays on the logits' device; the [B, K] result moves to the CPU once, at the end.
        out = torch.zeros(batch, len(self), dtype=torch.float32, device=logits.device)
        if batch == 0:
            return out.cpu()
        counts = mask.sum(dim=1)
        # Only completion tokens are scored: padding never reaches the vocabulary-sized work. They are gathered
        # in blocks of whole tokens (rows of logits), so a block's copy is still in cache when it is scored.
        rows, cols = mask.nonzero(as_tuple=True)  # one sync: the number of completion tokens
        per_block = block_rows(vocab, logits.device, chunk_elements)
        with torch.no_grad(), rows_checked():
            for start in range(0, rows.numel(), per_block):
                r, c = rows[start:start + per_block], cols[start:start + per_block]
                z = logits[r, c].float()
                _check_logits(self.name, z, logits, mask)  # one sync per block
                out.index_add_(0, r, self.token_logprobs(z, tokens[r, c]).float())
        return length_normalised(out, counts).cpu()


def sampler_class(path: str):
    """The class a dotted path names (``"transformers.TopPLogitsWarper"``), its module imported now."""
    module, _, attr = path.rpartition(".")
    return getattr(importlib.import_module(module), attr)


def length_normalised(totals: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
    """Per-completion sums of token log-likelihoods [B, K] over their token counts [B] (same device):
    l_ik = total_ik / |tau_i|; an empty completion (count 0) stays all zeros. The one place metahp
    length-normalises."""
    return torch.where(counts.unsqueeze(1) > 0, totals / counts.clamp(min=1).unsqueeze(1).to(totals.dtype), totals)


def _check_batch(name: str, logits, tokens, mask):
    logits = torch.as_tensor(logits)
    tokens = torch.as_tensor(tokens)
    mask = torch.as_tensor(mask)
    if logits.dim() != 3:
        raise InputError(f"{name}.sequence_logprobs: logits must be [B, L, V], got shape {tuple(logits.shape)}.")
    if not logits.is_floating_point():
        raise InputError(f"{name}.sequence_logprobs: logits must be floating point, got {logits.dtype}.")
    batch, length, vocab = logits.shape
    if tuple(tokens.shape) != (batch, length):
        raise InputError(f"{name}.sequence_logprobs: tokens has shape {tuple(tokens.shape)} but logits is "
                         f"{tuple(logits.shape)}; tokens must be [B, L] = [{batch}, {length}].")
    if tuple(mask.shape) != (batch, length):
        raise InputError(f"{name}.sequence_logprobs: mask has shape {tuple(mask.shape)}; it must be "
                         f"[B, L] = [{batch}, {length}] like tokens.")
    if tokens.is_floating_point():
        raise InputError(f"{name}.sequence_logprobs: tokens must be integer token ids, got {tokens.dtype}.")
    if mask.dtype != torch.bool and not ((mask == 0) | (mask == 1)).all():  # one sync
        bad = mask[(mask != 0) & (mask != 1)]
        raise InputError(f"{name}.sequence_logprobs: mask must hold only 0 and 1 (or be bool), got "
                         f"{bad.unique()[:5].tolist()}; pass the completion mask, not weights or counts.")
    mask, tokens = mask.bool(), tokens.long()
    if tokens.device != logits.device or mask.device != logits.device:  # scored where the logits are
        mask, tokens = mask.to(logits.device), tokens.to(logits.device)
    if vocab == 0:
        raise InputError(f"{name}.sequence_logprobs: the vocabulary dimension of logits is empty.")
    if (mask & ((tokens < 0) | (tokens >= vocab))).any():  # one sync
        used = tokens[mask]
        raise InputError(f"{name}.sequence_logprobs: token ids must lie in [0, {vocab}) on masked positions; "
                         f"got range [{int(used.min())}, {int(used.max())}]. Are tokens and logits aligned "
                         f"(logits at step t predict tokens[t])?")
    return logits, tokens, mask


def _grid_entries(name: str, values) -> list:
    """The candidates of a grid given as a list, tuple, 1-D numpy array or tensor, as plain Python numbers.

    float32 / float16 entries are read as the shortest decimal that rounds to them (0.7, not 0.699999988...), so a
    grid from ``np.float32`` or ``torch.tensor`` names its candidates as the user wrote them."""
    if isinstance(values, str | bytes) or not isinstance(values, Iterable):
        raise ConfigError(f"{name}: values={values!r} is not a grid; pass a list of candidate values, e.g. "
                          f"values=[0.7, 1.0].")
    if isinstance(values, torch.Tensor):
        values = values.detach().cpu().numpy()
    if isinstance(values, np.ndarray) and values.ndim != 1:
        raise ConfigError(f"{name}: values has shape {values.shape}; pass a 1-D list of candidate values.")
    return [_plain(v) for v in values]


def _plain(v):
    if isinstance(v, np.floating) and np.finfo(v.dtype).bits < 64:
        return float(np.format_float_positional(v, unique=True, trim="0"))
    if isinstance(v, np.generic):
        return v.item()
    return v


def block_rows(vocab: int, device: torch.device, chunk_elements: int = CHUNK_ELEMENTS) -> int:
    """How many tokens (rows of ``vocab`` logits) to score at a time: cache-sized on the CPU, else chunk-sized."""
    elements = min(chunk_elements, CPU_BLOCK_ELEMENTS) if device.type == "cpu" else chunk_elements
    return max(1, elements // max(1, vocab))


def in_blocks(score, logits: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """``score(logits, tokens)`` on consecutive blocks of rows (see ``block_rows``), concatenated."""
    per_block = block_rows(logits.shape[-1], logits.device)
    if logits.shape[0] <= per_block:
        return score(logits, tokens)
    return torch.cat([score(logits[i:i + per_block], tokens[i:i + per_block])
                      for i in range(0, logits.shape[0], per_block)])


_ROWS_CHECKED: ContextVar[bool] = ContextVar("metahp_rows_checked", default=False)


@contextmanager
def rows_checked():
    """Within it, ``check_rows`` is skipped: the caller has already checked these logits (``sequence_logprobs``
    checks each block in the same reduction as its NaN/+inf check; a knob built of other knobs checks once)."""
    token = _ROWS_CHECKED.set(True)
    try:
        yield
    finally:
        _ROWS_CHECKED.reset(token)


def _all_minus_inf(name: str, where: str, count: int, unit: str) -> InputError:
    return InputError(f"{name}: logits {where} are all -inf ({count} such {unit}): no token could have been "
                      f"sampled there; check that mask covers only sampled tokens and that logits at step t "
                      f"predict tokens[t].")


def check_rows(name: str, logits: torch.Tensor) -> None:
    """Raise InputError if a row of ``logits`` [N, V] is all -inf: no token could have been sampled from it (the
    likelihoods would be NaN). Built-in knobs call it at the top of ``token_logprobs``; one reduction and one
    device -> host sync, skipped under ``rows_checked`` (inside ``sequence_logprobs``, which checks every knob's
    blocks, user-written ones included, with ``_check_logits``)."""
    if _ROWS_CHECKED.get() or logits.numel() == 0:
        return
    dead = torch.isneginf(logits.amax(dim=-1))
    if dead.any():
        rows = dead.nonzero()[:, 0]
        raise _all_minus_inf(f"{name}.token_logprobs", f"of row {int(rows[0])}", rows.numel(), "rows")


def _check_logits(name: str, z: torch.Tensor, logits: torch.Tensor, mask: torch.Tensor) -> None:
    # -inf is legitimate (a token banned by a logits processor) unless a whole row is -inf; NaN and +inf are not.
    # One per-row max finds all three: it propagates NaN, is +inf whenever one is present, and -inf only on a row
    # that is all -inf. The block's rows are completion positions of the batch (``logits`` [B, L, V], ``mask``);
    # only the error path looks at the whole batch, to name the first such position and count them.
    top = z.amax(dim=-1)
    if torch.isfinite(top).all():  # the one sync of the check
        return
    if torch.isnan(top).any() or torch.isposinf(top).any():
        raise InputError(f"{name}.sequence_logprobs: logits contain NaN or +inf on completion tokens; "
                         f"check the model output (overflow in half precision?) before the meta-update.")
    dead = (torch.isneginf(logits.amax(dim=-1)) & mask).nonzero()
    row, token = (int(i) for i in dead[0])
    error = _all_minus_inf(f"{name}.sequence_logprobs", f"at completion position (row {row}, token {token})",
                           dead.shape[0], "positions")
    error.position = (row, token)  # a caller that passed a subset of its batch re-labels the row (policy.py)
    raise error
