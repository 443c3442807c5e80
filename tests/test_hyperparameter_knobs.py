"""Hyperparameter knobs (learning_rate, beta, epsilon): their values reach the optimizer and the loss at every step on
the reference trainer and on TRL, both adapters pass the driven conformance check for the learning rate, resume
continues exactly, and what cannot work is refused with a ConfigError or StateError that says why."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import torch
from metahp.integrations.reference import ReferenceAdapter
from torch.optim.optimizer import register_optimizer_step_pre_hook

import metahp
from metahp.knobs import KNOBS, Beta, Epsilon, LearningRate, hyperparameter_names
from metahp.knobs.learning_rate import LearningRateScale
from metahp.knobset import KnobSet
from metahp.testing import check_adapter, check_knob

_spec = importlib.util.spec_from_file_location("trl_tiny", Path(__file__).with_name("trl_tiny.py"))
trl_tiny = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(trl_tiny)


class AlternatingReward:
    """The addition task with a reward of 1 for completions whose character codes sum to an even number: groups of a
    tiny model's samples then differ, so every batch has advantages and takes optimizer steps."""

    def __init__(self, task):
        self.task = task

    def __getattr__(self, name):
        return getattr(self.task, name)

    def reward(self, problem, completion: str) -> float:
        return float(sum(map(ord, completion)) % 2 == 0)


def reference_trainer(**settings):
    from metahp.lab.grpo import GRPOTrainer
    from metahp.lab.models import char_tokenizer, tiny_model
    from metahp.lab.tasks import make_task

    task = make_task("addition", difficulty=1)
    tok = char_tokenizer(task.alphabet)
    trainer = GRPOTrainer(tiny_model(tok, hidden=32, layers=1, heads=2, seed=0), tok, AlternatingReward(task),
                          prompts_per_step=2, num_generations=4, max_completion_tokens=4, seed=0, **settings)
    with torch.no_grad():
        trainer.model.lm_head.weight.mul_(4.0)
    return trainer


def run_reference(trainer, steps):
    trainer.train(steps, progress=False)


class StepRecorder:
    """The first group's learning rate at every optimizer step of any optimizer, while open."""

    def __enter__(self):
        self.rates = []
        self._handle = register_optimizer_step_pre_hook(
            lambda optimizer, args, kwargs: self.rates.append(optimizer.param_groups[0]["lr"]))
        return self

    def __exit__(self, *exc):
        self._handle.remove()


# -- the knobs --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["learning_rate", "beta", "epsilon"])
def test_hyperparameter_knobs_are_registered_and_conform(name):
    assert KNOBS[name].role == "updates" and name in hyperparameter_names()
    check_knob(KNOBS[name]())


@pytest.mark.parametrize("knob, values, fix", [(LearningRate, [0.0, 1.0], r"\(0, inf\)"),
                                               (LearningRate, [-1.0, 1.0], r"\(0, inf\)"),
                                               (Beta, [-0.01, 0.04], r"\[0, inf\)"),
                                               (Epsilon, [0.2, 1.0], r"\(0, 1\)"),
                                               (Epsilon, [0.0, 0.2], r"\(0, 1\)")])
def test_a_grid_outside_the_domain_is_refused(knob, values, fix):
    with pytest.raises(metahp.ConfigError, match=fix):
        knob(values)


def test_a_knob_that_declares_no_likelihood_check_fails_on_one_that_scores():
    class Scores(LearningRate):
        def token_logprobs(self, logits, tokens):
            return torch.zeros(logits.shape[0], len(self))

        def sequence_logprobs(self, logits, tokens, mask, **kwargs):
            return torch.zeros(logits.shape[0], len(self))

    with pytest.raises(AssertionError, match=r"^check_knob_has_no_likelihood\("):
        check_knob(Scores())


def test_the_domain_check_fails_on_a_knob_that_accepts_any_value():
    class AcceptsAnything(LearningRate):
        def check_value(self, value):
            return float(value)

    with pytest.raises(AssertionError, match=r"^check_knob_domain\(.*accepted"):
        check_knob(AcceptsAnything())


