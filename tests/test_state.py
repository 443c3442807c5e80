"""Nothing lost: state files are written atomically, a malformed state is refused whole and names its file."""

from __future__ import annotations

import copy
import importlib.util
import json
import math
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import metahp
from metahp import StateError, meta_policy
from metahp.state import load_policies, read_json, replace_folder, write_json_atomic
from metahp.updaters import UPDATERS


def trained(updater: str, seed: int = 0, steps: int = 4):
    policy = meta_policy(updater=updater, seed=seed)
    rng = np.random.default_rng(seed)
    for _ in range(steps):
        policy.sample()
        policy.update(-abs(rng.normal(size=(6, 10))) - 2, rng.normal(size=6), reward=float(rng.uniform(-0.3, 0.3)))
    return policy


# -- a malformed state is refused whole ------------------------------------------------------------------------
JUNK = [None, True, -1, 0, 2**70, 1.5, -1e308, math.nan, math.inf, -math.inf, "x", "", [], [1.0, "a"], {}, {"a": 1}]


def _paths(obj, prefix=()):
    """Every path into a JSON-like object (dict keys and list indices), the object itself first."""
    yield prefix
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from _paths(v, (*prefix, k))
    elif isinstance(obj, list) and len(obj) <= 16:
        for i, v in enumerate(obj):
            yield from _paths(v, (*prefix, i))


def _mutate(state, path, how, junk):
    state = copy.deepcopy(state)
    *parents, last = path
    holder = state
    for p in parents:
        holder = holder[p]
    if how == "delete" and isinstance(holder, dict):
        del holder[last]
    elif how == "extra" and isinstance(holder[last], dict):
        holder[last]["unexpected"] = junk
    else:
        holder[last] = junk
    return state


@given(updater=st.sampled_from(sorted(UPDATERS)), data=st.data())
def test_random_mutations_are_refused_whole_or_give_a_working_policy(updater, data):
    source = trained(updater)
    state = json.loads(json.dumps(source.state_dict()))
    paths = [p for p in _paths(state) if p]
    path = data.draw(st.sampled_from(paths), label="path")
    how = data.draw(st.sampled_from(["replace", "delete", "extra"]), label="how")
    junk = data.draw(st.sampled_from(JUNK), label="junk")
    mutated = _mutate(state, path, how, junk)
    target = trained(updater, seed=7, steps=2)
    before = json.dumps(target.state_dict())
    try:
        target.load_state_dict(mutated)
    except StateError:
        assert json.dumps(target.state_dict()) == before, "a failed load changed the policy"
        return
    # Accepted: the mutation was harmless (e.g. an equal value) and the policy must work exactly as a policy does.
    probs = target.probs
    assert probs.shape == (len(target.values),) and np.isfinite(probs).all() and abs(probs.sum() - 1) < 1e-6
    target.sample()
    try:
        target.update(np.full((2, 10), -1.0), np.array([1.0, -1.0]), reward=0.1)
    except metahp.InputError:  # e.g. a huge reward baseline puts exp3's next reward outside its window: said so
        pass
    assert np.isfinite(target.probs).all()


@pytest.mark.parametrize("edit, field", [
    (lambda s: s.pop("step"), "step"),
    (lambda s: s.update(step=-3), "step"),
    (lambda s: s.update(step=2.5), "step"),
    (lambda s: s.update(extra=1), "extra"),
    (lambda s: s["updater_state"].update(log_weights=[math.nan] * 10), "log_weights"),
    (lambda s: s["updater_state"].update(log_weights=["a"] * 10), "log_weights"),
    (lambda s: s["updater_state"].update(log_weights=[0.0] * 3), "log_weights"),
    (lambda s: s["rng"]["state"].update(state=-5), "rng.state.state"),
    (lambda s: s["rng"]["state"].update(inc="x"), "rng.state.inc"),
    (lambda s: s["rng"].update(has_uint32=7), "has_uint32"),
    (lambda s: s["rng"].update(bit_generator="MT19937"), "bit_generator"),
    (lambda s: s.update(chosen_index=10), "chosen_index"),
    (lambda s: s.update(chosen_index=True), "chosen_index"),
    (lambda s: s["reward_state"].update(baseline="high"), "baseline"),
    (lambda s: s.update(reward_state=[]), "reward_state"),
])
def test_each_malformed_field_is_named_and_nothing_is_assigned(edit, field):
    state = trained("exp3").state_dict()
    edit(state)
    target = trained("exp3", seed=5, steps=1)
    before = json.dumps(target.state_dict())
    with pytest.raises(StateError, match=field.replace(".", r"\.").replace("[", r"\[")):
        target.load_state_dict(state)
    assert json.dumps(target.state_dict()) == before


