"""Per-candidate token log-likelihoods taken from the logits that sampled each token, during transformers' generate.

TRL's transformers path calls ``model.generate``; at every decoding step the LM head produces the raw logits z_t
([B, V], before any logits processor or temperature) and the next forward receives the token o_t sampled from them.
Holding one step of logits until its token arrives gives ``knob.token_logprobs(z_t, o_t)`` ([B, K]; several
knobs' columns side by side) at no extra forward pass and O(B * V) memory (``output_logits=True`` would keep all
[B, L, V]). The last step's token is read from the returned sequences.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch

from metahp.knobs import Knob
from metahp.knobs.base import CHUNK_ELEMENTS, length_normalised

from .kit import replaced


class GenerateCapture:
    """Context for one ``generate`` call: ``with capture.hooks(model): model.generate(...)``; then
    ``capture.finish(sequences, prompt_length)`` returns the per-token log-likelihoods [B, L, K] or None when
    the calls did not line up with the sequences (then the caller falls back to a forward pass). ``knob`` may be a
    sequence of knobs: their candidates' columns then come side by side (K = the sum of their sizes)."""

    def __init__(self, knob: Knob | Sequence[Knob], chunk_elements: int = CHUNK_ELEMENTS):
        self.knobs = [knob] if isinstance(knob, Knob) else list(knob)
        self.knob = self.knobs[0]
        self.chunk_elements = chunk_elements
        self.per_token: list[torch.Tensor] = []  # blocks [B, n_steps, K]
        self._steps: list[tuple[torch.Tensor, torch.Tensor]] = []  # (logits [B, V], token [B]) not yet scored
        self._buffered = 0
        self._pending: torch.Tensor | None = None
        self._broken = False
        self.seconds = 0.0  # time spent in the hooks (the capture's share of generation)

    def _on_logits(self, module, args, output):
        logits = output if isinstance(output, torch.Tensor) else output[0]
        if self._pending is not None:  # two LM-head calls without a token in between: not plain decoding
            self._broken = True
        self._pending = logits[:, -1, :].detach()

    def _on_forward(self, module, args, kwargs):
        if self._pending is None:
            return  # the prefill: no token sampled yet
        ids = kwargs.get("input_ids", args[0] if args else None)
        if ids is None or ids.dim() != 2:
            self._broken = True
            return
        self._take(ids[:, -1])

    def _take(self, tokens: torch.Tensor) -> None:
        start = time.perf_counter()
        self._steps.append((self._pending, tokens.long()))
        self._buffered += self._pending.numel()
        self._pending = None
        if self._buffered >= self.chunk_elements:
            self._flush()
        self.seconds += time.perf_counter() - start

    def _flush(self) -> None:
        # Steps are scored together in blocks of up to chunk_elements logits: few large kernels instead of many
        # tiny ones, and memory bounded by one block (never [B, L, V] for a long generation and a large vocab).
        if not self._steps:
            return
        logits = torch.stack([z for z, _ in self._steps], dim=1)  # [B, n, V]
        tokens = torch.stack([o for _, o in self._steps], dim=1)  # [B, n]
        batch, n, vocab = logits.shape
        flat, flat_tokens = logits.reshape(batch * n, vocab).float(), tokens.reshape(-1)
        with torch.no_grad():
            per_token = torch.cat([knob.token_logprobs(flat, flat_tokens) for knob in self.knobs], dim=1)
        self.per_token.append(per_token.reshape(batch, n, -1))
        self._steps, self._buffered = [], 0

    def hooks(self, model):
        return _Hooks(self, model)

    def finish(self, sequences: torch.Tensor, prompt_length: int) -> torch.Tensor | None:
        start = time.perf_counter()
        if self._pending is not None:
            self._take(sequences[:, -1])
        self._flush()
        self.seconds += time.perf_counter() - start
        n_new = sequences.size(1) - prompt_length
        if self._broken or sum(block.size(1) for block in self.per_token) != n_new or n_new == 0:
            return None
        # The blocks stayed on the logits' device; this is their one transfer to the CPU, where the caller joins
        # them with the batch's mask.
        return torch.cat(self.per_token, dim=1).cpu()


class _Hooks:
    def __init__(self, capture: GenerateCapture, model):
        self.capture, self.model, self.handles = capture, model, []

    def __enter__(self):
        base = self.model.get_base_model() if hasattr(self.model, "get_base_model") else self.model
        self.handles = [
            base.get_output_embeddings().register_forward_hook(self.capture._on_logits),
            base.register_forward_pre_hook(self.capture._on_forward, with_kwargs=True),
        ]
        return self.capture

    def __exit__(self, *exc):
        for handle in self.handles:
            handle.remove()
        return False


def sequence_logprobs(per_token: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """[B, L, K] per-token log-likelihoods -> [B, K] length-normalised over ``mask`` [B, L] (0 for empty rows)."""
    mask = mask.bool()
    per_token = per_token[:, :mask.size(1)]
    total = torch.where(mask.unsqueeze(-1), per_token, torch.zeros_like(per_token)).sum(dim=1)
    return length_normalised(total, mask.sum(dim=1))


@dataclass
class Captured:
    """What ``capturing`` found: per-token log-likelihoods [B, L, K] of the one generate call (None after zero or
    several calls, e.g. multi-turn tools: then score with a forward) and the seconds the hooks took."""

    per_token: torch.Tensor | None = None
    seconds: float = 0.0


@contextlib.contextmanager
def capturing(model, knobs: Sequence[Knob]) -> Iterator[Captured]:
    """``model.generate`` captures every candidate's per-token likelihood of what it samples, for the duration."""
    generate, calls, found = model.generate, [], Captured()

    def capturing_generate(*args, **kwargs):
        capture = GenerateCapture(knobs)
        with capture.hooks(model):
            sequences = generate(*args, **kwargs)
        prompt = kwargs.get("input_ids", args[0] if args else None)
        calls.append(capture.finish(sequences, prompt.size(1)) if isinstance(sequences, torch.Tensor) else None)
        found.seconds += capture.seconds
        return sequences

    with replaced(model, "generate", capturing_generate):
        yield found
    found.per_token = calls[0] if len(calls) == 1 else None
