"""The MetaPolicy contract: construction by name, sampling, updating, metrics, errors, checkpoints."""

import json
from collections import Counter

import numpy as np
import pytest
import torch

import metahp
from metahp import ConfigError, InputError, MetaPolicy, StateError, meta_policy
from metahp.selection import greedy, nucleus, sample
from metahp.updaters import UPDATERS


def test_contract_of_the_default_policy():
    policy = meta_policy()
    assert isinstance(policy, MetaPolicy)
    assert policy.values == pytest.approx(tuple(0.6 + 0.1 * i for i in range(10)))
    assert np.allclose(policy.probs, 0.1)
    value = policy.sample()
    assert value in policy.values and policy.value == value
    metrics = policy.update(-torch.rand(8, 10) * 3, torch.randn(8))
    assert metrics["metahp/temperature"] == value
    assert {f"metahp/prob/{v:g}" for v in policy.values} <= set(metrics)
    assert {f"metahp/advantage/{v:g}" for v in policy.values} <= set(metrics)
    assert sum(metrics[f"metahp/prob/{v:g}"] for v in policy.values) == pytest.approx(1)


@pytest.mark.parametrize("name", sorted(UPDATERS))
def test_every_updater_runs_through_the_policy_and_round_trips_json(name):
    policy = meta_policy(updater=name, seed=3)
    rng = np.random.default_rng(0)
    for _ in range(5):
        policy.sample()
        policy.update(-abs(rng.normal(size=(6, 10))) - 2, rng.normal(size=6), reward=float(rng.random()))
    restored = meta_policy(updater=name, seed=99)
    restored.load_state_dict(json.loads(json.dumps(policy.state_dict())))
    assert np.array_equal(restored.probs, policy.probs)
    for _ in range(5):
        assert restored.sample() == policy.sample()
        logp, adv, r = -abs(rng.normal(size=(6, 10))) - 2, rng.normal(size=6), float(rng.random())
        assert restored.update(logp, adv, reward=r) == policy.update(logp, adv, reward=r)


def test_same_seed_same_draws_and_different_seed_different_draws():
    draws = [[meta_policy(seed=s).sample() for _ in range(1)] for s in (1, 1)]
    a, b, c = (meta_policy(seed=s) for s in (1, 1, 2))
    seq = [[p.sample() for _ in range(30)] for p in (a, b, c)]
    assert seq[0] == seq[1] and seq[0] != seq[2] and draws[0] == draws[1]


def test_update_from_logits_equals_manual_path_and_skips_zero_advantage_rows():
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(4, 6, 13, generator=gen)
    tokens = torch.randint(13, (4, 6), generator=gen)
    mask = torch.ones(4, 6)
    adv = torch.tensor([0.5, 0.0, -0.5, 0.0])
    manual = meta_policy(seed=0)
    manual.update(manual.knob.sequence_logprobs(logits, tokens, mask), adv)
    poisoned = logits.clone()
    poisoned[adv == 0] = float("nan")  # would raise if those rows were scored
    fast = meta_policy(seed=0)
    fast.update_from_logits(poisoned, tokens, mask, adv)
    assert np.allclose(fast.probs, manual.probs)