@pytest.mark.parametrize("updater, key, value", [
    ("thompson", "counts", [-0.5] + [0.0] * 9),
    ("sliding_window_ucb", "arms", [0, -1]),
    ("sliding_window_ucb", "arms", [0, 1.5]),
    ("sliding_window_ucb", "arms", [0, 12]),
])
def test_updater_state_values_an_updater_never_produces_are_refused(updater, key, value):
    state = trained(updater).state_dict()
    state["updater_state"][key] = value
    target = meta_policy(updater=updater)
    with pytest.raises(StateError, match="updater_state"):
        target.load_state_dict(state)


def test_several_policies_load_all_or_nothing():
    a, b = trained("tampo", 1), trained("exp3", 2)
    policies = {"temperature": meta_policy(updater="tampo", seed=3), "top_p": meta_policy("top_p", "exp3", seed=4)}
    before = {n: json.dumps(p.state_dict()) for n, p in policies.items()}
    good_a = a.state_dict()
    bad_b = b.state_dict()  # a temperature state offered to the top_p policy: refused after the first one loaded
    with pytest.raises(StateError, match="top_p"):
        load_policies(policies, {"temperature": good_a, "top_p": bad_b})
    assert {n: json.dumps(p.state_dict()) for n, p in policies.items()} == before


# -- files: atomic writes, truncated files --------------------------------------------------------------------
def test_a_crash_while_writing_leaves_the_old_file_and_no_temporary(tmp_path, monkeypatch):
    path = tmp_path / "metahp_state.json"
    write_json_atomic(path, {"old": 1})
    real_fsync = os.fsync

    def crash(fd):  # the data is written but not yet durable: the process dies here
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "fsync", crash)
    with pytest.raises(KeyboardInterrupt):
        write_json_atomic(path, {"new": list(range(10_000))})
    monkeypatch.setattr(os, "fsync", real_fsync)
    assert json.loads(path.read_text()) == {"old": 1}
    assert os.listdir(tmp_path) == ["metahp_state.json"]


@pytest.mark.parametrize("content", ['{"format": "metahp.GridMetaPolicy/1", "kn', "", "not json", "\x00\x01"])
def test_a_truncated_or_corrupted_file_is_a_state_error_naming_it(tmp_path, content):
    path = tmp_path / "metahp_state.json"
    path.write_text(content)
    with pytest.raises(StateError, match="metahp_state.json"):
        read_json(path)


def test_an_interrupted_folder_swap_points_to_the_previous_checkpoint(tmp_path, monkeypatch):
    _, make = _reference()
    t = make()
    metahp.adapt(t)
    t.train(1, progress=False)
    t.save_checkpoint(tmp_path / "ckpt")
    real_replace = os.replace
    calls = []

    def dies_on_second_rename(src, dst):
        calls.append(dst)
        if len(calls) == 2:
            raise KeyboardInterrupt  # after the old folder was set aside, before the new one moved in
        return real_replace(src, dst)

    monkeypatch.setattr(os, "replace", dies_on_second_rename)
    with pytest.raises(KeyboardInterrupt):
        replace_folder(Path(tmp_path / "staging"), tmp_path / "ckpt")
    monkeypatch.setattr(os, "replace", real_replace)
    again = make()
    metahp.adapt(again)
    with pytest.raises(StateError, match=r"ckpt\.previous"):
        again.load_checkpoint(tmp_path / "ckpt")
    again.load_checkpoint(tmp_path / "ckpt.previous")
    assert again.step == 1


def _reference():
    from metahp.lab.grpo import GRPOTrainer
    from metahp.lab.models import char_tokenizer, tiny_model
    from metahp.lab.tasks import make_task

    task = make_task("addition", difficulty=1)

    def make(seed=0):
        tok = char_tokenizer(task.alphabet)
        model = tiny_model(tok, hidden=32, layers=1, heads=2, seed=seed)
        return GRPOTrainer(model, tok, task, prompts_per_step=2, num_generations=2, max_completion_tokens=3, seed=seed)

    return task, make


