"""Truncation knobs (top_p, top_k, min_p) in the reference trainer: sampling, replay in the loss, adaptation."""

import pytest
import torch
from test_grpo import _trace, trainer
from transformers import (
    LogitsProcessorList,
    MinPLogitsWarper,
    TemperatureLogitsWarper,
    TopKLogitsWarper,
    TopPLogitsWarper,
)

import metahp
from metahp import ConfigError
from metahp.knobs import TopP


def sharpened(**settings):
    t = trainer(seed=7, prompts_per_step=4, num_generations=4, **settings)
    with torch.no_grad():  # a random init is near-uniform; make truncation bite
        t.model.lm_head.weight.mul_(6.0)
    return t


WARPERS = {"top_p": lambda v: TopPLogitsWarper(v), "top_k": lambda v: TopKLogitsWarper(int(v)),
           "min_p": lambda v: MinPLogitsWarper(v)}


@pytest.mark.parametrize("knob, value", [("top_p", 0.7), ("top_k", 3), ("min_p", 0.2)])
def test_old_logprobs_are_exactly_what_transformers_sampled_from(knob, value):
    t = sharpened(temperature=0.8, **{knob: value})
    rollout = t.generate()
    assert rollout.support is not None and not rollout.support.all()
    mask = rollout.completion_mask.bool()
    taken_in_support = rollout.support.gather(-1, rollout.completion_ids.unsqueeze(-1)).squeeze(-1)
    assert taken_in_support[mask].all()
    processors = LogitsProcessorList([TemperatureLogitsWarper(0.8), WARPERS[knob](value)])
    b, length, v = rollout.logits.shape
    processed = processors(None, rollout.logits.reshape(-1, v)).reshape(b, length, v)
    want = torch.log_softmax(processed, -1).gather(-1, rollout.completion_ids.unsqueeze(-1)).squeeze(-1)
    got = t.sampling_logprobs(rollout.logits, rollout)
    assert torch.allclose(got[mask], want[mask], atol=1e-5)
    with torch.no_grad():  # the loss's forward, replayed on the same support, gives ratio 1 before any update
        new = t.completion_logprobs(t.model, rollout)
    assert torch.allclose(new[mask], got[mask], atol=1e-4)


def test_without_replay_the_loss_uses_the_untruncated_distribution():
    replay, plain = sharpened(top_p=0.6), sharpened(top_p=0.6, replay_truncation=False)
    rollout = replay.generate()
    mask = rollout.completion_mask.bool()
    truncated = replay.sampling_logprobs(rollout.logits, rollout)[mask]
    untruncated = plain.sampling_logprobs(rollout.logits, rollout)[mask]
    assert (untruncated <= truncated + 1e-6).all() and (untruncated < truncated - 1e-3).any()


def test_temperature_scored_under_the_batch_truncation():
    logits = torch.randn(2, 3, 9) * 3
    tokens = logits.argmax(-1)
    mask = torch.ones(2, 3)
    conditioned = metahp.Temperature([0.7, 1.2], truncation=("top_p", 0.8)).sequence_logprobs(logits, tokens, mask)
    for k, t in enumerate((0.7, 1.2)):
        alone = TopP([0.8], temperature=t).sequence_logprobs(logits, tokens, mask)[:, 0]
        assert torch.allclose(conditioned[:, k], alone)


@pytest.mark.parametrize("knob", ["top_p", "top_k", "min_p"])
def test_a_truncation_knob_adapts(knob):
    t = sharpened(temperature=0.9)
    adapter = metahp.adapt(t, knob=knob, updater="softmax_gradient", lr=20.0)
    history = t.train(4, progress=False)
    assert all(m[f"knob/{knob}"] in adapter.policy.values for m in history)
    # Random models rarely solve a task: give the batch advantages so the update has something to learn from.
    rollout = t.generate()
    (scoring,) = adapter.knobset.scoring_knobs(rollout.knobs)
    assert scoring.temperature == 0.9  # scored after the batch's temperature (passed, never set on the knob)
    assert adapter.policy.knob.temperature == 1.0
    rollout.advantages = torch.linspace(-1, 1, len(rollout.advantages))
    before = adapter.policy.probs
    metrics = t.controller.after_batch(rollout)
    assert not torch.allclose(torch.tensor(before), torch.tensor(adapter.policy.probs))
    assert all(torch.isfinite(torch.tensor(v)) for v in metrics.values())


