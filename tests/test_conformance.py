"""The conformance kit (metahp.testing): every built-in plug-in passes every check, and every check rejects a
deliberately broken plug-in with an AssertionError that names the check and the plug-in."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import TopPLogitsWarper

import metahp
from metahp.knobs import KNOBS, Knob, ProductKnob, Temperature, TopK, TopP
from metahp.rewards import REWARDS, RewardImprovement, TrajectoryLikelihood
from metahp.testing import (
    ADAPTER_CHECKS,
    KNOB_CHECKS,
    REWARD_CHECKS,
    UPDATER_CHECKS,
    check_adapter,
    check_adapter_copies,
    check_adapter_state_round_trip,
    check_knob,
    check_knob_matches_sampler,
    check_policy_json_round_trip,
    check_reward,
    check_updater,
    knob_of_copy,
)
from metahp.updaters import UPDATERS, Updater
from metahp.updaters.base import softmax


# -- every built-in passes ---------------------------------------------------------------------------------
@pytest.mark.parametrize("values, seed", [((0.6, 0.8, 1.0, 1.2, 1.5), 0), ((0.5, 2.0, 3.0), 3)])
@pytest.mark.parametrize("name", sorted(UPDATERS))
def test_updater_conforms(name, values, seed):
    # constant and uniform ignore feedback by design (the fixed baseline, the mixing ablation): the updaters exempt
    # from learning.
    check_updater(UPDATERS[name](), values=values, seed=seed, learns=name not in ("constant", "uniform"))


def test_constant_is_exempt_from_learning_only_explicitly():
    with pytest.raises(AssertionError, match=r"^check_updater_learns\(constant\)"):
        check_updater(UPDATERS["constant"]())


@pytest.mark.parametrize("name", sorted(KNOBS))
def test_knob_conforms(name):
    check_knob(KNOBS[name]())


@pytest.mark.parametrize("knob", [ProductKnob(Temperature([0.7, 1.0]), TopP([0.8, 1.0])),
                                  ProductKnob(TopK([2, 5]), Temperature([0.8, 1.2])),
                                  Temperature(truncation=("top_p", 0.9)), KNOBS["top_k"](temperature=1.4, epsilon=0.1),
                                  KNOBS["min_p"](temperature=0.6), Temperature([0.1, 0.3, 3.0])],
                         ids=repr)
def test_configured_knobs_conform(knob):
    check_knob(knob)


@pytest.mark.parametrize("name", sorted(REWARDS))
def test_reward_conforms(name):
    check_reward(REWARDS[name]())


@pytest.mark.parametrize("normalizer", ["softmax", "argmax"])
def test_other_normalisers_conform(normalizer):
    check_reward(TrajectoryLikelihood(normalizer))


def _learns(knob: str, updater: str) -> bool:
    """A hyperparameter knob has no likelihood: only updaters whose default reward reads none learn it."""
    return KNOBS[knob].role != "updates" or UPDATERS[updater]().feedback == "chosen"


@pytest.mark.parametrize("knob, updater", [(k, u) for k in sorted(KNOBS) for u in sorted(UPDATERS) if _learns(k, u)])
def test_meta_policy_state_survives_json(knob, updater):
    check_policy_json_round_trip(metahp.meta_policy(knob, updater, seed=1))


def test_product_meta_policy_state_survives_json():
    check_policy_json_round_trip(metahp.meta_policy(ProductKnob(Temperature([0.7, 1.0]), TopP([0.8, 1.0])), "exp3"))


def test_every_check_is_exported_and_listed():
    import metahp.testing as kit

    listed = {c.__name__ for c in UPDATER_CHECKS + KNOB_CHECKS + kit.HYPERPARAMETER_KNOB_CHECKS + REWARD_CHECKS
              + ADAPTER_CHECKS + kit.DRIVEN_CHECKS + kit.HYPERPARAMETER_DRIVEN_CHECKS}
    public = {name for name in kit.__all__ if name.startswith("check_") and name.count("_") > 1}
    assert public - listed == {"check_policy_json_round_trip"}  # run through check_updater_policy_round_trip
    assert listed <= public


def test_knob_of_copy():
    assert [knob_of_copy(n) for n in ("trainer.top_p", "generation_config.temperature",
                                      "fused_lm_head[1].temperature", "top_k")] == [
        "top_p", "temperature", "temperature", "top_k"]


# -- broken updaters ----------------------------------------------------------------------------------------
def _per_candidate(update, probs=lambda s: softmax(s["h"]), init=lambda values: {"h": np.zeros(len(values))},
                   name="broken", feedback="per_candidate"):
    return Updater(name, feedback, "sample", init, update, probs)


def _bandit_update(state, feedback):
    h = state["h"].copy()
    h[feedback.chosen] += feedback.reward
    return {"h": h}


def _mutating(state, feedback):
    state["h"] += feedback.advantages
    return state


def _noisy():
    rng = np.random.default_rng()
    return lambda s, f: {"h": s["h"] + f.advantages + rng.normal(scale=1e-3, size=len(f.advantages))}


def _dtype_drift_init(values):
    return {"h": np.zeros(len(values), dtype=np.int64)}  # counts... that update() then makes fractional


BROKEN_UPDATERS = {
    "check_updater_interface": _per_candidate(lambda s, f: {"h": s["h"] + f.advantages}, feedback="scalar"),
    "check_updater_distribution": _per_candidate(lambda s, f: {"h": s["h"] + f.advantages},
                                                 probs=lambda s: 0.9 * softmax(s["h"])),
    "check_updater_purity": _per_candidate(_mutating),
    "check_updater_determinism": _per_candidate(_noisy()),
    "check_updater_json_round_trip": _per_candidate(lambda s, f: {"h": s["h"] + f.advantages, "seen": set()},
                                                    init=lambda values: {"h": np.zeros(len(values)), "seen": set()}),
    "check_updater_state": _per_candidate(lambda s, f: {"h": s["h"] + f.advantages, "tag": s["tag"]},
                                          init=lambda values: {"h": np.zeros(len(values)), "tag": np.array("x")}),
    "check_updater_policy_round_trip": _per_candidate(lambda s, f: {"h": s["h"] + f.advantages},
                                                      init=_dtype_drift_init),
    "check_updater_zero_advantages": _per_candidate(lambda s, f: {"h": s["h"] + f.advantages + (np.arange(len(s["h"]))
                                                                                                 == 0) * 0.01}),
    "check_updater_learns": _per_candidate(lambda s, f: {"h": s["h"] - f.advantages}),  # prefers the worst
    "check_updater_learns (bandit)": _per_candidate(lambda s, f: {"h": s["h"].copy()}, feedback="chosen"),
}


def test_the_sound_fakes_pass():
    """The broken updaters below are these two with one thing changed."""
    check_updater(_per_candidate(lambda s, f: {"h": s["h"] + f.advantages}, name="sound"))
    check_updater(_per_candidate(_bandit_update, name="sound_bandit", feedback="chosen"))


@pytest.mark.parametrize("check", sorted(BROKEN_UPDATERS))
def test_each_updater_check_rejects_its_broken_updater(check):
    with pytest.raises(AssertionError, match=rf"^{check.split()[0]}\(broken\): "):
        check_updater(BROKEN_UPDATERS[check])


def test_every_updater_check_has_a_broken_updater():
    assert {c.__name__ for c in UPDATER_CHECKS} == {name.split()[0] for name in BROKEN_UPDATERS}


def test_an_exception_inside_a_check_names_the_check_and_keeps_the_cause():
    with pytest.raises(AssertionError, match=r"^check_updater_json_round_trip\(broken\): .*set is not JSON") as err:
        check_updater(BROKEN_UPDATERS["check_updater_json_round_trip"])
    assert isinstance(err.value.__cause__, TypeError)
    with pytest.raises(AssertionError, match=r"^check_updater_policy_round_trip\(broken\): check_policy_json_round_trip"
                                             r"\(.*\): raised StateError: .*integers") as err:
        check_updater(BROKEN_UPDATERS["check_updater_policy_round_trip"])
    assert isinstance(err.value.__cause__, metahp.StateError)


# -- broken knobs -------------------------------------------------------------------------------------------
class Plain(Knob):
    """A sound knob: the temperature by log_softmax."""

    name = "plain"
    default_values = (0.7, 1.0, 1.3)
    reference_sampler = "transformers.TemperatureLogitsWarper"

    def check_value(self, value):
        return float(value)

    def token_logprobs(self, logits, tokens):
        return torch.stack([torch.log_softmax(logits / t, dim=-1).gather(-1, tokens[:, None])[:, 0]
                            for t in self.values], dim=1)


class NoName(Plain):
    name = ""


class Unsorted(Plain):
    @property
    def values(self):
        return self._values[::-1]


class Unnormalised(Plain):
    def token_logprobs(self, logits, tokens):
        return super().token_logprobs(logits, tokens) + 0.1


class Positive(Plain):
    def sequence_logprobs(self, logits, tokens, mask, **kw):
        return -super().sequence_logprobs(logits, tokens, mask, **kw)


class MaskBlind(Plain):
    def sequence_logprobs(self, logits, tokens, mask, **kw):
        return super().sequence_logprobs(logits, tokens, torch.ones_like(torch.as_tensor(mask)), **kw)


class ChunkDependent(Plain):
    """Scales the logits by their spread within the block it is given (a per-batch normalisation bug)."""

    def token_logprobs(self, logits, tokens):
        return super().token_logprobs(logits / logits[torch.isfinite(logits)].std(), tokens)


class KeepsGraph(Plain):
    def sequence_logprobs(self, logits, tokens, mask, **kw):
        out = super().sequence_logprobs(logits, tokens, mask, **kw)
        return out + 0 * torch.as_tensor(logits)[..., 0].sum(dim=1, keepdim=True)


class TimesT(Temperature):
    """softmax(z * T) instead of softmax(z / T): normalised, right shape, and wrong."""

    def token_logprobs(self, logits, tokens):
        return torch.stack([torch.log_softmax(logits * t, dim=-1).gather(-1, tokens[:, None])[:, 0]
                            for t in self.values], dim=1)


class OneTooMany(TopP):
    """top_p that also keeps the most probable token the sampler's cut removes (an off-by-one at the boundary)."""

    def token_logprobs(self, logits, tokens):
        columns = []
        for p in self.values:
            kept = torch.isfinite(TopPLogitsWarper(p)(None, logits))
            removed = logits.masked_fill(kept, float("-inf"))  # the possible tokens the cut removes, else -inf
            extra = torch.isfinite(removed.amax(dim=-1)).nonzero()[:, 0]
            kept[extra, removed[extra].argmax(dim=-1)] = True
            logp = torch.log_softmax(logits.masked_fill(~kept, float("-inf")), dim=-1)
            columns.append(logp.gather(-1, tokens[:, None])[:, 0])
        return torch.stack(columns, dim=1)


