"""The reference GRPO trainer and its metahp adapter."""

import json

import numpy as np
import pytest
import torch

import metahp
from metahp import ConfigError, StateError
from metahp.lab.grpo import GRPOTrainer, group_advantages, pass_at_k
from metahp.lab.models import char_tokenizer, tiny_model
from metahp.lab.tasks import make_task

TASK = make_task("addition", difficulty=1)


def trainer(seed=0, **settings):
    tok = char_tokenizer(TASK.alphabet)
    model = tiny_model(tok, hidden=32, layers=1, heads=2, seed=seed)
    defaults = dict(prompts_per_step=3, num_generations=4, max_completion_tokens=4, seed=seed)
    return GRPOTrainer(model, tok, TASK, **{**defaults, **settings})


def test_group_advantages_by_hand():
    adv = group_advantages(torch.tensor([[1.0, 0.0, 0.0, 1.0], [1.0, 1.0, 1.0, 1.0], [1.0, 0.0, 0.0, 0.0]]))
    lone = 3**-0.5  # one success in four: A = (1 - 1/4) / sqrt(3/16) = sqrt(3); failures -1/sqrt(3)
    want = torch.tensor([[1.0, -1.0, -1.0, 1.0], [0.0, 0.0, 0.0, 0.0], [3**0.5, -lone, -lone, -lone]])
    assert torch.allclose(adv, want, atol=1e-6)


def test_clipped_loss_by_hand():
    t = trainer(clip_eps=0.2)
    mask = torch.tensor([[1, 1], [1, 0]])
    adv = torch.tensor([1.0, -2.0])
    old = torch.zeros(2, 2)
    # ratio 1 everywhere: loss = -(1 + 1 - 2) / 3 = 0
    assert float(t.loss(old, old, None, adv, mask)) == pytest.approx(0.0)
    # token ratios [[1.5, 0.5], [1.5, x]]: positive A clips 1.5 -> 1.2 (min), keeps 0.5; negative A takes
    # max(1.5 * 2, 1.2 * 2) = 3 as loss.  loss = (-1.2 - 0.5 + 3) / 3
    new = torch.log(torch.tensor([[1.5, 0.5], [1.5, 7.0]]))
    assert float(t.loss(new, old, None, adv, mask)) == pytest.approx((-1.2 - 0.5 + 3.0) / 3)
    # k3 KL with ref == new adds nothing; ref != new adds beta * (e^d - d - 1)
    t2 = trainer(kl_beta=0.5)
    ref = new + torch.log(torch.tensor(2.0))
    d = float(torch.log(torch.tensor(2.0)))
    extra = 0.5 * (2.0 - d - 1)
    assert float(t2.loss(new, old, ref, adv, mask)) == pytest.approx((-1.2 - 0.5 + 3.0) / 3 + extra, rel=1e-5)


def test_pass_at_k():
    assert pass_at_k(8, 0, 8) == 0.0 and pass_at_k(8, 1, 8) == 1.0
    assert pass_at_k(4, 1, 1) == pytest.approx(0.25) and pass_at_k(4, 2, 2) == pytest.approx(1 - 1 / 6)


def test_generate_logits_are_the_training_logits_at_the_sampling_temperature():
    t = trainer()
    rollout = t.generate()
    for temperature in (0.7, 1.3):
        rollout.knobs["temperature"] = temperature
        from_generate = torch.log_softmax(rollout.logits / temperature, -1).gather(
            -1, rollout.completion_ids.unsqueeze(-1)).squeeze(-1)
        with torch.no_grad():
            from_forward = t.completion_logprobs(t.model, rollout)
        mask = rollout.completion_mask.bool()
        assert torch.allclose(from_generate[mask], from_forward[mask], atol=1e-4)


@pytest.mark.parametrize("true_t", [0.6, 1.0, 1.4])
def test_sampling_temperature_is_recovered_from_the_logits_handed_to_the_meta_policy(true_t):
    t = trainer(seed=1, temperature=true_t, prompts_per_step=16, num_generations=16, max_completion_tokens=4)
    with torch.no_grad():  # a random init is nearly uniform over tokens; sharpen it so T leaves a trace
        t.model.lm_head.weight.mul_(6.0)
    rollout = t.generate()
    grid = metahp.Temperature([round(0.4 + 0.05 * i, 2) for i in range(29)])  # 0.4 .. 1.8
    per_seq = grid.sequence_logprobs(rollout.logits, rollout.completion_ids, rollout.completion_mask)
    total = (per_seq * rollout.completion_mask.sum(1, keepdim=True)).sum(0)  # batch log-likelihood
    best = grid.values[int(total.argmax())]
    assert abs(best - true_t) <= 0.1, f"sampled at {true_t}, maximum likelihood at {best}"


def _trace(history):
    return [(m["knob/temperature"], m["reward"], m.get("metahp/temperature_mean")) for m in history]


def test_seeded_runs_are_reproducible():
    runs = []
    for _ in range(2):
        t = trainer(seed=3)
        metahp.adapt(t, knob="temperature")
        runs.append(_trace(t.train(4, progress=False)))
    assert runs[0] == runs[1]


