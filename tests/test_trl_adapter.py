"""metahp.adapt on trl.GRPOTrainer (TRL 1.16), on CPU with a tiny random Qwen2 and a character tokenizer.

Every check compares TRL's own numbers with an independent computation: log_softmax(raw logits / T) gathered at
the completion tokens, with T the value metahp applied to the batch.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import types
from pathlib import Path

import pytest
import torch
import trl  # noqa: F401  a dev dependency: a broken install fails here, it never skips the suite

import metahp
from metahp.errors import ConfigError

_spec = importlib.util.spec_from_file_location("trl_tiny", Path(__file__).with_name("trl_tiny.py"))
trl_tiny = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(trl_tiny)

TOL = 1e-4
# Sampling from the whole distribution (nucleus_p=1) over three values: the knob changes within a few batches.
VARIED = dict(updater="tampo", values=[0.5, 1.0, 2.0], nucleus_p=1.0)  # a likelihood-scored updater


def completion_logps(model, batch, temperature):
    """Independent per-token log-probs: the model's raw logits (its original forward), divided by T."""
    ids = torch.cat([batch["prompt_ids"], batch["completion_ids"]], dim=1)
    attention = torch.cat([batch["prompt_mask"], batch["completion_mask"]], dim=1)
    n = batch["completion_ids"].size(1)
    with torch.no_grad():
        logits = model(input_ids=ids, attention_mask=attention).logits[:, -n - 1:-1].float()
    logp = torch.log_softmax(logits / temperature, dim=-1)
    return logp.gather(-1, batch["completion_ids"].unsqueeze(-1)).squeeze(-1)


def trainer_logps(trainer, model, batch):
    """TRL's own per-token log-probs (its fused LM head, the one the loss uses)."""
    ids = torch.cat([batch["prompt_ids"], batch["completion_ids"]], dim=1)
    attention = torch.cat([batch["prompt_mask"], batch["completion_mask"]], dim=1)
    with torch.no_grad():
        logps, _, _ = trainer._get_per_token_logps_and_entropies(model, ids, attention, batch["completion_ids"].size(1))
    return logps


def assert_close_on_mask(a, b, mask):
    mask = mask.bool()
    assert mask.any()
    torch.testing.assert_close(a[mask], b[mask], atol=TOL, rtol=0)


def spy_generate(model, seen):
    original = model.generate

    def generate(*args, **kwargs):
        seen.append((model.training, kwargs["generation_config"].temperature))
        return original(*args, **kwargs)

    model.generate = generate


def first_batch(trainer):
    return next(iter(trainer.get_train_dataloader()))


# -- consistency: sampling, policy and reference log-probs follow every new value -------------------------------
def test_each_generation_samples_and_scores_at_the_new_value(tmp_path):
    trainer = trl_tiny.grpo_trainer(tmp_path, beta=0.1)
    adapter = metahp.adapt(trainer, seed=1, **VARIED)
    seen = []
    spy_generate(trainer.model, seen)
    batch = first_batch(trainer)
    trainer.model.train()
    for _ in range(4):
        out = trainer._generate_and_score_completions(batch)
        value = adapter.value
        assert seen[-1] == (True, value)  # transformers sampled at the new value
        assert set(adapter.applied_values().values()) == {value}
        mask = out["completion_mask"]
        assert_close_on_mask(trainer_logps(trainer, trainer.model, out), completion_logps(trainer.model, out, value),
                             mask)
        assert_close_on_mask(out["ref_per_token_logps"], completion_logps(trainer.ref_model, out, value), mask)
    assert len({h["value"] for h in adapter.history}) > 1, "the test needs a knob change"
    # the meta-update's metrics went to the trainer's own metrics (TensorBoard / W&B read them from there)
    metrics = trainer._metrics["train"]
    assert metrics["metahp/temperature"] == [h["value"] for h in adapter.history]
    for v in ("0.5", "1", "2"):
        assert len(metrics[f"metahp/prob/{v}"]) == 4 and len(metrics[f"metahp/advantage/{v}"]) == 4


