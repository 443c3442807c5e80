"""metahp.adapt on trl.GRPOTrainer (TRL 1.16) with top_p / top_k / min_p, and temperature + one truncation at once.

CPU, a tiny random Qwen2 and a character tokenizer (tests/trl_tiny.py). Every check compares with an independent
computation: the knob's own ``sequence_logprobs`` on the model's full raw logits, at the values the batch used.
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
from metahp.errors import ConfigError
from metahp.knobs import MinP, ProductKnob, Temperature, TopK, TopP
from metahp.policy import meta_policy

_spec = importlib.util.spec_from_file_location("trl_tiny", Path(__file__).with_name("trl_tiny.py"))
trl_tiny = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(trl_tiny)

TOL = 1e-4
VOCAB = 19  # trl_tiny's character vocabulary
# Grids wide enough that candidates differ on this vocabulary; drawn from the whole distribution (nucleus_p=1).
GRIDS = {"top_p": (TopP, [0.5, 0.8, 1.0]), "top_k": (TopK, [2, 5, VOCAB]), "min_p": (MinP, [0.0, 0.1, 0.3])}
# A meta-policy that barely moves, so the values drawn keep changing within a few batches (TAMPO's min-max rule
# moves all mass within a batch or two, and with a truncation knob it keeps crediting the value it sampled with).
MOVING = dict(updater="softmax_gradient", lr=1e-3)
WARPERS = {"top_p": "TopPLogitsWarper", "top_k": "TopKLogitsWarper", "min_p": "MinPLogitsWarper"}


def first_batch(trainer):
    return next(iter(trainer.get_train_dataloader()))


def spy_generate(model, seen, names):
    """Record, per generate call, the model's mode, the config's values and the warpers transformers built."""
    original, build = model.generate, model._get_logits_processor
    built = []

    def get_logits_processor(*args, **kwargs):
        processors = build(*args, **kwargs)
        built.append([(type(p).__name__, {k: v for k, v in vars(p).items() if k in ("top_p", "top_k", "min_p",
                                                                                   "temperature")})
                      for p in processors])
        return processors

    def generate(*args, **kwargs):
        config = kwargs["generation_config"]
        result = original(*args, **kwargs)
        seen.append({"training": model.training, "warpers": built.pop(), **{n: getattr(config, n) for n in names}})
        return result

    model._get_logits_processor = get_logits_processor
    model.generate = generate


def spy_updates(policy):
    used = []
    update = policy.update

    def spy(logp=None, adv=None, **kwargs):
        used.append((logp, adv, kwargs))
        return update(logp, adv, **kwargs)

    policy.update = spy
    return used


def full_logits(model, out):
    ids = torch.cat([out["prompt_ids"], out["completion_ids"]], dim=1)
    attention = torch.cat([out["prompt_mask"], out["completion_mask"]], dim=1)
    n = out["completion_ids"].size(1)
    with torch.no_grad():
        return model(input_ids=ids, attention_mask=attention).logits[:, -n - 1:-1].float()


def assert_scored_like(knob, logits, out, used):
    """What the meta-policy was handed equals ``knob.sequence_logprobs`` on the full raw logits (informative rows)."""
    logp, adv, kwargs = used
    informative = (out["advantages"] != 0).cpu()  # the adapter hands the meta-policy CPU tensors
    assert kwargs == {"batch_size": len(out["advantages"])} and torch.equal(adv, out["advantages"].cpu()[informative])
    want = knob.sequence_logprobs(logits, out["completion_ids"], out["completion_mask"])[informative]
    assert torch.equal(torch.isinf(logp), torch.isinf(want))
    torch.testing.assert_close(logp[torch.isfinite(want)], want[torch.isfinite(want)], atol=TOL, rtol=0)


# -- each truncation knob: sampled with the batch's value, scored after the batch's temperature ----------------
@pytest.mark.parametrize("name", ["top_p", "top_k", "min_p"])
def test_generate_samples_with_each_value_and_scores_after_the_temperature(tmp_path, name):
    cls, grid = GRIDS[name]
    trainer = trl_tiny.grpo_trainer(tmp_path, temperature=0.7, max_completion_length=10)
    adapter = metahp.adapt(trainer, knob=name, values=grid, seed=1, **MOVING)
    assert adapter.likelihoods == "generate" and adapter.scoring_knobs()[0].temperature == 0.7
    seen = []
    spy_generate(trainer.model, seen, [name, "temperature"])
    used = spy_updates(adapter.policy)
    batch = first_batch(trainer)
    trainer.model.train()
    for step in range(8):
        if step >= 4 and len({h["value"] for h in adapter.history}) > 1:
            break
        out = trainer._generate_and_score_completions(batch)
        value = adapter.value
        assert type(value) is (int if name == "top_k" else float) and value in grid
        assert set(adapter.applied_values().values()) == {value}
        assert seen[-1][name] == value and seen[-1]["temperature"] == 0.7 and seen[-1]["training"]
        # transformers really truncated with it: temperature, then this knob's warper (none for a no-op value)
        warpers = dict(seen[-1]["warpers"])
        assert warpers["TemperatureLogitsWarper"] == {"temperature": 0.7}
        no_op = {"top_p": 1.0, "top_k": None, "min_p": None}[name] == value
        if not no_op:
            assert warpers[WARPERS[name]] == {name: value}
        assert adapter.likelihood_source == "generate"
        # the captured likelihoods equal the knob's on full raw logits, after T = 0.7
        assert_scored_like(cls(grid, temperature=0.7), full_logits(trainer.model, out), out, used[step])
        # every completion is possible under the value that sampled it
        logp = used[step][0]
        assert torch.isfinite(logp[:, grid.index(value)]).all()
    assert len({h["value"] for h in adapter.history}) > 1, "the test needs a knob change"
    metrics = trainer._metrics["train"]
    assert metrics[f"metahp/{name}"] == [h["value"] for h in adapter.history]
    assert len(metrics[f"metahp/prob/{adapter.policy.knob.label(grid[1])}"]) == len(adapter.history)
    # the forward fallback gives the same likelihoods, zero-advantage rows left at 0
    out = dict(out, advantages=out["advantages"].clone())
    out["advantages"][0] = 0.0
    got = adapter.candidate_logprobs(out)
    assert torch.equal(got[0], torch.zeros(3))
    want = cls(grid, temperature=0.7).sequence_logprobs(full_logits(trainer.model, out), out["completion_ids"],
                                                        out["completion_mask"])
    finite = torch.isfinite(want[1:])
    assert torch.equal(torch.isfinite(got[1:]), finite)
    torch.testing.assert_close(got[1:][finite], want[1:][finite], atol=TOL, rtol=0)


def test_evaluation_uses_the_users_value_and_restores_the_training_one(tmp_path):
    trainer = trl_tiny.grpo_trainer(tmp_path, top_p=0.9, eval_dataset=True, per_device_eval_batch_size=4)
    adapter = metahp.adapt(trainer, knob="top_p", updater="tampo", values=[0.5, 0.8], seed=0)
    assert adapter.eval_value == 0.9
    seen = []
    spy_generate(trainer.model, seen, ["top_p"])
    trainer.model.train()
    trainer._generate_and_score_completions(first_batch(trainer))
    value = adapter.value
    assert value in (0.5, 0.8) and seen[-1]["top_p"] == value
    trainer.evaluate()
    assert {s["top_p"] for s in seen if not s["training"]} == {0.9}  # sampled with the user's value
    assert set(adapter.applied_values().values()) == {value}  # the buffered training batch keeps its value
    assert len(adapter.history) == 1  # evaluation drew nothing
    assert not any(k.startswith("eval_metahp") for log in trainer.state.log_history for k in log)
    # eval_value= overrides it
    adapter.detach()
    trainer.model.train()
    adapter = metahp.adapt(trainer, knob="top_p", values=[0.5, 0.8], eval_value=0.95)
    trainer.evaluate()
    assert [s["top_p"] for s in seen if not s["training"]][-1] == 0.95


def test_vllm_generation_object_samples_with_each_value(tmp_path):
    """vLLM (colocate or server) reads .top_p from trainer.vllm_generation at every call; the forward path scores
    the candidates after the batch's temperature."""
    trainer = trl_tiny.grpo_trainer(tmp_path, max_steps=4, temperature=0.8)
    fake = trl_tiny.FakeVLLMGeneration(trainer.model, trainer.processing_class, trainer.args.max_completion_length,
                                       trainer.temperature, top_p=trainer.top_p, top_k=trainer.top_k,
                                       min_p=trainer.min_p)
    trainer.use_vllm, trainer.vllm_generation, trainer._last_loaded_step = True, fake, -1
    grid = [0.5, 0.8, 1.0]
    with pytest.warns(UserWarning, match="kept probability mass"):
        adapter = metahp.adapt(trainer, knob="top_p", values=grid, seed=1, **MOVING)
    assert adapter.likelihoods == "forward"
    used = spy_updates(adapter.policy)
    outputs = []
    generate_and_score = trainer._generate_and_score_completions

    def outer(inputs):
        out = generate_and_score(inputs)
        outputs.append((out, full_logits(trainer.model, out)))  # the weights that sampled it
        return out

    trainer._generate_and_score_completions = outer
    trainer.train()
    assert [c["top_p"] for c in fake.calls] == [h["value"] for h in adapter.history]
    assert len({c["top_p"] for c in fake.calls}) > 1, "the test needs a knob change"
    assert all(c["temperature"] == 0.8 and c["top_k"] == 0 for c in fake.calls)
    assert adapter.likelihood_source == "forward"
    for (out, logits), call, h in zip(outputs, used, adapter.history, strict=True):
        assert_scored_like(TopP(grid, temperature=0.8), logits, out, call)
        # Not replayed: TRL's old log-probs are untruncated while vLLM's are truncated, so TRL's (sequence)
        # importance-sampling ratio is the product of the kept masses of the sampled steps, not a mismatch.
        mask = out["completion_mask"].bool()
        tokens = out["completion_ids"][mask]
        untruncated = Temperature([0.8]).token_logprobs(logits[mask], tokens)[:, 0]
        truncated = TopP([h["value"]], temperature=0.8).token_logprobs(logits[mask], tokens)[:, 0]
        log_kept = torch.zeros(mask.shape, device=mask.device).masked_scatter(mask, untruncated - truncated).sum(
            1, keepdim=True)
        torch.testing.assert_close(out["importance_sampling_ratio"], log_kept.exp(), atol=1e-4, rtol=1e-3)
        assert (log_kept < -1e-3).any() == (h["value"] < 1.0)


