"""The hyperparameter knobs' fitted signals (issue 21): gradient_alignment for the learning rate, kl_target for beta,
clip_target for epsilon / epsilon_high. Their maths on hand-built batches, what they refuse, the reference trainer's
measurements (checked against gradients, ratios and KLs computed here) and exact resume, TRL's kl and clip fraction,
and the epsilon_high knob on both trainers."""

from __future__ import annotations

import dataclasses
import importlib.util
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.optim.optimizer import register_optimizer_step_post_hook, register_optimizer_step_pre_hook

import metahp
from metahp.knobs import Beta, EpsilonHigh, LearningRate
from metahp.knobset import KnobSet
from metahp.rewards import Batch, ClipTarget, GradientAlignment, KLTarget, UpdateAlignment

_here = Path(__file__).parent
_spec = importlib.util.spec_from_file_location("trl_tiny", _here / "trl_tiny.py")
trl_tiny = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(trl_tiny)
_spec = importlib.util.spec_from_file_location("hyper_knobs", _here / "test_hyperparameter_knobs.py")
hyper_knobs = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(hyper_knobs)
reference_trainer = hyper_knobs.reference_trainer


def batch(values, **measured) -> Batch:
    return Batch(advantages=np.array([1.0, -1.0]), batch_size=2, candidates=len(values), values=np.array(values),
                 measured=measured)


# -- the maths ----------------------------------------------------------------------------------------------------
def test_gradient_alignment_scores_each_multiplier_by_the_cosine_times_its_log():
    values = [0.5, 1.0, 2.0]
    a, state = GradientAlignment()({}, batch(values, grad_alignment=0.3))
    assert a == pytest.approx([0.3 * math.log(0.5), 0.0, 0.3 * math.log(2.0)])
    assert state == {}
    a, _ = GradientAlignment()({}, batch(values, grad_alignment=-0.8))
    assert a[0] > 0 > a[2]  # opposed gradients: the step overshot, smaller multipliers gain


def test_kl_target_scores_beta_by_the_clipped_log_ratio_to_the_target():
    values = [0.01, 0.04, 0.08]
    a, _ = KLTarget(target=0.1)({}, batch(values, kl=0.4))
    assert a == pytest.approx([math.log(4.0) * math.log(v) for v in values])
    a, _ = KLTarget(target=0.1, max_log_ratio=2.0)({}, batch(values, kl=100.0))  # log(1000) = 6.9 clipped to 2
    assert a == pytest.approx([2.0 * math.log(v) for v in values])
    a, _ = KLTarget(target=0.1)({}, batch(values, kl=0.0))  # policy = reference: far below, -2, not -inf
    assert a == pytest.approx([-2.0 * math.log(v) for v in values])
    # beta = 0 has no log: scored one halving below the smallest positive candidate
    a, _ = KLTarget(target=0.1)({}, batch([0.0, 0.02, 0.08], kl=0.2))
    assert a == pytest.approx([math.log(2.0) * math.log(0.01), math.log(2.0) * math.log(0.02),
                               math.log(2.0) * math.log(0.08)])
    assert np.isfinite(a).all()


def test_clip_target_scores_epsilon_by_the_clipped_fraction_minus_the_target():
    values = [0.1, 0.2, 0.3]
    a, _ = ClipTarget(target=0.05)({}, batch(values, clip_fraction=0.25))
    assert a == pytest.approx([0.2 * math.log(v) for v in values])
    assert a[2] > a[0]  # clipping more than the target widens epsilon
    assert ClipTarget().target == 0.1 and KLTarget().target == 0.1


@pytest.mark.parametrize("reward, name", [(GradientAlignment(), "grad_alignment"), (KLTarget(), "kl"),
                                          (ClipTarget(), "clip_fraction"), (UpdateAlignment(), "update_alignment")])
