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