def test_apply_reaches_every_copy(tmp_path):
    trainer = trl_tiny.grpo_trainer(tmp_path)
    trainer.vllm_generation = trl_tiny.FakeVLLMGeneration(None, None, 8, 1.0)
    adapter = metahp.adapt(trainer, knob="top_k", values=[3, 7])
    adapter.apply(7.0)
    assert trainer.vllm_generation.top_k == 7 and trainer.generation_config.top_k == 7 and trainer.top_k == 7
    assert trainer.generation_kwargs["top_k"] == 7 and set(adapter.applied_values().values()) == {7}
    assert trainer.vllm_generation.temperature == 1.0 and trainer.generation_config.temperature == 1.0


# -- temperature and top_p together (factored) ------------------------------------------------------------------
def pair():
    return (Temperature([0.5, 1.0, 2.0]), TopP([0.5, 0.8, 1.0]))


def test_factored_pair_scores_each_knob_at_the_others_value(tmp_path):
    trainer = trl_tiny.grpo_trainer(tmp_path, max_completion_length=10, beta=0.1)
    adapter = metahp.adapt(trainer, knob=pair(), seed=5, **MOVING)
    assert list(adapter.policies) == ["temperature", "top_p"]
    with pytest.raises(AttributeError, match="policies"):
        adapter.policy  # noqa: B018
    # one meta-policy per knob, seeds 5 and 6
    for i, (name, knob) in enumerate(zip(adapter.policies, pair(), strict=True)):
        assert adapter.policies[name].state_dict() == meta_policy(knob, seed=5 + i, **MOVING).state_dict()
    used = {name: spy_updates(p) for name, p in adapter.policies.items()}
    seen = []
    spy_generate(trainer.model, seen, ["temperature", "top_p"])
    batch = first_batch(trainer)
    trainer.model.train()
    for step in range(8):
        if step >= 4 and all(len({h["value"][n] for h in adapter.history}) > 1 for n in adapter.policies):
            break
        out = trainer._generate_and_score_completions(batch)
        t, p = adapter.value["temperature"], adapter.value["top_p"]
        assert adapter.history[-1]["value"] == {"temperature": t, "top_p": p}
        assert (seen[-1]["temperature"], seen[-1]["top_p"]) == (t, p)
        copies = adapter.applied_values()
        assert {v for k, v in copies.items() if "top_p" in k} == {p}
        assert {v for k, v in copies.items() if "temperature" in k} == {t}  # fused heads of policy and reference
        logits = full_logits(trainer.model, out)
        truncation = None if p == 1.0 else ("top_p", p)
        assert_scored_like(Temperature([0.5, 1.0, 2.0], truncation=truncation), logits, out,
                           used["temperature"][step])
        assert_scored_like(TopP([0.5, 0.8, 1.0], temperature=t), logits, out, used["top_p"][step])
    values = [h["value"] for h in adapter.history]
    assert len({v["temperature"] for v in values}) > 1 and len({v["top_p"] for v in values}) > 1
    metrics = trainer._metrics["train"]
    assert metrics["metahp/temperature"] == [v["temperature"] for v in values]
    assert metrics["metahp/top_p"] == [v["top_p"] for v in values]
    for key in ("metahp/prob/temperature=0.5", "metahp/prob/top_p=0.8", "metahp/advantage/top_p=1"):
        assert len(metrics[key]) == len(values)
    assert not any(k.startswith("metahp/prob/0") for k in metrics)