class Unnamed(Plain):
    reference_sampler = None


BROKEN_KNOBS = {
    "check_knob_registry": NoName, "check_knob_grid": Unsorted, "check_knob_normalised": Unnormalised,
    "check_knob_output": Positive, "check_knob_chunking": ChunkDependent, "check_knob_masking": MaskBlind,
    "check_knob_no_graph": KeepsGraph, "check_knob_matches_sampler": TimesT,
    "check_knob_matches_sampler (truncation)": OneTooMany, "check_knob_matches_sampler (unnamed)": Unnamed,
}


def _knob_label(cls):
    return cls.name or cls.__name__


def test_the_sound_knob_passes():
    check_knob(Plain())


@pytest.mark.parametrize("check", sorted(BROKEN_KNOBS))
def test_each_knob_check_rejects_its_broken_knob(check):
    with pytest.raises(AssertionError, match=rf"^{check.split()[0]}\({_knob_label(BROKEN_KNOBS[check])}\): "):
        check_knob(BROKEN_KNOBS[check]())


def test_every_knob_check_has_a_broken_knob():
    assert {c.__name__ for c in KNOB_CHECKS} == {name.split()[0] for name in BROKEN_KNOBS}


@pytest.mark.parametrize("broken", [TimesT, OneTooMany, Unnamed], ids=lambda cls: cls.__name__)
def test_a_knob_wrong_only_against_its_sampler_passes_every_other_check(broken):
    for check in KNOB_CHECKS:
        if check is not check_knob_matches_sampler:
            check(broken())