def test_an_unmeasurable_step_gives_no_move_and_a_missing_or_bad_one_is_refused(reward, name):
    a, _ = reward({}, batch([0.1, 0.2], **{name: None}))
    assert np.array_equal(a, np.zeros(2))
    with pytest.raises(metahp.InputError, match=rf"needs measured\['{name}'\].*reference trainer"):
        reward({}, batch([0.1, 0.2]))
    with pytest.raises(metahp.InputError, match="finite"):
        reward({}, batch([0.1, 0.2], **{name: float("nan")}))


def test_a_reward_needing_a_measurement_no_trainer_takes_is_refused_at_registration():
    from metahp.rewards import register_reward
    from metahp.rewards._measured import MeasuredSignal

    class EntropySignal(MeasuredSignal):
        name = "entropy_signal"
        measurement = "entropy"
        needs_measured = ("entropy",)

        def signal(self, value):
            return value

    with pytest.raises(metahp.ConfigError, match=r"names \['entropy'\], which no trainer measures.*grad_alignment"):
        register_reward(EntropySignal)
    assert "entropy_signal" not in metahp.rewards.REWARDS


def test_a_fitted_signal_updates_from_a_measurement_without_advantages():
    ks = KnobSet("beta", "softmax_gradient", reward="kl_target", values=[0.01, 0.04])
    metrics = ks.update(measured={"kl": 0.4})  # the batch's advantages are not what it learns from
    assert metrics["metahp/advantage/0.04"] == pytest.approx(math.log(0.4 / 0.1) * math.log(0.04))  # target 0.1


def test_out_of_range_measurements_are_refused():
    with pytest.raises(metahp.InputError, match="not a cosine"):
        GradientAlignment()({}, batch([0.5, 2.0], grad_alignment=1.5))
    with pytest.raises(metahp.InputError, match="share of tokens"):
        ClipTarget()({}, batch([0.1, 0.2], clip_fraction=-0.1))
    with pytest.raises(metahp.InputError, match="negative.*>= 0"):
        KLTarget()({}, batch([0.01, 0.02], kl=-0.5))
    rounded = KLTarget()({}, batch([0.01, 0.02], kl=-1e-12))[0]  # a KL of 0 a hair below it: scored as 0
    assert rounded == pytest.approx([-2 * math.log(0.01), -2 * math.log(0.02)])


def test_a_policy_learns_from_the_measurement_passed_to_update():
    policy = metahp.meta_policy("learning_rate", "softmax_gradient", [0.5, 1.0, 2.0], reward="gradient_alignment",
                                lr=1.0)
    metrics = policy.update(advantages=[1.0, -1.0], measured={"grad_alignment": 0.5})
    want = np.exp(0.5 * np.log([0.5, 1.0, 2.0]))
    assert policy.probs == pytest.approx(want / want.sum())
    assert metrics["metahp/advantage/2"] == pytest.approx(0.5 * math.log(2.0))
    with pytest.raises(metahp.InputError, match="measured="):
        policy.update(advantages=[1.0, -1.0], measured=[0.5])


# -- refusals -----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("knob, reward", [("beta", "gradient_alignment"), ("temperature", "kl_target"),
                                          ("learning_rate", "clip_target"), ("epsilon", "kl_target")])
def test_a_signal_on_a_knob_it_is_not_fitted_to_is_refused(knob, reward):
    with pytest.raises(metahp.ConfigError, match=rf"reward '{reward}' is fitted to"):
        KnobSet(knob, "softmax_gradient", reward=reward)
    with pytest.raises(metahp.ConfigError, match="is fitted to"):
        metahp.AdaptConfig(knob=knob, updater="softmax_gradient", reward=reward)


def test_the_fitted_knobs_are_accepted():
    for knob, reward in (("learning_rate", "gradient_alignment"), ("beta", "kl_target"), ("epsilon", "clip_target"),
                         ("epsilon_high", "clip_target")):
        KnobSet(knob, "softmax_gradient", reward=reward)