def test_learning_rate_scale_multiplies_what_the_scheduler_set_and_gives_it_back():
    weight = torch.nn.Parameter(torch.ones(2))
    optimizer = torch.optim.SGD([weight], lr=1.0)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0 / (1 + step))
    scale = LearningRateScale(optimizer, 3.0)
    with StepRecorder() as steps:
        for _ in range(3):
            weight.grad = torch.ones(2)
            optimizer.step()
            scheduler.step()
    assert steps.rates == pytest.approx([3.0, 1.5, 1.0])  # 3 x (1, 1/2, 1/3)
    assert scheduler.get_last_lr() == pytest.approx([0.25]) and optimizer.param_groups[0]["lr"] == pytest.approx(0.25)
    assert weight.detach().tolist() == pytest.approx([1 - 5.5, 1 - 5.5])
    scale.remove()
    weight.grad = torch.ones(2)
    with StepRecorder() as steps:
        optimizer.step()
    assert steps.rates == pytest.approx([0.25])  # unhooked: the scheduled rate itself


# -- the reference trainer --------------------------------------------------------------------------------------
def test_reference_learning_rate_multiplier_reaches_every_optimizer_step():
    trainer = reference_trainer()
    adapter = metahp.adapt(trainer, knob="learning_rate", values=[0.5, 2.0], seed=0)
    with StepRecorder() as steps:
        history = trainer.train(4, progress=False)
    drawn = [h["value"] for h in adapter.history]
    assert set(drawn) == {0.5, 2.0}  # both drawn, so a multiplier left out would show
    want = [1e-4 * m for m in drawn for _ in range(trainer.config.epochs)]
    assert steps.rates == pytest.approx(want)
    assert trainer.optimizer.param_groups[0]["lr"] == pytest.approx(1e-4)  # the configured rate comes back
    assert [h["metahp/learning_rate"] for h in history] == drawn
    assert [h["knob/learning_rate"] for h in history] == drawn


def test_reference_beta_and_epsilon_reach_the_loss_of_their_batch():
    trainer = reference_trainer(kl_beta=0.04)
    adapter = metahp.adapt(trainer, knob=(Beta([0.0, 0.5]), Epsilon([0.05, 0.3])), seed=0)
    seen, loss = [], trainer.loss

    def spied(*args, **kwargs):
        seen.append(dict(args[5]))
        return loss(*args, **kwargs)

    trainer.loss = spied
    trainer.train(4, progress=False)
    drawn = [h["value"] for h in adapter.history]
    assert [{"beta": s["beta"], "epsilon": s["epsilon"]} for s in seen[::trainer.config.epochs]] == drawn
    assert {d["beta"] for d in drawn} == {0.0, 0.5}


def test_reference_loss_reads_beta_and_epsilon_from_the_batch():
    trainer = reference_trainer(kl_beta=0.1, clip_eps=0.2)
    mask = torch.ones(1, 3)
    old, new = torch.zeros(1, 3), torch.log(torch.tensor([[1.5, 1.05, 0.5]]))
    ref, adv = torch.log(torch.tensor([[0.5, 0.5, 0.5]])), torch.tensor([1.0])
    ratio = new.exp()

    def expected(eps, beta):
        delta = ref - new
        per = -torch.minimum(ratio, ratio.clamp(1 - eps, 1 + eps)) + beta * (delta.exp() - delta - 1)
        return float(per.mean())

    assert float(trainer.loss(new, old, ref, adv, mask)) == pytest.approx(expected(0.2, 0.1))
    assert float(trainer.loss(new, old, ref, adv, mask, {"epsilon": 0.04, "beta": 0.0})) == pytest.approx(
        expected(0.04, 0.0))
    assert expected(0.04, 0.0) != pytest.approx(expected(0.2, 0.1))


