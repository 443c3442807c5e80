"""Values per completion on trl.GRPOTrainer (TRL 1.16), CPU, a tiny random Qwen2 and a character tokenizer.

Every completion is sampled at its own temperature, and TRL's own log-probs of that completion (old, reference and
the loss's, all through its fused LM head) equal log_softmax(raw logits / its temperature), computed independently
from the model's original forward.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import trl  # noqa: F401  a dev dependency: a broken install fails here, it never skips the suite

import metahp
from metahp.errors import ConfigError, StateError
from metahp.knobs.temperature import PerRowTemperature

_spec = importlib.util.spec_from_file_location("trl_tiny", Path(__file__).with_name("trl_tiny.py"))
trl_tiny = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(trl_tiny)

GRID = [0.5, 1.0, 2.0]
TOL = 1e-4
# 8 rows per device and micro-batch, 2 micro-batches per generation: 16 completions = 4 groups of 4; each batch is
# trained twice (num_iterations), so TRL computes old log-probs, and with beta > 0 reference log-probs.
SETTINGS = dict(per_device_train_batch_size=8, num_generations=4, gradient_accumulation_steps=2, num_iterations=2,
                beta=0.1)
ROW = "metahp_temperature"


def sharpened(trainer):
    with torch.no_grad():  # a random init is near-uniform: make the temperatures matter
        trainer.model.lm_head.weight.mul_(4.0)
    return trainer


def independent_logps(model, batch, temperatures):
    """log_softmax(z / t_b) of each row's completion tokens, from the model's original (unfused) forward."""
    ids = torch.cat([batch["prompt_ids"], batch["completion_ids"]], dim=1)
    attention = torch.cat([batch["prompt_mask"], batch["completion_mask"]], dim=1)
    n = batch["completion_ids"].size(1)
    with torch.no_grad():
        logits = model(input_ids=ids, attention_mask=attention).logits[:, -n - 1:-1].float()
    logp = torch.log_softmax(logits / temperatures.view(-1, 1, 1).to(logits.dtype), dim=-1)
    return logp.gather(-1, batch["completion_ids"].unsqueeze(-1)).squeeze(-1)


def close_on_mask(a, b, mask):
    mask = mask.bool()
    assert mask.any()
    torch.testing.assert_close(a[mask], b[mask], atol=TOL, rtol=0)


def adapt(trainer, **options):
    return metahp.adapt(trainer, per="completion", updater=options.pop("updater", "uniform"), values=GRID, seed=3,
                        **options)


def test_each_completion_is_sampled_and_scored_at_its_own_temperature(tmp_path):
    trainer = sharpened(trl_tiny.grpo_trainer(tmp_path, **SETTINGS))
    adapter = adapt(trainer)
    model = trainer.model
    seen = []
    generate = model.generate

    def spy(*args, **kwargs):
        seen.append(kwargs)
        return generate(*args, **kwargs)

    model.generate = spy
    batch = next(iter(trainer.get_train_dataloader()))
    trainer.model.train()
    out = trainer._generate_and_score_completions(batch)
    values = adapter.value
    assert len(values) == 16
    for g in range(4):  # the uniform mixture over 3 candidates, 4 completions a group: each once or twice
        assert sorted(values[4 * g:4 * g + 4].count(v) for v in GRID) == [1, 1, 2]
    rows = torch.tensor(values)
    # transformers sampled at T = 1 after a processor giving each row its own temperature
    (call,) = seen
    assert call["generation_config"].temperature == 1.0
    (processor,) = call["logits_processor"]
    assert isinstance(processor, PerRowTemperature) and torch.equal(processor.temperatures.squeeze(1), rows)
    assert set(adapter.applied_values().values()) == {1.0}  # every copy TRL keeps: the rows carry the values
    assert torch.equal(out[ROW].cpu(), rows)
    mask = out["completion_mask"]
    close_on_mask(out["old_per_token_logps"], independent_logps(model, out, rows), mask)
    close_on_mask(out["ref_per_token_logps"], independent_logps(trainer.ref_model, out, rows), mask)
    # the temperatures are far apart: one value for all rows would not match
    assert not torch.allclose(out["old_per_token_logps"][mask.bool()],
                              independent_logps(model, out, torch.ones(16))[mask.bool()], atol=1e-2)


def test_the_loss_scores_each_shuffled_row_at_its_own_temperature(tmp_path):
    trainer = sharpened(trl_tiny.grpo_trainer(tmp_path, **SETTINGS))
    adapt(trainer)
    trainer.model.train()
    batch = next(iter(trainer.get_train_dataloader()))
    micro = trainer._prepare_inputs(batch)  # generated, shuffled, split: the first of 2 micro-batches
    assert micro[ROW].shape == (8,)
    trainer.current_gradient_accumulation_steps = 2  # what Trainer's training loop sets before each loss
    captured = []
    handle = trainer.model.register_forward_hook(lambda m, a, k, o: captured.append(o.log_probs), with_kwargs=True)
    try:
        loss = trainer._compute_loss(trainer.model, micro)
    finally:
        handle.remove()
    assert torch.isfinite(loss)
    n = micro["completion_ids"].size(1)
    logps = torch.cat(captured)[:, -n:].detach()
    want = independent_logps(trainer.model, micro, micro[ROW].cpu())
    close_on_mask(logps, want, micro["completion_mask"])
    # first iteration: the loss's log-probs equal the old ones, ratio exactly 1
    close_on_mask(logps, micro["old_per_token_logps"], micro["completion_mask"])


def test_training_learns_logs_and_evaluates_at_the_users_value(tmp_path):
    trainer = trl_tiny.grpo_trainer(tmp_path, eval_dataset=True, eval_strategy="steps", eval_steps=4, max_steps=8,
                                    per_device_eval_batch_size=4, **SETTINGS)
    adapter = adapt(trainer, updater="softmax_gradient", reward="informativeness", lr=5.0, eval_value=0.7)
    start = adapter.policy.probs.copy()
    seen = []
    generate = trainer.model.generate

    def spy(*args, **kwargs):
        seen.append((trainer.model.training, kwargs["generation_config"].temperature,
                     len(kwargs.get("logits_processor") or [])))
        return generate(*args, **kwargs)

    trainer.model.generate = spy
    trainer.train()
    assert not (adapter.policy.probs == start).all()  # it learned from the rows' advantages
    assert {s for s in seen if s[0]} == {(True, 1.0, 1)}  # training: T = 1 and the per-row processor
    assert {s for s in seen if not s[0]} == {(False, 0.7, 0)}  # evaluation: the user's value, one for all rows
    logged = [h for h in trainer.state.log_history if "metahp/rows/1" in h]
    # one generation every 2 optimizer steps (2 micro-batches, each trained twice, with 2 accumulation steps)
    assert len(logged) == 4 == len(adapter.history)
    for entry, drawn in zip(logged, adapter.history, strict=True):
        assert abs(sum(entry[f"metahp/rows/{v:g}"] for v in GRID) - 1) < 1e-6
        assert sum(drawn["rows"].values()) == 16
        assert entry["metahp/rows/2"] == pytest.approx(drawn["rows"]["2"] / 16, abs=1e-4)
    assert set(adapter.applied_values().values()) == {1.0}  # after evaluation the copies are back at 1


@pytest.mark.slow
def test_resume_continues_exactly(tmp_path):
    settings = dict(SETTINGS, max_steps=4, save_strategy="steps", save_steps=2)
    options = dict(updater="softmax_gradient", reward="informativeness", lr=5.0)
    full = trl_tiny.grpo_trainer(tmp_path / "full", **settings)
    full_adapter = adapt(full, **options)
    full.train()
    saved = json.loads((tmp_path / "full" / "checkpoint-2" / "metahp_state.json").read_text())
    assert len(saved["value"]) == 16
    resumed = trl_tiny.grpo_trainer(tmp_path / "resumed", **settings)
    resumed_adapter = metahp.adapt(resumed, per="completion", values=GRID, seed=999, **options)  # state wins
    resumed.train(resume_from_checkpoint=str(tmp_path / "full" / "checkpoint-2"))
    assert resumed_adapter.history == full_adapter.history
    assert resumed_adapter.policy.state_dict() == full_adapter.policy.state_dict()
    # a per-batch adapter refuses the per-completion state, whole, naming the file
    other = trl_tiny.grpo_trainer(tmp_path / "other", **settings)
    batch_adapter = metahp.adapt(other, updater="exp3", values=GRID)
    before = batch_adapter.state_dict()
    with pytest.raises(StateError, match="metahp_state.json"):
        batch_adapter.load(str(tmp_path / "full" / "checkpoint-2"))
    assert batch_adapter.state_dict() == before


@pytest.mark.slow
def run_two_processes(tmp_path, mode):
    script = Path(__file__).with_name("trl_two_process.py")
    return subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                           str(script), str(tmp_path), mode], capture_output=True, text=True, timeout=300,
                          env=dict(os.environ, OMP_NUM_THREADS="1"))


def test_two_processes_draw_per_prompt_from_the_whole_batchs_prompts(tmp_path):
    run = run_two_processes(tmp_path, "prompt")
    assert run.returncode == 0, run.stderr[-3000:]
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert ranks[0]["history"] == ranks[1]["history"] and len(ranks[0]["history"]) == 3
    assert ranks[0]["state"] == ranks[1]["state"] and set(ranks[0]["state"]["policies"]) == {"small", "large"}
    # groups of 4 at one value each: every step's 8 rows fall on the grid in multiples of 4
    assert all(sum(h["rows"].values()) == 8 and all(n % 4 == 0 for n in h["rows"].values())
               for h in ranks[0]["history"])


def test_two_processes_draw_and_learn_the_same(tmp_path):
    run = run_two_processes(tmp_path, "completion")
    assert run.returncode == 0, run.stderr[-3000:]
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert all(r["world"] == 2 for r in ranks)
    assert ranks[0]["history"] == ranks[1]["history"] and len(ranks[0]["history"]) == 3
    assert ranks[0]["state"] == ranks[1]["state"]
    # each rank sampled its own half of the global rows, and every update saw all 8 rows
    assert all(len(h["rows"]) == 3 and sum(h["rows"].values()) == 8 for h in ranks[0]["history"])
    assert all(u["batch_size"] == 8 for r in ranks for u in r["updates"])
    assert [r["local_rows"] for r in ranks] == [[4, 4, 4], [4, 4, 4]]


def test_vllm_colocate_samples_each_prompt_at_its_own_temperature(tmp_path):
    """Through a stand-in for TRL's colocate VLLMGeneration (its LLM.generate samples each prompt at its
    SamplingParams and returns processed log-probs): one SamplingParams per prompt at the row's value, and TRL's
    importance-sampling check (sampling vs trainer log-prob per token) finds the loss at the same temperatures."""
    settings = dict(SETTINGS, num_iterations=1, gradient_accumulation_steps=1, max_steps=3)
    trainer = sharpened(trl_tiny.grpo_trainer(tmp_path, **settings))
    fake = trl_tiny.FakeVLLMGeneration(trainer.model, trainer.processing_class, trainer.args.max_completion_length,
                                       trainer.temperature)
    trainer.use_vllm, trainer.vllm_generation, trainer._last_loaded_step = True, fake, -1
    trainer.args.vllm_mode = "colocate"
    drawn = []
    adapter = adapt(trainer)
    draw = adapter.knobset.draw
    adapter.knobset.draw = lambda **kw: drawn.append(draw(**kw)["temperature"]) or {"temperature": drawn[-1]}
    trainer.train()
    assert fake.temperatures == [1.0] * 3  # TRL's own setting stays at 1: the per-prompt params carry the values
    assert fake.llm.temperatures == drawn and len(drawn) == 3 and all(len(set(d)) == 3 for d in drawn)
    diffs = [h["sampling/sampling_logp_difference/max"] for h in trainer.state.log_history
             if "sampling/sampling_logp_difference/max" in h]
    assert len(diffs) == 3 and max(diffs) < TOL


def test_values_per_prompt_come_from_the_policy_of_each_prompts_label_and_are_scored_there(tmp_path):
    from metahp.knobset import prompt_context

    trainer = sharpened(trl_tiny.grpo_trainer(tmp_path, **SETTINGS))
    seen = []

    def size(prompt):
        seen.append(prompt)
        return "small" if int(prompt[0]) < 5 else "large"

    adapter = metahp.adapt(trainer, per="prompt", updater="softmax_gradient", reward="informativeness", values=GRID,
                           seed=3, context=prompt_context(size, labels=("small", "large")))
    assert set(adapter.knobset.policies) == {"small", "large"}
    # each label's policy draws one value: which value a group got says which policy drew it
    adapter.knobset.policies["small"].sample = lambda: 0.5
    adapter.knobset.policies["large"].sample = lambda: 2.0
    batch = next(iter(trainer.get_train_dataloader()))
    trainer.model.train()
    out = trainer._generate_and_score_completions(batch)
    prompts = trainer.processing_class.batch_decode(out["prompt_ids"], skip_special_tokens=True)
    assert seen[:4] == prompts[::4] and all(len(set(prompts[4 * g:4 * g + 4])) == 1 for g in range(4))
    expected = torch.tensor([0.5 if int(p[0]) < 5 else 2.0 for p in prompts])
    assert torch.equal(out[ROW].cpu(), expected) and adapter.value == expected.tolist()
    close_on_mask(out["old_per_token_logps"], independent_logps(trainer.model, out, expected),
                  out["completion_mask"])
    # each label's policy learned from its own groups only
    labels = {("small" if int(p[0]) < 5 else "large") for p in prompts[::4]}
    assert {name for name, p in adapter.knobset.policies.items() if p.step == 1} == labels


def test_per_prompt_on_trl_needs_a_context_that_reads_prompts(tmp_path):
    from metahp.knobset import prompt_context

    trainer = trl_tiny.grpo_trainer(tmp_path, **SETTINGS)

    def by_rate(rate):
        return "x"

    by_rate.labels = ("x",)
    with pytest.raises(ConfigError, match=r"reads each prompt's text.*prompt_context"):
        metahp.adapt(trainer, per="prompt", updater="softmax_gradient", reward="informativeness", values=GRID,
                     context=by_rate)
    with pytest.raises(ConfigError, match="informativeness"):
        metahp.adapt(trainer, per="prompt", updater="tampo", values=GRID,
                     context=prompt_context(lambda p: "x", labels=("x",)))
    assert getattr(trainer, "_metahp_adapter", None) is None


# -- what cannot honour values per completion gets a clear error -------------------------------------------------
def test_per_prompt_and_likelihood_rewards_are_refused_with_what_works(tmp_path):
    trainer = trl_tiny.grpo_trainer(tmp_path, **SETTINGS)
    with pytest.raises(ConfigError, match="past pass rate.*reference trainer"):
        metahp.adapt(trainer, per="prompt", updater="softmax_gradient", reward="informativeness", values=GRID)
    with pytest.raises(ConfigError, match="informativeness"):
        metahp.adapt(trainer, per="completion", updater="tampo", values=GRID)
    with pytest.raises(ConfigError, match="at most 4 candidates"):
        metahp.adapt(trainer, per="completion", updater="uniform", values=[0.5, 0.7, 1.0, 1.3, 2.0])
    assert getattr(trainer, "_metahp_adapter", None) is None  # nothing attached on refusal
    metahp.adapt(trainer, per="completion", updater="uniform", values=GRID)  # and it still attaches afterwards


@pytest.mark.parametrize("change, words", [
    (lambda t: setattr(t, "use_vllm", True) or setattr(t.args, "vllm_mode", "server"), "'server' mode"),
    (lambda t: setattr(t, "tools", [print]), "tools"),
])
def test_trainer_settings_that_cannot_take_values_per_row_are_refused(tmp_path, change, words):
    trainer = trl_tiny.grpo_trainer(tmp_path, **SETTINGS)
    change(trainer)
    with pytest.raises(ConfigError, match=words):
        adapt(trainer)


def test_a_head_with_a_bias_is_refused(tmp_path):
    trainer = trl_tiny.grpo_trainer(tmp_path, **SETTINGS)
    head = trainer.model.get_output_embeddings()
    head.bias = torch.nn.Parameter(torch.zeros(head.out_features))
    with pytest.raises(ConfigError, match="LM-head bias"):
        adapt(trainer)
    assert trainer.__dict__.get("_compute_loss") is None  # nothing wrapped


def test_detach_removes_the_row_scaling_and_gives_the_copies_the_users_value(tmp_path):
    trainer = trl_tiny.grpo_trainer(tmp_path, temperature=0.9, **SETTINGS)
    adapter = adapt(trainer, eval_value=0.7)
    backbone = trainer.model.base_model
    assert len(backbone._forward_hooks) == 1
    trainer.model.train()
    trainer._generate_and_score_completions(next(iter(trainer.get_train_dataloader())))
    assert set(adapter.applied_values().values()) == {1.0}
    adapter.detach()
    assert len(backbone._forward_hooks) == 0 and "_compute_loss" not in trainer.__dict__
    assert set(adapter.applied_values().values()) == {0.9}  # the configured value, not 1 and not eval_value


def test_rows_are_scaled_in_float32_on_the_hidden_states_device(tmp_path):
    """A bf16 copy of 0.7 is 0.6992: dividing in the model's dtype would score the row at another temperature."""
    adapter = adapt(trl_tiny.grpo_trainer(tmp_path, **SETTINGS))
    hidden = torch.randn(2, 3, 8).to(torch.bfloat16)
    scaler = adapter.row_scaler
    with scaler.rows(torch.tensor([0.7, 1.3])):
        out = scaler._scale(None, (), (hidden,))
        want = (hidden.float() / torch.tensor([0.7, 1.3]).view(2, 1, 1)).to(torch.bfloat16)
        assert out[0].dtype == torch.bfloat16 and torch.equal(out[0], want)
        with pytest.raises(ConfigError, match="more rows than the 2 temperatures"):
            scaler._scale(None, (), (hidden,))
    with pytest.raises(ConfigError, match="over 0 rows, not 2"):  # a forward that never reached the backbone
        with scaler.rows(torch.tensor([0.7, 1.3])):
            pass