@pytest.mark.parametrize("per", ["completion", "prompt"])
def test_a_signal_per_completion_or_prompt_is_refused(per):
    with pytest.raises(metahp.ConfigError, match="per='batch'"):
        KnobSet("learning_rate", "softmax_gradient", per=per, group_size=4, reward="gradient_alignment")
    with pytest.raises(metahp.ConfigError, match="per='batch'"):
        metahp.AdaptConfig(knob="learning_rate", updater="softmax_gradient", per=per, reward="gradient_alignment")


def test_a_bandit_with_a_signal_is_refused_naming_the_updaters_that_learn_from_it():
    with pytest.raises(metahp.ConfigError, match=r"updater='softmax_gradient'"):
        KnobSet("learning_rate", "exp3", reward="gradient_alignment")


def test_bad_options_are_refused():
    with pytest.raises(metahp.ConfigError, match="target"):
        KnobSet("beta", "softmax_gradient", reward="kl_target", target=0.0)
    with pytest.raises(metahp.ConfigError, match="target"):
        KnobSet("epsilon", "softmax_gradient", reward="clip_target", target=1.5)


def test_a_state_that_no_signal_writes_is_refused_and_nothing_changes():
    policy = metahp.meta_policy("beta", "softmax_gradient", [0.02, 0.04], reward="kl_target")
    state = policy.state_dict()
    state["reward_state"] = {"baseline": 1.0}
    before = policy.state_dict()
    with pytest.raises(metahp.StateError, match="reward_state"):
        policy.load_state_dict(state)
    assert policy.state_dict() == before


# -- the reference trainer ----------------------------------------------------------------------------------------
class ParameterRecorder:
    """The flattened parameters before and after every optimizer step, and the gradient each step took."""

    def __init__(self, model):
        self.model, self.before, self.after, self.gradients = model, [], [], []

    def _flat(self):
        return torch.cat([p.detach().reshape(-1).clone().float() for p in self.model.parameters()])

    def __enter__(self):
        def pre(optimizer, args, kwargs):
            self.before.append(self._flat())
            self.gradients.append(torch.cat([p.grad.detach().reshape(-1).clone() if p.grad is not None
                                             else torch.zeros(p.numel()) for p in self.model.parameters()]))

        self._handles = [register_optimizer_step_pre_hook(pre),
                         register_optimizer_step_post_hook(lambda optimizer, args, kwargs: self.after.append(
                             self._flat()))]
        return self

    def __exit__(self, *exc):
        for handle in self._handles:
            handle.remove()


def spy_measured(adapter) -> list:
    seen = []
    update = adapter.knobset.update_from_logits

    def spy(*args, **kwargs):
        seen.append(dict(kwargs["measured"]))
        return update(*args, **kwargs)

    adapter.knobset.update_from_logits = spy
    return seen


def cosine(a, b) -> float:
    return float(a.double() @ b.double() / (a.double().norm() * b.double().norm()))


def test_reference_measures_the_cosine_of_successive_gradients():
    trainer = reference_trainer()
    adapter = metahp.adapt(trainer, knob="learning_rate", updater="softmax_gradient", reward="gradient_alignment")
    seen = spy_measured(adapter)
    with ParameterRecorder(trainer.model) as recorder:
        history = trainer.train(3, progress=False)
    g = recorder.gradients
    assert len(g) == 6  # 3 batches x 2 epochs
    assert seen[0]["grad_alignment"] is None  # the first batch has no gradient before it: no move
    assert history[0]["metahp/advantage/2"] == 0.0
    # each batch's first gradient against the optimizer step's before it (the previous batch's last)
    assert seen[1]["grad_alignment"] == pytest.approx(cosine(g[2], g[1]), abs=1e-6)
    assert seen[2]["grad_alignment"] == pytest.approx(cosine(g[4], g[3]), abs=1e-6)
    assert history[2]["metahp/advantage/2"] == pytest.approx(seen[2]["grad_alignment"] * math.log(2.0))
    assert torch.equal(trainer.previous_gradient, g[5])


