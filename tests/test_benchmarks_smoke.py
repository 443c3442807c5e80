"""Benchmarks stay runnable: their smoke modes run here (the full runs are documented in docs/)."""

import importlib.util
from pathlib import Path

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"


def load(name):
    spec = importlib.util.spec_from_file_location(name, BENCH / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_likelihood_cost_smoke():
    result = load("likelihood_cost").main(["--smoke"])
    assert result["forward_s"] > 0 and result["sequence_logprobs_s"] > 0 and result["ratio"] > 0


def test_trl_overhead_smoke():
    rows = load("trl_overhead").main(["--smoke"])
    with_metahp = [r for flag, r in rows if flag]
    assert len(rows) == 2 and 0 < with_metahp[0]["share"] < 1


def test_knob_cost_in_step_smoke():
    result = load("knob_cost_in_step").main(["--smoke"])
    assert set(result["knobs"]) == {"temperature", "top_p", "top_k", "min_p"}
    assert all(0 < k["share_of_step"] for k in result["knobs"].values())


def test_moving_optimum_probe_smoke(tmp_path, monkeypatch):
    monkeypatch.setenv("METAHP_CACHE", str(tmp_path))
    module = load("moving_optimum_probe")
    results = module.main(["--smoke"])
    assert [r["temperature"] for r in results] == [0.6, 1.4] and len(results[0]["curve"]) == 3
    task = module.CarryAddition(2, 0, with_carry=False)
    assert not any(module.carries(*map(int, p.prompt[:-1].split("+"))) for p in task.sample_prompts(50, 0))
    assert module.carries(15, 7) and not module.carries(12, 7)


def test_per_row_cost_smoke():
    result = load("per_row_cost").main(["--smoke"])
    # values per completion need no forward pass beyond the loss's epochs (2 per step by default; 0 when a batch has
    # no advantage to learn from), like one value per batch
    counts = result["forwards_outside_generation_per_step"]
    assert set(counts["per_batch"]) <= {0, 2} and set(counts["per_completion"]) <= {0, 2}
    assert result["per_completion_over_per_batch"] > 0


def test_lr_probe_uses_the_tuning_seeds_only(monkeypatch):
    import sys

    import pytest

    spec = importlib.util.spec_from_file_location("lr_probe", BENCH / "lr_probe.py")
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "lr_probe", module)  # its dataclass looks its module up there
    spec.loader.exec_module(module)
    with pytest.raises(SystemExit, match="tuning seeds 10-14"):
        module.main(module.Args(seeds=[0, 10]))


def test_trl_smollm2_smoke_runs_the_real_trl_trainer_and_writes_learning_run_records(tmp_path):
    # The tiny model stands in for SmolLM2 (the smoke checks the path, not the numbers): TRL's GRPOTrainer, a fixed
    # temperature through GRPOConfig and exp3 through metahp.adapt, records the learning report reads.
    import json

    summary = load("trl_smollm2").main(["--smoke", "--model", "tiny", "--workers", "1", "--out", str(tmp_path)])
    runs = {p.name: json.loads(p.read_text()) for p in (tmp_path / "runs").glob("*.json")}
    assert set(runs) == {"word_arithmetic__fixed_1__seed1.json", "word_arithmetic__exp3__seed1.json"}
    fixed, exp3 = runs["word_arithmetic__fixed_1__seed1.json"], runs["word_arithmetic__exp3__seed1.json"]
    assert fixed["trainer"] == "trl" and fixed["series"]["temperature"] == [1.0, 1.0]
    assert len(exp3["series"]["temperature"]) == 2 and len(exp3["series"]["reward"]) == 2
    assert all(0.6 <= t <= 1.5 for t in exp3["series"]["temperature"])  # exp3's default grid, drawn by metahp
    assert 0.0 <= exp3["after"]["greedy_accuracy"] <= 1.0 and "pass@2" in exp3["after"]
    assert set(summary["word_arithmetic"]["strategies"]) == {"fixed_1", "exp3"}
    assert (tmp_path / "report.md").is_file()