def test_bandit_update_needs_sample_first_and_a_reward():
    policy = meta_policy(updater="exp3")
    assert not policy.needs_likelihoods
    with pytest.raises(InputError, match="call sample"):
        policy.update(reward=0.5)
    policy.sample()
    with pytest.raises(InputError, match="mean task reward"):
        policy.update()
    metrics = policy.update(reward=0.5)
    assert "metahp/bandit_reward" in metrics


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"updater": "tamp"}, "valid updaters: .*tampo"),
        ({"knob": "temp"}, "valid knobs"),
        ({"alpha": 2.0}, "alpha=2.0: Input should be less than or equal to 1"),
        ({"alpha": -1}, "greater than 0"),
        ({"learning_rate": 0.1}, "unknown option learning_rate.*'alpha'"),
        ({"updater": "softmax_gradient", "form": "natrual"}, "form='natrual'.*natural"),
        ({"normalizer": "softermax"}, "softermax"),
        ({"nucleus_p": 0}, "nucleus_p"),
        ({"updater": "exp3", "reward": "trajectory_likelihood"}, "use reward='reward_improvement'"),
        ({"reward": "nope"}, "valid rewards"),
        ({"selection": "best"}, "valid selections"),
        ({"values": [0.5, 0.5]}, "duplicate"),
        ({"updater": "exp3", "reward_low": 1, "reward_high": 0}, "must be below"),
    ],
)
def test_configuration_errors_say_what_and_how(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        meta_policy(**kwargs)


@pytest.mark.parametrize(
    "args, kwargs, match",
    [
        ((np.zeros((2, 10)), [np.nan, 1.0]), {}, "NaN or infinite"),
        ((np.zeros((2, 10)), [np.inf, 1.0]), {}, "NaN or infinite"),
        ((np.zeros((2, 9)), [0.0, 1.0]), {}, r"K = 10"),
        ((np.zeros((3, 10)), [0.0, 1.0]), {}, "3 rows but advantages has 2"),
        ((np.full((2, 10), np.nan), [1.0, 1.0]), {}, "NaN"),
        ((np.full((2, 10), -np.inf), [1.0, 1.0]), {}, "impossible under every candidate"),
        ((np.zeros((0, 10)), np.zeros(0)), {}, "empty batch"),
        ((np.zeros((2, 10)), [1.0, -1.0]), {"batch_size": 1}, "batch_size=1"),
        ((None, [1.0]), {}, "needs seq_logprobs"),
        ((np.zeros((2, 10)), np.zeros((2, 1))), {}, "1-D"),
    ],
)
def test_bad_batches_are_refused(args, kwargs, match):
    with pytest.raises(InputError, match=match):
        meta_policy().update(*args, **kwargs)


def test_all_zero_advantages_leave_tampo_unchanged_and_count_as_a_step():
    policy = meta_policy()
    policy.update(-abs(np.random.default_rng(0).normal(size=(4, 10))), [1.0, -1.0, 0.5, -0.5])
    before = policy.probs
    policy.update(np.zeros((4, 10)), np.zeros(4))
    assert np.allclose(policy.probs, before) and policy.step == 2


@pytest.mark.parametrize(
    "other, match",
    [
        ({"values": [0.5, 1.0]}, "values="),
        ({"updater": "softmax_gradient"}, "updater="),
        ({"alpha": 0.1}, "updater_options="),
        ({"normalizer": "softmax"}, "reward_options="),
    ],
)
def test_state_from_another_policy_is_refused(other, match):
    state = meta_policy(**other).state_dict()
    with pytest.raises(StateError, match=match):
        meta_policy().load_state_dict(state)


def test_malformed_state_is_refused():
    with pytest.raises(StateError, match="not a metahp meta-policy state"):
        meta_policy().load_state_dict({"ema": [0] * 10})
    state = meta_policy().state_dict()
    state["updater_state"]["ema"] = [0.0, 1.0]
    with pytest.raises(StateError, match="shape"):
        meta_policy().load_state_dict(state)


def test_nucleus_keeps_the_smallest_prefix_reaching_p():
    rng = np.random.default_rng(0)
    probs = np.array([0.2, 0.5, 0.3])
    counts = Counter(nucleus(probs, rng, 0.7) for _ in range(4000))
    assert counts[0] == 0
    assert counts[1] / counts[2] == pytest.approx(5 / 3, rel=0.1)
    assert {nucleus(probs, rng, 0.5) for _ in range(200)} == {1}
    assert {nucleus(probs, rng, 1.0) for _ in range(500)} == {0, 1, 2}


def test_nucleus_breaks_ties_at_random_so_uniform_reaches_every_candidate():
    rng = np.random.default_rng(0)
    assert {nucleus(np.full(10, 0.1), rng, 0.7) for _ in range(500)} == set(range(10))


def test_sample_and_greedy():
    rng = np.random.default_rng(0)
    counts = Counter(sample(np.array([0.25, 0.75]), rng) for _ in range(4000))
    assert counts[1] / 4000 == pytest.approx(0.75, abs=0.03)
    assert {greedy(np.array([0.4, 0.4, 0.2]), rng) for _ in range(100)} == {0, 1}


def test_top_level_api():
    for name in ("MetaPolicy", "meta_policy", "sparsemax", "adapt", "Temperature", "UPDATERS", "KNOBS"):
        assert hasattr(metahp, name)


def test_adapt_on_an_unknown_trainer_names_the_supported_ones():
    with pytest.raises(ConfigError, match="no adapter for builtins.object.*trl.GRPOTrainer"):
        metahp.adapt(object())
