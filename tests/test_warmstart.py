"""Warm start: trains on demonstrations, stops in the target band, caches atomically, loads from the cache."""

import json

import pytest
import torch

import metahp.lab.warmstart as ws
from metahp.errors import ConfigError
from metahp.lab.models import char_tokenizer, tiny_model
from metahp.lab.tasks import make_task
from metahp.lab.warmstart import build_warm_policy, cache_dir, greedy_accuracy, greedy_completions, warm_start

TASK = make_task("addition", difficulty=1)
TINY = {"hidden": 32, "layers": 1, "heads": 2}
BUDGET = {"steps": 12, "eval_every": 6, "eval_size": 16, "batch_size": 16, "progress": False}


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("METAHP_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def _fresh(seed=0):
    tok = char_tokenizer(TASK.alphabet)
    return tok, tiny_model(tok, **TINY, seed=seed)


def test_cache_dir_follows_env(cache, monkeypatch):
    assert cache_dir() == cache
    monkeypatch.delenv("METAHP_CACHE")
    assert cache_dir().parts[-2:] == (".cache", "metahp")


def test_second_call_loads_the_cached_checkpoint_without_training(cache):
    tok, model = _fresh()
    trained, info = warm_start(TASK, tok, model, target=(1.0, 1.0), seed=0, **BUDGET)
    assert info["cached"] is False and info["steps"] == 12 and 0.0 <= info["pass_rate"] <= 1.0
    path = cache / "warmstart" / info["key"]
    assert info["path"] == str(path) and (path / "info.json").is_file() and (path / "config.json").is_file()
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temp folder left behind
    assert json.loads((path / "info.json").read_text())["pass_rate"] == info["pass_rate"]

    tok2, model2 = _fresh()
    loaded, info2 = warm_start(TASK, tok2, model2, target=(1.0, 1.0), seed=0, **BUDGET)
    assert info2["cached"] is True and info2["steps"] == info["steps"] and info2["key"] == info["key"]
    for a, b in zip(trained.state_dict().values(), loaded.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    assert greedy_accuracy(loaded, tok2, TASK, TASK.eval_problems(16)) == info["pass_rate"]


def test_cache_key_depends_on_seed_settings_and_initial_weights(cache):
    tok, model = _fresh()
    cfg = ws.WarmStartSettings(steps=5)
    key = ws.cache_key(TASK, model, tok, 0, cfg)
    assert key == ws.cache_key(TASK, _fresh()[1], tok, 0, cfg)
    assert key != ws.cache_key(TASK, model, tok, 1, cfg)
    assert key != ws.cache_key(TASK, model, tok, 0, ws.WarmStartSettings(steps=6))
    assert key != ws.cache_key(TASK, _fresh(seed=1)[1], tok, 0, cfg)
    assert key != ws.cache_key(make_task("addition", 2), model, tok, 0, cfg)


def test_no_cache_writes_nothing(cache):
    tok, model = _fresh()
    _, info = warm_start(TASK, tok, model, steps=3, eval_every=3, eval_size=8, batch_size=8, cache=False,
                         progress=False)
    assert info["path"] is None and not cache.exists()


def test_training_restores_the_thread_count_and_rng():
    tok, model = _fresh()
    threads = torch.get_num_threads()
    torch.manual_seed(123)
    expected = torch.rand(1)
    torch.manual_seed(123)
    warm_start(TASK, tok, model, steps=2, eval_every=2, eval_size=4, batch_size=4, cache=False, progress=False)
    assert torch.get_num_threads() == threads and torch.equal(torch.rand(1), expected)


def _scripted_accuracy(monkeypatch, rates):
    """Replace the greedy evaluation with a script of pass rates (one per evaluation)."""
    calls = iter(rates)
    monkeypatch.setattr(ws, "greedy_accuracy", lambda *a, **k: next(calls))


def test_stops_early_once_in_the_band(monkeypatch):
    _scripted_accuracy(monkeypatch, [0.0, 0.0, 0.3, 0.9])
    tok, model = _fresh()
    _, info = warm_start(TASK, tok, model, steps=40, eval_every=2, eval_size=4, batch_size=4, cache=False,
                         progress=False)
    assert (info["steps"], info["pass_rate"], info["in_band"], info["rollbacks"]) == (4, 0.3, True, 0)


def test_overshoot_rolls_back_and_evaluates_every_step(monkeypatch):
    # evaluations: step 0, step 5 (below), step 10 (overshoot: back to step 5), then every step: 6, 7
    _scripted_accuracy(monkeypatch, [0.0, 0.05, 0.8, 0.07, 0.4])
    tok, model = _fresh()
    _, info = warm_start(TASK, tok, model, steps=40, eval_every=5, eval_size=4, batch_size=4, cache=False,
                         progress=False)
    assert (info["steps"], info["pass_rate"], info["in_band"], info["rollbacks"]) == (7, 0.4, True, 1)
    assert [s for s, _ in info["history"]] == [0, 5, 10, 5, 6, 7]


def test_overshoot_kept_when_no_rollback_is_left(monkeypatch):
    _scripted_accuracy(monkeypatch, [0.0] + [0.9] * 10)
    tok, model = _fresh()
    _, info = warm_start(TASK, tok, model, steps=40, eval_every=5, eval_size=4, batch_size=4, cache=False,
                         progress=False)
    assert info["rollbacks"] == ws._MAX_ROLLBACKS and info["in_band"] is False and info["pass_rate"] == 0.9


def test_already_in_band_trains_nothing(monkeypatch):
    _scripted_accuracy(monkeypatch, [0.2])
    tok, model = _fresh()
    before = [p.clone() for p in model.parameters()]
    _, info = warm_start(TASK, tok, model, steps=40, cache=False, progress=False)
    assert info["steps"] == 0 and all(torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))


def test_bad_settings_raise_config_errors():
    tok, model = _fresh()
    with pytest.raises(ConfigError, match="valid settings"):
        warm_start(TASK, tok, model, steps=1, learning_rate=0.1)
    with pytest.raises(ConfigError, match="band"):
        warm_start(TASK, tok, model, steps=1, target=(0.7, 0.2))
    with pytest.raises(ConfigError, match="batch_size"):
        warm_start(TASK, tok, model, steps=1, batch_size=0)
    with pytest.raises(ConfigError, match="at least one"):
        greedy_accuracy(model, tok, TASK, [])


def test_greedy_completions_are_plain_text():
    tok, model = _fresh()
    problems = TASK.eval_problems(5)
    texts = greedy_completions(model, tok, TASK, problems)
    assert len(texts) == 5 and all(isinstance(t, str) and "<" not in t for t in texts)


def test_build_warm_policy_tiny_budget(cache):
    model, tok, info = build_warm_policy("addition", 1, seed=0, **TINY, **BUDGET)
    assert set(tok.get_vocab()) >= set(TASK.alphabet) and info["cached"] is False
    _, _, again = build_warm_policy("addition", 1, seed=0, **TINY, **BUDGET)
    assert again["cached"] is True and again["key"] == info["key"]


@pytest.mark.slow
def test_default_addition_warm_start_reaches_the_band():
    _, _, info = build_warm_policy("addition", seed=0, progress=False)
    assert info["in_band"] and 0.1 <= info["pass_rate"] <= 0.6, info