def test_reference_joint_temperature_and_learning_rate_are_factored():
    trainer = reference_trainer()
    adapter = metahp.adapt(trainer, knob=("temperature", "learning_rate"), seed=0)
    with StepRecorder() as steps:
        history = trainer.train(3, progress=False)
    assert set(adapter.policies) == {"temperature", "learning_rate"}
    drawn = [h["value"] for h in adapter.history]
    assert [h["knob/temperature"] for h in history] == [d["temperature"] for d in drawn]
    assert steps.rates == pytest.approx([1e-4 * d["learning_rate"] for d in drawn for _ in range(2)])
    assert "metahp/prob/learning_rate=2" in history[-1] and "metahp/prob/temperature=1" in history[-1]


def test_reference_adapter_passes_the_driven_checks_for_the_learning_rate():
    check_adapter(reference_trainer, run_reference, modes=("hyperparameter",))


class DrawsButDoesNotApply(ReferenceAdapter):
    """Credits the learning rate it drew, but the trainer steps at the configured rate."""

    def knobs_for_next_batch(self, context=None):
        drawn = super().knobs_for_next_batch(context)
        return {**drawn, "learning_rate": 1.0}

    def after_batch(self, rollout):
        rollout.knobs = {**rollout.knobs, **self._current}
        return super().after_batch(rollout)


def test_the_driven_check_catches_a_multiplier_that_never_reaches_the_optimizer():
    def attach(trainer, *, knob, updater, values, seed, per="batch", **options):
        adapter = DrawsButDoesNotApply(trainer, KnobSet(knob, updater, values, seed, per=per, **options))
        trainer.attach(adapter)
        return adapter

    with pytest.raises(AssertionError, match=r"^check_adapter_stepped_as_credited\("):
        check_adapter(reference_trainer, run_reference, attach=attach, modes=("hyperparameter",))


def test_reference_checkpoint_resumes_the_learning_rate_exactly(tmp_path):
    straight = reference_trainer()
    metahp.adapt(straight, knob="learning_rate", values=[0.5, 2.0], seed=0)
    straight.train(4, progress=False)

    first = reference_trainer()
    metahp.adapt(first, knob="learning_rate", values=[0.5, 2.0], seed=0)
    first.train(2, progress=False)
    first.save_checkpoint(tmp_path / "ckpt")
    resumed = reference_trainer()
    adapter = metahp.adapt(resumed, knob="learning_rate", values=[0.5, 2.0], seed=0)
    resumed.load_checkpoint(tmp_path / "ckpt")
    with StepRecorder() as steps:
        resumed.train(4, progress=False)
    tail = [h["knob/learning_rate"] for h in straight.history[2:]]
    assert [h["knob/learning_rate"] for h in resumed.history[2:]] == tail
    assert steps.rates == pytest.approx([1e-4 * m for m in tail for _ in range(2)])
    assert [h["reward"] for h in resumed.history[2:]] == [h["reward"] for h in straight.history[2:]]
    assert adapter.policy.step == 4


# -- refusals ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("fields, match", [
    (dict(knob="learning_rate", updater="tampo"), r"hyperparameter knob.*updater='exp3'"),
    (dict(knob=("temperature", "beta"), updater="softmax_gradient"), r"beta is a hyperparameter knob"),
    (dict(knob="epsilon", per="completion", updater="softmax_gradient", reward="informativeness"),
     r"per='batch'"),
    (dict(knob="learning_rate", per="prompt", updater="softmax_gradient", reward="informativeness"),
     r"per='batch'"),
])
def test_adapt_config_refuses_what_a_hyperparameter_cannot_learn_from(fields, match):
    with pytest.raises(metahp.ConfigError, match=match):
        metahp.AdaptConfig(**fields)


def test_a_product_with_a_hyperparameter_is_refused():
    with pytest.raises(metahp.ConfigError, match="product"):
        KnobSet(("temperature", "learning_rate"), "exp3", combine="product")