def test_reference_keeps_no_gradient_unless_a_reward_needs_it():
    trainer = reference_trainer()
    metahp.adapt(trainer, knob="learning_rate")  # exp3 on reward_improvement
    trainer.train(2, progress=False)
    assert trainer.previous_gradient is None


def test_reference_loss_measures_the_clipped_fraction_and_the_kl():
    trainer = reference_trainer(kl_beta=0.04)
    old = torch.zeros(2, 3)
    ratio = torch.tensor([[1.5, 0.7, 1.0], [1.5, 0.7, 1.1]])
    new = ratio.log()
    ref = torch.full((2, 3), -0.1)
    adv = torch.tensor([1.0, -1.0])
    mask = torch.tensor([[1, 1, 1], [1, 1, 0]])
    measures = {}
    loss = trainer.loss(new, old, ref, adv, mask, {"epsilon": 0.2, "epsilon_high": 0.4}, measures=measures)
    # row 0 (A > 0): 1.5 > 1.4 clipped; row 1 (A < 0): 0.7 < 0.8 clipped; 1.5 with A < 0 is not: 2 of 5 tokens
    assert measures["clip_fraction"] == pytest.approx(2 / 5)
    delta = ref - new
    k3 = (delta.exp() - delta - 1)
    assert measures["kl"] == pytest.approx(float((k3 * mask).sum() / 5))
    assert float(loss) == float(trainer.loss(new, old, ref, adv, mask, {"epsilon": 0.2, "epsilon_high": 0.4}))
    # the upper bound is epsilon_high: at a symmetric 0.2, row 0's 1.5 clips (1.0 does not) and row 1's 0.7
    symmetric, wide = {}, {}
    trainer.loss(new, old, ref, adv, mask, {"epsilon": 0.2}, measures=symmetric)
    assert symmetric["clip_fraction"] == pytest.approx(2 / 5)
    trainer.loss(new, old, ref, adv, mask, {"epsilon": 0.2, "epsilon_high": 0.6}, measures=wide)
    assert wide["clip_fraction"] == pytest.approx(1 / 5)  # 1.5 < 1.6: only row 1's 0.7 clips
    per_token = -torch.min(ratio * adv[:, None], ratio.clamp(0.8, 1.6) * adv[:, None]) + 0.04 * k3
    want = float((per_token * mask).sum() / 5)
    assert float(trainer.loss(new, old, ref, adv, mask, {"epsilon": 0.2, "epsilon_high": 0.6})) == pytest.approx(want)


def test_reference_kl_and_clip_fraction_reach_their_rewards():
    trainer = reference_trainer(kl_beta=0.04, learning_rate=3e-3)
    adapter = metahp.adapt(trainer, knob="beta", values=[0.02, 0.04, 0.08], updater="softmax_gradient",
                           reward="kl_target", target=1e-4)
    seen = spy_measured(adapter)
    history = trainer.train(3, progress=False)
    kls = [m["kl"] for m in seen]
    assert all(k is not None and k >= 0 for k in kls) and kls[-1] > 0
    for m, h in zip(seen, history, strict=True):
        ratio = min(max(math.log(m["kl"] / 1e-4), -2.0), 2.0) if m["kl"] > 0 else -2.0
        assert h["metahp/advantage/0.08"] == pytest.approx(ratio * math.log(0.08))
        assert 0 <= m["clip_fraction"] <= 1

    trainer = reference_trainer(learning_rate=3e-2)  # a large rate: the second epoch's ratios leave the clip range
    adapter = metahp.adapt(trainer, knob="epsilon", values=[0.1, 0.2], updater="softmax_gradient",
                           reward="clip_target", target=0.0)
    seen = spy_measured(adapter)
    history = trainer.train(3, progress=False)
    assert any(m["clip_fraction"] > 0 for m in seen)
    for m, h in zip(seen, history, strict=True):
        assert h["metahp/advantage/0.2"] == pytest.approx(m["clip_fraction"] * math.log(0.2))