def test_factored_pair_logs_checkpoints_and_resumes_exactly(tmp_path):
    settings = dict(max_steps=4, save_strategy="steps", save_steps=2)
    full = trl_tiny.grpo_trainer(tmp_path / "full", **settings)
    full_adapter = metahp.adapt(full, knob=pair(), **MOVING)
    full.train()
    logged = [log for log in full.state.log_history if "metahp/top_p" in log]
    assert [log["metahp/top_p"] for log in logged] == [h["value"]["top_p"] for h in full_adapter.history]
    assert all("metahp/prob/temperature=2" in log and "metahp/prob/top_p=0.5" in log for log in logged)
    saved = json.loads((tmp_path / "full" / "checkpoint-2" / "metahp_state.json").read_text())
    assert set(saved["policies"]) == {"temperature", "top_p"} and saved["history"] == full_adapter.history[:2]

    resumed = trl_tiny.grpo_trainer(tmp_path / "resumed", **settings)
    resumed_adapter = metahp.adapt(resumed, knob=pair(), **MOVING, seed=999)  # only the state can match
    resumed.train(resume_from_checkpoint=str(tmp_path / "full" / "checkpoint-2"))
    assert resumed_adapter.history == full_adapter.history
    for name in ("temperature", "top_p"):
        assert resumed_adapter.policies[name].state_dict() == full_adapter.policies[name].state_dict()
    # a single-knob adapter refuses the pair's state
    single = metahp.adapt(trl_tiny.grpo_trainer(tmp_path / "single"), knob="top_p")
    with pytest.raises(metahp.errors.StateError, match="adapts knobs"):
        single.load(str(tmp_path / "full" / "checkpoint-2"))


