"""`metahp demo` end to end in its smoke mode, and the examples."""

import inspect
import json
import runpy
from pathlib import Path

import pytest

import metahp
from metahp.lab.cli import main
from metahp.lab.demo import DemoSettings

ROOT = Path(__file__).resolve().parents[1]


def adapts_default_updater():
    """What ``metahp.adapt`` uses when no updater is given (its signature shows it: help(metahp.adapt))."""
    shown = inspect.signature(metahp.adapt).parameters["updater"].default
    assert repr(shown) == repr(metahp.config.DEFAULT_UPDATER)
    return metahp.config.DEFAULT_UPDATER


@pytest.mark.slow
def test_demo_smoke_writes_table_figure_metrics_and_summary(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("METAHP_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "demo"
    assert main(["demo", "--smoke", "--no-progress", "--output-dir", str(out)]) == 0
    printed = capsys.readouterr().out
    default = adapts_default_updater()
    assert f"adaptive temperature ({default})" in printed and "fixed temperature 0.6" in printed
    assert "the sweep's pick" in printed and "the sweep it replaces is 2 runs" in printed
    summary = json.loads((out / "summary.json").read_text())
    assert set(summary["runs"]) == {"adaptive", "fixed_0.6", "fixed_0.8"}  # the smoke mode's two-value sweep
    best = summary["best_fixed"]
    assert best["greedy_accuracy"] == max(summary["runs"][n]["after"]["greedy_accuracy"] for n in ("fixed_0.6",
                                                                                                  "fixed_0.8"))
    assert summary["adaptive_minus_best_fixed"] == pytest.approx(
        summary["runs"]["adaptive"]["after"]["greedy_accuracy"] - best["greedy_accuracy"])
    assert summary["compute"]["sweep_steps"] == 2 * summary["compute"]["adaptive_steps"]
    assert 0 < summary["runs"]["adaptive"]["meta_update_share"] < 1
    assert (out / "demo.png").stat().st_size > 10_000
    lines = (out / "adaptive" / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == 3 and "metahp/prob/0.6" in json.loads(lines[0])
    probs = {key for key in json.loads(lines[0]) if key.startswith("metahp/prob/")}
    assert probs == {"metahp/prob/0.6", "metahp/prob/0.8"}  # the adaptive run's grid is the sweep
    assert {json.loads(line)["knob/temperature"] for line in (out / "fixed_0.8" / "metrics.jsonl").read_text(
        ).splitlines()} == {0.8}
    assert (out / "adaptive" / "checkpoint" / "metahp_state.json").exists()
    # A second run into the same folder is refused instead of mixing metrics.
    assert main(["demo", "--smoke", "--no-progress", "--output-dir", str(out)]) == 2
    assert "already holds a demo run" in capsys.readouterr().err


def test_demo_shows_adapts_default_updater_and_updater_chooses_another(monkeypatch, capsys):
    default = adapts_default_updater()
    assert DemoSettings().updater == default
    seen = []
    monkeypatch.setattr("metahp.lab.demo.run_demo", lambda settings, progress: seen.append(settings.updater))
    monkeypatch.setattr("torch.set_num_threads", lambda n: None)  # the demo command's, for a real run only
    assert main(["demo", "--no-progress"]) == 0
    assert main(["demo", "--no-progress", "--updater", "tampo"]) == 0
    assert seen == [default, "tampo"]
    with pytest.raises(SystemExit):
        main(["demo", "--help"])
    assert f"default: {default}, metahp.adapt's default" in " ".join(capsys.readouterr().out.split())


def test_demo_unknown_names_list_the_valid_ones(tmp_path, capsys):
    assert main(["demo", "--smoke", "--task", "nope", "--output-dir", str(tmp_path / "x")]) == 2
    assert "addition" in capsys.readouterr().err


def test_synthetic_command(capsys):
    assert main(["synthetic", "--steps", "5", "--updaters", "tampo", "constant"]) == 0
    assert "tampo" in capsys.readouterr().out


def test_meta_policy_by_hand_example_runs(capsys):
    runpy.run_path(str(ROOT / "examples" / "meta_policy_by_hand.py"), run_name="__main__")
    assert "step 30" in capsys.readouterr().out


@pytest.mark.slow
def test_reference_trainer_example_runs(tmp_path, monkeypatch, capsys):
    import sys

    monkeypatch.setenv("METAHP_CACHE", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["example", "--steps", "2", "--warm-steps", "5"])
    runpy.run_path(str(ROOT / "examples" / "reference_grpo_temperature.py"), run_name="__main__")
    out = capsys.readouterr().out
    assert "meta-policy now" in out and (tmp_path / "runs" / "example" / "metrics.jsonl").exists()
