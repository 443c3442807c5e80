"""The paired comparisons a protocol names, as one markdown table, from a learning benchmark's run records.

    .venv/bin/python benchmarks/paired_table.py benchmarks/results/mixed --task mixed \
        --strategies prompt_family rows_informative_lr0.25 exp3 --against best_fixed fixed_1 rows_uniform exp3

Each cell is the strategy minus the baseline on held-out greedy accuracy (or ``--metric``), paired by seed, with
its 95% t-interval over the seeds both have; ``*`` marks an interval that excludes 0. ``best_fixed`` is the fixed
temperature with the best mean on these runs (hindsight, which favours it). With ``--by-instruction``, a second
table gives each strategy's mean accuracy per instruction (prompt family), for tasks that record it.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from learning_report import load_runs  # noqa: E402
from learning_stats import mean_ci, metric_value, paired_diff  # noqa: E402


def values_by_strategy(runs: list[dict], task: str, metric: str) -> dict[str, dict[int, float]]:
    out: dict[str, dict[int, float]] = {}
    for r in runs:
        if r["task"] == task:
            out.setdefault(r["strategy"], {})[r["seed"]] = metric_value(r, metric)
    return out


def complete_seeds(values: dict[str, dict[int, float]], strategies: list[str]) -> list[int]:
    """The seeds every named strategy finished (the protocol reports on those)."""
    sets = [set(values.get(s, {})) for s in strategies]
    return sorted(set.intersection(*sets)) if sets else []


def table(runs: list[dict], task: str, strategies: list[str], against: list[str], metric: str) -> str:
    values = values_by_strategy(runs, task, metric)
    fixed = [s for s in values if s.startswith("fixed_")]
    seeds = complete_seeds(values, [*fixed, *strategies, *[a for a in against if a != "best_fixed"]])
    if not seeds:
        raise SystemExit(f"no seed has every arm of {task}: {sorted(values)}")
    values = {s: {seed: v for seed, v in vs.items() if seed in seeds} for s, vs in values.items()}
    means = {s: sum(v.values()) / len(v) for s, v in values.items() if v}
    best = max(fixed, key=lambda s: means[s])
    names = {"best_fixed": f"best fixed ({best.removeprefix('fixed_')})"}
    lines = [f"{task}, {metric}, seeds {seeds[0]}-{seeds[-1]} ({len(seeds)}; every arm finished them)", "",
             "| strategy | mean [95% CI] | " + " | ".join(f"vs {names.get(a, a)}" for a in against) + " |",
             "|---|---|" + "---|" * len(against)]
    for s in [*sorted(fixed, key=lambda f: float(f.removeprefix("fixed_"))), *strategies]:
        m, lo, hi = mean_ci(list(values[s].values()))
        cells = []
        for a in against:
            base = best if a == "best_fixed" else a
            if base == s:
                cells.append("-")
                continue
            d, dlo, dhi, _ = paired_diff(values[s], values[base])
            cells.append(f"{d:+.3f} [{dlo:+.3f}, {dhi:+.3f}]{' *' if dlo > 0 or dhi < 0 else ''}")
        lines.append(f"| {s} | {m:.3f} [{lo:.3f}, {hi:.3f}] | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def by_instruction(runs: list[dict], task: str, strategies: list[str]) -> str:
    kinds = sorted({k for r in runs if r["task"] == task for k in r["after"].get("greedy_by_instruction", {})})
    if not kinds:
        return ""
    rows = ["| strategy | " + " | ".join(kinds) + " |", "|---|" + "---|" * len(kinds)]
    for s in strategies:
        per = [r["after"]["greedy_by_instruction"] for r in runs if r["task"] == task and r["strategy"] == s]
        if per:
            rows.append(f"| {s} | " + " | ".join(f"{sum(p[k] for p in per) / len(per):.3f}" for k in kinds) + " |")
    return "\n".join(rows)


def main(argv=None) -> str:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", type=Path, help="a results folder with runs/")
    parser.add_argument("--task", required=True)
    parser.add_argument("--strategies", nargs="+", required=True, help="the strategies compared (rows)")
    parser.add_argument("--against", nargs="+", default=["best_fixed", "fixed_1"],
                        help="baselines (columns): best_fixed or strategy names")
    parser.add_argument("--metric", default="greedy_accuracy", help="greedy_accuracy, pass@k or reward_auc")
    parser.add_argument("--by-instruction", action="store_true")
    args = parser.parse_args(argv)
    runs = load_runs(args.out)
    text = table(runs, args.task, args.strategies, args.against, args.metric)
    if args.by_instruction:
        strategies = sorted({r["strategy"] for r in runs if r["task"] == args.task and r["strategy"].startswith(
            "fixed_")}, key=lambda f: float(f.removeprefix("fixed_"))) + args.strategies
        text += "\n\nHeld-out greedy accuracy per instruction (prompt family), mean over seeds:\n\n" + by_instruction(
            runs, args.task, strategies)
    print(text)
    return text


if __name__ == "__main__":
    main()
