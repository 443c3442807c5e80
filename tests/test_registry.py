"""The knob registry is the only truth: a knob defined here, in a test file, and registered with one line is
checked, built by name and adapted through metahp.adapt on the reference trainer, like a built-in knob."""

from __future__ import annotations

import pytest
import torch
from test_grpo_truncation import sharpened

import metahp
from metahp import ConfigError
from metahp.knobs import KNOBS, TruncationKnob, active_truncations, register_knob
from metahp.knobs.truncation import _naive_token_logprobs
from metahp.testing import check_knob


class TypicalP(TruncationKnob):
    """Locally typical sampling (transformers' TypicalLogitsWarper, mass p in (0, 1]) after a fixed temperature,
    scored by running transformers' own warper for each candidate: slow and exact, fine for a test."""

    name = "typical_p"
    off_value = 1.0
    default_values = (0.3, 0.6, 0.9, 1.0)
    reference_sampler = "transformers.TypicalLogitsWarper"

    @classmethod
    def is_off(cls, value) -> bool:
        return value is None or value >= 1.0

    def check_value(self, value):
        value = float(value)
        if not 0 < value <= 1:
            raise ConfigError(f"typical_p: candidate {value} is outside (0, 1].")
        return value

    def warper(self, value):
        return _Unchanged() if value >= 1.0 else super().warper(value)  # transformers: mass 1 is off

    def token_logprobs(self, logits, tokens):
        return _naive_token_logprobs(self, logits, tokens, average_ties=False).to(logits.device)


class _Unchanged:
    def __call__(self, input_ids, scores):
        return scores


@pytest.fixture
def typical_p():
    register_knob(TypicalP)
    yield TypicalP
    KNOBS.pop("typical_p")  # other tests in this process see the built-in registry only


def test_the_registered_knob_passes_the_conformance_checks_and_is_built_by_name(typical_p):
    check_knob(TypicalP())
    policy = metahp.meta_policy("typical_p", "tampo")
    assert policy.values == TypicalP.default_values
    assert active_truncations({"temperature": 1.0, "typical_p": 0.5, "top_p": 1.0}) == [("typical_p", 0.5)]


def test_a_registered_knob_is_adapted_on_the_reference_trainer(typical_p, monkeypatch):
    t = sharpened(temperature=0.9)
    adapter = metahp.adapt(t, knob="typical_p", updater="softmax_gradient", lr=20.0, seed=3)
    sampled = []
    generate = t.model.generate
    monkeypatch.setattr(t.model, "generate", lambda **kw: sampled.append(kw.get("typical_p")) or generate(**kw))
    history = t.train(4, progress=False)
    # every batch sampled with the value the meta-policy drew, through the knob's backend keyword
    assert sampled == [m["knob/typical_p"] for m in history] and all(v in TypicalP.default_values for v in sampled)
    assert len(set(sampled)) > 1, "the test needs the value to change"
    # the meta-update scored the knob's candidates after the batch's temperature, on the logits that sampled it
    rollout = t.generate()
    rollout.advantages = torch.linspace(-1, 1, len(rollout.advantages))
    (scoring,) = adapter.knobset.scoring_knobs(rollout.knobs)
    assert isinstance(scoring, TypicalP) and scoring.temperature == 0.9
    want = TypicalP(temperature=0.9).sequence_logprobs(rollout.logits, rollout.completion_ids, rollout.completion_mask)
    used = want[:, TypicalP.default_values.index(rollout.knobs["typical_p"])]
    assert torch.isfinite(used[rollout.completion_mask.sum(1) > 0]).all()  # each completion possible at its value
    before = adapter.policy.probs
    metrics = t.controller.after_batch(rollout)
    assert not torch.allclose(torch.tensor(before), torch.tensor(adapter.policy.probs))
    assert {f"metahp/prob/{v:g}" for v in TypicalP.default_values} <= set(metrics)


def test_the_registry_refuses_an_incomplete_knob_and_two_truncations_at_once(typical_p):
    class Nameless(TypicalP):
        name = "not an identifier"

    with pytest.raises(ConfigError, match="backend keyword"):
        register_knob(Nameless)
    with pytest.raises(ConfigError, match="not supported"):
        metahp.adapt(sharpened(), knob=("typical_p", "top_p"))