# -- temperature and top_p together (product grid) ---------------------------------------------------------------
def product_pair():
    return (Temperature([0.5, 1.0, 2.0]), TopP([0.5, 1.0]))  # 6 candidates: fits a generation batch of 8


def test_product_grid_samples_each_pair_and_scores_it(tmp_path):
    trainer = trl_tiny.grpo_trainer(tmp_path, per_device_train_batch_size=8, max_completion_length=10, beta=0.1)
    adapter = metahp.adapt(trainer, knob=product_pair(), combine="product", seed=5, **MOVING)
    # one meta-policy over the 6 pairs, seeded like metahp.meta_policy over the same ProductKnob
    assert list(adapter.policies) == ["temperature+top_p"] and isinstance(adapter.policy.knob, ProductKnob)
    assert adapter.policy.state_dict() == meta_policy(ProductKnob(*product_pair()), seed=5, **MOVING).state_dict()
    used = spy_updates(adapter.policy)
    seen = []
    spy_generate(trainer.model, seen, ["temperature", "top_p"])
    batch = first_batch(trainer)
    trainer.model.train()
    for step in range(10):
        if step >= 4 and len({tuple(h["value"].values()) for h in adapter.history}) > 2:
            break
        out = trainer._generate_and_score_completions(batch)
        t, p = adapter.value["temperature"], adapter.value["top_p"]
        assert adapter.history[-1]["value"] == {"temperature": t, "top_p": p}
        assert (seen[-1]["temperature"], seen[-1]["top_p"]) == (t, p)  # sampled with the drawn pair
        copies = adapter.applied_values()
        assert {v for k, v in copies.items() if "top_p" in k} == {p}
        assert {v for k, v in copies.items() if "temperature" in k} == {t}  # fused heads of policy and reference
        # every pair (T, c) scored as the sampler applies it: c after T, on the model's raw logits
        assert_scored_like(ProductKnob(*product_pair()), full_logits(trainer.model, out), out, used[step])
    values = [h["value"] for h in adapter.history]
    assert len({tuple(v.values()) for v in values}) > 2
    metrics = trainer._metrics["train"]
    assert metrics["metahp/temperature"] == [v["temperature"] for v in values]
    assert metrics["metahp/top_p"] == [v["top_p"] for v in values]
    for key in ("metahp/prob/temperature=0.5,top_p=0.5", "metahp/advantage/temperature=2,top_p=1"):
        assert len(metrics[key]) == len(values)
    assert not any(k.startswith(("metahp/prob/0", "metahp/prob/top_p=")) for k in metrics)