def test_candidate_likelihoods_equal_the_knobs_on_full_logits(tmp_path):
    trainer = trl_tiny.grpo_trainer(tmp_path, max_completion_length=12)
    adapter = metahp.adapt(trainer, updater="tampo", values=[0.5, 1.0, 2.0], seed=0)
    assert adapter.likelihoods == "generate"  # TRL's plain transformers path: captured during generate
    used = []
    update = adapter.policy.update
    adapter.policy.update = lambda logp, adv, **kw: used.append((logp, adv, kw)) or update(logp, adv, **kw)
    trainer.model.train()
    out = trainer._generate_and_score_completions(first_batch(trainer))
    assert adapter.likelihood_source == "generate"
    informative = (out["advantages"] != 0).cpu()  # the adapter hands the meta-policy CPU tensors
    logp, adv, kw = used[0]
    assert kw == {"batch_size": 4} and torch.equal(adv, out["advantages"].cpu()[informative])
    # the logits generate sampled from give the same l_ik as one forward pass over the finished sequences
    torch.testing.assert_close(logp, adapter.candidate_logprobs(out)[informative], atol=TOL, rtol=0)
    out = dict(out, advantages=out["advantages"].clone())
    out["advantages"][0] = 0.0  # a zero-advantage row is never scored
    got = adapter.candidate_logprobs(out)
    ids = torch.cat([out["prompt_ids"], out["completion_ids"]], dim=1)
    attention = torch.cat([out["prompt_mask"], out["completion_mask"]], dim=1)
    n = out["completion_ids"].size(1)
    with torch.no_grad():
        logits = trainer.model(input_ids=ids, attention_mask=attention).logits[:, -n - 1:-1]
    want = adapter.policy.knob.sequence_logprobs(logits, out["completion_ids"], out["completion_mask"])
    assert torch.equal(got[0], torch.zeros(3))
    torch.testing.assert_close(got[1:], want[1:], atol=TOL, rtol=0)
    # l_ik at the sampling value is the mean of TRL's own per-token log-probs at that value
    adapter.apply(2.0)
    logps = trainer_logps(trainer, trainer.model, out)
    mask = out["completion_mask"].float()
    torch.testing.assert_close(got[1:, 2], ((logps * mask).sum(1) / mask.sum(1))[1:].cpu(), atol=TOL, rtol=0)


def test_dropout_is_flagged_and_the_forward_path_scores_without_it(tmp_path):
    # TRL's default disable_dropout=False keeps dropout active in train mode, and TRL generates in train mode: the
    # sampling logits carry one dropout mask that no re-score can reproduce. metahp says so at attach, and its
    # forward path scores the model's own (eval-mode) logits, the same on every call, giving back train mode.
    trainer = trl_tiny.grpo_trainer(tmp_path, max_completion_length=12, disable_dropout=False,
                                    model_kwargs={"attention_dropout": 0.5})
    with pytest.warns(UserWarning, match="dropout"):
        adapter = metahp.adapt(trainer, updater="tampo", values=[0.5, 1.0, 2.0], seed=0, likelihoods="forward")
    trainer.model.train()
    out = trainer._generate_and_score_completions(first_batch(trainer))
    informative = (out["advantages"] != 0).cpu()
    assert informative.any()
    first, second = adapter.candidate_logprobs(out), adapter.candidate_logprobs(out)
    assert trainer.model.training and all(m.training for m in trainer.model.modules())
    assert torch.equal(first, second)  # in train mode two calls drew two dropout masks
    ids = torch.cat([out["prompt_ids"], out["completion_ids"]], dim=1)
    attention = torch.cat([out["prompt_mask"], out["completion_mask"]], dim=1)
    n = out["completion_ids"].size(1)
    trainer.model.eval()
    with torch.no_grad():
        logits = trainer.model(input_ids=ids, attention_mask=attention).logits[:, -n - 1:-1]
    want = adapter.policy.knob.sequence_logprobs(logits, out["completion_ids"], out["completion_mask"])
    torch.testing.assert_close(first[informative], want[informative], atol=TOL, rtol=0)


def test_adaptive_entropy_controller_with_an_adapted_temperature_is_flagged(tmp_path):
    with pytest.warns(UserWarning, match="adaptive entropy"):
        metahp.adapt(trl_tiny.grpo_trainer(tmp_path, use_adaptive_entropy=True), seed=0)


