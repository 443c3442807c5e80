"""Conformance kit for metahp plug-ins (like gymnasium's check_env): updaters, knobs, rewards, adapters.

``check_updater(my_factory())``, ``check_knob(MyKnob())``, ``check_reward(MyReward())`` and
``check_adapter(adapter)`` run every check of their kind; each property is also a public function of its own
(``check_updater_learns``, ``check_knob_masking``, ...; the tuples ``UPDATER_CHECKS``, ``KNOB_CHECKS``,
``REWARD_CHECKS``, ``ADAPTER_CHECKS`` list them in the order they run). A failure is an AssertionError whose
message starts with the check and the plug-in:

>>> import numpy as np
>>> from metahp.updaters import UPDATERS, Updater
>>> check_updater(UPDATERS["exp3"]())                      # passes silently
>>> check_updater(UPDATERS["constant"](), learns=False)    # constant ignores feedback by design
>>> lazy = Updater("lazy", "chosen", "sample", lambda values: {"n": np.zeros(len(values))},
...                lambda state, feedback: state, lambda state: np.full(len(state["n"]), 1 / len(state["n"])))
>>> check_updater(lazy)
Traceback (most recent call last):
    ...
AssertionError: check_updater_learns(lazy): candidate 0 (0.6) was consistently better (...) but its probability
went 0.200 -> 0.200; ...

Hypothesis strategies for meta-update inputs live in ``metahp.testing.strategies`` (hypothesis is a development
dependency: importing ``metahp.testing`` does not import it).
"""

from metahp.testing.adapters import (
    ADAPTER_CHECKS,
    DRIVEN_CHECKS,
    HYPERPARAMETER_DRIVEN_CHECKS,
    check_adapter,
    check_adapter_copies,
    check_adapter_detach,
    check_adapter_no_extra_forward,
    check_adapter_resumes,
    check_adapter_sampled_as_scored,
    check_adapter_state_round_trip,
    check_adapter_stepped_as_credited,
    knob_of_copy,
)
from metahp.testing.checks import (
    HYPERPARAMETER_KNOB_CHECKS,
    KNOB_CHECKS,
    REWARD_CHECKS,
    UPDATER_CHECKS,
    check_knob,
    check_knob_chunking,
    check_knob_domain,
    check_knob_grid,
    check_knob_has_no_likelihood,
    check_knob_masking,
    check_knob_matches_sampler,
    check_knob_no_graph,
    check_knob_normalised,
    check_knob_output,
    check_knob_registry,
    check_policy_json_round_trip,
    check_reward,
    check_reward_interface,
    check_reward_json_round_trip,
    check_reward_output,
    check_reward_purity,
    check_reward_state,
    check_reward_zero_advantages,
    check_updater,
    check_updater_determinism,
    check_updater_distribution,
    check_updater_interface,
    check_updater_json_round_trip,
    check_updater_learns,
    check_updater_policy_round_trip,
    check_updater_purity,
    check_updater_state,
    check_updater_zero_advantages,
)

__all__ = [
    "ADAPTER_CHECKS", "DRIVEN_CHECKS", "HYPERPARAMETER_DRIVEN_CHECKS", "HYPERPARAMETER_KNOB_CHECKS", "KNOB_CHECKS",
    "REWARD_CHECKS", "UPDATER_CHECKS", "check_adapter", "check_adapter_copies", "check_adapter_detach",
    "check_adapter_no_extra_forward", "check_adapter_resumes", "check_adapter_sampled_as_scored",
    "check_adapter_state_round_trip", "check_adapter_stepped_as_credited", "check_knob", "check_knob_chunking",
    "check_knob_domain", "check_knob_grid", "check_knob_has_no_likelihood", "check_knob_masking",
    "check_knob_matches_sampler", "check_knob_no_graph", "check_knob_normalised", "check_knob_output",
    "check_knob_registry", "check_policy_json_round_trip", "check_reward", "check_reward_interface",
    "check_reward_json_round_trip", "check_reward_output", "check_reward_purity", "check_reward_state",
    "check_reward_zero_advantages", "check_updater", "check_updater_determinism", "check_updater_distribution",
    "check_updater_interface", "check_updater_json_round_trip", "check_updater_learns",
    "check_updater_policy_round_trip", "check_updater_purity", "check_updater_state", "check_updater_zero_advantages",
    "knob_of_copy",
]