def test_reference_clip_fraction_leaves_out_the_first_epoch_which_cannot_clip():
    """The first epoch's ratio is exactly 1 (old log-probs from the sampling logits): its clipped fraction is 0 by
    construction, so it would halve the measurement at epochs=2 and pin it at 0 at epochs=1."""
    from metahp.lab.grpo import GRPOTrainer

    per_epoch = []
    loss = GRPOTrainer.loss

    def recording_loss(self, *args, measures=None, **kwargs):
        out = loss(self, *args, measures=measures, **kwargs)
        per_epoch.append(measures["clip_fraction"])
        return out

    trainer = reference_trainer(learning_rate=3e-2, epochs=3)
    adapter = metahp.adapt(trainer, knob="epsilon", values=[0.1, 0.2], updater="softmax_gradient",
                           reward="clip_target", target=0.0)
    seen = spy_measured(adapter)
    GRPOTrainer.loss = recording_loss
    try:
        trainer.train(2, progress=False)
    finally:
        GRPOTrainer.loss = loss
    assert per_epoch[0] == 0.0 and per_epoch[3] == 0.0  # each batch's first epoch
    assert seen[0]["clip_fraction"] == pytest.approx(np.mean(per_epoch[1:3]))
    assert seen[1]["clip_fraction"] == pytest.approx(np.mean(per_epoch[4:6]))
    assert any(m["clip_fraction"] > 0 for m in seen)


def test_clip_target_is_refused_where_nothing_can_clip(tmp_path):
    trainer = reference_trainer(epochs=1)
    with pytest.raises(metahp.ConfigError, match="second epoch.*epochs=1.*GRPOConfig\\(epochs=2\\)"):
        metahp.adapt(trainer, knob="epsilon", updater="softmax_gradient", reward="clip_target")
    assert trainer.controller is None
    metahp.adapt(trainer, knob="epsilon")  # exp3 on the reward improvement needs no clipped fraction
    trl_trainer = trl_tiny.grpo_trainer(tmp_path)  # TRL's defaults: num_iterations=1, aligned steps, no old log-probs
    with pytest.raises(metahp.ConfigError, match="no old log-probs.*num_iterations=1.*num_iterations=2 or more"):
        metahp.adapt(trl_trainer, knob="epsilon", updater="softmax_gradient", reward="clip_target")
    assert getattr(trl_trainer, "_metahp_adapter", None) is None


def test_a_stale_gradient_or_update_is_dropped_when_no_reward_asks_for_it():
    trainer = reference_trainer()
    adapter = metahp.adapt(trainer, knob="learning_rate", updater="softmax_gradient", reward="gradient_alignment")
    trainer.train(1, progress=False)
    assert trainer.previous_gradient is not None
    adapter.detach()
    trainer.train(3, progress=False)  # optimizer steps nobody measures: the kept gradient is no longer the last
    assert trainer.previous_gradient is None and trainer.previous_update is None


def same_batch_every_step(trainer) -> None:
    """The trainer's generate, but every step trains on the first step's batch (at the step's own draw): successive
    gradients on the same data with a small step point the same way."""
    original, first = trainer.generate, []

    def generate():
        if not first:
            first.append(original())
            return first[0]
        knobs = trainer.knobs(first[0].context)
        trainer.last_knobs = dict(knobs)
        return dataclasses.replace(first[0], knobs=knobs, measured=None)

    trainer.generate = generate


def test_gradient_alignment_moves_the_learning_rate_up_when_gradients_align():
    trainer = reference_trainer()
    adapter = metahp.adapt(trainer, knob="learning_rate", updater="softmax_gradient", reward="gradient_alignment",
                           lr=2.0)
    seen = spy_measured(adapter)
    same_batch_every_step(trainer)
    trainer.train(5, progress=False)
    cosines = [m["grad_alignment"] for m in seen[1:]]
    assert all(c > 0.5 for c in cosines), cosines
    probs = adapter.policy.probs
    assert all(np.diff(probs) > 0), probs  # every larger multiplier more likely
    assert adapter.policy.expected_value > float(np.mean(LearningRate().values))


