"""Several knobs at once, over the product of their grids (for small grids).

A candidate is a tuple, one value per knob, e.g. (temperature, top_p) = (0.8, 0.9). Its likelihood is that of
the sampler with all of them: temperature first, then the truncation (as transformers and vLLM apply them):

    l_i(T, c) = (1 / |tau_i|) sum_t log p_{T, c}(o_t | z_t)

The product has K_T * K_c candidates; each batch scores all of them from the same logits. For larger grids use
the factored form (one meta-policy per knob), see docs/truncation-knobs.md.
"""

from __future__ import annotations

import itertools

import torch

from metahp.errors import ConfigError
from metahp.knobs.base import Knob, check_rows, rows_checked
from metahp.knobs.temperature import Temperature


class ProductKnob(Knob):
    """The product of a Temperature grid and one truncation knob's grid (top_p, top_k or min_p).

    >>> from metahp.knobs import TopP
    >>> ProductKnob(Temperature([0.7, 1.0]), TopP([0.9, 1.0])).values
    ((0.7, 0.9), (0.7, 1.0), (1.0, 0.9), (1.0, 1.0))
    """

    default_values = ()

    def __init__(self, *knobs: Knob):
        from metahp.knobs.truncation import TruncationKnob

        if len(knobs) < 2 or not all(isinstance(k, Knob) for k in knobs):
            raise ConfigError("ProductKnob needs two or more Knob instances, e.g. ProductKnob(Temperature(), TopP()).")
        names = [k.name for k in knobs]
        truncations = [k for k in knobs if isinstance(k, TruncationKnob)]
        temperatures = [k for k in knobs if isinstance(k, Temperature)]
        if len(knobs) != 2 or len(truncations) != 1 or len(temperatures) != 1:
            raise ConfigError(f"a product of {names} is not supported: combine one temperature grid with at most one "
                              f"truncation knob (top_p, top_k or min_p); samplers apply truncations in sequence.")
        self.knobs = tuple(knobs)
        self.name = "+".join(names)
        samplers = [temperatures[0].reference_sampler, truncations[0].reference_sampler]
        self.reference_sampler = " then ".join(samplers) if all(samplers) else None
        self._values = tuple(itertools.product(*(k.values for k in knobs)))

    def check_value(self, value):
        raise NotImplementedError("ProductKnob validates its candidates through its component knobs")

    def __repr__(self) -> str:
        return f"ProductKnob({', '.join(map(repr, self.knobs))})"

    def label(self, value) -> str:
        return ",".join(f"{k.name}={k.label(v)}" for k, v in zip(self.knobs, value, strict=True))

    def components(self, value) -> dict[str, float]:
        return {k.name: v for k, v in zip(self.knobs, value, strict=True)}

    def reference_warper(self, value):
        """The truncation knob's reference at the candidate's temperature (temperature first, then the cut)."""
        temperature = next(k for k in self.knobs if isinstance(k, Temperature))
        truncation = next(k for k in self.knobs if k is not temperature)
        t, cut = value if self.knobs[0] is temperature else value[::-1]
        return type(truncation)([cut], temperature=t, epsilon=truncation.epsilon).reference_warper(cut)

    def token_logprobs(self, logits: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        temperature = next(k for k in self.knobs if isinstance(k, Temperature))
        truncation = next(k for k in self.knobs if not isinstance(k, Temperature))
        check_rows(self.name, logits)
        columns: dict[tuple, torch.Tensor] = {}
        for t in temperature.values:
            # One truncation knob per temperature scores all its candidates from one softmax and sort per token.
            with rows_checked():
                block = type(truncation)(truncation.values, temperature=t, epsilon=truncation.epsilon
                                         ).token_logprobs(logits, tokens)
            for j, c in enumerate(truncation.values):
                columns[(t, c)] = block[:, j]
        temperature_first = self.knobs[0] is temperature
        return torch.stack([columns[v if temperature_first else v[::-1]] for v in self._values], dim=1)
