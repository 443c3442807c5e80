"""A catalogue of bad input to every public entry point: one case per line (what is passed, the metahp error it
must raise, words its message must contain). None may end in a raw Python / numpy / torch error or a silent NaN.

Cases that need a trainer build a tiny one lazily (``ref()``, ``trl()``), so the table stays one line per case.
"""

from __future__ import annotations

import functools
import importlib.util
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

import metahp
from metahp import ConfigError, InputError, MetaHPError, StateError, meta_policy
from metahp.knobs import MinP, ProductKnob, Temperature, TopK, TopP, make_knob
from metahp.knobset import KnobSet
from metahp.sparsemax import sparsemax
from metahp.state import read_json

NAN, INF = math.nan, math.inf
K = 10  # the default temperature grid


def logp(rows=2, k=K, fill=-1.0):
    return np.full((rows, k), fill)


def logits(b=2, length=3, v=7, seed=0):
    return torch.randn(b, length, v, generator=torch.Generator().manual_seed(seed))


def tokens(b=2, length=3, v=7):
    return torch.arange(b * length).view(b, length) % v


def mask(b=2, length=3):
    return torch.ones(b, length)


def with_(tensor, index, value):
    tensor = tensor.clone()
    tensor[index] = value
    return tensor


def drawn(updater="exp3", **options):
    """A bandit policy that has drawn its value (as an adapter does before updating)."""
    policy = meta_policy(updater=updater, **options)
    policy.sample()
    return policy


def after_baseline(reward):
    """exp3 with reward_improvement's baseline set at 0, then fed ``reward``."""
    policy = drawn()
    policy.update(reward=0.0)
    policy.sample()
    return policy.update(reward=reward)


def state(**edits):
    s = meta_policy(seed=1).state_dict()
    s.update(edits)
    return s


@functools.cache
def _reference_parts():
    from metahp.lab.grpo import GRPOTrainer
    from metahp.lab.models import char_tokenizer, tiny_model
    from metahp.lab.tasks import make_task

    task = make_task("addition", difficulty=1)
    return GRPOTrainer, char_tokenizer, tiny_model, task


def ref(**settings):
    GRPOTrainer, char_tokenizer, tiny_model, task = _reference_parts()
    tok = char_tokenizer(task.alphabet)
    model = tiny_model(tok, hidden=16, layers=1, heads=2, seed=0)
    return GRPOTrainer(model, tok, task, **{"prompts_per_step": 2, "num_generations": 2, **settings})


def attached_twice():
    trainer = ref()
    metahp.adapt(trainer)
    metahp.adapt(trainer)


_spec = importlib.util.spec_from_file_location("trl_tiny", Path(__file__).with_name("trl_tiny.py"))
trl_tiny = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(trl_tiny)


def trl(tmp=Path("/tmp/metahp-bad-input-trl"), **overrides):
    return trl_tiny.grpo_trainer(tmp, **overrides)


def bad_file(text):
    path = Path("/tmp/metahp-bad-input-state.json")
    path.write_text(text)
    return read_json(path)