@pytest.mark.parametrize("file, cut", [("metahp_state.json", 0.5), ("trainer_state.json", 0.5),
                                       ("metahp_state.json", 0.0), ("trainer.pt", 0.5), ("model.safetensors", 0.3)])
def test_reference_resume_from_a_truncated_file_fails_naming_it_and_changes_nothing(tmp_path, file, cut):
    _, make = _reference()
    saved = make()
    metahp.adapt(saved)
    saved.train(2, output_dir=tmp_path, progress=False)
    target = tmp_path / "checkpoint" / file
    data = target.read_bytes()
    target.write_bytes(data[:int(len(data) * cut)])
    fresh = make(seed=1)
    adapter = metahp.adapt(fresh, seed=1)
    before = (json.dumps(adapter.state_dict()), [p.clone() for p in fresh.model.parameters()], fresh.step)
    with pytest.raises(StateError, match=file.replace(".", r"\.")):
        fresh.load_checkpoint(tmp_path / "checkpoint")
    assert json.dumps(adapter.state_dict()) == before[0] and fresh.step == before[2] == 0
    assert all(torch.equal(a, b) for a, b in zip(before[1], fresh.model.parameters(), strict=True))


def test_reference_crash_while_saving_keeps_the_previous_checkpoint_whole(tmp_path, monkeypatch):
    _, make = _reference()
    t = make()
    metahp.adapt(t)
    t.train(1, output_dir=tmp_path, progress=False)  # checkpoint at step 1
    import metahp.lab.grpo as grpo

    real = grpo.write_json_atomic

    def crash(path, obj, **kw):
        if Path(path).name == "metahp_state.json":
            raise KeyboardInterrupt  # the model and trainer state are written, the meta-policy's is not
        return real(path, obj, **kw)

    monkeypatch.setattr(grpo, "write_json_atomic", crash)
    t.train_step()
    with pytest.raises(KeyboardInterrupt):
        t.save_checkpoint(tmp_path / "checkpoint")
    monkeypatch.setattr(grpo, "write_json_atomic", real)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint", "metrics.jsonl"]  # no staging left
    assert json.loads((tmp_path / "checkpoint" / "trainer_state.json").read_text())["step"] == 1
    assert json.loads((tmp_path / "checkpoint" / "metahp_state.json").read_text())["policy"]["step"] == 1


# -- the TRL adapter's state file -----------------------------------------------------------------------------
_spec = importlib.util.spec_from_file_location("trl_tiny", Path(__file__).with_name("trl_tiny.py"))
trl_tiny = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(trl_tiny)


def test_trl_truncated_state_file_is_a_state_error_naming_it_and_changes_nothing(tmp_path):
    trainer = trl_tiny.grpo_trainer(tmp_path)
    adapter = metahp.adapt(trainer, seed=0)
    folder = tmp_path / "checkpoint-1"
    folder.mkdir()
    text = json.dumps(adapter.state_dict())
    before = text
    for broken in (text[: len(text) // 2], "", json.dumps({**json.loads(text), "value": "hot"}),
                   json.dumps({**json.loads(text), "history": [{"step": 1}]})):
        (folder / "metahp_state.json").write_text(broken)
        with pytest.raises(StateError, match="metahp_state.json"):
            adapter.load(str(folder))
        assert json.dumps(adapter.state_dict()) == before


def test_trl_state_file_is_written_atomically(tmp_path, monkeypatch):
    trainer = trl_tiny.grpo_trainer(tmp_path, save_strategy="steps", save_steps=1, max_steps=1)
    metahp.adapt(trainer, seed=0)
    import metahp.integrations.kit as trl_adapter  # the kit writes every adapter's state file

    written = []
    real = trl_adapter.write_json_atomic
    monkeypatch.setattr(trl_adapter, "write_json_atomic", lambda p, o, **kw: written.append(p) or real(p, o, **kw))
    trainer.train()
    assert written and all(str(p).endswith("metahp_state.json") for p in written)
    assert read_json(written[0])["policy"]["step"] == 1
