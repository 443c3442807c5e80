"""The signal study (benchmarks/signal_study.py): the committed report is rebuilt from the committed runs, and its
rank agreement, picks and regrets are right on synthetic runs whose answer is known."""

import json

import numpy as np
import pytest
from benchmark_module import BENCH, load_benchmark

COMMITTED = BENCH / "results" / "signal_study"
TEMPS = (0.6, 0.8, 1.0, 1.2, 1.5)


@pytest.fixture(scope="module")
def study():
    return load_benchmark("signal_study")


def test_the_committed_report_is_rebuilt_from_the_committed_runs(study, tmp_path):
    """The default run folders (the committed fixed-temperature runs) give report.md and signal_study.json byte for
    byte, and a figure."""
    study.main(["--output", str(tmp_path)])
    assert (tmp_path / "report.md").read_bytes() == (COMMITTED / "report.md").read_bytes()
    assert (tmp_path / "signal_study.json").read_bytes() == (COMMITTED / "signal_study.json").read_bytes()
    assert (tmp_path / "signal_study.png").stat().st_size > 0
    result = json.loads((COMMITTED / "signal_study.json").read_text())
    assert [c["label"] for c in result["cohorts"]] == ["seeds 0-9", "seeds 10-14"]
    assert list(result["cohorts"][0]["tasks"]) == ["addition", "countdown", "reverse", "sort", "rare_skill"]


def _run(accuracy: float, t: float, seed: int, steps: int = 20) -> dict:
    """A fixed-temperature run whose training reward rises with its final accuracy (p < 1/2, so the counterfactual
    does too), whose entropy falls with it, whose zero-advantage share is the same at every T (no ranking) and whose
    reward is flat over the steps (slope 0 everywhere: no ranking either)."""
    p = 0.1 + 0.3 * accuracy
    return {"task": "synthetic", "strategy": f"fixed_{t:g}", "seed": seed, "steps": steps, "num_generations": 8,
            "after": {"greedy_accuracy": accuracy},
            "series": {"reward": [p] * steps, "entropy": [2.0 - accuracy] * steps,
                       "zero_advantage_groups": [0.5] * steps, "temperature": [t] * steps}}


def _synthetic(accuracy: dict[float, list[float]]) -> dict:
    return {t: {seed: _run(a, t, seed) for seed, a in enumerate(values)} for t, values in accuracy.items()}


def test_known_rankings_give_rho_one_minus_one_and_constant(study):
    # the best T is 0.8; seed 1 swaps the two worst temperatures
    accuracy = {0.6: [0.5, 0.5], 0.8: [0.9, 0.9], 1.0: [0.7, 0.7], 1.2: [0.3, 0.15], 1.5: [0.1, 0.2]}
    entry = study.study_task(_synthetic(accuracy), windows=(0.1, 1.0))
    assert entry["accuracy"]["best_fixed"] == 0.8
    window = entry["windows"]["first 10%"]
    assert window["steps"] == 2  # at least two steps, for the slope
    sig = window["signals"]
    for name in ("reward", "counterfactual"):  # the accuracy's own ranking
        assert sig[name]["rho"] == pytest.approx(1.0)
        assert sig[name]["p_value"] == pytest.approx(1 / 120)
        assert sig[name]["pick"] == [0.8] and sig[name]["regret"] == pytest.approx(0.0)
        # seed 1 ranks 1.2 and 1.5 the other way round: one swap of neighbours among five is 0.9
        assert sig[name]["per_seed_rho"]["values"] == pytest.approx([1.0, 0.9])
        assert sig[name]["per_seed_regret"]["mean"] == pytest.approx(0.0)
    assert sig["entropy"]["rho"] == pytest.approx(-1.0)
    assert sig["entropy"]["p_value"] == pytest.approx(1.0)
    assert sig["entropy"]["pick"] == [1.5]  # the highest entropy is at the worst mean accuracy
    assert sig["entropy"]["regret"] == pytest.approx(0.15 - 0.9)
    assert sig["entropy"]["per_seed_regret"]["mean"] == pytest.approx(np.mean([0.1 - 0.9, 0.15 - 0.9]))
    for name in ("informativeness", "reward_slope"):  # the same at every T: no ranking, no single pick
        assert sig[name]["rho"] is None and sig[name]["p_value"] is None
        assert sig[name]["per_seed_rho"]["constant"] == 2 and sig[name]["per_seed_rho"]["mean"] is None
        assert sig[name]["pick"] == list(TEMPS)  # all tied: the regret is the mean over the grid
        assert sig[name]["regret"] == pytest.approx(np.mean([0.5, 0.9, 0.7, 0.225, 0.15]) - 0.9)


def test_the_report_says_constant_instead_of_nan(study):
    accuracy = {t: [a] for t, a in zip(TEMPS, (0.1, 0.2, 0.3, 0.4, 0.5), strict=True)}
    result = {"signals": list(study.SIGNALS), "windows": ["first 10%", "whole run"],
              "cohorts": [{"folder": "synthetic", "label": "seeds 0-0",
                           "tasks": {"synthetic": study.study_task(_synthetic(accuracy), windows=(0.1, 1.0))}}]}
    text = study.format_report(study.rounded(result), "python benchmarks/signal_study.py --runs synthetic")
    assert "| synthetic | informativeness | n/a (constant); seeds n/a (constant) |" in text
    assert "| synthetic | reward | +1.00 (p 0.01); seeds +1.00 [+1.00, +1.00] |" in text
    assert "nan" not in text.lower()
    json.dumps(study.rounded(result), allow_nan=False)  # no NaN reaches the JSON either


def test_counterfactual_and_slope(study):
    assert study.counterfactual_informativeness(0.5, 2) == pytest.approx(0.5)
    assert study.counterfactual_informativeness(0.0, 8) == 0.0 and study.counterfactual_informativeness(1.0, 8) == 0.0
    assert study.slope([1.0, 3.0, 5.0]) == pytest.approx(2.0)
    assert study.window_steps(300, 0.1) == 30 and study.window_steps(150, 0.2) == 30 and study.window_steps(5, 0.1) == 2