# (id, call, error, words the message must contain)
CASES = [
    # -- meta_policy: names and options ----------------------------------------------------------------------
    ("unknown knob", lambda: meta_policy(knob="temp"), ConfigError, ["unknown knob", "temperature"]),
    ("knob not a name", lambda: meta_policy(knob=5), ConfigError, ["unknown knob"]),
    ("knob None", lambda: meta_policy(knob=None), ConfigError, ["unknown knob"]),
    ("unknown updater", lambda: meta_policy(updater="adam"), ConfigError, ["unknown updater", "tampo"]),
    ("updater not a name", lambda: meta_policy(updater=5), ConfigError, ["unknown updater"]),
    ("unknown reward", lambda: meta_policy(reward="x"), ConfigError, ["unknown reward"]),
    ("reward of the wrong kind", lambda: meta_policy(updater="exp3", reward="trajectory_likelihood"), ConfigError,
     ["feedback", "reward_improvement"]),
    ("unknown selection", lambda: meta_policy(selection="best"), ConfigError, ["unknown selection", "nucleus"]),
    ("unknown option", lambda: meta_policy(foo=1), ConfigError, ["unknown option foo"]),
    ("tampo alpha > 1", lambda: meta_policy(alpha=2.0), ConfigError, ["alpha", "less than or equal to 1"]),
    ("tampo alpha 0", lambda: meta_policy(alpha=0), ConfigError, ["alpha"]),
    ("tampo alpha text", lambda: meta_policy(alpha="a"), ConfigError, ["alpha"]),
    ("nucleus_p 0", lambda: meta_policy(nucleus_p=0), ConfigError, ["nucleus_p"]),
    ("nucleus_p > 1", lambda: meta_policy(nucleus_p=1.5), ConfigError, ["nucleus_p"]),
    ("normalizer unknown", lambda: meta_policy(normalizer="max"), ConfigError, ["normalizer"]),
    ("baseline_alpha 0", lambda: meta_policy(updater="exp3", baseline_alpha=0), ConfigError, ["baseline_alpha"]),
    ("exp3 gamma 0", lambda: meta_policy(updater="exp3", gamma=0), ConfigError, ["gamma"]),
    ("exp3 window reversed", lambda: meta_policy(updater="exp3", reward_low=1, reward_high=0), ConfigError,
     ["reward_low", "below"]),
    ("exp3 window infinite", lambda: meta_policy(updater="exp3", reward_high=INF), ConfigError, ["finite"]),
    ("exp3 window NaN", lambda: meta_policy(updater="exp3", reward_low=NAN), ConfigError, ["finite"]),
    ("ucb window 0", lambda: meta_policy(updater="sliding_window_ucb", window=0), ConfigError, ["window"]),
    ("ucb exploration < 0", lambda: meta_policy(updater="sliding_window_ucb", exploration=-1), ConfigError,
     ["exploration"]),
    ("thompson discount 0", lambda: meta_policy(updater="thompson", discount=0), ConfigError, ["discount"]),
    ("thompson prior_std < 0", lambda: meta_policy(updater="thompson", prior_std=-1), ConfigError, ["prior_std"]),
    ("softmax form unknown", lambda: meta_policy(updater="softmax_gradient", form="adam"), ConfigError, ["form"]),
    ("softmax lr 0", lambda: meta_policy(updater="softmax_gradient", lr=0), ConfigError, ["lr"]),
    ("constant value off grid", lambda: meta_policy(updater="constant", value=0.33), ConfigError,
     ["not among the candidates"]),
    ("constant product no value", lambda: meta_policy(ProductKnob(Temperature(), TopP()), "constant"), ConfigError,
     ["value=("]),
    ("seed negative", lambda: meta_policy(seed=-1), ConfigError, ["seed", "non-negative integer"]),
    ("seed text", lambda: meta_policy(seed="a"), ConfigError, ["seed"]),
    ("seed float", lambda: meta_policy(seed=1.5), ConfigError, ["seed"]),
    ("seed bool", lambda: meta_policy(seed=True), ConfigError, ["seed"]),
    # -- candidate grids -------------------------------------------------------------------------------------
    ("grid empty", lambda: meta_policy(values=[]), ConfigError, ["empty"]),
    ("grid duplicate", lambda: meta_policy(values=[0.5, 0.5]), ConfigError, ["duplicate"]),
    ("grid near-duplicate", lambda: meta_policy(values=[1.0, 1.0 + 1e-9]), ConfigError, ["indistinguishable"]),
    ("grid scalar", lambda: meta_policy(values=1.0), ConfigError, ["list", "values"]),
    ("grid text", lambda: meta_policy(values="0.7"), ConfigError, ["list", "values"]),
    ("grid of text", lambda: meta_policy(values=["a"]), ConfigError, ["not a number"]),
    ("grid of bools", lambda: meta_policy(values=[True]), ConfigError, ["not a number"]),
    ("grid NaN", lambda: meta_policy(values=[NAN]), ConfigError, ["not finite"]),
    ("grid inf", lambda: meta_policy(values=[1.0, INF]), ConfigError, ["not finite"]),
    ("grid 2-D array", lambda: meta_policy(values=np.ones((2, 2))), ConfigError, ["1-D"]),
    ("grid too large", lambda: meta_policy(values=np.linspace(0.1, 2, 10**6)), ConfigError, ["candidates", "at most"]),
    ("temperature 0", lambda: meta_policy(values=[0.0, 1.0]), ConfigError, ["not positive"]),
    ("temperature negative", lambda: meta_policy(values=[-1.0]), ConfigError, ["not positive"]),
    ("temperature tiny", lambda: meta_policy(values=[1e-30, 1.0]), ConfigError, ["too small"]),
    ("top_p 0", lambda: meta_policy("top_p", values=[0]), ConfigError, ["(0, 1]"]),
    ("top_p > 1", lambda: meta_policy("top_p", values=[1.5]), ConfigError, ["(0, 1]"]),
    ("top_k 0", lambda: meta_policy("top_k", values=[0]), ConfigError, ["integer >= 1"]),
    ("top_k fraction", lambda: meta_policy("top_k", values=[2.5]), ConfigError, ["integer >= 1"]),
    ("min_p 1", lambda: meta_policy("min_p", values=[1.0]), ConfigError, ["[0, 1)"]),
    ("min_p negative", lambda: meta_policy("min_p", values=[-0.1]), ConfigError, ["[0, 1)"]),
    ("grid twice", lambda: meta_policy(Temperature(), values=[1.0]), ConfigError, ["not both"]),
    ("unknown knob by make_knob", lambda: make_knob("typical_p"), ConfigError, ["unknown knob"]),
    ("truncation temperature 0", lambda: TopP(temperature=0), ConfigError, ["temperature"]),
    ("truncation temperature text", lambda: TopK(temperature="hot"), ConfigError, ["temperature"]),
    ("truncation epsilon 1", lambda: MinP(epsilon=1.0), ConfigError, ["epsilon"]),
    ("product of one", lambda: ProductKnob(Temperature()), ConfigError, ["two or more"]),
    ("product of truncations", lambda: ProductKnob(TopP(), TopK()), ConfigError, ["not supported"]),
    ("product of names", lambda: ProductKnob("temperature", "top_p"), ConfigError, ["Knob instances"]),
    # -- policy.update (per-candidate: tampo) ----------------------------------------------------------------
    ("no seq_logprobs", lambda: meta_policy().update(advantages=[1.0]), InputError, ["seq_logprobs"]),
    ("no advantages", lambda: meta_policy().update(logp()), InputError, ["advantages"]),
    ("rows disagree", lambda: meta_policy().update(logp(2), [1.0, -1.0, 0.0]), InputError, ["2 rows", "3"]),
    ("too few candidates", lambda: meta_policy().update(logp(2, 9), [1.0, -1.0]), InputError, ["[B, K]", "K = 10"]),
    ("1-D likelihoods", lambda: meta_policy().update(np.full(K, -1.0), [1.0]), InputError, ["[B, K]"]),
    ("likelihood NaN", lambda: meta_policy().update(logp(fill=NAN), [1.0, -1.0]), InputError, ["NaN"]),
    ("likelihood +inf", lambda: meta_policy().update(logp(fill=INF), [1.0, -1.0]), InputError, ["+inf"]),
    ("likelihood positive", lambda: meta_policy().update(logp(fill=0.5), [1.0, -1.0]), InputError, ["positive"]),
    ("likelihood text", lambda: meta_policy().update("abc", [1.0]), InputError, ["seq_logprobs", "numeric"]),
    ("likelihood dict", lambda: meta_policy().update({"a": 1}, [1.0]), InputError, ["seq_logprobs", "numeric"]),
    ("advantage NaN", lambda: meta_policy().update(logp(), [NAN, 1.0]), InputError, ["NaN"]),
    ("advantage inf", lambda: meta_policy().update(logp(), [INF, 1.0]), InputError, ["infinite"]),
    ("advantages 2-D", lambda: meta_policy().update(logp(), [[1.0], [1.0]]), InputError, ["1-D"]),
    ("advantages text", lambda: meta_policy().update(logp(), "ab"), InputError, ["advantages", "numeric"]),
    ("advantages strings", lambda: meta_policy().update(logp(), ["1", "2"]), InputError, ["advantages", "numeric"]),
    ("advantages complex", lambda: meta_policy().update(logp(), np.array([1j, 1])), InputError, ["numeric"]),
    ("advantages bool tensor", lambda: meta_policy().update(logp(), torch.tensor([True, False])), InputError,
     ["real numbers"]),
    ("advantages None in list", lambda: meta_policy().update(logp(), [None, 1.0]), InputError, ["numeric"]),
    ("batch_size 0", lambda: meta_policy().update(logp(), [1.0, -1.0], batch_size=0), InputError, ["batch_size"]),
    ("batch_size < rows", lambda: meta_policy().update(logp(), [1.0, -1.0], batch_size=1), InputError,
     ["batch_size", ">= the 2 rows"]),
    ("batch_size float", lambda: meta_policy().update(logp(), [1.0, -1.0], batch_size=2.5), InputError,
     ["batch_size", "integer"]),
    ("batch_size bool", lambda: meta_policy().update(logp(), [1.0, -1.0], batch_size=True), InputError,
     ["integer"]),
    ("empty batch", lambda: meta_policy().update(np.zeros((0, K)), []), InputError, ["empty batch"]),
    ("impossible trajectory", lambda: meta_policy().update(logp(fill=-INF), [1.0, -1.0]), InputError,
     ["impossible under every candidate"]),
    ("reward text", lambda: meta_policy().update(logp(), [1.0, -1.0], reward="x"), InputError, ["reward", "finite"]),
    # -- policy.update (bandit: exp3) ------------------------------------------------------------------------
    ("bandit before sample", lambda: meta_policy(updater="exp3").update(reward=0.1), InputError, ["sample()"]),
    ("bandit no reward", lambda: drawn().update(), InputError, ["reward"]),
    ("bandit reward NaN", lambda: drawn().update(reward=NAN), InputError, ["finite"]),
    ("bandit reward inf", lambda: drawn().update(reward=INF), InputError, ["finite"]),
    ("bandit reward text", lambda: drawn().update(reward="0.5"), InputError, ["finite number"]),
    ("bandit reward bool", lambda: drawn().update(reward=True), InputError, ["finite number"]),
    ("bandit reward list", lambda: drawn().update(reward=[0.5]), InputError, ["finite number"]),
    ("bandit reward tensor", lambda: drawn().update(reward=torch.tensor([0.5, 0.1])), InputError, ["finite number"]),
    ("exp3 reward far outside window", lambda: after_baseline(50.0), InputError, ["outside the window",
                                                                                 "reward_high"]),
    ("ucb reward NaN", lambda: drawn("sliding_window_ucb").update(reward=NAN), InputError, ["finite"]),
    ("thompson reward text", lambda: drawn("thompson").update(reward="a"), InputError, ["finite number"]),
    # -- policy.update_from_logits ---------------------------------------------------------------------------
    ("logits 2-D", lambda: meta_policy().update_from_logits(torch.zeros(2, 7), tokens(), mask(), [1.0, -1.0]),
     InputError, ["logits"]),
    ("advantages longer than batch", lambda: meta_policy().update_from_logits(logits(), tokens(), mask(),
                                                                              [1.0, -1.0, 0.0]),
     InputError, ["advantages has 3", "logits"]),
    ("tokens rows disagree", lambda: meta_policy().update_from_logits(logits(), tokens(3), mask(), [1.0, -1.0]),
     InputError, ["tokens"]),
    ("mask rows disagree", lambda: meta_policy().update_from_logits(logits(), tokens(), mask(1), [1.0, -1.0]),
     InputError, ["mask"]),
    ("mask length disagrees", lambda: meta_policy().update_from_logits(logits(), tokens(), mask(2, 2), [1.0, -1.0]),
     InputError, ["mask has shape"]),
    ("tokens float", lambda: meta_policy().update_from_logits(logits(), tokens().float(), mask(), [1.0, -1.0]),
     InputError, ["integer token ids"]),
    ("token out of vocabulary", lambda: meta_policy().update_from_logits(logits(), with_(tokens(), (0, 0), 99),
                                                                         mask(), [1.0, -1.0]),
     InputError, ["token ids must lie", "[0, 7)"]),
    ("negative token", lambda: meta_policy().update_from_logits(logits(), with_(tokens(), (1, 2), -1), mask(),
                                                                [1.0, -1.0]), InputError, ["token ids must lie"]),
    ("integer logits", lambda: meta_policy().update_from_logits(logits().long(), tokens(), mask(), [1.0, -1.0]),
     InputError, ["floating point"]),
    ("logits NaN", lambda: meta_policy().update_from_logits(with_(logits(), (0, 1, 2), NAN), tokens(), mask(),
                                                            [1.0, -1.0]), InputError, ["NaN or +inf"]),
    ("logits +inf", lambda: meta_policy().update_from_logits(with_(logits(), (1, 0, 0), INF), tokens(), mask(),
                                                             [1.0, -1.0]), InputError, ["NaN or +inf"]),
    ("logits all -inf", lambda: meta_policy().update_from_logits(with_(logits(), (1, 2), -INF), tokens(), mask(),
                                                                 [1.0, -1.0]), InputError, ["all -inf", "row 1"]),
    ("logits all -inf, skipped rows before", lambda: meta_policy().update_from_logits(
        with_(logits(), (1, 0), -INF), tokens(), mask(), [0.0, 1.0]), InputError, ["all -inf", "(row 1, token 0)"]),
    ("mask of twos", lambda: meta_policy().update_from_logits(logits(), tokens(), mask() * 2, [1.0, -1.0]),
     InputError, ["mask", "0 and 1"]),
    ("mask negative", lambda: meta_policy().update_from_logits(logits(), tokens(), -mask(), [1.0, -1.0]),
     InputError, ["mask", "0 and 1"]),
    ("mask fractional", lambda: meta_policy().update_from_logits(logits(), tokens(), mask() * 0.5, [1.0, -1.0]),
     InputError, ["mask", "0 and 1"]),
    ("empty vocabulary", lambda: meta_policy().update_from_logits(torch.zeros(2, 3, 0), tokens(), mask(),
                                                                  [1.0, -1.0]), InputError, ["vocabulary"]),
    ("logits text", lambda: meta_policy().update_from_logits("abc", tokens(), mask(), [1.0, -1.0]), InputError,
     ["logits"]),
    ("advantages text (logits)", lambda: meta_policy().update_from_logits(logits(), tokens(), mask(), "ab"),
     InputError, ["advantages", "numeric"]),
    ("advantages NaN (logits)", lambda: meta_policy().update_from_logits(logits(), tokens(), mask(), [NAN, 1.0]),
     InputError, ["NaN"]),
    ("advantages 2-D (logits)", lambda: meta_policy().update_from_logits(logits(), tokens(), mask(), [[1.0, 1.0]]),
     InputError, ["1-D"]),
    # -- knobs called directly -------------------------------------------------------------------------------
    ("temperature all -inf", lambda: Temperature().sequence_logprobs(with_(logits(), (0, 1), -INF), tokens(),
                                                                     mask()), InputError, ["all -inf", "row 0"]),
    ("top_p all -inf", lambda: TopP([0.9]).sequence_logprobs(with_(logits(), (0, 0), -INF), tokens(), mask()),
     InputError, ["all -inf"]),
    ("top_k all -inf", lambda: TopK([3]).sequence_logprobs(with_(logits(), (1, 1), -INF), tokens(), mask()),
     InputError, ["all -inf"]),
    ("min_p all -inf", lambda: MinP([0.1]).sequence_logprobs(with_(logits(), (1, 0), -INF), tokens(), mask()),
     InputError, ["all -inf"]),
    ("product all -inf", lambda: ProductKnob(Temperature([1.0]), TopP([0.9])).sequence_logprobs(
        with_(logits(), (0, 2), -INF), tokens(), mask()), InputError, ["all -inf"]),
    ("knob tokens shape", lambda: Temperature().sequence_logprobs(logits(), tokens()[:, :2], mask()), InputError,
     ["tokens has shape"]),
    ("knob mask of twos", lambda: TopP().sequence_logprobs(logits(), tokens(), mask() * 2), InputError, ["0 and 1"]),
    # -- sparsemax -------------------------------------------------------------------------------------------
    ("sparsemax empty", lambda: sparsemax(torch.zeros(0)), InputError, ["empty"]),
    ("sparsemax NaN", lambda: sparsemax(torch.tensor([NAN, 1.0])), InputError, ["NaN"]),
    ("sparsemax all -inf", lambda: sparsemax(torch.tensor([-INF, -INF])), InputError, ["all -inf"]),
    # -- load_state_dict -------------------------------------------------------------------------------------
    ("state text", lambda: meta_policy().load_state_dict("x"), StateError, ["not a metahp meta-policy state"]),
    ("state empty", lambda: meta_policy().load_state_dict({}), StateError, ["not a metahp meta-policy state"]),
    ("state of another updater", lambda: meta_policy().load_state_dict(meta_policy(updater="exp3").state_dict()),
     StateError, ["updater="]),
    ("state of another grid", lambda: meta_policy().load_state_dict(meta_policy(values=[0.5, 1.0]).state_dict()),
     StateError, ["values="]),
    ("state missing step", lambda: meta_policy().load_state_dict({k: v for k, v in state().items() if k != "step"}),
     StateError, ["missing ['step']"]),
    ("state extra key", lambda: meta_policy().load_state_dict(state(extra=1)), StateError, ["unexpected ['extra']"]),
    ("state NaN ema", lambda: meta_policy().load_state_dict(state(updater_state={"ema": [NAN] * K})), StateError,
     ["ema", "NaN"]),
    ("state short ema", lambda: meta_policy().load_state_dict(state(updater_state={"ema": [0.0] * 3})), StateError,
     ["ema", "shape"]),
    ("state rng corrupted", lambda: meta_policy().load_state_dict(state(rng={"bit_generator": "PCG64"})),
     StateError, ["rng", "missing"]),
    ("state step negative", lambda: meta_policy().load_state_dict(state(step=-1)), StateError, ["step"]),
    ("state step text", lambda: meta_policy().load_state_dict(state(step="3")), StateError, ["step", "integer"]),
    ("state chosen out of grid", lambda: meta_policy().load_state_dict(state(chosen_index=K)), StateError,
     ["chosen_index"]),
    ("state file truncated", lambda: bad_file('{"format": "metahp'), StateError, ["metahp-bad-input-state.json",
                                                                                 "not valid JSON"]),
    ("state file missing", lambda: read_json("/nonexistent/metahp_state.json"), StateError, ["not found"]),
    # -- metahp.adapt and the reference trainer --------------------------------------------------------------
    ("adapt unknown trainer", lambda: metahp.adapt(object()), ConfigError, ["no adapter", "supported trainers"]),
    ("adapt unknown knob", lambda: metahp.adapt(ref(), knob="typical_p"), ConfigError, ["can adapt", "typical_p"]),
    ("adapt two truncations", lambda: metahp.adapt(ref(), knob=("top_p", "top_k")), ConfigError, ["not supported"]),
    ("adapt knob twice", lambda: metahp.adapt(ref(), knob=("temperature", "temperature")), ConfigError, ["twice"]),
    ("adapt shared grid", lambda: metahp.adapt(ref(), knob=("temperature", "top_p"), values=[1.0]), ConfigError,
     ["Knob instance"]),
    ("adapt combine unknown", lambda: metahp.adapt(ref(), combine="sum"), ConfigError, ["combine"]),
    ("adapt seed negative", lambda: metahp.adapt(ref(), seed=-1), ConfigError, ["seed"]),
    ("adapt updater unknown", lambda: metahp.adapt(ref(), updater="nope"), ConfigError, ["unknown updater"]),
    ("adapt twice", attached_twice, ConfigError, ["already attached"]),
    ("reference config invalid", lambda: ref(num_generations=1), ConfigError, ["num_generations"]),
    ("reference config unknown", lambda: ref(steps=3), ConfigError, ["steps", "Valid settings"]),
    ("reference learning rate 0", lambda: ref(learning_rate=0), ConfigError, ["learning_rate"]),
    ("reference checkpoint missing", lambda: ref().load_checkpoint("/nonexistent/ckpt"), StateError,
     ["not a metahp GRPO checkpoint"]),
    ("per unknown", lambda: metahp.adapt(ref(), per="group"), ConfigError, ["per='group'"]),
    ("per completion with a bandit", lambda: metahp.adapt(ref(), per="completion", updater="exp3",
                                                           values=[0.6, 1.0]), ConfigError, ["per-candidate updater"]),
    ("per completion, grid larger than the group", lambda: metahp.adapt(ref(), per="completion", updater="tampo"),
     ConfigError, ["10 candidates but a group only 2"]),
    ("per completion reward without rows", lambda: meta_policy(reward="informativeness").update(advantages=[1.0]),
     InputError, ["per='completion'"]),
    ("rows out of the grid", lambda: meta_policy(reward="within_group_advantage").update(advantages=[1.0], rows=[10]),
     InputError, ["rows must hold candidate indices"]),
    ("trl per prompt", lambda: metahp.adapt(trl(), per="prompt", updater="softmax_gradient",
                                            reward="informativeness", values=[0.6, 1.0]), ConfigError,
     ["past pass rate", "reference trainer"]),
    ("trl per completion with a bandit", lambda: metahp.adapt(trl(), per="completion", values=[0.6, 1.0]),
     ConfigError, ["per-candidate updater", "reward='informativeness'"]),
    ("trl per completion from likelihoods", lambda: metahp.adapt(trl(), per="completion", updater="tampo",
                                                                 values=[0.6, 1.0]), ConfigError,
     ["informativeness", "reference trainer"]),
    ("per prompt from likelihoods", lambda: metahp.adapt(ref(), per="prompt", updater="tampo"), ConfigError,
     ["reward='informativeness'"]),
    ("per prompt from within-group advantage", lambda: metahp.adapt(ref(), per="prompt", updater="tampo",
                                                                      reward="within_group_advantage"), ConfigError,
     ["within-group advantage is 0"]),
    ("per prompt context NaN", lambda: KnobSet("temperature", "tampo", [0.6, 1.0], 0, per="prompt", group_size=2,
                                               reward="informativeness").draw(rows=2, contexts=[NAN]),
     ConfigError, ["pass rates in [0, 1]"]),
    ("per prompt context text", lambda: KnobSet("temperature", "tampo", [0.6, 1.0], 0, per="prompt", group_size=2,
                                                reward="informativeness").draw(rows=2, contexts=["x"]),
     ConfigError, ["pass rates in [0, 1]"]),
    ("per completion used NaN", lambda: KnobSet("temperature", "tampo", [0.6, 1.0], 0, per="completion", group_size=2,
                                                reward="informativeness").update(
        advantages=[1.0, -1.0], used={"temperature": [NAN, 1.0]}), InputError, ["finite value per completion"]),
    ("per completion used too short", lambda: KnobSet("temperature", "tampo", [0.6, 1.0], 0, per="completion",
                                                      group_size=2, reward="informativeness").update(
        advantages=[1.0, -1.0], used={"temperature": [0.6]}), InputError, ["one finite value per completion (2)"]),
    ("erpo temperature 0", lambda: __import__("metahp.lab.baselines", fromlist=["ERPO"]).ERPO(hot=0), ConfigError,
     ["must be > 0"]),
    ("per prompt draw without contexts", lambda: KnobSet("temperature", "tampo", [0.6, 1.0], 0, per="prompt",
                                                           group_size=2, reward="informativeness").draw(rows=4),
     ConfigError, ["contexts"]),
    ("per prompt update, contexts too short", lambda: KnobSet(
        "temperature", "tampo", [0.6, 1.0], 0, per="prompt", group_size=2, reward="informativeness").update(
        advantages=[1.0, -1.0, 0.0, 0.0], used={"temperature": [0.6] * 4}, contexts=[None]), InputError, ["contexts"]),
    # -- metahp.adapt on TRL ---------------------------------------------------------------------------------
    ("trl unknown knob", lambda: metahp.adapt(trl(), knob="typical_p"), ConfigError, ["TRL adapter can adapt"]),
    ("trl likelihood source", lambda: metahp.adapt(trl(), likelihoods="maybe"), ConfigError, ["likelihoods"]),
    ("trl combine unknown", lambda: metahp.adapt(trl(), combine="sum"), ConfigError, ["combine"]),
    ("trl eval_value other knob", lambda: metahp.adapt(trl(), eval_value={"top_p": 0.9}), ConfigError,
     ["not adapted"]),
    ("trl generation_kwargs set knob", lambda: metahp.adapt(trl(generation_kwargs={"temperature": 0.7})),
     ConfigError, ["generation_kwargs"]),
    ("trl unmodelled truncation", lambda: metahp.adapt(trl(generation_kwargs={"typical_p": 0.9})), ConfigError,
     ["typical_p", "does not model"]),
    ("trl seed negative", lambda: metahp.adapt(trl(), seed=-2), ConfigError, ["seed"]),
]


