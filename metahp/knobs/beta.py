"""beta, the KL coefficient: the weight of the KL penalty to the reference policy in the GRPO loss,

    loss = - (1/|o|) sum_t min(r_t A, clip(r_t, 1 - eps, 1 + eps) A) + beta * KL_k3(pi || pi_ref).

beta >= 0; a trainer builds its reference model only when beta > 0 at start-up (TRL, the reference trainer), so
adapting beta needs the run configured with beta > 0 (a candidate 0 then switches the penalty off for a batch).
"""

from __future__ import annotations

from metahp.knobs.hyperparameter import HyperparameterKnob


class Beta(HyperparameterKnob):
    """The KL coefficient beta >= 0 (TRL's GRPOConfig.beta; the reference trainer's kl_beta).

    >>> Beta([0.04, 0.0]).values
    (0.0, 0.04)
    """

    name = "beta"
    off_value = None  # the configured value is the default
    lower, lower_open = 0.0, False
    default_values = (0.0, 0.01, 0.02, 0.04, 0.08)
    meaning = "the KL coefficient"
