"""epsilon, the clip range of the policy ratio in the GRPO loss:

    - min(r_t A, clip(r_t, 1 - eps_low, 1 + eps_high) A),     r_t = pi(o_t) / pi_old(o_t).

The knob sets eps_low, and eps_high with it when the run is symmetric (TRL's epsilon_high unset; the reference
trainer's one clip_eps); a run with its own epsilon_high (DAPO's clip-higher) keeps it.
"""

from __future__ import annotations

from metahp.knobs.hyperparameter import HyperparameterKnob


class Epsilon(HyperparameterKnob):
    """The clip range epsilon in (0, 1) (TRL's GRPOConfig.epsilon; the reference trainer's clip_eps).

    >>> Epsilon().values
    (0.1, 0.15, 0.2, 0.28, 0.4)
    """

    name = "epsilon"
    off_value = None  # the configured value is the default
    lower, upper = 0.0, 1.0
    default_values = (0.1, 0.15, 0.2, 0.28, 0.4)
    meaning = "the clip range of the policy ratio"