@pytest.mark.parametrize("call, error, words", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_gets_a_clear_metahp_error(call, error, words):
    with pytest.raises(MetaHPError) as info:
        call()
    assert isinstance(info.value, error), f"{type(info.value).__name__} instead of {error.__name__}: {info.value}"
    message = str(info.value)
    missing = [w for w in words if w not in message]
    assert not missing, f"message lacks {missing}: {message}"


def test_the_catalogue_covers_at_least_a_hundred_cases_with_distinct_names():
    names = [c[0] for c in CASES]
    assert len(names) >= 100 and len(set(names)) == len(names)


# -- input that used to be refused (or mishandled) and now gives correct results -------------------------------
@pytest.mark.parametrize("grid", [np.array([0.5, 1.0]), np.array([0.5, 1.0], dtype=np.float32),
                                  torch.tensor([0.5, 1.0]), torch.tensor([0.5, 1.0], dtype=torch.float64),
                                  (0.5, 1.0), [np.float32(0.5), np.int64(1)]])
def test_grids_as_arrays_and_tensors_are_accepted_as_plain_floats(grid):
    policy = meta_policy(values=grid)
    assert policy.values == (0.5, 1.0) and all(type(v) is float for v in policy.values)
    json.dumps(policy.state_dict())  # still JSON: no numpy or torch scalars inside


def test_top_k_grid_from_an_integer_array():
    assert meta_policy("top_k", values=np.array([5, 50])).values == (5, 50)


def test_a_bool_mask_and_a_0_1_float_mask_give_the_same_result():
    m = torch.tensor([[1, 1, 0], [1, 0, 0]])
    a = Temperature().sequence_logprobs(logits(), tokens(), m.bool())
    b = Temperature().sequence_logprobs(logits(), tokens(), m.float())
    assert torch.equal(a, b)


def test_an_exp3_reward_slightly_outside_its_window_is_clipped_not_refused():
    assert np.isfinite(after_baseline(0.8)["metahp/bandit_reward"])


def test_a_failed_update_leaves_the_policy_unchanged():
    policy = drawn()
    policy.update(reward=0.0)
    policy.sample()
    before = json.dumps(policy.state_dict())
    with pytest.raises(InputError):
        policy.update(reward=50.0)
    assert json.dumps(policy.state_dict()) == before


def test_feedback_that_would_overflow_the_distribution_is_refused_and_changes_nothing():
    # Found by the state-mutation test: thompson fed a reward of 1e308 (a corrupted reward baseline) went NaN.
    policy = drawn("thompson")
    policy.update(reward=-1e308)  # the first reward sets reward_improvement's baseline
    policy.sample()
    before = json.dumps(policy.state_dict())
    with pytest.raises(InputError, match="no finite distribution"):
        policy.update(reward=0.1)  # improvement 1e308 over the baseline
    assert json.dumps(policy.state_dict()) == before and np.isfinite(policy.probs).all()
