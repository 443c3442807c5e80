"""metahp.config.AdaptConfig: adapt's one typed configuration, checked when it is built, documented field by field,
and equal to the keywords it replaces."""

from __future__ import annotations

import pydoc

import numpy as np
import pytest

import metahp
from metahp import AdaptConfig, ConfigError
from metahp.config import DEFAULT_UPDATER
from metahp.lab.grpo import GRPOTrainer
from metahp.lab.models import char_tokenizer, tiny_model
from metahp.lab.tasks import make_task
from metahp.rewards import Informativeness, TrajectoryLikelihood
from metahp.updaters import UPDATERS, exp3, softmax_gradient, tampo

TASK = make_task("addition", difficulty=1)


def reference(seed=0, **settings):
    tok = char_tokenizer(TASK.alphabet)
    defaults = dict(prompts_per_step=2, num_generations=4, max_completion_tokens=4, seed=seed)
    return GRPOTrainer(tiny_model(tok, hidden=32, layers=1, heads=2, seed=seed), tok, TASK, **{**defaults, **settings})


# -- every bad field is refused at once, saying what works ----------------------------------------------------
BAD = [
    (dict(per="group"), ["per='group'", "'completion'", "'prompt'"]),
    (dict(combine="sum"), ["combine='sum'", "'factored'", "'product'"]),
    (dict(seed=-1), ["seed=-1", "non-negative integer"]),
    (dict(seed=1.5), ["seed=1.5"]),
    (dict(updater="nope"), ["unknown updater 'nope'", "'exp3'", "register_updater"]),
    (dict(updater=5), ["unknown updater 5", "Updater"]),
    (dict(reward="x"), ["unknown reward 'x'", "'informativeness'"]),
    (dict(updater="exp3", reward="trajectory_likelihood"), ["use reward='reward_improvement'"]),
    (dict(updater="tampo", updater_options={"alpah": 0.1}), ["'alpah'", "updater 'tampo'", "['alpha']"]),
    (dict(updater="tampo", updater_options={"alpha": 2}), ["alpha=2", "less than or equal to 1"]),
    (dict(updater="softmax_gradient", updater_options={"form": "natrual"}), ["form='natrual'", "natural"]),
    (dict(updater=tampo(), updater_options={"alpha": 0.1}), ["passed as an instance", "where the instance is built"]),
    (dict(reward=TrajectoryLikelihood(), reward_options={"normalizer": "argmax"}), ["passed as an instance"]),
    (dict(reward_options={"foo": 1}), ["'foo'", "reward 'reward_improvement'", "['baseline_alpha']"]),
    (dict(selection="best"), ["selection='best'", "'nucleus'", "'greedy'"]),
    (dict(nucleus_p=0.9), ["nucleus_p=0.9 does nothing", "selection='sample'", "selection='nucleus'"]),
    (dict(updater="tampo", nucleus_p=1.5), ["nucleus_p=1.5", "less than or equal to 1"]),
    (dict(likelihoods="maybe"), ["likelihoods='maybe'", "'generate'", "'forward'"]),
    (dict(context=3, per="prompt"), ["context=3", "callable"]),
    (dict(context=lambda rate: "all"), ["context=", "per='prompt'"]),
    (dict(knob=()), ["knob=()", "at least one knob"]),
    (dict(knob=5), ["knob=5", "registered knob's name"]),
    (dict(knob=("temperature", "temperature")), ["twice"]),
    (dict(knob=("top_p", "top_k")), ["not supported"]),
    (dict(knob=("temperature", "top_p"), values=[1.0]), ["Knob instance"]),
    (dict(values=[-1.0]), ["candidate -1.0", "> 0"]),
    (dict(updater="constant", updater_options={"value": 3.0}), ["value=3.0", "not among the candidates"]),
    (dict(steps=3), ["unknown field steps=3", "'updater_options'"]),
]


@pytest.mark.parametrize("fields, words", BAD, ids=[" ".join(f"{k}={v!r:.20}" for k, v in f.items()) for f, _ in BAD])
def test_each_bad_field_is_refused_with_what_works(fields, words):
    with pytest.raises(ConfigError) as info:
        AdaptConfig(**fields)
    missing = [w for w in words if w not in str(info.value)]
    assert not missing, f"message lacks {missing}: {info.value}"


