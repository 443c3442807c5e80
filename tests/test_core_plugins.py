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

    with pytest.raises(ConfigError, match="default_reward='reward_improvement' must name a registered reward that "
                                          "gives per_candidate feedback"):
        register_updater(lambda: Updater("odd", "per_candidate", "sample", bad_feedback.init, bad_feedback.update,
                                         bad_feedback.probs, default_reward="reward_improvement"))
    with pytest.raises(ConfigError, match="one of .*'reward_improvement'"):
        register_updater(lambda: Updater("odd", "chosen", "sample", bad_feedback.init, bad_feedback.update,
                                         bad_feedback.probs, default_reward="no_such_reward"))

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
                            "within_group_advantage", "gradient_alignment", "update_alignment", "kl_target",
                            "clip_target", "mean_reward"}


# -- updaters and rewards as instances ------------------------------------------------------------------------
def _run(policy, steps=5):
    rng = np.random.default_rng(0)
    draws = []
    for _ in range(steps):
        draws.append(policy.sample())
        logp = -rng.random((6, len(policy.values)))
        policy.update(logp, rng.standard_normal(6), reward=float(rng.random()))
    return draws, policy.state_dict()


def test_an_updater_and_a_reward_instance_give_the_policy_their_names_give():
    from metahp.rewards import TrajectoryLikelihood
    from metahp.updaters import tampo

    by_name = metahp.meta_policy("temperature", "tampo", alpha=0.2, reward="trajectory_likelihood",
                                 normalizer="softmax", nucleus_p=0.9, seed=4)
    by_instance = metahp.meta_policy("temperature", tampo(alpha=0.2), reward=TrajectoryLikelihood("softmax"),
                                     nucleus_p=0.9, seed=4)
    assert _run(by_name) == _run(by_instance)
    bandit = metahp.meta_policy("temperature", metahp.updaters.exp3(gamma=0.2), seed=1)  # its default reward
    assert bandit.reward.name == "reward_improvement" and bandit.selection == "sample"


def test_options_beside_an_instance_are_refused_where_they_would_be_ignored():
    from metahp.rewards import TrajectoryLikelihood
    from metahp.updaters import tampo

    with pytest.raises(ConfigError, match=r"alpha=0.2 is an option of the updater 'tampo'.*tampo\(alpha=0.2\)"):
        metahp.meta_policy("temperature", tampo(alpha=0.1), alpha=0.2)
    with pytest.raises(ConfigError, match=r"normalizer='argmax'.*TrajectoryLikelihood\(normalizer='argmax'\)"):
        metahp.meta_policy("temperature", "tampo", reward=TrajectoryLikelihood(), normalizer="argmax")
    # the other components still take theirs
    policy = metahp.meta_policy("temperature", tampo(), reward=TrajectoryLikelihood(), nucleus_p=0.5)
    assert policy.nucleus_p == 0.5


@pytest.mark.parametrize("updater, reward, words", [
    (5, None, ["unknown updater 5", "'tampo'", "Updater"]),
    (metahp.updaters.tampo, None, ["factory of 'tampo'", "updater='tampo'"]),
    (lambda: None, None, ["register_updater"]),
    ("tampo", metahp.rewards.Informativeness, ["it is a class", "reward='informativeness'"]),
    ("tampo", 1.5, ["unknown reward 1.5", "'informativeness'", "Reward instance"]),
    ("tampo", "informative", ["unknown reward 'informative'", "'informativeness'"]),
])
def test_anything_else_is_refused_naming_what_is_valid(updater, reward, words):
    with pytest.raises(ConfigError) as info:
        metahp.meta_policy("temperature", updater, reward=reward)
    assert all(w in str(info.value) for w in words), str(info.value)


def test_a_knob_set_shares_the_instances_but_each_policy_keeps_its_own_state():
    from metahp.knobset import KnobSet
    from metahp.rewards import Informativeness
    from metahp.updaters import softmax_gradient

    updater, reward = softmax_gradient(lr=5.0), Informativeness()
    ks = KnobSet("temperature", updater, [0.6, 1.0], 0, per="prompt", group_size=2, reward=reward)
    named = KnobSet("temperature", "softmax_gradient", [0.6, 1.0], 0, per="prompt", group_size=2, lr=5.0,
                    reward="informativeness")
    assert all(p.updater is updater and p.reward is reward for p in ks.policies.values())
    for knobs in (ks, named):
        knobs.draw(rows=4, contexts=[None, None])
        # two unseen prompts' groups, one at each value: the informative one's value gains
        knobs.update(advantages=[1.0, -1.0, 0.0, 0.0], used={"temperature": [0.6, 0.6, 1.0, 1.0]},
                     contexts=[None, None])
    assert ks.state_dict() == named.state_dict()
    probs = {bucket: p.probs.tolist() for bucket, p in ks.policies.items()}
    assert probs["none_correct"] == probs["all_correct"] == [0.5, 0.5]  # no group of theirs: unchanged
    assert probs["unseen"][0] > 0.5


