"""What a sweep's pick is worth on a new run (benchmarks/sweep_pick.py): the committed report is rebuilt from the
committed runs, and each baseline is right on small sweeps whose answer is worked out by hand."""

import json

import pytest
from benchmark_module import BENCH, load_benchmark

COMMITTED = BENCH / "results" / "sweep_pick"


@pytest.fixture(scope="module")
def sweep_pick():
    return load_benchmark("sweep_pick")


def test_the_committed_report_is_rebuilt_from_the_committed_runs(sweep_pick, tmp_path):
    sweep_pick.main(["--output", str(tmp_path)])
    assert (tmp_path / "report.md").read_bytes() == (COMMITTED / "report.md").read_bytes()
    assert (tmp_path / "sweep_pick.json").read_bytes() == (COMMITTED / "sweep_pick.json").read_bytes()
    assert (tmp_path / "sweep_pick.png").stat().st_size > 0
    result = json.loads((COMMITTED / "sweep_pick.json").read_text())
    assert [c["label"] for c in result] == ["reporting seeds 0-9", "tuning seeds 10-14",
                                                 "fresh seeds 15-24, confirmation run"]
    assert list(result[0]["tasks"]) == ["addition", "countdown", "reverse", "sort", "rare_skill"]


def test_each_baseline_on_a_sweep_worked_out_by_hand(sweep_pick):
    # seed:      0    1    2
    # T 0.6:   0.5  0.1  0.4      mean 0.333
    # T 1.0:   0.2  0.6  0.5      mean 0.433  <- the oracle
    fixed = {0.6: {0: 0.5, 1: 0.1, 2: 0.4}, 1.0: {0: 0.2, 1: 0.6, 2: 0.5}}
    out = sweep_pick.sweep_baselines(fixed)
    v = out["values"]
    assert out["picks"]["oracle"] == [1.0]
    assert v["oracle"] == {0: 0.2, 1: 0.6, 2: 0.5}
    # without seed 0, 1.0 leads (0.55 against 0.25); without seed 1, 0.6 leads (0.45 against 0.35); without seed 2,
    # 1.0 leads (0.4 against 0.3)
    assert v["other_seeds"] == {0: 0.2, 1: 0.1, 2: 0.5}
    # seed 0 alone picks 0.6, seed 1 picks 1.0, seed 2 picks 1.0; seed 0's new-run value averages the picks of seeds
    # 1 and 2 scored on seed 0: (0.2 + 0.2) / 2
    assert v["one_seed"] == pytest.approx({0: 0.2, 1: (0.1 + 0.6) / 2, 2: (0.4 + 0.5) / 2})
    assert v["best_run"] == {0: 0.5, 1: 0.6, 2: 0.5}


def test_a_tie_on_one_seed_counts_each_tied_value_equally(sweep_pick):
    fixed = {0.6: {0: 0.5, 1: 0.2}, 1.0: {0: 0.5, 1: 0.8}}
    out = sweep_pick.sweep_baselines(fixed)
    assert out["picks"]["one_seed"][0] == [0.6, 1.0]
    assert out["values"]["one_seed"][1] == pytest.approx((0.2 + 0.8) / 2)  # seed 0's tie, scored on seed 1
    assert out["values"]["one_seed"][0] == pytest.approx(0.5)  # seed 1 picks 1.0, scored on seed 0


def test_one_seed_is_refused_with_a_message(sweep_pick):
    with pytest.raises(ValueError, match="at least two seeds"):
        sweep_pick.sweep_baselines({0.6: {0: 0.5}, 1.0: {0: 0.4}})


def test_a_strategy_missing_from_the_runs_is_named(sweep_pick):
    runs = [{"task": "t", "strategy": f"fixed_{t:g}", "seed": s, "after": {"greedy_accuracy": 0.1 * s}}
            for t in (0.6, 1.0) for s in (0, 1)]
    with pytest.raises(SystemExit, match="no runs of \\['exp3'\\]"):
        sweep_pick.study_task(runs, "t", ["exp3"])