def test_the_sampler_check_says_what_differs_and_how_to_fix_it(monkeypatch):
    with pytest.raises(AssertionError, match=r"candidate 0\.6: token \d+ of row \d+ has log-likelihood .* but "
                                             r"transformers\.TemperatureLogitsWarper gives"):
        check_knob_matches_sampler(TimesT())
    with pytest.raises(AssertionError, match=r"candidate 0\.5: transformers\.TopPLogitsWarper removes token \d+ of "
                                             r"row \d+ \(log-likelihood -inf\) but token_logprobs gives -?\d"):
        check_knob_matches_sampler(OneTooMany())
    with pytest.raises(AssertionError, match=r"Unnamed\.reference_sampler is None: name the sampler .* "
                                             r"reference_sampler = 'transformers\.TopPLogitsWarper'"):
        check_knob_matches_sampler(Unnamed())
    monkeypatch.setitem(sys.modules, "transformers", None)  # as if transformers were not installed
    with pytest.raises(AssertionError, match=r"^check_knob_matches_sampler\(top_p\): cannot build the reference "
                                             r"sampler transformers\.TopPLogitsWarper .*pip install transformers"):
        check_knob_matches_sampler(TopP())


# -- broken rewards -----------------------------------------------------------------------------------------
class BadKind(RewardImprovement):
    kind = "bandit"


