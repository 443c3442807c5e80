"""Temperature: p_T(o | z) = softmax(z / T)[o]."""

from __future__ import annotations

import torch

from metahp.errors import ConfigError
from metahp.knobs.base import Knob, check_rows, in_blocks, rows_checked

# Below this, z / T overflows float32 for ordinary logit ranges (and 1 / T itself for T < 3e-39).
MIN_TEMPERATURE = 1e-4


class Temperature(Knob):
    """Sampling temperature T > 0; candidates default to TAMPO's grid 0.6, 0.7, ..., 1.5.

    For each completion token with logits z and taken token o:

        log p_T(o) = (z_o - m) / T - log sum_v exp((z_v - m) / T),     m = max_v z_v.

    The row max m is computed once and reused for every candidate: after the shift the largest term of the
    sum is exp(0) = 1, so the sum is >= 1 and needs no second max. Cost: one exp over the vocabulary per
    token per candidate.

    ``truncation=("top_p", 0.9)`` scores each temperature with that truncation applied after it (as the
    samplers do), for adapting the temperature while a truncation knob is in use; then a token outside a
    candidate's support gets -inf (see docs/truncation-knobs.md).

    >>> Temperature([1.0, 0.5]).values
    (0.5, 1.0)
    """

    name = "temperature"
    role = "scales"
    off_value = 1.0
    default_values = (0.6, 0.7, 0.8, 0.9, 1.0, 1.1, 1.2, 1.3, 1.4, 1.5)
    reference_sampler = "transformers.TemperatureLogitsWarper"

    @classmethod
    def backend_value(cls, value):
        return None if value is None else float(value)

    def conditioned(self, given: dict | None) -> Temperature:
        """Scored with the batch's active truncation (if any) applied after each candidate temperature."""
        from metahp.knobs import active_truncations

        active = active_truncations(given or {})
        if len(active) > 1:
            raise ConfigError(f"the batch truncates with {dict(active)} at once; metahp scores a temperature with one "
                              f"truncation after it. Leave all but one at their off values.")
        truncation = active[0] if active else None
        return self if truncation == self.truncation else Temperature(self.values, truncation=truncation)

    def __init__(self, values=None, *, truncation: tuple[str, float] | None = None):
        super().__init__(values)
        self.truncation = truncation

    def reference_warper(self, value):
        """transformers' TemperatureLogitsWarper(value), followed by the truncation's warper when one is set (the
        truncation knob's reference at that temperature)."""
        if self.truncation is None:
            return super().reference_warper(value)
        from metahp.knobs import KNOBS

        name, cut = self.truncation
        return KNOBS[name]([cut], temperature=value).reference_warper(cut)

    def check_value(self, value: float) -> float:
        value = float(value)
        if value <= 0:
            raise ConfigError(f"temperature: candidate {value} is not positive; temperatures must be > 0 "
                              f"(use a small value such as 0.1 for near-greedy sampling).")
        if value < MIN_TEMPERATURE:
            raise ConfigError(f"temperature: candidate {value} is too small (below {MIN_TEMPERATURE}): logits / T "
                              f"overflows float32 and its likelihoods become NaN; use 0.01 or more (0.1 samples "
                              f"near-greedily already).")
        return value

    def token_logprobs(self, logits: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        check_rows(self.name, logits)
        logits = logits.float()  # no copy for float32; half precision is scored in float32, as sequence_logprobs does
        if self.truncation is not None:
            from metahp.knobs import KNOBS

            name, value = self.truncation
            with rows_checked():
                columns = [KNOBS[name]([value], temperature=t).token_logprobs(logits, tokens)[:, 0]
                           for t in self.values]
            return torch.stack(columns, dim=1)
        return in_blocks(self._block_logprobs, logits, tokens)

    def _block_logprobs(self, logits: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        shifted = logits - logits.amax(dim=-1, keepdim=True)
        taken = shifted.gather(-1, tokens.unsqueeze(-1)).squeeze(-1)
        out = torch.empty(logits.shape[0], len(self), dtype=torch.float32, device=logits.device)
        scaled = torch.empty_like(shifted)  # one reusable buffer, never [N, V, K]
        for k, temperature in enumerate(self.values):
            inv = 1.0 / temperature
            torch.mul(shifted, inv, out=scaled)
            log_partition = scaled.exp_().sum(dim=-1).log_()
            out[:, k] = taken * inv - log_partition
        return out


class PerRowTemperature:
    """A transformers logits processor (a plain callable, so the core needs no transformers): row b of the scores
    divided by its own temperature t[b] ([B]). Both trainers sample values per completion with it, generation's
    own temperature set to 1; transformers runs it before its truncation warpers, as it runs a single temperature."""

    def __init__(self, temperatures: torch.Tensor):
        self.temperatures = temperatures.float().unsqueeze(1)

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        return scores / self.temperatures.to(scores.device)