def test_resume_continues_exactly_including_the_meta_policy(tmp_path):
    straight = trainer(seed=2)
    metahp.adapt(straight, updater="softmax_gradient", lr=50.0)
    full = _trace(straight.train(6, progress=False))
    first = trainer(seed=2)
    metahp.adapt(first, updater="softmax_gradient", lr=50.0)
    first.train(3, output_dir=tmp_path, progress=False)
    resumed = trainer(seed=99)  # a different seed: everything must come from the checkpoint
    adapter = metahp.adapt(resumed, updater="softmax_gradient", lr=50.0, seed=99)
    resumed.load_checkpoint(tmp_path / "checkpoint")
    assert resumed.step == 3 and adapter.policy.step == 3
    resumed.train(6, progress=False)
    assert _trace(resumed.history) == full


def test_ctrl_c_leaves_a_usable_checkpoint_and_metrics(tmp_path, monkeypatch):
    t = trainer(seed=4)
    metahp.adapt(t)
    original = t.train_step
    calls = {"n": 0}

    def interrupted():
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return original()

    monkeypatch.setattr(t, "train_step", interrupted)
    with pytest.raises(KeyboardInterrupt):
        t.train(10, output_dir=tmp_path, progress=False)
    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == 2 and json.loads(lines[-1])["step"] == 2
    state = json.loads((tmp_path / "checkpoint" / "metahp_state.json").read_text())
    assert state["policy"]["step"] == 2 and state["history"][-1]["step"] == 1  # drawn before step 2 ran
    again = trainer(seed=4)
    metahp.adapt(again)
    again.load_checkpoint(tmp_path / "checkpoint")
    again.train(3, progress=False)
    assert again.step == 3


def test_meta_update_uses_no_extra_forward_pass(monkeypatch):
    t = trainer(seed=5)
    metahp.adapt(t)
    calls = {"forward": 0}
    forward = t.model.forward

    def counting(*args, **kwargs):
        calls["forward"] += 1
        return forward(*args, **kwargs)

    monkeypatch.setattr(t.model, "forward", counting)
    rollout = t.generate()
    after_generation = calls["forward"]
    metrics = t.controller.after_batch(rollout)
    assert calls["forward"] == after_generation and "metahp/prob/1" in metrics


def test_step_metrics_and_timing_split():
    t = trainer()
    metahp.adapt(t, updater="exp3")
    m = t.train_step()
    for key in ("reward", "pass_rate", "entropy", "knob/temperature", "time/generation", "time/policy_update",
                "time/meta_update", "metahp/temperature", "metahp/prob/0.6"):
        assert key in m
    assert 0 <= m["reward"] <= 1 and m["entropy"] > 0


def test_bad_settings_get_clear_errors(tmp_path):
    with pytest.raises(ConfigError, match="num_generations=1"):
        trainer(num_generations=1)
    with pytest.raises(ConfigError, match="Valid settings"):
        trainer(temprature=0.5)
    t = trainer()
    with pytest.raises(ConfigError, match="can adapt .*, not 'temprature'"):
        metahp.adapt(t, knob="temprature")
    with pytest.raises(ConfigError, match="not supported"):
        metahp.adapt(t, knob=("top_p", "min_p"))
    with pytest.raises(ConfigError, match="valid updaters"):
        metahp.adapt(t, updater="bogus")
    metahp.adapt(t)
    with pytest.raises(ConfigError, match="already attached"):
        metahp.adapt(t)
    with pytest.raises(StateError, match="not a metahp GRPO checkpoint"):
        t.load_checkpoint(tmp_path)


def test_evaluation_does_not_disturb_the_training_stream():
    a, b = trainer(seed=6), trainer(seed=6)
    a.evaluate(TASK.sample_prompts(4, 0, split="eval"), k=2)
    assert _trace(a.train(2, progress=False)) == _trace(b.train(2, progress=False))
    assert np.isfinite(a.history[-1]["entropy"])


def test_a_fixed_training_set_is_iterated_in_shuffled_epochs_and_resumes_exactly(tmp_path):
    t = trainer(seed=3, train_set_size=5)
    assert len(t.train_set) == 5
    seen = [t.generate().problem_ids for _ in range(5)]  # 3 prompts a step: 15 = 3 epochs of 5
    flat = [i for ids in seen for i in ids]
    assert all(sorted(flat[5 * e:5 * e + 5]) == [0, 1, 2, 3, 4] for e in range(3))  # every problem once an epoch
    assert flat[:5] != flat[5:10]  # each epoch in a new order
    assert [p.prompt for p in t.train_set] == [p.prompt for p in trainer(seed=3, train_set_size=5).train_set]
    assert trainer(seed=3).generate().problem_ids is None  # fresh problems by default
    first = trainer(seed=4, train_set_size=4)
    history = first.train(3, output_dir=tmp_path, progress=False)  # 9 problems served: mid-way through epoch 3
    assert history[-1]["epoch"] == pytest.approx(9 / 4)
    with pytest.raises(StateError, match="train_set_size=4, seed=4"):
        trainer(seed=99, train_set_size=4).load_checkpoint(tmp_path / "checkpoint")
    with pytest.raises(StateError, match="train_set_size=4, seed=4"):  # and not into a fresh-problem run
        trainer(seed=4).load_checkpoint(tmp_path / "checkpoint")
    resumed = trainer(seed=4, train_set_size=4)
    resumed.load_checkpoint(tmp_path / "checkpoint")
    assert resumed.served == 9 and resumed._train_queue == first._train_queue
    assert [resumed.generate().problem_ids for _ in range(3)] == [first.generate().problem_ids for _ in range(3)]
