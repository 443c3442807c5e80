"""Values per completion: stratified draws within each group, exact per-row sampling and loss in the reference
trainer, per-completion rewards, state, and the settings that cannot honour them."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from test_grpo import _trace, trainer

import metahp
from metahp import ConfigError, InputError, StateError, meta_policy
from metahp.knobs.temperature import PerRowTemperature
from metahp.knobset import KnobSet
from metahp.rewards import Batch, Informativeness, WithinGroupAdvantage
from metahp.selection import stratified_counts

GRID = [0.6, 1.0, 1.4]


# -- the draw ----------------------------------------------------------------------------------------------------
@given(st.lists(st.floats(0, 1), min_size=1, max_size=8), st.integers(1, 16), st.integers(0, 2**32 - 1))
def test_stratified_counts_give_floor_or_ceil_of_n_p(weights, n, seed):
    probs = np.asarray(weights) + 1e-3
    probs /= probs.sum()
    counts = stratified_counts(probs, n, np.random.default_rng(seed))
    assert counts.sum() == n and len(counts) == len(probs)
    assert (counts >= np.floor(n * probs - 1e-9)).all() and (counts <= np.ceil(n * probs + 1e-9)).all()


def test_stratified_counts_are_unbiased():
    probs = np.array([0.1, 0.25, 0.65])
    rng = np.random.default_rng(0)
    mean = np.mean([stratified_counts(probs, 4, rng) for _ in range(20_000)], axis=0)
    assert np.allclose(mean, 4 * probs, atol=0.02)


def test_sample_rows_mixes_every_group_in_proportion():
    policy = meta_policy(updater="tampo", values=GRID, seed=0)
    values = policy.sample_rows(groups=5, group_size=6)
    assert len(values) == 30
    for g in range(5):  # uniform over 3 candidates: exactly 2 completions at each value in every group of 6
        assert sorted(values[6 * g:6 * g + 6]) == [0.6, 0.6, 1.0, 1.0, 1.4, 1.4]


# -- the per-completion rewards, by hand ---------------------------------------------------------------------------
def test_within_group_advantage_and_informativeness_by_hand():
    adv = np.array([1.0, -1.0, 0.0, 0.0, 2.0, -0.5])
    rows = np.array([0, 1, 1, 2, 0, 2])
    batch = Batch(advantages=adv, row_candidates=rows, candidates=4)
    a, _ = WithinGroupAdvantage()({}, batch)
    mean = adv.mean()
    assert np.allclose(a, [1.5 - mean, -0.5 - mean, -0.25 - mean, 0.0])  # candidate 3: no row, no move
    b, _ = Informativeness()({}, batch)
    mean_abs = np.abs(adv).mean()
    assert np.allclose(b, [1.5 - mean_abs, 0.5 - mean_abs, 0.25 - mean_abs, 0.0])


@pytest.mark.parametrize("reward", ["within_group_advantage", "informativeness"])
def test_per_completion_rewards_need_each_rows_candidate(reward):
    policy = meta_policy(updater="tampo", reward=reward, values=GRID)
    with pytest.raises(InputError, match="per='completion'"):
        policy.update(advantages=[1.0, -1.0])
    with pytest.raises(InputError, match=r"rows must hold candidate indices in \[0, 3\)"):
        policy.update(advantages=[1.0, -1.0], rows=[0, 3])


def test_a_candidate_whose_completions_stand_out_gains_probability():
    policy = meta_policy(updater="softmax_gradient", reward="informativeness", values=GRID, lr=5.0)
    for _ in range(10):  # the hot completions always carry the group's gradient, the cool ones never
        policy.update(advantages=[0.0, 0.0, 1.5, -1.5], rows=[0, 1, 2, 2])
    assert policy.probs.argmax() == 2 and policy.probs[2] > 0.9


# -- the reference trainer: exact per-row sampling and loss --------------------------------------------------------
def per_row_trainer(seed=0, **settings):
    t = trainer(seed=seed, prompts_per_step=3, num_generations=4, **settings)
    with torch.no_grad():  # a random init is near-uniform: make the temperatures matter
        t.model.lm_head.weight.mul_(4.0)
    return t


def test_each_completion_is_sampled_and_scored_at_its_own_temperature(monkeypatch):
    t = per_row_trainer()
    adapter = metahp.adapt(t, per="completion", updater="tampo", reward="informativeness", values=GRID)
    seen = []
    generate = t.model.generate
    monkeypatch.setattr(t.model, "generate", lambda **kw: seen.append(kw) or generate(**kw))
    rollout = t.generate()
    temps = rollout.knobs["temperature"]
    for g in range(3):  # uniform over 3 candidates, 4 completions a group: every candidate once or twice
        counts = [temps[4 * g:4 * g + 4].count(v) for v in GRID]
        assert sorted(counts) == [1, 1, 2]
    (processor,) = seen[0]["logits_processor"]
    assert seen[0]["temperature"] == 1.0 and isinstance(processor, PerRowTemperature)
    assert torch.equal(processor.temperatures.squeeze(1), torch.tensor(temps))
    # the loss's old log-probs: each row's raw logits over its own temperature
    got = t.sampling_logprobs(rollout.logits, rollout)
    for b, temperature in enumerate(temps):
        want = torch.log_softmax(rollout.logits[b] / temperature, -1).gather(-1, rollout.completion_ids[b, :, None])
        assert torch.allclose(got[b], want.squeeze(-1), atol=1e-6)
    mask = rollout.completion_mask.bool()
    with torch.no_grad():  # the loss's forward at the per-row temperatures gives ratio 1 before any update
        new = t.completion_logprobs(t.model, rollout)
    assert torch.allclose(new[mask], got[mask], atol=1e-4)
    assert adapter.value == temps


def test_the_processor_divides_each_row_by_its_temperature():
    scores = torch.randn(3, 11)
    out = PerRowTemperature(torch.tensor([0.5, 1.0, 2.0]))(None, scores)
    assert torch.allclose(out, scores / torch.tensor([[0.5], [1.0], [2.0]]))


@pytest.mark.parametrize("reward", ["informativeness", "within_group_advantage", "trajectory_likelihood"])
def test_per_completion_training_runs_logs_and_resumes_exactly(tmp_path, reward):
    def attach(t):
        return metahp.adapt(t, per="completion", updater="softmax_gradient", lr=20.0, reward=reward, values=GRID)

    straight = per_row_trainer(seed=2)
    attach(straight)
    full = straight.train(6, progress=False)
    assert all({"metahp/rows/0.6", "metahp/rows/1", "metahp/rows/1.4", "zero_advantage_groups"} <= set(m)
               for m in full)
    assert all(abs(sum(m[f"metahp/rows/{v:g}"] for v in GRID) - 1) < 1e-9 for m in full)
    first = per_row_trainer(seed=2)
    attach(first)
    first.train(3, output_dir=tmp_path, progress=False)
    assert json.loads((tmp_path / "checkpoint" / "metahp_state.json").read_text())["policy"]["per"] == "completion"
    resumed = per_row_trainer(seed=2)
    adapter = attach(resumed)
    resumed.load_checkpoint(tmp_path / "checkpoint")
    assert adapter.policy.step == 3
    resumed.train(6, progress=False)
    assert _trace(resumed.history) == _trace(full)
    assert [m["metahp/rows/0.6"] for m in resumed.history] == [m["metahp/rows/0.6"] for m in full]


def test_a_per_batch_state_is_refused_by_a_per_completion_adapter_and_back(tmp_path):
    batch = per_row_trainer()
    metahp.adapt(batch, updater="tampo", values=GRID)
    batch.train(1, output_dir=tmp_path / "batch", progress=False)
    per_row = per_row_trainer()
    adapter = metahp.adapt(per_row, per="completion", updater="tampo", values=GRID)
    before = json.dumps(adapter.state_dict())
    with pytest.raises(StateError, match="per batch.*per completion"):
        per_row.load_checkpoint(tmp_path / "batch" / "checkpoint")
    assert json.dumps(adapter.state_dict()) == before
    per_row.train(1, output_dir=tmp_path / "row", progress=False)
    again = per_row_trainer()
    metahp.adapt(again, updater="tampo", values=GRID)
    with pytest.raises(StateError, match="per completion.*per batch"):
        again.load_checkpoint(tmp_path / "row" / "checkpoint")


@pytest.mark.parametrize("kwargs, match", [
    ({"per": "group"}, "per=.group."),
    ({"per": "completion", "updater": "exp3", "values": GRID}, "per-candidate updater"),
    ({"per": "completion", "updater": "tampo"}, "10 candidates but a group only 4"),
    ({"per": "completion", "updater": "tampo", "knob": "top_p", "values": [0.8, 1.0]}, "scales the logits"),
    ({"per": "completion", "updater": "tampo", "knob": ("temperature", "top_p")}, "one knob"),
])
def test_settings_that_cannot_honour_values_per_completion_are_refused(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        metahp.adapt(per_row_trainer(), **kwargs)


def test_a_knob_set_per_completion_needs_the_rows_and_their_values():
    ks = KnobSet("temperature", "tampo", GRID, 0, per="completion", group_size=4)
    with pytest.raises(ConfigError, match="multiple of the group size 4"):
        ks.draw(rows=6)
    values = ks.draw(rows=8)["temperature"]
    with pytest.raises(InputError, match="not candidates"):
        ks.update(np.full((8, 3), -1.0), np.linspace(-1, 1, 8), used={"temperature": [0.7] * 8})
    with pytest.raises(InputError, match="per completion"):
        ks.update(np.full((8, 3), -1.0), np.linspace(-1, 1, 8), used={"temperature": 1.0})
    metrics = ks.update(np.full((8, 3), -1.0), np.linspace(-1, 1, 8), used={"temperature": values})
    assert metrics["metahp/temperature"] == pytest.approx(np.mean(values))


# -- values per prompt --------------------------------------------------------------------------------------------
def test_pass_rate_buckets():
    from metahp.knobset import pass_rate_bucket

    assert [pass_rate_bucket(r) for r in (None, 0.0, 0.25, 0.5, 0.75, 1.0)] == [
        "unseen", "none_correct", "few_correct", "most_correct", "most_correct", "all_correct"]


def test_the_trainer_hands_each_prompts_past_pass_rate_to_its_controller():
    t = per_row_trainer(train_set_size=3)
    seen = []

    class Spy:
        def knobs_for_next_batch(self, context=None):
            seen.append(context)
            return {}

        def after_batch(self, rollout):
            return {}

    t.attach(Spy())
    first = t.generate()
    assert seen[0].pass_rates == [None, None, None] and seen[0].group_size == 4
    rates = (first.rewards.view(3, 4) > 0).float().mean(1).tolist()
    assert [t.pass_rates[i] for i in first.problem_ids] == rates
    t.generate()  # 3 prompts a step from a set of 3: every prompt comes back with its rate
    assert seen[1].pass_rates == [t.pass_rates.get(i) if i not in seen[1].problem_ids else dict(
        zip(first.problem_ids, rates, strict=True))[i] for i in seen[1].problem_ids]


def test_erpo_samples_a_prompt_hot_only_after_its_group_was_all_correct():
    from metahp.lab.baselines import ERPO
    from metahp.lab.grpo import BatchContext

    rule = ERPO(base=1.0, hot=1.3)
    knobs = rule.knobs_for_next_batch(BatchContext([4, 7, 9], [1.0, 0.5, None], 2))
    assert knobs == {"temperature": [1.3, 1.3, 1.0, 1.0, 1.0, 1.0]}
    assert rule.knobs_for_next_batch(BatchContext(None, [None], 2)) == {"temperature": 1.0}  # fresh problems
    t = per_row_trainer(train_set_size=3)
    t.attach(ERPO())
    history = t.train(3, progress=False)
    assert all(0 <= m["baseline/hot_share"] <= 1 for m in history)


def test_values_per_prompt_come_from_the_policy_of_the_prompts_context_and_resume_exactly(tmp_path):
    ks = KnobSet("temperature", "softmax_gradient", GRID, 0, per="prompt", group_size=2, reward="informativeness",
                 lr=5.0)
    assert set(ks.policies) == {"unseen", "none_correct", "few_correct", "most_correct", "all_correct"}
    values = ks.draw(rows=4, contexts=[None, 1.0])["temperature"]
    assert values[0] == values[1] and values[2] == values[3]
    metrics = ks.update(advantages=[1.0, -1.0, 0.0, 0.0], used={"temperature": values}, contexts=[None, 1.0])
    steps = {b: p.step for b, p in ks.policies.items()}
    assert steps == {"unseen": 1, "none_correct": 0, "few_correct": 0, "most_correct": 0, "all_correct": 1}
    assert metrics["metahp/groups/unseen"] == 0.5 and "metahp/unseen/prob/1" in metrics
    with pytest.raises(ConfigError, match="contexts"):
        ks.draw(rows=4)
    with pytest.raises(ConfigError, match="reward='informativeness'"):
        KnobSet("temperature", "tampo", GRID, 0, per="prompt", group_size=2)

    def attach(t):
        return metahp.adapt(t, per="prompt", updater="softmax_gradient", lr=20.0, reward="informativeness",
                            values=GRID)

    straight = per_row_trainer(seed=5, train_set_size=3)
    attach(straight)
    full = straight.train(5, progress=False)
    first = per_row_trainer(seed=5, train_set_size=3)
    attach(first)
    first.train(2, output_dir=tmp_path, progress=False)
    resumed = per_row_trainer(seed=5, train_set_size=3)
    attach(resumed)
    resumed.load_checkpoint(tmp_path / "checkpoint")
    resumed.train(5, progress=False)
    assert [m["knob/temperature"] for m in resumed.history] == [m["knob/temperature"] for m in full]