def test_no_dropout_warning_without_dropout(tmp_path, recwarn):
    metahp.adapt(trl_tiny.grpo_trainer(tmp_path), seed=0)
    assert not [w for w in recwarn if "dropout" in str(w.message)]


def test_buffered_batches_keep_their_value_and_eval_uses_the_users(tmp_path):
    trainer = trl_tiny.grpo_trainer(tmp_path, steps_per_generation=2, num_iterations=2, max_steps=8,
                                    eval_dataset=True, eval_strategy="steps", eval_steps=3,
                                    per_device_eval_batch_size=4, temperature=1.0)
    adapter = metahp.adapt(trainer, seed=3, **VARIED)
    seen, checked = [], {"train": 0, "eval": 0, "old": 0}
    spy_generate(trainer.model, seen)
    fresh = {"batch": False}
    generate_and_score = trainer._generate_and_score_completions

    def outer(inputs):  # outside metahp's wrapper: marks the first micro-step of each buffer
        fresh["batch"] = trainer.model.training
        return generate_and_score(inputs)

    trainer._generate_and_score_completions = outer
    compute_loss = trainer.compute_loss

    def spy_compute_loss(model, inputs, *args, **kwargs):
        training = trainer.model.training
        value = adapter.history[-1]["value"] if training else 1.0  # the batch's own value, or the user's
        assert set(adapter.applied_values().values()) == {value}
        mask = inputs["completion_mask"]
        assert_close_on_mask(trainer_logps(trainer, trainer.model, inputs),
                             completion_logps(trainer.model, inputs, value), mask)
        if training and fresh["batch"]:  # the old log-probs were computed at generation, at the batch's value
            assert_close_on_mask(inputs["old_per_token_logps"], completion_logps(trainer.model, inputs, value), mask)
            checked["old"] += 1
        fresh["batch"] = False
        checked["train" if training else "eval"] += 1
        return compute_loss(model, inputs, *args, **kwargs)

    trainer.compute_loss = spy_compute_loss
    trainer.train()
    assert checked["train"] == 8 and checked["old"] == 2 and checked["eval"] >= 2
    train_values = [t for training, t in seen if training]
    assert train_values == [h["value"] for h in adapter.history] and len(train_values) == 2
    assert len(set(train_values)) == 2, "the test needs a knob change"
    assert all(t == 1.0 for training, t in seen if not training)  # evaluation sampled at the user's value
    logged = [log for log in trainer.state.log_history if "metahp/temperature" in log]
    assert [log["metahp/temperature"] for log in logged] == train_values
    assert not any(k.startswith("eval_metahp") for log in trainer.state.log_history for k in log)


def test_vllm_generation_object_samples_at_the_new_value(tmp_path):
    """A stand-in for trl's VLLMGeneration: samples at its own .temperature and returns processed log-probs,
    so TRL's importance-sampling check measures whether sampling and training temperatures agree."""
    trainer = trl_tiny.grpo_trainer(tmp_path, max_steps=3)
    fake = FakeVLLMGeneration(trainer.model, trainer.processing_class, trainer.args.max_completion_length,
                              trainer.temperature)
    trainer.use_vllm, trainer.vllm_generation, trainer._last_loaded_step = True, fake, -1
    adapter = metahp.adapt(trainer, seed=1, **VARIED)
    trainer.train()
    assert fake.temperatures == [h["value"] for h in adapter.history] and len(set(fake.temperatures)) > 1
    assert max(trainer.state.log_history[i]["sampling/sampling_logp_difference/max"] for i in range(3)) < TOL


FakeVLLMGeneration = trl_tiny.FakeVLLMGeneration


def test_apply_reaches_every_copy(tmp_path):
    trainer = trl_tiny.grpo_trainer(tmp_path)
    trainer.vllm_generation = types.SimpleNamespace(temperature=1.0)
    adapter = metahp.adapt(trainer)
    adapter.apply(0.7)
    assert trainer.vllm_generation.temperature == 0.7 and trainer.generation_config.temperature == 0.7
    assert set(adapter.applied_values().values()) == {0.7}
    adapter.detach()
    assert "_generate_and_score_completions" not in trainer.__dict__
    metahp.adapt(trainer)  # attachable again after detach


