"""Hand-computed values for every updater and reward, and the TAMPO worked example."""

import numpy as np
import pytest
from scipy import stats

from metahp import ConfigError, meta_policy
from metahp.rewards import Batch, RewardImprovement, TrajectoryLikelihood
from metahp.updaters import Feedback, constant, exp3, sliding_window_ucb, softmax_gradient, tampo, thompson
from metahp.updaters.thompson import argmax_probabilities

# Worked example (values 0.6, 1.0, 1.4; two trajectories):
#   l = [[-1.0, -0.9, -2.0], [-0.5, -1.5, -1.0]],  A = [1, -1]
#   sparsemax rows: tau_1 = (-0.9 - 1.0 - 1) / 2 = -1.45 -> w_1 = [0.45, 0.55, 0]
#                   tau_2 = (-0.5 - 1.0 - 1) / 2 = -1.25 -> w_2 = [0.75, 0, 0.25]
#   a = (w_1 - w_2) / 2 = [-0.15, 0.275, -0.125]
#   e = 0.05 * a = [-0.0075, 0.01375, -0.00625];  min-max m = [0, 1, 0.00125 / 0.02125 = 1/17]
#   pi = m / sum m = [0, 17/18, 1/18]
LOGP = np.array([[-1.0, -0.9, -2.0], [-0.5, -1.5, -1.0]])
ADV = np.array([1.0, -1.0])
VALUES = (0.6, 1.0, 1.4)


def test_tampo_worked_example():
    a, _ = TrajectoryLikelihood("sparsemax")({}, Batch(LOGP, ADV, batch_size=2))
    assert np.allclose(a, [-0.15, 0.275, -0.125])
    up = tampo(alpha=0.05)
    state = up.update(up.init(VALUES), Feedback(advantages=a))
    assert np.allclose(state["ema"], [-0.0075, 0.01375, -0.00625])
    assert np.allclose(up.probs(state), [0, 17 / 18, 1 / 18])
    # Same batch again: e doubles in size (nearly) but min-max sees the same shape -> same distribution.
    state2 = up.update(state, Feedback(advantages=a))
    assert np.allclose(up.probs(state2), [0, 17 / 18, 1 / 18])


def test_tampo_through_the_policy_matches_the_worked_example():
    policy = meta_policy("temperature", "tampo", values=VALUES, seed=0)
    assert np.allclose(policy.probs, 1 / 3)
    metrics = policy.update(LOGP, ADV)
    assert np.allclose(policy.probs, [0, 17 / 18, 1 / 18])
    assert metrics["metahp/advantage/1"] == pytest.approx(0.275)
    assert metrics["metahp/prob/1.4"] == pytest.approx(1 / 18)


def test_tampo_is_uniform_when_scores_are_flat():
    up = tampo()
    assert np.allclose(up.probs(up.update(up.init(VALUES), Feedback(advantages=np.full(3, 0.2)))), 1 / 3)


def test_normalisers_by_hand():
    batch = Batch(LOGP, ADV, batch_size=2)
    a_soft, _ = TrajectoryLikelihood("softmax")({}, batch)
    w = np.exp(LOGP) / np.exp(LOGP).sum(1, keepdims=True)
    assert np.allclose(a_soft, (w[0] - w[1]) / 2)
    a_arg, _ = TrajectoryLikelihood("argmax")({}, batch)
    assert np.allclose(a_arg, [-0.5, 0.5, 0.0])
    tie, _ = TrajectoryLikelihood("argmax")({}, Batch(np.array([[-1.0, -1.0, -3.0]]), np.array([1.0]), batch_size=1))
    assert np.allclose(tie, [0.5, 0.5, 0])


def test_zero_advantage_rows_are_skipped_but_counted():
    logp = np.vstack([LOGP, [[np.nan, np.nan, np.nan]]])  # never looked at: its advantage is 0
    a, _ = TrajectoryLikelihood()({}, Batch(logp, np.array([1.0, -1.0, 0.0]), batch_size=4))
    assert np.allclose(a, np.array([-0.15, 0.275, -0.125]) * 2 / 4)