def test_reference_beta_needs_a_reference_model_from_the_start():
    trainer = reference_trainer()  # kl_beta = 0: no reference model
    with pytest.raises(metahp.ConfigError, match=r"kl_beta > 0"):
        metahp.adapt(trainer, knob="beta")
    assert trainer.controller is None  # nothing attached


def test_a_state_from_another_kind_of_knob_is_refused_and_nothing_changes():
    source = reference_trainer()
    metahp.adapt(source, knob="temperature", values=[0.5, 2.0], seed=0)
    state = json.loads(json.dumps(source.controller.state_dict()))
    target = reference_trainer()
    adapter = metahp.adapt(target, knob="learning_rate", values=[0.5, 2.0], seed=0)
    before = json.dumps(adapter.state_dict())
    with pytest.raises(metahp.StateError, match="learning_rate"):
        adapter.load_state_dict(state)
    assert json.dumps(adapter.state_dict()) == before


# -- TRL ----------------------------------------------------------------------------------------------------------
def test_trl_hyperparameters_reach_every_step(tmp_path):
    trainer = trl_tiny.grpo_trainer(tmp_path, beta=0.04, max_steps=4, lr_scheduler_type="constant")
    adapter = metahp.adapt(trainer, knob=(LearningRate([0.5, 2.0]), Beta([0.0, 0.1]), Epsilon([0.1, 0.3])), seed=0)
    seen = []
    handle = register_optimizer_step_pre_hook(lambda optimizer, args, kwargs: seen.append(
        {"learning_rate": optimizer.param_groups[0]["lr"] / 1e-3, "beta": trainer.beta,
         "epsilon": (trainer.epsilon_low, trainer.epsilon_high), "args": (trainer.args.beta, trainer.args.epsilon)}))
    try:
        trainer.train()
    finally:
        handle.remove()
    drawn = [h["value"] for h in adapter.history]
    assert len(seen) == len(drawn) == 4
    for step, value in zip(seen, drawn, strict=True):
        assert step["learning_rate"] == pytest.approx(value["learning_rate"])
        assert step["beta"] == value["beta"] and step["epsilon"] == (value["epsilon"], value["epsilon"])
        assert step["args"] == (value["beta"], value["epsilon"])
    assert len({d["learning_rate"] for d in drawn}) == 2
    assert trainer.optimizer.param_groups[0]["lr"] == pytest.approx(1e-3)  # the schedule's own value after a step
    adapter.detach()
    assert (trainer.beta, trainer.epsilon_low, trainer.args.beta) == (0.04, 0.2, 0.04)
    assert adapter.learning_rate_scale is None


def test_trl_epsilon_keeps_an_asymmetric_upper_bound(tmp_path):
    trainer = trl_tiny.grpo_trainer(tmp_path, epsilon_high=0.28)
    adapter = metahp.adapt(trainer, knob="epsilon", values=[0.1, 0.15], seed=0)
    trainer.train()
    assert trainer.epsilon_low == adapter.value and trainer.epsilon_high == 0.28


@pytest.mark.slow
def test_trl_adapter_passes_the_driven_checks_for_the_learning_rate(tmp_path):
    made = []

    def make():  # the default linear schedule: the multiplier must multiply a rate that changes every step
        made.append(1)
        return trl_tiny.grpo_trainer(tmp_path / str(len(made)), max_steps=2)

    def run(trainer, steps):
        trainer.args.max_steps = steps
        trainer.train()

    check_adapter(make, run, modes=("hyperparameter",), steps=3)


@pytest.mark.parametrize("overrides, knob, match", [
    ({}, "beta", r"GRPOConfig.beta > 0"),
    ({"loss_type": "sapo"}, "epsilon", r"loss_type='sapo' does not clip"),
])
def test_trl_refuses_what_it_cannot_change_while_running(tmp_path, overrides, knob, match):
    trainer = trl_tiny.grpo_trainer(tmp_path, **overrides)
    with pytest.raises(metahp.ConfigError, match=match):
        metahp.adapt(trainer, knob=knob)
    assert getattr(trainer, "_metahp_adapter", None) is None
