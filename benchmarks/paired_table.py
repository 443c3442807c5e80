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


def is_fixed(strategy: str, prefix: str) -> bool:
    """A fixed arm: ``<prefix><number>`` (``beta_0.04`` is one, ``beta_exp3`` is not)."""
    if not strategy.startswith(prefix):
        return False
    try:
        float(strategy[len(prefix):])
    except ValueError:
        return False
    return True


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


def _cell(d: float, lo: float, hi: float) -> str:
    return f"{d:+.3f} [{lo:+.3f}, {hi:+.3f}]{' *' if lo > 0 or hi < 0 else ''}"


def paired(runs: list[dict], task: str, strategies: list[str], against: list[str], metric: str,
           fixed_prefix: str = "fixed_") -> tuple[list[int], str, dict[str, dict[int, float]]]:
    """(the seeds every arm of ``task`` finished, the hindsight-best fixed arm, each arm's value by seed on them).
    Fixed arms are the strategies named ``<fixed_prefix><value>``."""
    values = values_by_strategy(runs, task, metric)
    fixed = [s for s in values if is_fixed(s, fixed_prefix)]
    if not fixed:
        raise SystemExit(f"{task} has no fixed arm named {fixed_prefix}<value>: {sorted(values)}")
    seeds = complete_seeds(values, [*fixed, *strategies, *[a for a in against if a != "best_fixed"]])
    if not seeds:
        raise SystemExit(f"no seed has every arm of {task}: {sorted(values)}")
    values = {s: {seed: v for seed, v in vs.items() if seed in seeds} for s, vs in values.items()}
    means = {s: sum(v.values()) / len(v) for s, v in values.items() if v}
    return seeds, max(fixed, key=lambda s: means[s]), values


def table(runs: list[dict], task: str, strategies: list[str], against: list[str], metric: str,
          fixed_prefix: str = "fixed_") -> str:
    seeds, best, values = paired(runs, task, strategies, against, metric, fixed_prefix)
    fixed = [s for s in values if is_fixed(s, fixed_prefix)]
    names = {"best_fixed": f"best fixed ({best.removeprefix(fixed_prefix)})"}
    lines = [f"{task}, {metric}, seeds {seeds[0]}-{seeds[-1]} ({len(seeds)}; every arm finished them)", "",
             "| strategy | mean [95% CI] | " + " | ".join(f"vs {names.get(a, a)}" for a in against) + " |",
             "|---|---|" + "---|" * len(against)]
    ordered = sorted(fixed, key=lambda f: float(f.removeprefix(fixed_prefix)))
    for s in [*ordered, *[s for s in strategies if s not in ordered]]:  # a fixed arm named in --strategies: once
        m, lo, hi = mean_ci(list(values[s].values()))
        cells = []
        for a in against:
            base = best if a == "best_fixed" else a
            cells.append("-" if base == s else _cell(*paired_diff(values[s], values[base])[:3]))
        lines.append(f"| {s} | {m:.3f} [{lo:.3f}, {hi:.3f}] | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def mean_over_tasks(runs: list[dict], tasks: list[str], strategies: list[str], against: list[str], metric: str,
                    fixed_prefix: str = "fixed_") -> str:
    """Per seed, the mean over ``tasks`` of strategy minus baseline (best_fixed: each task's own), then the 95%
    t-interval over the seeds every arm of every task finished."""
    per_task = {t: paired(runs, t, strategies, against, metric, fixed_prefix) for t in tasks}
    seeds = sorted(set.intersection(*(set(s) for s, _, _ in per_task.values())))
    if not seeds:
        raise SystemExit(f"no seed has every arm of every task {tasks}")
    lines = [f"mean over {len(tasks)} tasks ({', '.join(tasks)}), {metric}, per seed, seeds {seeds[0]}-{seeds[-1]} "
             f"({len(seeds)})", "", "| strategy | " + " | ".join(f"vs {a}" for a in against) + " |",
             "|---|" + "---|" * len(against)]
    for s in strategies:
        cells = []
        for a in against:
            if a == s:
                cells.append("-")
                continue
            diffs = []
            for seed in seeds:
                per_seed = []
                for _, best, values in per_task.values():
                    base = best if a == "best_fixed" else a
                    per_seed.append(values[s][seed] - values[base][seed])
                diffs.append(sum(per_seed) / len(per_seed))
            cells.append(_cell(*mean_ci(diffs)))
        lines.append(f"| {s} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def by_instruction(runs: list[dict], task: str, strategies: list[str], seeds: list[int] | None = None) -> str:
    """Each strategy's mean accuracy per instruction, over ``seeds`` (the seeds of the paired table) or all."""
    if seeds is not None:
        runs = [r for r in runs if r["seed"] in seeds]
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
    parser.add_argument("--task", nargs="+", required=True, help="one task, or several: a table each, then the mean")
    parser.add_argument("--strategies", nargs="+", required=True, help="the strategies compared (rows)")
    parser.add_argument("--against", nargs="+", default=["best_fixed", "fixed_1"],
                        help="baselines (columns): best_fixed or strategy names")
    parser.add_argument("--metric", default="greedy_accuracy", help="greedy_accuracy, pass@k or reward_auc")
    parser.add_argument("--fixed-prefix", default="fixed_",
                        help="the fixed arms' name prefix: fixed_ (temperatures), lr_x (learning-rate multipliers)")
    parser.add_argument("--by-instruction", action="store_true")
    args = parser.parse_args(argv)
    runs = load_runs(args.out)
    pre = args.fixed_prefix
    parts = [table(runs, task, args.strategies, args.against, args.metric, pre) for task in args.task]
    if len(args.task) > 1:
        parts.append(mean_over_tasks(runs, args.task, args.strategies, args.against, args.metric, pre))
    text = "\n\n".join(parts)
    if args.by_instruction:
        for task in args.task:
            strategies = sorted({r["strategy"] for r in runs if r["task"] == task and is_fixed(r["strategy"], pre)},
                                key=lambda f: float(f.removeprefix(pre))) + args.strategies
            seeds = paired(runs, task, args.strategies, args.against, args.metric, pre)[0]
            text += (f"\n\n{task}: held-out greedy accuracy per instruction (prompt family), mean over the same seeds:"
                     f"\n\n" + by_instruction(runs, task, strategies, seeds))
    print(text)
    return text


if __name__ == "__main__":
    main()