def test_product_grid_logs_checkpoints_and_resumes_exactly(tmp_path):
    settings = dict(max_steps=4, save_strategy="steps", save_steps=2, per_device_train_batch_size=8)
    full = trl_tiny.grpo_trainer(tmp_path / "full", **settings)
    full_adapter = metahp.adapt(full, knob=product_pair(), combine="product", **MOVING)
    full.train()
    logged = [log for log in full.state.log_history if "metahp/top_p" in log]
    assert [(log["metahp/temperature"], log["metahp/top_p"]) for log in logged] == [
        (h["value"]["temperature"], h["value"]["top_p"]) for h in full_adapter.history]
    assert all("metahp/prob/temperature=2,top_p=0.5" in log for log in logged)
    saved = json.loads((tmp_path / "full" / "checkpoint-2" / "metahp_state.json").read_text())
    assert saved["policy"]["knob"] == "temperature+top_p" and saved["history"] == full_adapter.history[:2]

    resumed = trl_tiny.grpo_trainer(tmp_path / "resumed", **settings)
    resumed_adapter = metahp.adapt(resumed, knob=product_pair(), combine="product", **MOVING, seed=999)
    resumed.train(resume_from_checkpoint=str(tmp_path / "full" / "checkpoint-2"))  # only the state can match
    assert resumed_adapter.history == full_adapter.history
    assert resumed_adapter.policy.state_dict() == full_adapter.policy.state_dict()
    # the factored pair and a single knob refuse the product's state
    factored = metahp.adapt(trl_tiny.grpo_trainer(tmp_path / "factored"), knob=product_pair())
    with pytest.raises(metahp.errors.StateError, match="adapts knobs"):
        factored.load(str(tmp_path / "full" / "checkpoint-2"))
    single = metahp.adapt(trl_tiny.grpo_trainer(tmp_path / "single"), knob="top_p")
    with pytest.raises(metahp.errors.StateError, match="knob"):
        single.load(str(tmp_path / "full" / "checkpoint-2"))


