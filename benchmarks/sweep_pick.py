"""What a temperature sweep's pick is worth on a new run, next to the hindsight-best fixed temperature.

    .venv/bin/python benchmarks/sweep_pick.py        # the committed cohorts; seconds, no training

The "best fixed" baseline of the learning benchmark is the fixed value with the best mean over the very seeds it is
scored on: the best of several noisy means, which favours it (the winner's curse). A user who sweeps picks a value on
the sweep's own runs and then trains with it. For each task and each seed s' (the new run), from the runs a results
folder already holds:

    oracle        acc(T_o, s'),  T_o = argmax_T mean_s acc(T, s)           (hindsight, all seeds: the usual column)
    other seeds   acc(T_-s', s'), T_-s' = argmax_T mean_{s != s'} acc(T, s) (a sweep with many seeds per value)
    one seed      mean_{s != s'} mean_{T in argmax_T acc(T, s)} acc(T, s')   (a sweep of one run per value)
    best run      max_T acc(T, s')                                           (the run a sweeper keeps: 5 runs' cost)

Each learned strategy is paired by seed against each, with a 95% t-interval over s'. The one-seed pick's values for
different s' reuse the same seeds, so its interval is approximate (slightly too narrow). Writes report.md,
sweep_pick.json and sweep_pick.png (each baseline and strategy against the oracle, per task) to ``--output``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from learning_report import load_runs  # noqa: E402
from learning_stats import mean_ci, paired_diff, rounded  # noqa: E402
from paired_table import complete_seeds, is_fixed, values_by_strategy  # noqa: E402

TASKS = ("addition", "countdown", "reverse", "sort", "rare_skill")
# (label, results folder, learned strategies): the reporting run of values per completion, the per-group tuning
# run (tuning seeds: its learned arms were tuned there, so its rows are no result for them), and the confirmation run
# on fresh seeds with exp3 beside them
COHORTS = (
    ("reporting seeds 0-9", HERE / "results" / "per_completion", ("rows_informative_lr0.25", "rows_uniform")),
    ("tuning seeds 10-14", HERE / "results" / "per_group_tuning",
     ("group_informative", "rows_informative_lr0.25", "exp3")),
    ("fresh seeds 15-24, confirmation run", HERE / "results" / "confirmation",
     ("rows_informative_lr0.25", "rows_uniform", "exp3")),
)
BASELINES = ("oracle", "other_seeds", "one_seed", "best_run")
BASELINE_NAMES = {"oracle": "oracle (hindsight, all seeds)", "other_seeds": "picked from the other seeds",
                  "one_seed": "picked from one seed", "best_run": "the sweep's best run (5 runs)"}
DEFAULT_OUTPUT = HERE / "results" / "sweep_pick"


def _argmax(scores: dict[float, float]) -> list[float]:
    """Every value whose score is the highest (a tie keeps them all)."""
    top = max(scores.values())
    return [t for t, v in scores.items() if np.isclose(v, top, rtol=0.0, atol=1e-12)]


def sweep_baselines(fixed: dict[float, dict[int, float]]) -> dict:
    """The four baselines by seed from the fixed runs ``{T: {seed: accuracy}}`` (every T has every seed), and the
    values each picked: ``{"values": {baseline: {seed: acc}}, "picks": {...}}``."""
    temps = sorted(fixed)
    seeds = sorted(set.intersection(*(set(v) for v in fixed.values())))
    if len(seeds) < 2:
        raise ValueError(f"a sweep's pick on a new run needs at least two seeds, got {seeds}")

    def mean_over(ss):
        return {t: float(np.mean([fixed[t][s] for s in ss])) for t in temps}

    def score(picked: list[float], s: int) -> float:
        return float(np.mean([fixed[t][s] for t in picked]))

    oracle = _argmax(mean_over(seeds))
    values = {name: {} for name in BASELINES}
    picks = {"oracle": oracle, "other_seeds": {}, "one_seed": {}}
    for s in seeds:
        others = [o for o in seeds if o != s]
        loo = _argmax(mean_over(others))
        values["oracle"][s] = score(oracle, s)
        values["other_seeds"][s] = score(loo, s)
        values["one_seed"][s] = float(np.mean([score(_argmax({t: fixed[t][o] for t in temps}), s) for o in others]))
        values["best_run"][s] = max(fixed[t][s] for t in temps)
        picks["other_seeds"][s] = loo
        picks["one_seed"][s] = _argmax({t: fixed[t][s] for t in temps})  # this seed's own pick, for the record
    return {"values": values, "picks": picks, "seeds": seeds}


def study_task(runs: list[dict], task: str, strategies: list[str], fixed_prefix: str = "fixed_") -> dict:
    """Baselines and each strategy's paired differences against them on one task, over the seeds every arm has."""
    by_strategy = values_by_strategy(runs, task, "greedy_accuracy")
    fixed_names = [s for s in by_strategy if is_fixed(s, fixed_prefix)]
    if not fixed_names:
        raise SystemExit(f"{task} has no fixed arm named {fixed_prefix}<value>: {sorted(by_strategy)}")
    missing = [s for s in strategies if s not in by_strategy]
    if missing:
        raise SystemExit(f"{task} has no runs of {missing}; it has {sorted(by_strategy)}")
    seeds = complete_seeds(by_strategy, [*fixed_names, *strategies])
    fixed = {float(n.removeprefix(fixed_prefix)): {s: by_strategy[n][s] for s in seeds} for n in fixed_names}
    base = sweep_baselines(fixed)
    out = {"seeds": seeds, "baselines": {}, "strategies": {}, "picks": base["picks"]}
    for name in BASELINES:
        m, lo, hi = mean_ci(list(base["values"][name].values()))
        d, dlo, dhi, _ = paired_diff(base["values"][name], base["values"]["oracle"])
        out["baselines"][name] = {"mean": m, "ci": [lo, hi], "vs_oracle": [d, dlo, dhi],
                                  "by_seed": base["values"][name]}
    for s in strategies:
        values = {seed: by_strategy[s][seed] for seed in seeds}
        out["strategies"][s] = {"mean": float(np.mean(list(values.values()))), "by_seed": values,
                                "vs": {name: list(paired_diff(values, base["values"][name])[:3]) for name in BASELINES}}
    return out