class WrongShape(TrajectoryLikelihood):
    def __call__(self, state, batch):
        a, state = super().__call__(state, batch)
        return np.append(a, 0.0), state


class ArrayForChosen(RewardImprovement):
    def __call__(self, state, batch):
        r, state = super().__call__(state, batch)
        return np.array([r]), state


class Mutating(RewardImprovement):
    def __call__(self, state, batch):
        r, new = super().__call__(state, batch)
        state.update(new)
        return r, state


class TupleState(RewardImprovement):
    def init(self):
        return {"baseline": None, "window": ()}

    def __call__(self, state, batch):
        r, new = super().__call__({"baseline": state["baseline"]}, batch)
        return r, {**new, "window": (*state["window"], batch.mean_reward)[-3:]}


class StringState(RewardImprovement):
    def init(self):
        return {"baseline": None, "mode": "ema"}

    def __call__(self, state, batch):
        r, new = super().__call__({"baseline": state["baseline"]}, batch)
        return r, {**new, "mode": "ema"}


class NotNeutral(TrajectoryLikelihood):
    def __call__(self, state, batch):
        a, state = super().__call__(state, batch)
        return a + 0.01, state


BROKEN_REWARDS = {
    "check_reward_interface": BadKind, "check_reward_output": WrongShape,
    "check_reward_output (chosen)": ArrayForChosen,
    "check_reward_purity": Mutating, "check_reward_json_round_trip": TupleState, "check_reward_state": StringState,
    "check_reward_zero_advantages": NotNeutral,
}


@pytest.mark.parametrize("check", sorted(BROKEN_REWARDS))
def test_each_reward_check_rejects_its_broken_reward(check):
    reward = BROKEN_REWARDS[check]()
    with pytest.raises(AssertionError, match=rf"^{check.split()[0]}\({reward.name}\): "):
        check_reward(reward)


def test_every_reward_check_has_a_broken_reward():
    assert {c.__name__ for c in REWARD_CHECKS} == {name.split()[0] for name in BROKEN_REWARDS}


# -- adapters -----------------------------------------------------------------------------------------------
class FakeAdapter:
    """A sound adapter over meta-policies with two copies of each knob (and a fused head for the temperature)."""

    def __init__(self, knobs=("temperature",)):
        self.policies = {name: metahp.meta_policy(name, "exp3", seed=i) for i, name in enumerate(knobs)}
        self.current = {name: p.sample() for name, p in self.policies.items()}

    @property
    def value(self):
        return next(iter(self.current.values())) if len(self.current) == 1 else dict(self.current)

    def applied_values(self):
        out = {}
        for name, v in self.current.items():
            out |= {f"trainer.{name}": v, f"generation_config.{name}": v}
            if name == "temperature":
                out["fused_lm_head[0].temperature"] = v
        return out

    def state_dict(self):
        return {"policies": {n: p.state_dict() for n, p in self.policies.items()}, "value": dict(self.current)}

    def load_state_dict(self, state):
        for name, p in self.policies.items():
            p.load_state_dict(state["policies"][name])
        self.current = dict(state["value"])