def test_product_grid_misconfigurations_are_refused(tmp_path):
    trainer = trl_tiny.grpo_trainer(tmp_path)  # a generation batch of 4 completions
    with pytest.raises(ConfigError, match=r"3 x 2 = 6 candidates, more than the 4 completions of a generation "
                                          r"batch .* use combine='factored', smaller grids, or a larger"):
        metahp.adapt(trainer, knob=product_pair(), combine="product")
    with pytest.raises(ConfigError, match="combine='both'.*'factored'.*'product'"):
        metahp.adapt(trainer, knob=product_pair(), combine="both")
    with pytest.raises(ConfigError, match="together is not supported"):
        metahp.adapt(trainer, knob=("top_p", "top_k"), combine="product")
    adapter = metahp.adapt(trainer, knob=(Temperature([0.5, 1.0]), TopP([0.5, 1.0])), combine="product",
                           eval_value={"top_p": 0.9})
    assert adapter.eval_value == {"temperature": 1.0, "top_p": 0.9}
    assert adapter.value == {"temperature": 1.0, "top_p": 1.0}  # the config's values until the first draw
    with pytest.raises(ConfigError, match=r"top_p: candidate 1.5 is outside"):
        adapter.detach()
        metahp.adapt(trainer, knob=(Temperature([0.5, 1.0]), TopP([0.5, 1.0])), combine="product",
                     eval_value={"top_p": 1.5})


# -- misconfiguration gets a clear error ---------------------------------------------------------------------
def test_misconfigurations_are_refused(tmp_path):
    trainer = trl_tiny.grpo_trainer(tmp_path, generation_kwargs={"top_p": 0.9})
    with pytest.raises(ConfigError, match="generation_kwargs sets top_p"):
        metahp.adapt(trainer, knob="top_p")
    trainer.args.generation_kwargs = {"typical_p": 0.9}
    with pytest.raises(ConfigError, match="typical_p"):
        metahp.adapt(trainer, knob="top_p")
    trainer.args.generation_kwargs = {"top_k": 5}  # overrides GRPOConfig.top_k: another truncation is active
    with pytest.raises(ConfigError, match="also truncates with {'top_k': 5}"):
        metahp.adapt(trainer, knob="min_p")
    trainer.args.generation_kwargs = None
    trainer.top_k, trainer.top_p = 5, 0.9  # as GRPOConfig(top_k=5, top_p=0.9) would set them
    with pytest.raises(ConfigError, match="also truncates"):
        metahp.adapt(trainer, knob="top_p")
    with pytest.raises(ConfigError, match="one truncation"):
        metahp.adapt(trainer, knob="temperature")
    trainer.top_k, trainer.top_p = 0, 1.0
    with pytest.raises(ConfigError, match="together is not supported"):
        metahp.adapt(trainer, knob=("top_p", "top_k"))
    with pytest.raises(ConfigError, match="names a knob twice"):
        metahp.adapt(trainer, knob=("top_p", "top_p"))
    with pytest.raises(ConfigError, match="Knob instance"):
        metahp.adapt(trainer, knob=("temperature", "top_p"), values=[0.5, 1.0])
    with pytest.raises(ConfigError, match="eval_value as a dict"):
        metahp.adapt(trainer, knob=("temperature", "top_p"), eval_value=0.9)
    with pytest.raises(ConfigError, match="top_k: candidate 0"):
        metahp.adapt(trainer, knob="top_k", values=[0, 5])
    adapter = metahp.adapt(trainer, knob=("temperature", "top_p"), eval_value={"top_p": 0.95})
    assert adapter.eval_value == {"temperature": 1.0, "top_p": 0.95}
    with pytest.raises(ConfigError, match="pass a dict"):
        adapter.apply(0.7)