def test_temperature_and_top_p_together_factored_and_resumable(tmp_path):
    def build(seed):
        t = sharpened()
        return t, metahp.adapt(t, knob=("temperature", "top_p"), updater="softmax_gradient", lr=20.0, seed=seed)

    straight, adapter = build(0)
    full = _trace(straight.train(4, progress=False))
    assert {"metahp/prob/temperature=0.6", "metahp/prob/top_p=0.9", "knob/top_p"} <= set(straight.history[-1])
    assert set(adapter.policies) == {"temperature", "top_p"}
    with pytest.raises(AttributeError, match="policies"):
        adapter.policy  # noqa: B018
    first, _ = build(0)
    first.train(2, output_dir=tmp_path, progress=False)
    resumed, _ = build(5)
    resumed.load_checkpoint(tmp_path / "checkpoint")
    resumed.train(4, progress=False)
    assert _trace(resumed.history) == full
    assert [m["knob/top_p"] for m in resumed.history] == [m["knob/top_p"] for m in straight.history]


def test_two_active_truncations_are_refused():
    t = trainer(top_k=5)
    metahp.adapt(t, knob="top_p")
    with pytest.raises(ConfigError, match=r"truncation knobs \['top_p', 'top_k'\] are all active|"
                                          r"truncation knobs \['top_k', 'top_p'\] are all active"):
        for _ in range(20):  # the first draw may be top_p = 1.0 (off)
            t.train_step()


def test_product_grid_over_temperature_and_top_p():
    from metahp.knobs import ProductKnob, Temperature
    from metahp.testing import check_knob

    knob = ProductKnob(Temperature([0.7, 1.0]), TopP([0.8, 1.0]))
    check_knob(knob)  # per-candidate distributions over the vocabulary, masking, chunking
    logits, tokens, mask = torch.randn(3, 4, 11) * 3, torch.randint(11, (3, 4)), torch.ones(3, 4)
    got = knob.sequence_logprobs(logits, tokens, mask)
    for k, (t, p) in enumerate(knob.values):
        assert torch.allclose(got[:, k], TopP([p], temperature=t).sequence_logprobs(logits, tokens, mask)[:, 0])
    t = sharpened()
    adapter = metahp.adapt(t, knob=(Temperature([0.7, 1.0]), TopP([0.8, 1.0])), combine="product",
                           updater="softmax_gradient", lr=20.0)
    history = t.train(3, progress=False)
    assert all((m["knob/temperature"], m["knob/top_p"]) in adapter.policy.values for m in history)
    assert "metahp/prob/temperature=0.7,top_p=0.8" in history[-1]
    assert set(adapter.policy.expected_value) == {"temperature", "top_p"}
    rollout = t.generate()
    rollout.advantages = torch.linspace(-1, 1, len(rollout.advantages))
    before = adapter.policy.probs
    t.controller.after_batch(rollout)
    assert not torch.allclose(torch.tensor(before), torch.tensor(adapter.policy.probs))
    state = adapter.state_dict()["policy"]  # the envelope holds the one policy's state
    import json

    clone = metahp.meta_policy(ProductKnob(Temperature([0.7, 1.0]), TopP([0.8, 1.0])), "softmax_gradient", lr=20.0)
    clone.load_state_dict(json.loads(json.dumps(state)))
    assert [clone.sample() for _ in range(5)] == [adapter.policy.sample() for _ in range(5)]


def test_product_grid_errors():
    from metahp.knobs import ProductKnob, Temperature, TopK

    with pytest.raises(ConfigError, match="not supported"):
        ProductKnob(TopP(), TopK())
    with pytest.raises(ConfigError, match="more than the 16 completions"):
        metahp.adapt(sharpened(), knob=("temperature", "top_p"), combine="product")  # 10 x 7 candidates
    with pytest.raises(ConfigError, match="combine='mixed'"):
        metahp.adapt(sharpened(), knob=("temperature", "top_p"), combine="mixed")
    with pytest.raises(ConfigError, match="needs value="):
        metahp.meta_policy(ProductKnob(Temperature([0.7]), TopP([0.9])), "constant")
    fixed = metahp.meta_policy(ProductKnob(Temperature([0.7, 1.0]), TopP([0.9, 1.0])), "constant", value=(1.0, 0.9))
    assert fixed.sample() == (1.0, 0.9)
