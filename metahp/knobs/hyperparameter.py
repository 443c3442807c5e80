"""The hyperparameter knob kind: a knob whose value changes the policy update, not the sampling.

A hyperparameter knob (role ``"updates"``) has no likelihood: the same completions were sampled whatever its value,
so no candidate explains them better than another. Its meta-policy learns from scalar feedback (a bandit's reward
improvement) or from per-candidate feedback that reads no likelihoods; ``token_logprobs`` refuses with a ConfigError.
Values are drawn once per generation batch (one optimizer update per batch: no value per completion or per prompt).

A subclass declares its domain as an interval (``lower``, ``upper``, each open or closed) and where each trainer
keeps it is the adapters' business (docs/hyperparameters.md).
"""

from __future__ import annotations

import math
from typing import ClassVar

import torch

from metahp.errors import ConfigError
from metahp.knobs.base import Knob


class HyperparameterKnob(Knob):
    """A knob that changes the update: candidates in the interval (lower, upper), each end open or closed.

    ``off_value`` is the value that leaves the trainer as configured (the learning-rate multiplier 1), or None
    where the configured value itself is the default (beta, epsilon)."""

    role = "updates"
    lower: ClassVar[float] = -math.inf
    upper: ClassVar[float] = math.inf
    lower_open: ClassVar[bool] = True
    upper_open: ClassVar[bool] = True
    #: What the value means, for messages ("the KL coefficient").
    meaning: ClassVar[str] = "a hyperparameter"

    @classmethod
    def domain(cls) -> str:
        """The interval as text, e.g. '(0, 1)' or '[0, inf)'."""
        return (f"{'(' if cls.lower_open else '['}{cls.lower:g}, {cls.upper:g}{')' if cls.upper_open else ']'}")

    def check_value(self, value: float) -> float:
        value = float(value)
        below = value <= self.lower if self.lower_open else value < self.lower
        above = value >= self.upper if self.upper_open else value > self.upper
        if below or above:
            raise ConfigError(f"{self.name}: candidate {value:g} lies outside {self.domain()}, the domain of "
                              f"{self.meaning}; use values in {self.domain()}, e.g. {list(self.default_values)}.")
        return value

    def token_logprobs(self, logits: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        raise ConfigError(f"{self.name} is a hyperparameter knob: it changes the update, not the sampling, so a "
                          f"completion is equally likely under every candidate and has no likelihood to score. Learn "
                          f"it from rewards (updater='exp3', 'sliding_window_ucb' or 'thompson' with "
                          f"reward='reward_improvement').")

    def sequence_logprobs(self, logits, tokens, mask, *, given=None, chunk_elements=0) -> torch.Tensor:
        return self.token_logprobs(logits, tokens)