@pytest.mark.parametrize("reward, measurement, kept", [("gradient_alignment", "grad_alignment", "previous_gradient"),
                                                         ("update_alignment", "update_alignment", "previous_update")])
def test_reference_resume_continues_the_alignment_exactly(tmp_path, reward, measurement, kept):
    def build():
        trainer = reference_trainer()
        adapter = metahp.adapt(trainer, knob="learning_rate", updater="softmax_gradient", reward=reward, lr=4.0,
                               seed=0)
        return trainer, adapter, spy_measured(adapter)

    straight, straight_adapter, straight_seen = build()
    straight.train(4, progress=False)

    first, _, _ = build()
    first.train(2, progress=False)
    first.save_checkpoint(tmp_path / "ckpt")
    resumed, adapter, seen = build()
    resumed.load_checkpoint(tmp_path / "ckpt")
    assert torch.equal(getattr(resumed, kept), getattr(first, kept))
    resumed.train(4, progress=False)
    assert seen[0][measurement] is not None  # the resumed step compares with the saved gradient or update
    assert [m[measurement] for m in seen] == [m[measurement] for m in straight_seen[2:]]
    assert [h["value"] for h in adapter.history] == [h["value"] for h in straight_adapter.history]
    assert adapter.policy.state_dict() == straight_adapter.policy.state_dict()


@pytest.mark.parametrize("reward, kept", [("gradient_alignment", "previous_gradient"),
                                          ("update_alignment", "previous_update")])
def test_a_corrupted_previous_gradient_or_update_is_refused_and_nothing_changes(tmp_path, reward, kept):
    trainer = reference_trainer()
    metahp.adapt(trainer, knob="learning_rate", updater="softmax_gradient", reward=reward)
    trainer.train(2, progress=False)
    trainer.save_checkpoint(tmp_path / "ckpt")
    blob = torch.load(tmp_path / "ckpt" / "trainer.pt", weights_only=False)
    assert blob[kept] is not None
    blob[kept] = torch.zeros(3)
    torch.save(blob, tmp_path / "ckpt" / "trainer.pt")
    fresh = reference_trainer()
    metahp.adapt(fresh, knob="learning_rate", updater="softmax_gradient", reward=reward)
    with pytest.raises(metahp.StateError, match=f"trainer.pt: {kept} must be a finite vector"):
        fresh.load_checkpoint(tmp_path / "ckpt")
    assert fresh.step == 0 and getattr(fresh, kept) is None


def test_reference_epsilon_high_reaches_the_loss_of_its_batch():
    trainer = reference_trainer()
    assert trainer.configured("epsilon_high") == 0.2  # symmetric: clip_eps
    assert reference_trainer(clip_eps_high=0.28).configured("epsilon_high") == 0.28
    adapter = metahp.adapt(trainer, knob="epsilon_high", values=[0.25, 0.35], seed=0)
    used = []
    loss = trainer.loss

    def spy(*args, **kwargs):
        used.append(dict(args[5]))
        return loss(*args, **kwargs)

    trainer.loss = spy
    trainer.train(3, progress=False)
    drawn = [h["value"] for h in adapter.history]
    assert [u["epsilon_high"] for u in used] == [d for d in drawn for _ in range(2)]
    assert all("epsilon" not in u for u in used)  # the lower bound stays clip_eps


def test_reference_grpo_config_refuses_a_bad_upper_bound():
    from metahp.lab.grpo import GRPOConfig

    with pytest.raises(metahp.ConfigError, match="clip_eps_high"):
        GRPOConfig.build(clip_eps_high=1.5)
    assert GRPOConfig().clip_eps_high is None