def mean_over_tasks(entries: dict[str, dict], strategies: list[str]) -> dict:
    """Per seed, the mean over tasks of strategy minus baseline, then its 95% t-interval (seeds every task has)."""
    seeds = sorted(set.intersection(*(set(e["seeds"]) for e in entries.values())))
    out = {"seeds": seeds, "strategies": {}, "baselines": {}}

    def interval(diff_by_task):
        per_seed = [float(np.mean([diff_by_task(e, seed) for e in entries.values()])) for seed in seeds]
        return list(mean_ci(per_seed))

    for s in strategies:
        out["strategies"][s] = {name: interval(lambda e, seed, s=s, name=name: e["strategies"][s]["by_seed"][seed]
                                               - e["baselines"][name]["by_seed"][seed]) for name in BASELINES}
    for name in BASELINES[1:]:
        out["baselines"][name] = interval(lambda e, seed, name=name: e["baselines"][name]["by_seed"][seed]
                                          - e["baselines"]["oracle"]["by_seed"][seed])
    return out


def _cell(d: float, lo: float, hi: float) -> str:
    return f"{d:+.3f} [{lo:+.3f}, {hi:+.3f}]{' *' if lo > 0 or hi < 0 else ''}"


def _picks(values: list[float]) -> str:
    return "/".join(f"{t:g}" for t in values)


def report(cohorts: list[dict]) -> str:
    lines = ["# What a sweep's pick is worth on a new run", "",
             "Generated by `benchmarks/sweep_pick.py` from committed runs; definitions in its docstring and in "
             "docs/benchmarks.md. Held-out greedy accuracy; each cell is strategy (or baseline) minus baseline, "
             "paired by seed, 95% t-interval; `*` marks an interval that excludes 0.", ""]
    for c in cohorts:
        lines += [f"## {c['label']} (`{c['folder']}`)", ""]
        lines += ["How much each way of picking costs against the oracle (each baseline minus the oracle), and the "
                  "values picked (one seed: how often each value won a seed alone):", "",
                  "| task | oracle pick | oracle mean | other seeds | one seed | best run (5 runs) | one-seed picks |",
                  "|---|---|---|---|---|---|---|"]
        for task, e in c["tasks"].items():
            b = e["baselines"]
            wins: dict[float, float] = {}
            for picked in e["picks"]["one_seed"].values():
                for t in picked:
                    wins[t] = wins.get(t, 0.0) + 1.0 / len(picked)
            won = ", ".join(f"{t:g}: {n:g}" for t, n in sorted(wins.items()))
            lines.append(f"| {task} | {_picks(e['picks']['oracle'])} | {b['oracle']['mean']:.3f} | "
                         + " | ".join(_cell(*b[n]["vs_oracle"]) for n in BASELINES[1:]) + f" | {won} |")
        m = c["mean_over_tasks"]
        lines.append(f"| mean over tasks (seeds {m['seeds'][0]}-{m['seeds'][-1]}) | | | "
                     + " | ".join(_cell(*m["baselines"][n]) for n in BASELINES[1:]) + " | |")
        lines += ["", "Each learned strategy against each baseline:", "",
                  "| task | strategy | mean | " + " | ".join(f"vs {BASELINE_NAMES[n]}" for n in BASELINES) + " |",
                  "|---|---|---|" + "---|" * len(BASELINES)]
        for task, e in c["tasks"].items():
            for s, r in e["strategies"].items():
                lines.append(f"| {task} | {s} | {r['mean']:.3f} | "
                             + " | ".join(_cell(*r["vs"][n]) for n in BASELINES) + " |")
        for s, r in m["strategies"].items():
            lines.append(f"| mean over tasks | {s} | | " + " | ".join(_cell(*r[n]) for n in BASELINES) + " |")
        lines.append("")
    return "\n".join(lines)