def test_softmax_gradient_by_hand():
    a = np.array([-0.15, 0.275, -0.125])
    natural = softmax_gradient(lr=2.0)
    h = 2.0 * a
    assert np.allclose(natural.probs(natural.update(natural.init(VALUES), Feedback(advantages=a))),
                       np.exp(h) / np.exp(h).sum())
    vanilla = softmax_gradient(lr=2.0, form="vanilla")
    h = 2.0 * (a - a.mean()) / 3  # pi uniform: step = pi * (a - pi.a)
    assert np.allclose(vanilla.probs(vanilla.update(vanilla.init(VALUES), Feedback(advantages=a))),
                       np.exp(h) / np.exp(h).sum())


def test_exp3_by_hand():
    up = exp3(gamma=0.2, reward_low=-0.5, reward_high=0.5)
    state = up.update(up.init((1.0, 2.0)), Feedback(chosen=0, reward=0.3))
    # x = 0.8, pi_0 = 0.5, log w_0 += 0.2 * (0.8 / 0.5) / 2 = 0.16
    w = np.exp([0.16, 0.0])
    assert np.allclose(up.probs(state), 0.8 * w / w.sum() + 0.1)


def test_sliding_window_ucb_by_hand():
    up = sliding_window_ucb(window=3, exploration=1.0)
    state = up.init((1.0, 2.0))
    assert np.allclose(up.probs(state), [0.5, 0.5])  # both unplayed
    for arm, r in [(0, 1.0), (1, 0.0), (0, 0.0), (1, 1.0)]:
        state = up.update(state, Feedback(chosen=arm, reward=r))
    # window: (1, 0), (0, 0), (1, 1): UCB_0 = 0 + sqrt(log 3), UCB_1 = 0.5 + sqrt(log 3 / 2) -> arm 1
    assert len(state["arms"]) == 3
    assert np.allclose(up.probs(state), [0, 1])
    eps = sliding_window_ucb(window=3, exploration=1.0, epsilon=0.2)
    assert np.allclose(eps.probs(state), [0.1, 0.9])
    # A large bonus makes the less played arm win.
    assert np.allclose(sliding_window_ucb(window=3, exploration=10.0).probs(state), [1, 0])


def test_thompson_argmax_probabilities_exact():
    p = argmax_probabilities(np.array([0.0, 1.0]), np.array([1.0, 1.0]))
    assert p[1] == pytest.approx(stats.norm.cdf(1 / np.sqrt(2)), abs=1e-6)
    three = argmax_probabilities(np.zeros(3), np.ones(3))
    assert np.allclose(three, 1 / 3, atol=1e-6)


def test_thompson_discounted_posterior_by_hand():
    up = thompson(discount=0.5, prior_std=1.0, noise_std=1.0)
    state = up.init((1.0, 2.0))
    state = up.update(state, Feedback(chosen=0, reward=1.0))
    state = up.update(state, Feedback(chosen=0, reward=0.0))
    assert np.allclose(state["counts"], [1.5, 0]) and np.allclose(state["sums"], [0.5, 0])
    # arm 0: precision 2.5, mean 0.2; arm 1: prior N(0, 1)
    assert up.probs(state)[0] == pytest.approx(stats.norm.cdf(0.2 / np.sqrt(0.4 + 1.0)), abs=1e-6)


def test_constant():
    up = constant(value=0.8)
    assert np.array_equal(up.probs(up.init((0.6, 0.8, 1.0))), [0, 1, 0])
    assert np.array_equal(constant().probs(constant().init((0.6, 0.9, 1.2))), [0, 1, 0])  # nearest 1.0
    with pytest.raises(ConfigError, match="not among the candidates"):
        meta_policy(updater="constant", value=0.65)
    assert meta_policy(updater="constant", value=0.65, values=[0.65]).sample() == 0.65


def test_reward_improvement_by_hand():
    reward = RewardImprovement(baseline_alpha=0.5)
    state = reward.init()
    got = []
    for r in (0.5, 0.7, 0.4):
        signal, state = reward(state, Batch(mean_reward=r))
        got.append(signal)
    assert np.allclose(got, [0.0, 0.2, -0.2]) and state["baseline"] == pytest.approx(0.5)