# -- TRL ----------------------------------------------------------------------------------------------------------
# -- update_alignment: the hypergradient for an adaptive optimizer ------------------------------------------------
def test_update_alignment_scores_each_multiplier_by_the_cosine_times_its_log_and_refuses_a_non_cosine():
    values = [0.25, 1.0, 4.0]
    a, _ = UpdateAlignment()({}, batch(values, update_alignment=0.5))
    assert a == pytest.approx([0.5 * math.log(0.25), 0.0, 0.5 * math.log(4.0)])
    a, _ = UpdateAlignment()({}, batch(values, update_alignment=None))  # the first step: no update before it
    assert not a.any()
    with pytest.raises(metahp.InputError, match="not a cosine"):
        UpdateAlignment()({}, batch(values, update_alignment=-1.5))
    with pytest.raises(metahp.InputError, match="update_alignment.*reference trainer"):
        UpdateAlignment()({}, batch(values, grad_alignment=0.5))  # measured, but not what it reads


def test_reference_measures_the_cosine_of_each_gradient_with_the_previous_optimizer_update():
    trainer = reference_trainer()
    adapter = metahp.adapt(trainer, knob="learning_rate", updater="softmax_gradient", reward="update_alignment")
    seen = spy_measured(adapter)
    with ParameterRecorder(trainer.model) as recorder:
        history = trainer.train(3, progress=False)
    g, before, after = recorder.gradients, recorder.before, recorder.after
    assert len(g) == 6  # 3 batches x 2 epochs
    assert seen[0]["update_alignment"] is None  # no optimizer step before the first batch: no move
    # each batch's first gradient against the parameter change of the optimizer step before it (the previous
    # batch's last), theta before minus theta after: the descent direction AdamW took
    assert seen[1]["update_alignment"] == pytest.approx(cosine(g[2], before[1] - after[1]), abs=1e-5)
    assert seen[2]["update_alignment"] == pytest.approx(cosine(g[4], before[3] - after[3]), abs=1e-5)
    # not the gradient alignment: under AdamW the update's direction is not the gradient's
    assert seen[2]["update_alignment"] != pytest.approx(cosine(g[4], g[3]), abs=1e-3)
    assert history[2]["metahp/advantage/2"] == pytest.approx(seen[2]["update_alignment"] * math.log(2.0))
    assert torch.allclose(trainer.previous_update, before[5] - after[5])
    assert trainer.previous_gradient is None  # what gradient_alignment keeps is not kept for this signal


def test_trl_refuses_update_alignment_before_touching_the_trainer(tmp_path):
    trainer = trl_tiny.grpo_trainer(tmp_path)
    with pytest.raises(metahp.ConfigError, match=r"\['update_alignment'\].*does not measure"):
        metahp.adapt(trainer, knob="learning_rate", updater="softmax_gradient", reward="update_alignment")
    assert getattr(trainer, "_metahp_adapter", None) is None


def test_trl_refuses_gradient_alignment_before_touching_the_trainer(tmp_path):
    trainer = trl_tiny.grpo_trainer(tmp_path)
    with pytest.raises(metahp.ConfigError, match=r"\['grad_alignment'\].*does not measure.*reference trainer"):
        metahp.adapt(trainer, knob="learning_rate", updater="softmax_gradient", reward="gradient_alignment")
    assert getattr(trainer, "_metahp_adapter", None) is None
    from metahp.integrations.trl import TRLAdapter

    with pytest.raises(metahp.ConfigError, match="cannot be measured on TRL"):  # the adapter built directly
        TRLAdapter(trainer, knob="learning_rate", updater="softmax_gradient", reward="gradient_alignment")
    assert getattr(trainer, "_metahp_adapter", None) is None


def spy_trl_measured(adapter) -> list:
    seen = []
    update = adapter.knobset.update

    def spy(*args, **kwargs):
        seen.append(kwargs.get("measured"))
        return update(*args, **kwargs)

    adapter.knobset.update = spy
    return seen