# -- checkpoints -------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_resume_makes_the_same_choices_as_an_uninterrupted_run(tmp_path):
    settings = dict(max_steps=6, save_strategy="steps", save_steps=3)
    full = trl_tiny.grpo_trainer(tmp_path / "full", **settings)
    full_adapter = metahp.adapt(full, updater="tampo", values=[0.5, 1.0, 2.0])
    full.train()
    saved = json.loads((tmp_path / "full" / "checkpoint-3" / "metahp_state.json").read_text())
    assert [h["value"] for h in saved["history"]] == [h["value"] for h in full_adapter.history[:3]]

    resumed = trl_tiny.grpo_trainer(tmp_path / "resumed", **settings)
    # Another seed: only a restored state (random generator included) can reproduce the choices.
    resumed_adapter = metahp.adapt(resumed, updater="tampo", values=[0.5, 1.0, 2.0], seed=12345)
    seen = []
    spy_generate(resumed.model, seen)
    resumed.train(resume_from_checkpoint=str(tmp_path / "full" / "checkpoint-3"))
    assert len(seen) == 3  # it really resumed: 3 generations, not 6
    assert resumed_adapter.history == full_adapter.history
    assert resumed_adapter.policy.state_dict() == full_adapter.policy.state_dict()
    assert os.path.exists(tmp_path / "resumed" / "checkpoint-6" / "metahp_state.json")


# -- many processes ---------------------------------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize("likelihoods", ["generate", "forward"])
def test_two_processes_make_the_same_choices(tmp_path, likelihoods):
    """Two gloo CPU ranks: each update sees the whole global batch (both ranks' rows), so both ranks hold the same
    state and apply the same value at every step."""
    script = Path(__file__).with_name("trl_two_process.py")
    run = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                          str(script), str(tmp_path), likelihoods], capture_output=True, text=True, timeout=300,
                         env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert run.returncode == 0, run.stderr[-3000:]
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert all(r["world"] == 2 and r["source"] == likelihoods for r in ranks)
    assert ranks[0]["history"] == ranks[1]["history"] and len(ranks[0]["history"]) == 3
    assert ranks[0]["state"] == ranks[1]["state"]
    # 4 completions per rank, gathered: every update scored the 8 completions of the global batch
    assert all(u["batch_size"] == 8 for r in ranks for u in r["updates"])


# -- misconfiguration gets a clear error ---------------------------------------------------------------------
def test_generation_kwargs_setting_the_knob_is_refused(tmp_path):
    trainer = trl_tiny.grpo_trainer(tmp_path, generation_kwargs={"temperature": 0.7})
    with pytest.raises(ConfigError, match="generation_kwargs sets temperature"):
        metahp.adapt(trainer)


def test_unsupported_knob_version_and_double_attach_are_refused(tmp_path, monkeypatch):
    trainer = trl_tiny.grpo_trainer(tmp_path)
    with pytest.raises(ConfigError, match="TRL adapter can adapt"):
        metahp.adapt(trainer, knob="repetition_penalty")
    with monkeypatch.context() as patch:
        patch.setattr(trl, "__version__", "1.15.2")
        with pytest.raises(ConfigError, match="supports trl 1.16.x, found trl 1.15.2"):
            metahp.adapt(trainer)
    metahp.adapt(trainer)
    with pytest.raises(ConfigError, match="already has a metahp adapter"):
        metahp.adapt(trainer)


def test_a_frozen_fused_head_is_refused(tmp_path):
    trainer = trl_tiny.grpo_trainer(tmp_path)
    del trainer.model.forward  # the fused LM head is gone: log-prob temperature unreachable
    with pytest.raises(ConfigError, match="fused LM head"):
        metahp.adapt(trainer)


# -- the example runs ----------------------------------------------------------------------------------------
def test_example_runs(tmp_path, monkeypatch):
    path = Path(__file__).parents[1] / "examples" / "trl_grpo_temperature.py"
    spec = importlib.util.spec_from_file_location("trl_grpo_temperature", path)
    example = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, example)  # dataclasses look their module up there
    spec.loader.exec_module(example)
    policy = example.main(example.Args(steps=2, prompts_per_step=2, generations=4, output_dir=str(tmp_path)))
    assert policy.step == 2 and abs(policy.probs.sum() - 1) < 1e-9
