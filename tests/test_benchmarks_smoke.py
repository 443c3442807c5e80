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