@pytest.mark.slow
def test_trl_kl_reaches_kl_target_and_resume_continues_exactly(tmp_path):
    # TRL generates every num_iterations = 2 steps; the meta-update at a generation reads the steps since the last
    settings = dict(beta=0.04, max_steps=6, num_iterations=2, save_strategy="steps", save_steps=2)
    options = dict(knob=Beta([0.02, 0.04, 0.08]), updater="softmax_gradient", reward="kl_target", target=1e-3,
                   lr=4.0)
    full = trl_tiny.grpo_trainer(tmp_path / "full", **settings)
    full_adapter = metahp.adapt(full, **options)
    seen = spy_trl_measured(full_adapter)
    full.train()
    logged = [h["kl"] for h in full.state.log_history if "kl" in h]  # one entry per step (logging_steps=1)
    assert len(seen) == 3 and seen[0] == {"kl": None}  # nothing trained before the first generation
    assert seen[1]["kl"] == pytest.approx(np.mean(logged[0:2]), rel=1e-5)
    assert seen[2]["kl"] == pytest.approx(np.mean(logged[2:4]), rel=1e-5)

    resumed = trl_tiny.grpo_trainer(tmp_path / "resumed", **settings)
    resumed_adapter = metahp.adapt(resumed, **options)
    resumed_seen = spy_trl_measured(resumed_adapter)
    # checkpoint-2: steps 1 and 2 trained, their KLs pending (saved with the state), read by the next generation.
    # (TRL keeps no generation buffer in its checkpoints, so a resume between generations would regenerate.)
    resumed.train(resume_from_checkpoint=str(tmp_path / "full" / "checkpoint-2"))
    assert resumed_seen == seen[1:]
    assert resumed_adapter.history == full_adapter.history
    assert resumed_adapter.policy.state_dict() == full_adapter.policy.state_dict()


def test_trl_clip_fraction_and_epsilon_high_reach_every_step(tmp_path):
    trainer = trl_tiny.grpo_trainer(tmp_path, max_steps=4, num_iterations=2, learning_rate=3e-2)
    adapter = metahp.adapt(trainer, knob=(metahp.knobs.Epsilon([0.1, 0.15]), EpsilonHigh([0.25, 0.35])),
                           updater="softmax_gradient", reward="clip_target", target=0.0, seed=0)
    seen = spy_trl_measured(adapter)
    steps = []
    handle = register_optimizer_step_pre_hook(lambda optimizer, args, kwargs: steps.append(
        (trainer.epsilon_low, trainer.epsilon_high, trainer.args.epsilon, trainer.args.epsilon_high)))
    try:
        trainer.train()
    finally:
        handle.remove()
    drawn = [h["value"] for h in adapter.history]
    assert steps == [(d["epsilon"], d["epsilon_high"], d["epsilon"], d["epsilon_high"]) for d in drawn
                     for _ in range(2)]  # each knob its own bound, for both steps of its generation
    logged = [h["clip_ratio/region_mean"] for h in trainer.state.log_history if "clip_ratio/region_mean" in h]
    assert seen[0] == {"clip_fraction": None}
    assert seen[1]["clip_fraction"] == pytest.approx(np.mean(logged[0:2]), rel=1e-5)
    adapter.detach()
    assert (trainer.epsilon_low, trainer.epsilon_high) == (0.2, 0.2)
    assert adapter.step_measurements not in trainer.callback_handler.callbacks


def test_epsilon_high_is_a_registered_hyperparameter_knob_that_conforms():
    from metahp.knobs import KNOBS, hyperparameter_names
    from metahp.testing import check_knob

    assert KNOBS["epsilon_high"] is EpsilonHigh and "epsilon_high" in hyperparameter_names()
    check_knob(EpsilonHigh())
    with pytest.raises(metahp.ConfigError, match=r"\(0, 1\)"):
        EpsilonHigh([0.2, 1.0])


def test_trl_refuses_epsilon_high_with_a_loss_that_does_not_clip(tmp_path):
    trainer = trl_tiny.grpo_trainer(tmp_path, loss_type="sapo")
    with pytest.raises(metahp.ConfigError, match=r"loss_type='sapo' does not clip.*epsilon_high"):
        metahp.adapt(trainer, knob="epsilon_high")
    assert getattr(trainer, "_metahp_adapter", None) is None