def test_a_real_config_with_two_truncations_is_refused(tmp_path):
    trainer = trl_tiny.grpo_trainer(tmp_path, top_k=5, min_p=0.1)
    with pytest.raises(ConfigError, match=r"Set top_k=0 in GRPOConfig"):
        metahp.adapt(trainer, knob="min_p")


def test_temperature_alone_is_scored_with_the_configured_truncation(tmp_path):
    trainer = trl_tiny.grpo_trainer(tmp_path, top_p=0.8, max_completion_length=10)
    adapter = metahp.adapt(trainer, updater="tampo", values=[0.5, 1.0, 2.0], seed=0)
    used = spy_updates(adapter.policy)
    trainer.model.train()
    out = trainer._generate_and_score_completions(first_batch(trainer))
    assert adapter.scoring_knobs()[0].truncation == ("top_p", 0.8) and adapter.policy.knob.truncation is None
    assert_scored_like(Temperature([0.5, 1.0, 2.0], truncation=("top_p", 0.8)), full_logits(trainer.model, out), out,
                       used[0])


# -- many processes ---------------------------------------------------------------------------------------------
TWO_PROCESS_SCRIPT = '''
import importlib.util, json, sys
from pathlib import Path
import torch
spec = importlib.util.spec_from_file_location("trl_tiny", sys.argv[2])
trl_tiny = importlib.util.module_from_spec(spec)
spec.loader.exec_module(trl_tiny)
import metahp
from metahp.knobs import Temperature, TopP
torch.set_num_threads(1)
out_dir = sys.argv[1]
trainer = trl_tiny.grpo_trainer(out_dir, max_steps=3)
adapter = metahp.adapt(trainer, knob=(Temperature([0.5, 1.0, 2.0]), TopP([0.5, 0.8, 1.0])), updater="softmax_gradient",
                       lr=1e-3, likelihoods=sys.argv[3])
rows = []
for name, policy in adapter.policies.items():
    update = policy.update
    def spy(logp, adv, _update=update, _name=name, **kwargs):
        rows.append({"knob": _name, "batch_size": kwargs["batch_size"]})
        return _update(logp, adv, **kwargs)
    policy.update = spy
trainer.train()
rank = trainer.accelerator.process_index
Path(out_dir, f"rank{rank}.json").write_text(json.dumps({
    "world": trainer.accelerator.num_processes, "history": adapter.history, "updates": rows,
    "state": adapter.state_dict()["policies"], "source": adapter.likelihood_source}))
trainer.accelerator.wait_for_everyone()
torch.distributed.destroy_process_group()  # then skip interpreter teardown: see tests/trl_two_process.py
import os
sys.stdout.flush()
sys.stderr.flush()
os._exit(0)
'''


@pytest.mark.slow
def test_two_processes_agree_on_the_factored_pair(tmp_path):
    script = tmp_path / "two_process.py"
    script.write_text(TWO_PROCESS_SCRIPT)
    run = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                          str(script), str(tmp_path), str(Path(__file__).with_name("trl_tiny.py")), "generate"],
                         capture_output=True, text=True, timeout=300, env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert run.returncode == 0, run.stderr[-3000:]
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert all(r["world"] == 2 and r["source"] == "generate" for r in ranks)
    assert ranks[0]["history"] == ranks[1]["history"] and len(ranks[0]["history"]) == 3
    assert ranks[0]["state"] == ranks[1]["state"]
    # both knobs updated from the 8 completions of the global batch, every step
    assert sorted(u["knob"] for u in ranks[0]["updates"]) == ["temperature"] * 3 + ["top_p"] * 3
    assert all(u["batch_size"] == 8 for r in ranks for u in r["updates"])