def test_generation_must_be_one_call_over_all_rows(tmp_path):
    """Two generate calls for one batch (e.g. a multi-turn path) would sample later rows at T = 1: refused."""
    trainer = trl_tiny.grpo_trainer(tmp_path, **SETTINGS)
    adapter = adapt(trainer)
    rows = torch.ones(2)
    ids = torch.tensor([[4, 5], [4, 6]])
    with pytest.raises(ConfigError, match="2 times for one batch"):
        with adapter._sampling_rows(rows):
            for _ in range(2):
                trainer.model.generate(input_ids=ids, max_new_tokens=1, do_sample=True)
    with pytest.raises(ConfigError, match="generated 1 rows in one call but this process drew 2"):
        with adapter._sampling_rows(rows):
            trainer.model.generate(input_ids=ids[:1], max_new_tokens=1, do_sample=True)


def test_values_per_completion_add_no_forward_pass(tmp_path):
    """The same training steps run exactly as many forwards of the policy and the reference model per completion
    as per batch (the rows' values ride on TRL's own passes)."""
    def forwards(per):
        trainer = trl_tiny.grpo_trainer(tmp_path / per, max_steps=4, **SETTINGS)
        if per == "completion":
            adapt(trainer)
        else:
            metahp.adapt(trainer, updater="exp3", values=GRID, seed=3)
        counts = {"policy": 0, "reference": 0}
        for name, model in (("policy", trainer.model), ("reference", trainer.ref_model)):
            model.register_forward_pre_hook(lambda *a, name=name: counts.__setitem__(name, counts[name] + 1))
        generate = trainer.model.generate
        steps = []

        def spy(*args, **kwargs):  # decoding steps are forwards too: count them apart
            before = counts["policy"]
            out = generate(*args, **kwargs)
            steps.append(counts["policy"] - before)
            return out

        trainer.model.generate = spy
        trainer.train()
        return counts["policy"] - sum(steps), counts["reference"], len(steps)

    per_batch, per_completion = forwards("batch"), forwards("completion")
    assert per_completion == per_batch and per_batch[0] > 0 and per_batch[1] > 0