class Disagreeing(FakeAdapter):
    def applied_values(self):
        return {**super().applied_values(), "generation_config.temperature": 1.0 if self.value != 1.0 else 0.7}


class Forgetful(FakeAdapter):
    def load_state_dict(self, state):
        self.current = dict(state["value"])  # the policies' states are not restored


@pytest.mark.parametrize("knobs", [("temperature",), ("temperature", "top_p")])
def test_the_sound_fake_adapter_passes(knobs):
    check_adapter(FakeAdapter(knobs))


@pytest.mark.parametrize("broken, check", [(Disagreeing, "check_adapter_copies"),
                                           (Forgetful, "check_adapter_state_round_trip")])
def test_each_adapter_check_rejects_its_broken_adapter(broken, check):
    with pytest.raises(AssertionError, match=rf"^{check}\({broken.__name__}\): "):
        check_adapter(broken())
    assert {c.__name__ for c in ADAPTER_CHECKS} == {"check_adapter_copies", "check_adapter_state_round_trip"}


# Gaps of the built-in adapters, asserted to still be there: closing one fails its test, so remove its entry then.
KNOWN_ADAPTER_GAPS: dict[str, tuple[str, str]] = {}


def _known_gap_or_pass(adapter):
    gap = KNOWN_ADAPTER_GAPS.get(type(adapter).__name__)
    if gap is None:
        check_adapter(adapter)
    else:
        with pytest.raises(AssertionError, match=gap[0]):
            check_adapter(adapter)


def _trl_tiny():
    spec = importlib.util.spec_from_file_location("trl_tiny", Path(__file__).with_name("trl_tiny.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_trl_adapter_copies_agree_and_a_stale_copy_is_caught(tmp_path):
    trl_tiny = _trl_tiny()
    for knob in ("temperature", ("temperature", "top_p")):
        trainer = trl_tiny.grpo_trainer(tmp_path / str(len(knob)), max_steps=1)
        adapter = metahp.adapt(trainer, knob=knob, seed=0)
        trainer.train()
        check_adapter_copies(adapter)
        _known_gap_or_pass(adapter)
    trainer.generation_config.temperature = 0.123  # a copy the adapter did not write
    with pytest.raises(AssertionError, match=r"^check_adapter_copies\(TRLAdapter\): copy 'generation_config"):
        check_adapter_copies(adapter)


def test_reference_adapter(tmp_path):
    from metahp.lab.grpo import GRPOTrainer
    from metahp.lab.models import char_tokenizer, tiny_model
    from metahp.lab.tasks import make_task

    task = make_task("addition", difficulty=1)
    tok = char_tokenizer(task.alphabet)
    trainer = GRPOTrainer(tiny_model(tok, hidden=32, layers=1, heads=2, seed=0), tok, task, prompts_per_step=2,
                          num_generations=4, max_completion_tokens=4, seed=0)
    adapter = metahp.adapt(trainer, knob=("temperature", "top_p"), seed=0)
    trainer.train_step()
    check_adapter_state_round_trip(adapter)
    _known_gap_or_pass(adapter)


# -- the public strategies keep their promises --------------------------------------------------------------
def test_strategies_give_what_they_promise():
    from hypothesis import given, settings
    from strategies import advantages, batches, sequence_batches

    @settings(max_examples=40, deadline=None)
    @given(advantages(), batches(allow_minus_inf=True), sequence_batches())
    def run(adv, batch, seq):
        assert np.isfinite(adv).all() and abs(adv.sum()) < 1e-9  # group-normalised: each group sums to 0
        logp, a = batch
        assert logp.shape[0] == len(a) and (logp <= 0).all() and np.isfinite(logp).any(axis=1).all()
        logits, tokens, mask = seq
        assert np.isfinite(logits.max(axis=-1)).all()  # never a whole position of -inf
        assert np.isfinite(np.take_along_axis(logits, tokens[..., None], axis=-1)).all()
        assert ((np.diff(mask, axis=1) >= 0).all()) and set(np.unique(mask)) <= {0, 1}  # left padding only
        out = Temperature().sequence_logprobs(torch.from_numpy(logits), torch.from_numpy(tokens),
                                              torch.from_numpy(mask))
        assert not torch.isnan(out).any() and (out <= 1e-6).all()

    run()
