"""The core's plug-ins: updaters and rewards registered with one call (like knobs), taken as instances, checked when
they are combined (at construction, not at the first step), and the MetaPolicy contract the knob layer relies on."""

from __future__ import annotations

import numpy as np
import pytest
from pydantic import validate_call

import metahp
from metahp import ConfigError, register_reward, register_updater
from metahp.rewards import REWARDS, Batch, Reward
from metahp.updaters import UPDATERS, Feedback, State, Updater


@validate_call
def greedy_average(rate: float = 0.5) -> Updater:
    """A toy bandit: an exponential average of each value's rewards, its best one most likely."""

    def init(values: tuple[float, ...]) -> State:
        return {"mean": np.zeros(len(values))}

    def update(state: State, feedback: Feedback) -> State:
        mean = state["mean"].copy()
        mean[feedback.chosen] += rate * (feedback.reward - mean[feedback.chosen])
        return {"mean": mean}

    def probs(state: State) -> np.ndarray:
        e = np.exp(state["mean"] - state["mean"].max())
        return e / e.sum()

    return Updater("greedy_average", "chosen", "sample", init, update, probs, {"rate": rate})


class MeanReward(Reward):
    """The batch's mean reward itself, as bandit feedback."""

    name = "mean_reward"
    kind = "chosen"

    def __call__(self, state: dict, batch: Batch) -> tuple[float, dict]:
        return float(batch.mean_reward), state


@pytest.fixture
def registered():
    register_updater(greedy_average)
    register_reward(MeanReward)
    yield
    UPDATERS.pop("greedy_average")  # other tests in this process see the built-in registry only
    REWARDS.pop("mean_reward")


# -- registration ---------------------------------------------------------------------------------------------
def test_a_registered_updater_and_reward_are_built_by_name_with_their_options(registered):
    policy = metahp.meta_policy("temperature", "greedy_average", rate=0.25, reward="mean_reward", seed=0)
    assert policy.updater.options == {"rate": 0.25} and isinstance(policy.reward, MeanReward)
    assert policy.selection == "sample"
    policy.sample()
    policy.update(reward=1.0)
    assert policy.probs[policy._chosen] == policy.probs.max()
    with pytest.raises(ConfigError, match="rate"):  # the factory's own validation, with today's clear error
        metahp.meta_policy("temperature", "greedy_average", rate="fast")
    # registering the same factory again is harmless (a module imported twice)
    assert register_updater(greedy_average) is greedy_average and register_reward(MeanReward) is MeanReward


def test_the_registries_are_exported_next_to_register_knob():
    assert metahp.register_knob is metahp.knobs.register_knob
    assert {"register_knob", "register_updater", "register_reward"} <= set(metahp.__all__)


def test_register_updater_refuses_what_meta_policy_cannot_build(registered):
    with pytest.raises(ConfigError, match="takes a factory"):
        register_updater(greedy_average())  # an instance, not its factory
    with pytest.raises(ConfigError, match="returned a dict"):
        register_updater(lambda: {})
    with pytest.raises(ConfigError, match="default hyperparameters"):
        register_updater(lambda alpha: greedy_average(alpha))
    bad_feedback = greedy_average()
    with pytest.raises(ConfigError, match="feedback must be one of"):
        register_updater(lambda: Updater("odd", "sometimes", "sample", bad_feedback.init, bad_feedback.update,
                                         bad_feedback.probs))
    with pytest.raises(ConfigError, match="selection must be one of"):
        register_updater(lambda: Updater("odd", "chosen", "best", bad_feedback.init, bad_feedback.update,
                                         bad_feedback.probs))
    with pytest.raises(ConfigError, match="identifier"):
        register_updater(lambda: Updater("not a name", "chosen", "sample", bad_feedback.init, bad_feedback.update,
                                         bad_feedback.probs))

    def tampo():  # another factory under a built-in's name
        return Updater("tampo", "chosen", "sample", bad_feedback.init, bad_feedback.update, bad_feedback.probs)

    with pytest.raises(ConfigError, match="registered already"):
        register_updater(tampo)
    assert UPDATERS["tampo"] is metahp.updaters.tampo


def test_register_reward_refuses_an_incomplete_or_clashing_reward(registered):
    with pytest.raises(ConfigError, match="Reward subclass"):
        register_reward(MeanReward())

    class Nameless(MeanReward):
        name = "mean reward"

    class Kindless(MeanReward):
        name = "kindless"
        kind = "scalar"

    class Clash(MeanReward):
        name = "informativeness"

    class NeedsArgument(MeanReward):
        name = "needs_argument"

        def __init__(self, scale):
            self.scale = scale

    for cls, words in ((Nameless, "identifier"), (Kindless, "kind must be one of"), (Clash, "registered already"),
                       (NeedsArgument, "default options")):
        with pytest.raises(ConfigError, match=words):
            register_reward(cls)
    assert set(REWARDS) == {"trajectory_likelihood", "reward_improvement", "informativeness",
                            "within_group_advantage", "mean_reward"}