def test_a_config_is_frozen_and_keeps_what_it_was_given():
    updater = softmax_gradient(lr=0.5)
    config = AdaptConfig(knob=["temperature"], updater=updater, values=[0.7, 1.0])
    assert config.knob == ("temperature",) and config.updater is updater and config.values == [0.7, 1.0]
    assert config.updater == updater and AdaptConfig().updater == DEFAULT_UPDATER == "exp3"
    with pytest.raises(Exception, match="frozen"):
        config.per = "completion"


# -- help text ------------------------------------------------------------------------------------------------
def test_help_of_adapt_and_of_the_config_lists_every_field_with_its_description():
    for text in (pydoc.render_doc(metahp.adapt), pydoc.render_doc(AdaptConfig), metahp.adapt.__doc__,
                 AdaptConfig.__doc__):
        flat = " ".join(text.split())
        for name, field in AdaptConfig.model_fields.items():
            assert f"{name} (default" in flat, name
            assert " ".join(field.description.split()[:6]) in flat, name
    assert all(field.description for field in AdaptConfig.model_fields.values())
    assert "Adapter option, TRL only" in AdaptConfig.model_fields["likelihoods"].description


def test_the_default_updater_lives_in_metahp_config_and_the_old_import_still_works():
    from metahp.integrations import DEFAULT_UPDATER as reexported

    from metahp.lab.demo import DemoSettings

    assert reexported is DEFAULT_UPDATER and DemoSettings().updater == DEFAULT_UPDATER
    assert AdaptConfig.model_fields["updater"].default == DEFAULT_UPDATER
    assert metahp.meta_policy().updater.name == "tampo"  # meta_policy keeps the paper's rule


# -- config and keywords build the same adapter ---------------------------------------------------------------
def _draws(adapter, trainer, steps=3):
    history = trainer.train(steps, progress=False)
    return [m.get("knob/temperature") for m in history], adapter.knobset.state_dict()


@pytest.mark.parametrize("keywords, config", [
    (dict(updater="softmax_gradient", lr=20.0, seed=3, values=[0.6, 1.0, 1.4]),
     dict(updater="softmax_gradient", updater_options={"lr": 20.0}, seed=3, values=[0.6, 1.0, 1.4])),
    (dict(updater="tampo", alpha=0.5, normalizer="softmax", nucleus_p=0.9, seed=1),
     dict(updater="tampo", updater_options={"alpha": 0.5}, reward_options={"normalizer": "softmax"}, nucleus_p=0.9,
          seed=1)),
    (dict(per="completion", updater="softmax_gradient", lr=5.0, reward="informativeness", values=[0.7, 1.3]),
     dict(per="completion", updater=softmax_gradient(lr=5.0), reward=Informativeness(), values=[0.7, 1.3])),
])
def test_a_config_and_the_keywords_it_replaces_give_the_same_adapter(keywords, config):
    by_keywords = reference()
    a = _draws(metahp.adapt(by_keywords, **keywords), by_keywords)
    by_config = reference()
    b = _draws(metahp.adapt(by_config, AdaptConfig(**config)), by_config)
    assert a == b and None not in a[0]  # the same values drawn, the same states (random generators included)


def test_positional_knob_and_updater_still_work_and_a_config_excludes_other_fields():
    t = reference()
    adapter = metahp.adapt(t, "temperature", "tampo")
    assert adapter.policy.updater.name == "tampo"
    with pytest.raises(ConfigError, match="not both"):
        metahp.adapt(reference(), AdaptConfig(updater="tampo"), seed=3)
    with pytest.raises(ConfigError, match="not both"):
        metahp.adapt(reference(), config=AdaptConfig(updater="tampo"), updater="softmax_gradient")
    # a field beside a config at its default value is refused too (it would be silently ignored)
    for field in (dict(updater=DEFAULT_UPDATER), dict(knob="temperature"), dict(seed=None), dict(values=None)):
        with pytest.raises(ConfigError, match="not both"):
            metahp.adapt(reference(), config=AdaptConfig(updater="tampo"), **field)
    with pytest.raises(ConfigError, match="unknown option lrr"):  # a bare option no component declares
        metahp.adapt(reference(), updater="softmax_gradient", lrr=0.25)
    with pytest.raises(ConfigError, match="given twice"):
        metahp.adapt(reference(), updater="softmax_gradient", lr=0.25, updater_options={"lr": 0.5})


