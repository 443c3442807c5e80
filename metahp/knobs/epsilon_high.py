"""epsilon_high, DAPO's clip-higher: the upper clip bound of the policy ratio, set apart from the lower one,

    - min(r_t A, clip(r_t, 1 - eps_low, 1 + eps_high) A),     r_t = pi(o_t) / pi_old(o_t).

A wider upper bound lets low-probability tokens with positive advantage grow further (Yu et al. 2025, DAPO). The knob
sets eps_high only: TRL's trainer.epsilon_high and GRPOConfig.epsilon_high; the reference trainer's clip_eps_high.
"""

from __future__ import annotations

from metahp.knobs.hyperparameter import HyperparameterKnob


class EpsilonHigh(HyperparameterKnob):
    """The upper clip range epsilon_high in (0, 1) (TRL's GRPOConfig.epsilon_high; the reference trainer's
    clip_eps_high).

    >>> EpsilonHigh().values
    (0.2, 0.24, 0.28, 0.32, 0.4)
    """

    name = "epsilon_high"
    off_value = None  # the configured value is the default
    lower, upper = 0.0, 1.0
    default_values = (0.2, 0.24, 0.28, 0.32, 0.4)  # around DAPO's 0.28, from the symmetric 0.2 up
    meaning = "the upper clip range of the policy ratio"
