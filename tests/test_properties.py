"""Property-based tests of the meta-update (hypothesis)."""

import json

import numpy as np
from hypothesis import assume, given
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule
from strategies import VALUES, batches

from metahp import meta_policy
from metahp.rewards import Batch, TrajectoryLikelihood
from metahp.updaters import UPDATERS

PER_CANDIDATE = ["tampo", "softmax_gradient"]
NORMALIZERS = ["sparsemax", "softmax", "argmax"]


def policy(updater, normalizer="sparsemax", **kw):
    return meta_policy("temperature", updater, values=VALUES, seed=0, normalizer=normalizer, **kw)


@given(st.lists(batches(allow_minus_inf=True), min_size=1, max_size=6), st.sampled_from(PER_CANDIDATE),
       st.sampled_from(NORMALIZERS))
def test_probs_stay_a_finite_distribution(stream, updater, normalizer):
    p = policy(updater, normalizer)
    for logp, adv in stream:
        p.sample()
        p.update(logp, adv)
        assert np.isfinite(p.probs).all() and (p.probs >= 0).all() and abs(p.probs.sum() - 1) < 1e-9


@given(batches(), st.sampled_from(PER_CANDIDATE), st.sampled_from(NORMALIZERS))
def test_all_zero_advantages_change_nothing(batch, updater, normalizer):
    logp, adv = batch
    p = policy(updater, normalizer)
    p.update(logp, adv)
    before = p.probs
    p.update(logp, np.zeros_like(adv))
    assert np.allclose(p.probs, before, atol=1e-12)


@given(batches(allow_minus_inf=True), st.sampled_from(NORMALIZERS), st.randoms(use_true_random=False))
def test_permuting_the_batch_changes_nothing(batch, normalizer, rnd):
    logp, adv = batch
    perm = list(range(len(adv)))
    rnd.shuffle(perm)
    a, b = policy("tampo", normalizer), policy("tampo", normalizer)
    ma, mb = a.update(logp, adv), b.update(logp[perm], adv[perm])
    assert np.allclose([ma[k] for k in sorted(ma)], [mb[k] for k in sorted(mb)], atol=1e-12)


@given(batches(allow_minus_inf=True), st.sampled_from(["sparsemax", "softmax", "argmax"]),
       st.floats(-20, 20), st.data())
def test_shifting_one_trajectorys_likelihoods_changes_nothing(batch, normalizer, shift, data):
    logp, adv = batch
    # On a 1/1024 lattice with an integer shift the sums are exact: a rounding of the shift cannot create or break a
    # tie (hypothesis found -2e-311 + 1.0 == 0.0 + 1.0, which flips argmax).
    logp, shift = np.round(logp * 1024) / 1024, round(shift)
    row = data.draw(st.integers(0, len(adv) - 1))
    shifted = logp.copy()
    shifted[row] += shift
    reward = TrajectoryLikelihood(normalizer)
    a, _ = reward({}, Batch(logp, adv, batch_size=len(adv)))
    b, _ = reward({}, Batch(shifted, adv, batch_size=len(adv)))
    assert np.allclose(a, b, atol=1e-9)


@given(batches(), st.integers(0, len(VALUES) - 1), st.sampled_from(PER_CANDIDATE), st.sampled_from(NORMALIZERS),
       st.floats(0.01, 5))
def test_candidate_that_best_explains_successes_gains_probability(batch, favoured, updater, normalizer, gap):
    logp, adv = batch
    assume((adv > 0).any())
    logp = logp.copy()
    # Make `favoured` the unique best fit of every positive-advantage trajectory and the worst of the negatives.
    others = np.delete(np.arange(len(VALUES)), favoured)
    logp[adv > 0, favoured] = logp[adv > 0][:, others].max(axis=1) + gap
    logp[adv < 0, favoured] = logp[adv < 0][:, others].min(axis=1) - gap
    logp -= np.maximum(logp.max(axis=1, keepdims=True), 0)  # log-likelihoods are <= 0; a row shift changes nothing
    p = policy(updater, normalizer)
    before = p.probs[favoured]
    metrics = p.update(logp, adv)
    advantages = np.array([metrics[f"metahp/advantage/{v:g}"] for v in VALUES])
    assert advantages[favoured] == advantages.max()
    assert p.probs[favoured] > before
    assert p.probs[favoured] == p.probs.max()


@given(st.lists(batches(), min_size=2, max_size=6), st.sampled_from(sorted(UPDATERS)), st.data())
def test_save_load_continue_equals_continue(stream, updater, data):
    cut = data.draw(st.integers(1, len(stream) - 1))
    rewards = data.draw(st.lists(st.floats(0, 1), min_size=len(stream), max_size=len(stream)))
    straight = meta_policy("temperature", updater, values=VALUES, seed=7)
    resumed = meta_policy("temperature", updater, values=VALUES, seed=7)
    trace_a, trace_b = [], []
    for i, (logp, adv) in enumerate(stream):
        trace_a.append((straight.sample(), straight.update(logp, adv, reward=rewards[i])))
        if i < cut:
            trace_b.append((resumed.sample(), resumed.update(logp, adv, reward=rewards[i])))
        else:
            if i == cut:
                saved = json.dumps(resumed.state_dict())
                resumed = meta_policy("temperature", updater, values=VALUES, seed=12345)
                resumed.load_state_dict(json.loads(saved))
            trace_b.append((resumed.sample(), resumed.update(logp, adv, reward=rewards[i])))
    assert trace_a == trace_b


class MetaPolicyLifecycle(RuleBasedStateMachine):
    """propose / observe / save / load in any order: a reloaded copy always agrees with the original."""

    @initialize(updater=st.sampled_from(sorted(UPDATERS)))
    def build(self, updater):
        self.updater = updater
        self.policy = meta_policy("temperature", updater, values=VALUES, seed=1)
        self.saved = None
        self.sampled = False

    @rule()
    def propose(self):
        assert self.policy.sample() in VALUES
        self.sampled = True

    @precondition(lambda self: self.sampled)
    @rule(batch=batches(), reward=st.floats(0, 1))
    def observe(self, batch, reward):
        logp, adv = batch
        self.policy.update(logp, adv, reward=reward)

    @rule()
    def save(self):
        self.saved = json.dumps(self.policy.state_dict())

    @precondition(lambda self: self.saved is not None)
    @rule()
    def load_into_a_fresh_policy_and_compare(self):
        clone = meta_policy("temperature", self.updater, values=VALUES, seed=999)
        clone.load_state_dict(json.loads(self.saved))
        original = meta_policy("temperature", self.updater, values=VALUES, seed=999)
        original.load_state_dict(json.loads(self.saved))
        assert [clone.sample() for _ in range(5)] == [original.sample() for _ in range(5)]
        assert json.dumps(clone.state_dict()) == json.dumps(original.state_dict())

    @invariant()
    def probs_on_simplex(self):
        if hasattr(self, "policy"):
            p = self.policy.probs
            assert np.isfinite(p).all() and (p >= 0).all() and abs(p.sum() - 1) < 1e-9


TestMetaPolicyLifecycle = MetaPolicyLifecycle.TestCase