# -- adapter options ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("option", [dict(likelihoods="forward"), dict(eval_value=0.7)])
def test_an_adapter_option_the_trainer_cannot_honour_is_refused_naming_the_trainer(option):
    with pytest.raises(ConfigError) as info:
        metahp.adapt(reference(), **option)
    message = str(info.value)
    assert "metahp.lab.grpo.GRPOTrainer" in message and "['context']" in message and "does not honour" in message
    metahp.adapt(reference(), likelihoods="auto")  # at its default it asks nothing of the trainer


def test_adapt_passes_the_attach_keywords_the_adapters_take(monkeypatch):
    import metahp.integrations.reference as module

    seen = {}
    monkeypatch.setattr(module, "attach", lambda trainer, **kw: seen.update(kw) or "adapter")
    assert metahp.adapt(reference(), knob="temperature", updater="tampo", alpha=0.1, nucleus_p=0.8) == "adapter"
    assert seen == dict(knob="temperature", updater="tampo", values=None, seed=None, per="batch", combine="factored",
                        alpha=0.1, nucleus_p=0.8)


# -- instances end to end -------------------------------------------------------------------------------------
def test_updater_and_reward_instances_and_a_registered_updater_train_end_to_end():
    t = reference()
    adapter = metahp.adapt(t, AdaptConfig(updater=exp3(gamma=0.3), seed=0, values=[0.6, 1.0, 1.4]))
    t.train(3, progress=False)
    assert adapter.policy.updater.options["gamma"] == 0.3 and adapter.policy.step == 3

    t = reference()
    adapter = metahp.adapt(t, updater=tampo(alpha=0.5), reward=TrajectoryLikelihood("argmax"), nucleus_p=1.0)
    t.train(2, progress=False)
    assert adapter.policy.reward.normalizer == "argmax" and adapter.policy.step == 2

    def sticky(stay: float = 0.9):
        """A toy per-candidate updater: each update moves a little toward the candidates with positive feedback."""
        base = tampo(alpha=1 - stay)
        return metahp.updaters.Updater("sticky", "per_candidate", "sample", base.init, base.update, base.probs,
                                       {"stay": stay})

    metahp.register_updater(sticky)
    try:
        t = reference()
        config = AdaptConfig(updater="sticky", updater_options={"stay": 0.5}, values=[0.6, 1.4], seed=0)
        adapter = metahp.adapt(t, config)
        t.train(3, progress=False)
        assert adapter.policy.updater.name == "sticky" and adapter.policy.updater.options == {"stay": 0.5}
        assert np.isclose(adapter.policy.probs.sum(), 1)
        with pytest.raises(ConfigError, match=r"\['stay'\]"):
            AdaptConfig(updater="sticky", updater_options={"alpha": 0.5})
    finally:
        UPDATERS.pop("sticky")


# -- the per-prompt context, a function passed in -------------------------------------------------------------
def hot_or_cold(rate):
    """Two contexts: prompts never or rarely solved get one meta-policy, the others another."""
    return "cold" if rate is None or rate < 0.5 else "hot"


hot_or_cold.labels = ("cold", "hot")