# -- options that would do nothing ----------------------------------------------------------------------------
def test_nucleus_p_is_refused_unless_the_selection_reads_it():
    with pytest.raises(ConfigError, match=r"selection='sample' \(the default of updater 'exp3'\).*selection='nucleus'"):
        metahp.meta_policy("temperature", "exp3", nucleus_p=0.9)
    with pytest.raises(ConfigError, match=r"selection='greedy' \(as asked\)"):
        metahp.meta_policy("temperature", "tampo", selection="greedy", nucleus_p=0.9)
    assert metahp.meta_policy("temperature", "exp3", selection="nucleus", nucleus_p=0.9).nucleus_p == 0.9
    with pytest.raises(ConfigError) as info:  # the unknown-option error no longer offers it
        metahp.meta_policy("temperature", "exp3", nucleusp=0.9)
    assert "nucleus_p" not in str(info.value) and "gamma" in str(info.value)


# -- what a reward needs, declared and checked when the knob set is built -------------------------------------
@pytest.mark.parametrize("reward", ["informativeness", "within_group_advantage"])
def test_a_reward_that_reads_each_rows_value_is_refused_per_batch_at_construction(reward):
    from metahp.knobset import KnobSet

    with pytest.raises(ConfigError) as info:
        KnobSet("temperature", "softmax_gradient", [0.6, 1.0], 0, per="batch", reward=reward)
    message = str(info.value)
    assert all(w in message for w in (f"reward {reward!r}", "per='completion'", "reward='trajectory_likelihood'"))
    assert ("'prompt'" in message) == (reward == "informativeness")  # only it learns from values per prompt
    # the policy alone still takes it: rows= may be passed to update by hand
    metahp.meta_policy("temperature", "softmax_gradient", reward=reward).update(advantages=[1.0, -1.0], rows=[0, 1])


def test_values_per_prompt_take_any_reward_that_declares_a_signal_between_groups():
    from metahp.knobset import KnobSet
    from metahp.rewards import Informativeness

    class SquaredAdvantage(Informativeness):
        name = "squared_advantage"

        def __call__(self, state, batch):
            return super().__call__(state, Batch(**{**batch.__dict__, "advantages": batch.advantages ** 2}))

    ks = KnobSet("temperature", "softmax_gradient", [0.6, 1.0], 0, per="prompt", group_size=2,
                 reward=SquaredAdvantage())
    ks.update(advantages=[1.0, -1.0, 0.0, 0.0], used={"temperature": [0.6, 0.6, 1.0, 1.0]}, contexts=[None, None])
    assert ks.policies["unseen"].probs[0] > 0.5

    class GroupBlind(SquaredAdvantage):
        name = "group_blind"
        per_group_signal = False

    with pytest.raises(ConfigError, match="reward='informativeness', not 'group_blind'"):
        KnobSet("temperature", "softmax_gradient", [0.6, 1.0], 0, per="prompt", group_size=2, reward=GroupBlind())


def test_register_reward_refuses_a_need_that_is_not_a_bool(registered):
    class Vague(MeanReward):
        name = "vague"
        needs_rows = "sometimes"

    with pytest.raises(ConfigError, match="needs_rows"):
        register_reward(Vague)


# -- the MetaPolicy contract ----------------------------------------------------------------------------------
def test_the_meta_policy_contract_declares_what_the_knob_layer_reads():
    from metahp import MetaPolicy

    assert {"probs", "needs_likelihoods", "chosen_index", "sample", "sample_rows", "update", "state_dict",
            "load_state_dict"} <= MetaPolicy.__abstractmethods__
    assert {"knob", "updater", "reward", "step"} <= set(MetaPolicy.__annotations__)
    policy = metahp.meta_policy("temperature", "exp3", seed=0)
    assert policy.chosen_index is None and policy.value is None
    value = policy.sample()
    assert policy.values[policy.chosen_index] == value == policy.value


def test_update_from_logits_leaves_out_a_row_impossible_under_the_value_that_sampled_it():
    import torch

    from metahp.rows import unscorable

    def policy():
        p = metahp.meta_policy("top_p", "tampo", values=[0.5, 1.0], seed=0)
        while p.sample() != 0.5:  # the batch was sampled at top_p = 0.5
            pass
        return p

    logits = torch.tensor([[[4.0, 0.0, 0.0]], [[4.0, 0.0, 0.0]], [[0.0, 4.0, 0.0]]])  # [B=3, L=1, V=3]
    tokens = torch.tensor([[0], [2], [1]])  # row 1's token lies outside top_p = 0.5's nucleus
    mask = torch.ones(3, 1)
    advantages = torch.tensor([1.0, -1.0, 0.5])
    logp = metahp.TopP([0.5, 1.0]).sequence_logprobs(logits, tokens, mask)
    assert unscorable(logp, 0).tolist() == [False, True, False] and torch.isfinite(logp[:, 1]).all()

    by_logits = policy()
    with pytest.warns(UserWarning, match="1 completion"):
        metrics = by_logits.update_from_logits(logits, tokens, mask, advantages)
    by_hand = policy()
    kept = [0, 2]
    want = by_hand.update(logp[kept], advantages[kept], batch_size=3)  # N still counts the row left out
    assert metrics == want and by_logits.state_dict() == by_hand.state_dict()