def plot(cohorts: list[dict], path: Path) -> Path:
    """One panel per cohort: per task and over tasks, each baseline's and strategy's mean difference against the
    oracle with its 95% interval, so the one-seed pick's cost sits beside the learned runs' gap."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(cohorts), figsize=(6.5 * len(cohorts), 4.2), squeeze=False)
    for ax, c in zip(axes[0], cohorts, strict=True):
        tasks = [*c["tasks"], "mean"]
        series = {BASELINE_NAMES["one_seed"]: [], BASELINE_NAMES["best_run"]: []}
        series.update({s: [] for s in c["mean_over_tasks"]["strategies"]})
        for task in c["tasks"]:
            e = c["tasks"][task]
            series[BASELINE_NAMES["one_seed"]].append(e["baselines"]["one_seed"]["vs_oracle"])
            series[BASELINE_NAMES["best_run"]].append(e["baselines"]["best_run"]["vs_oracle"])
            for s, r in e["strategies"].items():
                series[s].append(r["vs"]["oracle"])
        m = c["mean_over_tasks"]
        series[BASELINE_NAMES["one_seed"]].append(m["baselines"]["one_seed"])
        series[BASELINE_NAMES["best_run"]].append(m["baselines"]["best_run"])
        for s, r in m["strategies"].items():
            series[s].append(r["oracle"])
        width = 0.8 / len(series)
        for k, (name, cells) in enumerate(series.items()):
            x = np.arange(len(tasks)) + (k - (len(series) - 1) / 2) * width
            d = np.array([cell[0] for cell in cells])
            err = np.array([[cell[0] - cell[1] for cell in cells], [cell[2] - cell[0] for cell in cells]])
            ax.errorbar(x, d, yerr=err, fmt="o", capsize=3, label=name)
        ax.axhline(0, color="k", lw=0.8)
        ax.axhspan(-0.02, 0.02, color="0.9", zorder=0)  # the "within 0.02"
        ax.set_xticks(range(len(tasks)), tasks)
        ax.set_ylabel("held-out greedy accuracy minus the oracle's")
        ax.set_title(c["label"], fontsize=10)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110, metadata={"Software": None})
    plt.close(fig)
    return path


def study(cohorts=COHORTS, tasks=TASKS) -> list[dict]:
    out = []
    for label, folder, strategies in cohorts:
        runs = load_runs(Path(folder))
        entries = {t: study_task(runs, t, list(strategies)) for t in tasks}
        try:
            folder_name = str(Path(folder).resolve().relative_to(HERE.parent))
        except ValueError:
            folder_name = str(folder)
        out.append({"label": label, "folder": folder_name, "tasks": entries,
                    "mean_over_tasks": mean_over_tasks(entries, list(strategies))})
    return out


def main(argv=None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=Path, help="one results folder with runs/, instead of the committed cohorts")
    parser.add_argument("--strategies", nargs="+", help="with --runs: the learned strategies compared")
    parser.add_argument("--tasks", nargs="+", default=list(TASKS))
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT, help="where report.md and the JSON go")
    args = parser.parse_args(argv)
    if (args.runs is None) != (args.strategies is None):
        parser.error("--runs and --strategies go together: a folder and the learned strategies in it")
    cohorts = COHORTS if args.runs is None else ((str(args.runs), args.runs, tuple(args.strategies)),)
    result = study(cohorts, args.tasks)
    args.output.mkdir(parents=True, exist_ok=True)
    text = report(result)
    (args.output / "report.md").write_text(text + "\n")
    (args.output / "sweep_pick.json").write_text(json.dumps(rounded(result), indent=1) + "\n")
    plot(result, args.output / "sweep_pick.png")
    print(text)
    return result


if __name__ == "__main__":
    main()