def test_a_context_function_picks_each_prompts_meta_policy_in_the_knob_set():
    from metahp.knobset import DRAWINGS, PerPrompt, pass_rate_bucket

    ks = metahp.knobset.KnobSet("temperature", "softmax_gradient", [0.6, 1.0], 0, per="prompt", group_size=2,
                                reward="informativeness", lr=5.0, context=hot_or_cold)
    assert list(ks.policies) == ["cold", "hot"] and isinstance(ks._drawing, PerPrompt) and set(DRAWINGS) == {
        "batch", "completion", "prompt"}
    used = ks.draw(rows=6, contexts=[None, 0.25, 1.0])
    metrics = ks.update(advantages=[1.0, -1.0, 0.0, 0.0, 0.5, -0.5], used=used, contexts=[None, 0.25, 1.0])
    assert metrics["metahp/groups/cold"] == pytest.approx(2 / 3) and "metahp/hot/prob/1" in metrics
    assert ks.policies["cold"].step == ks.policies["hot"].step == 1
    state = ks.state_dict()
    assert state["per"] == "prompt" and set(state["policies"]) == {"cold", "hot"}
    default = metahp.knobset.KnobSet("temperature", "softmax_gradient", [0.6, 1.0], 0, per="prompt", group_size=2,
                                     reward="informativeness")
    assert list(default.policies) == list(pass_rate_bucket.labels)
    with pytest.raises(metahp.StateError):  # another context's policies do not load
        default.load_state_dict(state)

    def unlabelled(rate):
        return "x"

    with pytest.raises(ConfigError, match="context.labels"):
        metahp.knobset.KnobSet("temperature", "softmax_gradient", [0.6, 1.0], 0, per="prompt", group_size=2,
                               reward="informativeness", context=unlabelled)
    unlabelled.labels = ("y",)
    ks = metahp.knobset.KnobSet("temperature", "softmax_gradient", [0.6, 1.0], 0, per="prompt", group_size=2,
                                reward="informativeness", context=unlabelled)
    with pytest.raises(ConfigError, match=r"gave \['x'\], not among its labels \['y'\]"):
        ks.draw(rows=2, contexts=[0.5])
    with pytest.raises(ConfigError, match="per='prompt'"):
        metahp.knobset.KnobSet("temperature", "tampo", context=hot_or_cold)
    with pytest.raises(ConfigError, match="context.labels"):
        AdaptConfig(per="prompt", reward="informativeness", updater="softmax_gradient", context=lambda rate: "x")


def test_the_reference_trainer_takes_a_context_function_through_adapt():
    t = reference(seed=5, train_set_size=3)
    adapter = metahp.adapt(t, AdaptConfig(per="prompt", updater="softmax_gradient", updater_options={"lr": 20.0},
                                          reward="informativeness", values=[0.6, 1.4], context=hot_or_cold))
    history = t.train(3, progress=False)
    assert set(adapter.knobset.policies) == {"cold", "hot"}
    assert any("metahp/groups/cold" in m for m in history)
    assert sum(p.step for p in adapter.knobset.policies.values()) >= 3


def test_the_uniform_mixtures_default_reward_is_chosen_in_the_core_for_every_adapter():
    # The mixture ignores feedback: per completion it takes informativeness (no likelihoods to compute; TRL
    # decided this alone before, the reference adapter scored likelihoods); per batch, where a reward that reads
    # each row cannot learn, the feedback kind's default.
    from metahp.knobset import KnobSet, default_reward_for

    assert metahp.meta_policy("temperature", "uniform").reward.name == "trajectory_likelihood"  # no `per` there
    assert default_reward_for("uniform", "completion") == "informativeness"
    assert default_reward_for("uniform", "batch") == "trajectory_likelihood"
    assert default_reward_for("softmax_gradient", "completion") == "trajectory_likelihood"
    assert default_reward_for("exp3", "batch") == "reward_improvement"
    assert KnobSet("temperature", "uniform", per="batch").policy.reward.name == "trajectory_likelihood"
    adapter = metahp.adapt(reference(), per="completion", updater="uniform", values=[0.6, 1.0, 1.4])
    assert adapter.knobset.policy.reward.name == "informativeness"
    assert not adapter.knobset.needs_likelihoods  # so no likelihood forward runs for an ablation that ignores it
    # the config checks reward options against the reward the knob layer will build
    assert AdaptConfig(updater="uniform", per="batch", reward_options={"normalizer": "softmax"}).reward is None
    with pytest.raises(ConfigError, match="informativeness"):
        AdaptConfig(updater="uniform", per="completion", reward_options={"normalizer": "softmax"})
