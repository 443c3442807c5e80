"""The learning benchmark: statistics on hand-made numbers, the baseline controllers, and its smoke mode."""

import importlib.util
import json
import math
import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from metahp.errors import ConfigError
from metahp.lab.baselines import EntropyTarget, LinearSchedule, mean_token_entropy

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.fixture(scope="module")
def learning():
    """The command line (benchmarks/learning.py), loaded from its file; it puts benchmarks/ on sys.path so that its
    modules (learning_run, learning_stats, learning_report, learning_figures) import as they do under the script."""
    spec = importlib.util.spec_from_file_location("learning_benchmark", BENCH / "learning.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def stats(learning):
    import learning_stats

    return learning_stats


@pytest.fixture(scope="module")
def report(learning):
    import learning_report

    return learning_report


def test_mean_ci_matches_t_interval_by_hand(stats):
    # x = 1, 2, 3, 4, 5: mean 3, sd sqrt(2.5), t_{0.975, 4} = 2.776445
    mean, lo, hi = stats.mean_ci([1, 2, 3, 4, 5])
    half = 2.7764451051977987 * math.sqrt(2.5) / math.sqrt(5)
    assert mean == 3 and lo == pytest.approx(3 - half) and hi == pytest.approx(3 + half)
    assert stats.mean_ci([2.0, 2.0, 2.0]) == (2.0, 2.0, 2.0)
    m, lo, hi = stats.mean_ci([0.4])
    assert m == 0.4 and math.isnan(lo) and math.isnan(hi)


def test_ranks_best_first_ties_averaged(stats):
    assert stats.ranks({"a": 0.2, "b": 0.5, "c": 0.2, "d": 0.1}) == {"a": 2.5, "b": 1.0, "c": 2.5, "d": 4.0}


def test_paired_diff_uses_common_seeds_only(stats):
    a = {0: 0.5, 1: 0.6, 2: 0.7, 3: 0.9}
    b = {0: 0.4, 1: 0.4, 2: 0.4}
    mean, lo, hi, n = stats.paired_diff(a, b)
    assert n == 3 and mean == pytest.approx(0.2)
    assert (mean, lo, hi) == pytest.approx(stats.mean_ci([0.1, 0.2, 0.3]))


def _run(task, strategy, seed, acc, auc, k=8):
    return {"task": task, "strategy": strategy, "seed": seed, "steps": 10, "k": k, "reward_auc": auc,
            "after": {"greedy_accuracy": acc, f"pass@{k}": acc + 0.1, "pass@1": acc},
            "series": {"temperature": [1.0] * 10, "reward": [auc] * 10}, "train_s": 1.0, "eval_s": 0.1}


def test_summarize_picks_best_fixed_and_pairs_by_seed(stats, report):
    runs = []
    for seed, (lo_t, hi_t, ad) in enumerate([(0.30, 0.40, 0.45), (0.32, 0.38, 0.43), (0.28, 0.42, 0.50)]):
        runs += [_run("addition", "fixed_0.6", seed, lo_t, 0.1), _run("addition", "fixed_1", seed, hi_t, 0.2),
                 _run("addition", "tampo", seed, ad, 0.3)]
    summary = stats.summarize(runs)["addition"]
    acc = summary["greedy_accuracy"]
    assert acc["best_fixed"] == "fixed_1"
    assert acc["stats"]["tampo"]["rank"] == 1 and acc["stats"]["fixed_0.6"]["rank"] == 3
    diff = acc["stats"]["tampo"]["vs_best_fixed"]
    assert diff["pairs"] == 3 and diff["mean"] == pytest.approx(np.mean([0.05, 0.05, 0.08]))
    assert summary["fixed_spread"] == pytest.approx(0.4 - 0.3)
    assert summary["pass@k"]["stats"]["tampo"]["mean"] == pytest.approx(np.mean([0.55, 0.53, 0.60]))
    text = report.format_report({"addition": summary})
    assert "| tampo |" in text and "(best fixed)" in text


def test_zero_advantage_share_is_paired_against_best_fixed_and_the_uniform_mixture(stats, report):
    def run(strategy, seed, acc, zero):
        r = _run("rare_skill", strategy, seed, acc, 0.1)
        r["series"]["zero_advantage_groups"] = [zero + 0.01 * seed, zero - 0.01 * seed] * 5
        return r

    runs = []
    for seed in range(3):
        runs += [run("fixed_0.6", seed, 0.40, 0.80), run("fixed_1.5", seed, 0.90 + 0.01 * seed, 0.30),
                 run("rows_uniform", seed, 0.50, 0.60), run("rows_informative", seed, 0.60 + 0.02 * seed, 0.50)]
    summary = stats.summarize(runs)["rare_skill"]
    zero = summary["zero_advantage"]
    assert zero["best_fixed"] == "fixed_1.5"
    informative = zero["stats"]["rows_informative"]
    assert informative["mean"] == pytest.approx(0.50)
    assert informative["vs_best_fixed"]["mean"] == pytest.approx(0.20) and informative["vs_best_fixed"]["pairs"] == 3
    assert informative["vs_uniform"]["mean"] == pytest.approx(-0.10)
    assert "vs_uniform" not in zero["stats"]["rows_uniform"]
    acc = summary["greedy_accuracy"]["stats"]["rows_informative"]["vs_uniform"]
    assert acc["mean"] == pytest.approx(0.12) and acc["lo"] < 0.12 < acc["hi"]
    text = report.format_report({"rare_skill": summary})
    assert "| rows_informative | +0.120 [" in text and "zero-adv. share" in text
    # runs recorded before the metric existed get no zero-advantage entry (and no crash)
    for r in runs:
        del r["series"]["zero_advantage_groups"]
    assert "zero_advantage" not in stats.summarize(runs)["rare_skill"]


def test_task_steps_override_steps_per_task(learning):
    args = learning.parse_args(["--tasks", "addition", "sort", "--steps", "300", "--task-steps", "sort=200"])
    assert args.task_steps == {"sort": 200}
    from learning_run import steps_for

    assert steps_for(args, "sort") == 200 and steps_for(args, "addition") == 300
    for bad in (["--task-steps", "sort=0"], ["--task-steps", "sort"], ["--task-steps", "chess=3"],
                ["--tasks", "addition", "--task-steps", "sort=5"]):
        with pytest.raises(SystemExit):
            learning.parse_args(bad)


def test_reward_by_phase_finds_a_moving_leader(stats):
    """Hot leads the first half, cool the second: the phase table must name a different fixed leader per half."""
    def run(seed, first, second):
        return {"series": {"reward": [first + 0.01 * seed] * 10 + [second + 0.01 * seed] * 10}}

    by_strategy = {"fixed_0.6": {s: run(s, 0.1, 0.9) for s in range(3)},
                   "fixed_1.5": {s: run(s, 0.5, 0.6) for s in range(3)},
                   "tampo": {s: run(s, 0.5, 0.9) for s in range(3)}}
    phases = stats.reward_by_phase(by_strategy, phases=2)
    assert phases["fixed_leader"] == ["fixed_1.5", "fixed_0.6"]  # adaptive strategies never lead the fixed list
    assert phases["stats"]["tampo"][1]["mean"] == pytest.approx(0.91)
    assert phases["stats"]["fixed_0.6"][0]["lo"] < 0.11 < phases["stats"]["fixed_0.6"][0]["hi"]


def test_linear_schedule_endpoints_and_state():
    sched = LinearSchedule(0.9, 1.5, steps=4)
    seen = []
    for _ in range(6):
        seen.append(sched.knobs_for_next_batch()["temperature"])
        sched.after_batch(SimpleNamespace(knobs={"temperature": seen[-1]}))
    assert seen == pytest.approx([0.9, 1.1, 1.3, 1.5, 1.5, 1.5])
    other = LinearSchedule(0.9, 1.5, steps=4)
    other.load_state_dict(sched.state_dict())
    assert other.knobs_for_next_batch() == sched.knobs_for_next_batch()
    with pytest.raises(ConfigError):
        LinearSchedule(0.0, 1.0, steps=3)


def test_entropy_target_raises_temperature_when_entropy_falls():
    torch.manual_seed(0)
    logits = torch.randn(4, 5, 11)
    mask = torch.ones(4, 5)
    ctrl = EntropyTarget(target=None, start=1.0, gain=0.5, bounds=(0.5, 1.6))
    metrics = ctrl.after_batch(SimpleNamespace(logits=logits, completion_mask=mask, knobs={"temperature": 1.0}))
    assert ctrl.target == pytest.approx(mean_token_entropy(logits, mask, 1.0)) and ctrl.temperature == 1.0
    assert metrics["baseline/entropy"] == pytest.approx(ctrl.target)
    # sharper logits (lower entropy at the same T): the controller heats up, never past its bound
    for _ in range(50):
        ctrl.after_batch(SimpleNamespace(logits=3 * logits, completion_mask=mask, knobs=ctrl.knobs_for_next_batch()))
    assert ctrl.temperature == pytest.approx(1.6)
    flat = EntropyTarget(target=ctrl.target, start=1.0)
    flat.after_batch(SimpleNamespace(logits=0.2 * logits, completion_mask=mask, knobs={"temperature": 1.0}))
    assert flat.temperature < 1.0


def test_smoke_writes_runs_report_and_figures(learning, tmp_path, monkeypatch):
    monkeypatch.setenv("METAHP_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "learning"
    summary = learning.main(["--smoke", "--workers", "1", "--out", str(out)])
    runs = sorted((out / "runs").glob("*.json"))
    assert [p.name for p in runs] == ["addition__fixed_1__seed0.json", "addition__tampo__seed0.json"]
    record = json.loads(runs[1].read_text())
    assert record["steps"] == 3 and len(record["series"]["temperature"]) == 3
    assert 0.0 <= record["after"]["greedy_accuracy"] <= 1.0 and "pass@2" in record["after"]
    assert set(summary["addition"]["strategies"]) == {"fixed_1", "tampo"}
    for name in ("report.md", "summary.json", "accuracy.png", "paired.png", "temperature.png"):
        assert (out / name).stat().st_size > 0
    # resumable: a second call finds both runs saved and only rebuilds the report
    before = runs[0].stat().st_mtime_ns
    learning.main(["--smoke", "--workers", "1", "--out", str(out)])
    assert runs[0].stat().st_mtime_ns == before
    assert learning.main(["--report-only", "--out", str(out)]).keys() == {"addition"}


def test_pretrained_model_runs_without_a_warm_start(learning, tmp_path, monkeypatch):
    """--model <folder> (the path SmolLM2 takes): the model is used as saved, with the given learning rate and
    completion length; nothing is warm-started or cached."""
    from metahp.lab.models import load_model, save

    monkeypatch.setenv("METAHP_CACHE", str(tmp_path / "cache"))
    model, tokenizer = load_model("tiny", seed=3)
    save(model, tokenizer, tmp_path / "pretrained")
    out = tmp_path / "learning"
    learning.main(["--smoke", "--workers", "1", "--out", str(out), "--model", str(tmp_path / "pretrained"),
                   "--learning-rate", "3e-5", "--max-completion-tokens", "2"])
    record = json.loads((out / "runs" / "addition__tampo__seed0.json").read_text())
    assert record["model"] == str(tmp_path / "pretrained")
    assert record["learning_rate"] == 3e-5 and record["max_completion_tokens"] == 2
    warm = json.loads((out / "warm" / "addition__seed0.json").read_text())
    assert warm["warm_start"]["warm_start"] is None
    assert not (tmp_path / "cache").exists()  # no warm start was built


# reports committed before eef034c reworded one line per task; everything else must match byte for byte
@pytest.mark.parametrize("folder", ["smollm2", "moving_optimum", "per_completion_tuning",
                                    pytest.param("learning", marks=pytest.mark.slow),
                                    pytest.param("per_completion", marks=pytest.mark.slow), "per_prompt"])
def test_report_only_reproduces_the_committed_report(learning, folder, tmp_path, capsys):
    """--report-only on a copy of the committed runs rebuilds the committed report.md and summary.json byte for byte
    (the same statistics, formatting and order) and all four figures."""
    committed = BENCH / "results" / folder
    out = tmp_path / folder
    for sub in ("runs", "warm"):
        shutil.copytree(committed / sub, out / sub)
    learning.main(["--report-only", "--out", str(out)])
    assert (out / "report.md").read_bytes() == (committed / "report.md").read_bytes()
    assert (out / "summary.json").read_bytes() == (committed / "summary.json").read_bytes()
    for name in ("accuracy.png", "paired.png", "temperature.png", "reward.png"):
        assert (out / name).stat().st_size > 0

def test_cost_grid_smoke_no_candidate_sized_allocation(tmp_path, monkeypatch):
    monkeypatch.setenv("METAHP_CACHE", str(tmp_path / "cache"))
    spec = importlib.util.spec_from_file_location("cost_grid", BENCH / "cost_grid.py")
    cost_grid = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(cost_grid)
    result = cost_grid.main(["--smoke", "--out", str(tmp_path / "cost.json")])
    assert json.loads((tmp_path / "cost.json").read_text()) == result
    rows = result["likelihoods"]
    assert {(r["V"], r["K"]) for r in rows} == {(64, 2), (64, 4), (512, 2), (512, 4)}
    # peak memory does not grow with K: one [tokens, V] buffer, never [B, L, V, K]
    for v in (64, 512):
        peaks = [r["peak_mib"] for r in rows if r["V"] == v]
        assert max(peaks) <= 1.2 * min(peaks) and all(r["peak_over_logits"] < 4 for r in rows if r["V"] == v)
    assert all(0 < r["share"] < 1 for r in result["trainer"])


def test_per_completion_strategies_run_and_record_their_mixture(learning, tmp_path, monkeypatch):
    """The issue-13 strategies (one temperature per completion over the fixed grid) run end to end: uniform mixture
    and learned, each signal; the record keeps the mean temperature and the zero-advantage share per step."""
    import dataclasses

    import learning_run

    monkeypatch.setenv("METAHP_CACHE", str(tmp_path / "cache"))
    args = dataclasses.replace(learning.smoke_sized(learning.parse_args(["--out", str(tmp_path / "out")])),
                               num_generations=5)
    learning_run.prepare(args, "addition", 0)
    for name in ("rows_uniform", "rows_informative", "rows_advantage", "rows_likelihood"):
        learning_run.run_one(args, "addition", 0, name)
        record = json.loads((tmp_path / "out" / "runs" / f"addition__{name}__seed0.json").read_text())
        temps = record["series"]["temperature"]
        assert len(temps) == 3 and all(0.6 <= t <= 1.5 for t in temps)
        assert all(0.0 <= z <= 1.0 for z in record["series"]["zero_advantage_groups"])
        if name == "rows_uniform":  # 5 completions per group over 5 values: each value once, mean 1.02
            assert temps == pytest.approx([1.02] * 3)
    # per prompt, on a fixed training set (prompts recur): ERPO's rule and the learned policy per pass-rate bucket
    args = dataclasses.replace(args, train_set_size=6)
    for name in ("prompt_erpo", "prompt_informative"):
        learning_run.run_one(args, "addition", 0, name)
        record = json.loads((tmp_path / "out" / "runs" / f"addition__{name}__seed0.json").read_text())
        assert record["train_set_size"] == 6 and len(record["series"]["temperature"]) == 3
    buckets = record["series"]["buckets"]  # prompt_informative: each bucket's policy and share of groups per step
    assert set(buckets) == {"unseen", "none_correct", "few_correct", "most_correct", "all_correct"}
    assert [sum(b["groups"][i] for b in buckets.values()) for i in range(3)] == pytest.approx([1.0] * 3)
    assert buckets["unseen"]["groups"][0] == 1.0  # step 1: no prompt has a history yet
    assert all(t is None or 0.6 <= t <= 1.5 for b in buckets.values() for t in b["temperature_mean"])
    learning.main(["--report-only", "--out", str(tmp_path / "out")])
    assert (tmp_path / "out" / "buckets.png").stat().st_size > 0 and (tmp_path / "out" / "zero_advantage.png").exists()


def test_the_paired_table_reports_on_the_seeds_every_arm_finished_against_each_named_baseline(tmp_path, learning):
    spec = importlib.util.spec_from_file_location("paired_table", BENCH / "paired_table.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    runs_dir = tmp_path / "runs"
    runs_dir.mkdir()
    accs = {"fixed_0.6": [0.5, 0.6, 0.7], "fixed_1.5": [0.2, 0.3, 0.4], "fixed_1": [0.4, 0.4, 0.4],
            "exp3": [0.55, 0.65, 0.75]}
    for strategy, values in accs.items():
        for seed, acc in enumerate(values):
            if strategy == "exp3" and seed == 2:
                continue  # an unfinished arm: seed 2 is left out of every comparison
            (runs_dir / f"mixed__{strategy}__seed{seed}.json").write_text(json.dumps(_run("mixed", strategy, seed,
                                                                                           acc, 0.1)))
    text = module.main([str(tmp_path), "--task", "mixed", "--strategies", "exp3", "--against", "best_fixed",
                        "fixed_1"])
    assert "seeds 0-1 (2;" in text and "vs best fixed (0.6)" in text
    exp3 = next(line for line in text.splitlines() if line.startswith("| exp3 "))
    assert "| 0.600 [" in exp3 and "+0.050 [+0.050, +0.050] *" in exp3 and "+0.200 [" in exp3
    named = module.main([str(tmp_path), "--task", "mixed", "--strategies", "fixed_1", "exp3"])
    assert sum(line.startswith("| fixed_1 ") for line in named.splitlines()) == 1  # a fixed arm named: one row


def test_the_paired_table_means_over_tasks_per_seed_with_each_tasks_own_best_fixed_arm(tmp_path, learning):
    """Learning-rate arms (issue 21) are fixed arms by their prefix; the mean over tasks pairs per seed against each
    task's own hindsight-best fixed arm."""
    spec = importlib.util.spec_from_file_location("paired_table", BENCH / "paired_table.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    (tmp_path / "runs").mkdir()
    accs = {"addition": {"lr_x0.25": [0.1, 0.2], "lr_x1": [0.3, 0.4], "lr_exp3": [0.3, 0.5]},
            "sort": {"lr_x0.25": [0.6, 0.7], "lr_x1": [0.2, 0.3], "lr_exp3": [0.5, 0.7]}}
    for task, arms in accs.items():
        for strategy, values in arms.items():
            for seed, acc in enumerate(values):
                (tmp_path / "runs" / f"{task}__{strategy}__seed{seed}.json").write_text(
                    json.dumps(_run(task, strategy, seed, acc, 0.1)))
    text = module.main([str(tmp_path), "--task", "addition", "sort", "--strategies", "lr_exp3", "--against",
                        "best_fixed", "lr_x1", "--fixed-prefix", "lr_x"])
    assert "vs best fixed (1)" in text and "vs best fixed (0.25)" in text
    mean = text.split("mean over 2 tasks")[1]
    row = next(line for line in mean.splitlines() if line.startswith("| lr_exp3 "))
    # per seed: ((0.3-0.3) + (0.5-0.6)) / 2 = -0.05 and ((0.5-0.4) + (0.7-0.7)) / 2 = +0.05 against each best;
    # against lr_x1: (0 + 0.3) / 2 = 0.15 and (0.1 + 0.4) / 2 = 0.25
    assert "| +0.000 [" in row and "| +0.200 [" in row
    with pytest.raises(SystemExit, match="no fixed arm named fixed_"):
        module.main([str(tmp_path), "--task", "addition", "--strategies", "lr_exp3"])


def test_learning_rate_strategies_set_the_learning_rate_knob_over_the_sweeps_multipliers(learning):
    import learning_run

    strategies = learning_run.STRATEGIES
    fixed = [s for s in strategies.values() if s.knob == "learning_rate" and s.kind == "fixed"]
    assert sorted(s.value for s in fixed) == sorted(learning_run.LR_MULTIPLIERS)
    for name in ("lr_exp3", "lr_uniform", "lr_alignment", "lr_update"):
        assert strategies[name].knob == "learning_rate"
        assert strategies[name].options["values"] == list(learning_run.LR_MULTIPLIERS)
    assert strategies["lr_alignment"].options["reward"] == "gradient_alignment"
    assert strategies["lr_update"].options["reward"] == "update_alignment"
    hyperparameter_arms = ("lr_", "beta_", "eps_", "epsh_")
    assert all(s.knob == "temperature" for n, s in strategies.items() if not n.startswith(hyperparameter_arms))


def test_beta_strategies_start_with_a_reference_model_and_adapt_over_the_sweep(learning, tmp_path):
    import learning_run

    strategies = learning_run.STRATEGIES
    assert sorted(s.value for s in strategies.values() if s.knob == "beta" and s.kind == "fixed") == sorted(
        learning_run.BETAS)
    for name in ("beta_exp3", "beta_uniform", "beta_kl_target"):
        assert strategies[name].trainer["kl_beta"] > 0  # beta adapted needs the reference model from the start
        assert strategies[name].options["values"] == list(learning_run.BETAS)
    spec = importlib.util.spec_from_file_location("paired_table", BENCH / "paired_table.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.is_fixed("beta_0.04", "beta_") and not module.is_fixed("beta_exp3", "beta_")


def test_epsilon_strategies_set_the_clip_range_and_record_the_clipped_share(learning, tmp_path, monkeypatch):
    """The clip-range arms (issue 21): the fixed ones set the reference trainer's clip_eps, the adapted ones draw
    over the same sweep, and every record keeps the share the loss clipped per step (None: no update that step)."""
    import dataclasses

    import learning_run

    strategies = learning_run.STRATEGIES
    assert sorted(s.value for s in strategies.values() if s.knob == "epsilon" and s.kind == "fixed") == sorted(
        learning_run.EPSILONS)
    assert strategies["eps_clip_target"].options["reward"] == "clip_target"
    monkeypatch.setenv("METAHP_CACHE", str(tmp_path / "cache"))
    args = learning.smoke_sized(learning.parse_args(["--out", str(tmp_path / "out")]))
    args = dataclasses.replace(args, steps=4)
    learning_run.prepare(args, "reverse", 0)
    seen = []
    from metahp.lab import grpo

    class Recording(grpo.GRPOTrainer):
        def __init__(self, *a, **k):
            super().__init__(*a, **k)
            seen.append(self.config.clip_eps)

    monkeypatch.setattr(grpo, "GRPOTrainer", Recording)
    for name in ("eps_0.4", "eps_clip_target"):
        learning_run.run_one(args, "reverse", 0, name)
        record = json.loads((tmp_path / "out" / "runs" / f"reverse__{name}__seed0.json").read_text())
        shares = record["series"]["clip_fraction"]
        assert len(shares) == 4 and all(f is None or 0.0 <= f <= 1.0 for f in shares)
        assert len(record["series"]["kl"]) == 4
    assert seen == [0.4, 0.2]  # the fixed arm's clip range; the adapted one starts from the default
    assert set(record["series"]["epsilon"]) <= set(learning_run.EPSILONS)


def test_epsilon_high_strategies_set_the_upper_clip_bound_with_epsilon_at_its_default(learning, tmp_path, monkeypatch):
    """The clip-higher arms (issue 21): the fixed ones set clip_eps_high with clip_eps left at 0.2, the adapted ones
    draw the upper bound over the same sweep and record it per step."""
    import dataclasses

    import learning_run

    strategies = learning_run.STRATEGIES
    assert sorted(s.value for s in strategies.values() if s.knob == "epsilon_high" and s.kind == "fixed") == sorted(
        learning_run.EPSILONS_HIGH)
    monkeypatch.setenv("METAHP_CACHE", str(tmp_path / "cache"))
    args = dataclasses.replace(learning.smoke_sized(learning.parse_args(["--out", str(tmp_path / "out")])), steps=3)
    learning_run.prepare(args, "reverse", 0)
    seen = []
    from metahp.lab import grpo

    class Recording(grpo.GRPOTrainer):
        def __init__(self, *a, **k):
            super().__init__(*a, **k)
            seen.append((self.config.clip_eps, self.config.clip_eps_high))

    monkeypatch.setattr(grpo, "GRPOTrainer", Recording)
    for name in ("epsh_0.28", "epsh_clip_target"):
        learning_run.run_one(args, "reverse", 0, name)
    record = json.loads((tmp_path / "out" / "runs" / "reverse__epsh_clip_target__seed0.json").read_text())
    assert seen == [(0.2, 0.28), (0.2, None)]  # the fixed arm's upper bound; the adapted one starts symmetric
    assert len(record["series"]["epsilon_high"]) == 3
    assert set(record["series"]["epsilon_high"]) <= set(learning_run.EPSILONS_HIGH)
