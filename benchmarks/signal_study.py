"""Signal study (issue 20, step 1): does a signal's ranking of the fixed temperatures EARLY in a run predict their
ranking by final held-out greedy accuracy?

Read from the committed fixed-temperature runs of the learning benchmark (every completion of a run at one
temperature T), nothing is trained here. For each run and each window (the first 10% and 20% of its steps, and the
whole run as a reference) five signals are computed from the per-step logs (``series``):

- ``informativeness``: the share of groups with a nonzero advantage, ``1 - zero_advantage_groups`` (the logged value
  is already a share of the step's groups, metahp/lab/grpo.py), averaged over the window's steps;
- ``reward``: the step's mean training reward (at T), averaged over the window;
- ``entropy``: the step's mean token entropy of the sampled completions at T, averaged over the window;
- ``counterfactual``: a plug-in counterfactual informativeness per step, ``1 - p**G - (1 - p)**G`` with ``G`` the
  completions per prompt and ``p`` the step's BATCH mean reward (0/1 rewards), averaged over the window. It is the
  chance that a group of G independent draws with success rate p is mixed. Per-prompt success rates are not logged,
  so p is the batch mean, not per prompt. The function is concave on [0, 1] (its second derivative is
  -G (G-1) (p^(G-2) + (1-p)^(G-2)) < 0), so by Jensen the plug-in at the batch mean is at least the mean over
  prompts: with prompts of different difficulty it overstates the share of mixed groups;
- ``reward_slope``: the least-squares slope of the step reward against the step over the window,
  ``sum((t - mean t) (r - mean r)) / sum((t - mean t)**2)``, per step: does learning happen early at this T.

Each signal is read as "higher is better": its early pick is the temperature with the highest value.

Agreement is Spearman's rank correlation between the signal and the final greedy accuracy over the K temperatures
of a task (K = 5): with ranks ``a_i`` of the signal and ``b_i`` of the accuracy (ties get their average rank),
``rho = cov(a, b) / (sd(a) sd(b))``, which without ties is ``1 - 6 sum (a_i - b_i)**2 / (K (K**2 - 1))`` (one
swap of neighbours among five: 0.9; rho = 1: the same order, -1: reversed). ``scipy.stats.spearmanr`` computes it; a
signal that is constant over the temperatures has no ranking, and its rho is reported as "n/a (constant)", never
as a silent NaN. Two versions:

- mean: the signal averaged over seeds per T against the accuracy averaged over seeds per T, with the one-sided
  exact permutation p-value ``P(rho' >= rho)`` over the K! orderings of the signal (the chance that a signal
  unrelated to accuracy ranks the temperatures at least this well);
- per seed: each seed's own early signal against the mean-accuracy ranking, summarised by its mean, min and max
  over seeds: how much the ranking one run gives moves between seeds. As a reference, the same for each seed's own
  final accuracy (how much the target itself moves between seeds).

Regret of "commit to the signal's early pick": the mean final accuracy of the picked T minus that of the best
fixed T (by mean accuracy over seeds); ties at the top of the signal share the regret evenly. Per seed: each seed
picks from its own early signal, and the regret is that seed's accuracy at its pick minus its accuracy at the best
fixed T (mean [95% t-interval] over seeds).

What this cannot judge: the fixed runs log neither the advantages of single completions inside mixed groups nor
likelihoods, so the per-completion policy's within-group |advantage| credit and the likelihood signal cannot be
read from them; nor are per-prompt success rates logged (hence the batch-mean plug-in above).

    python benchmarks/signal_study.py        # both default run folders -> benchmarks/results/signal_study/
    python benchmarks/signal_study.py --runs benchmarks/results/per_completion/runs --output /tmp/study
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import warnings
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
if str(HERE) not in sys.path:  # imported from a file (the tests) rather than run as a script
    sys.path.insert(0, str(HERE))

from learning_report import load_runs  # noqa: E402
from learning_run import STRATEGIES, TASKS, kind_of  # noqa: E402
from learning_stats import mean_ci, rounded  # noqa: E402

DEFAULT_RUNS = (HERE / "results" / "per_completion" / "runs", HERE / "results" / "per_completion_tuning" / "runs")
DEFAULT_OUTPUT = HERE / "results" / "signal_study"
SIGNALS = ("informativeness", "reward", "entropy", "counterfactual", "reward_slope")
WINDOWS = (0.1, 0.2, 1.0)  # the first 10% and 20% of the steps; the whole run as a reference
CONSTANT = "n/a (constant)"


# -- the signals of one run ---------------------------------------------------------------------------------------
def window_steps(steps: int, fraction: float) -> int:
    """How many first steps a window covers: ``round(fraction * steps)``, at least 2 (a slope needs two points)."""
    return min(steps, max(2, int(round(fraction * steps))))


def counterfactual_informativeness(p, group_size: int):
    """Chance that a group of ``group_size`` 0/1 rewards, each 1 with probability p, is mixed: 1 - p^G - (1-p)^G."""
    p = np.asarray(p, dtype=float)
    return 1.0 - p**group_size - (1.0 - p) ** group_size


def slope(y) -> float:
    """Least-squares slope of y against its index (per step)."""
    y = np.asarray(y, dtype=float)
    t = np.arange(y.size, dtype=float)
    t -= t.mean()
    return float((t * (y - y.mean())).sum() / (t * t).sum())


def signals(run: dict, fraction: float) -> dict[str, float]:
    """The five signals of one run over the first ``fraction`` of its steps."""
    series = run["series"]
    n = window_steps(len(series["reward"]), fraction)
    reward = np.asarray(series["reward"][:n], dtype=float)
    zero = np.asarray(series["zero_advantage_groups"][:n], dtype=float)
    return {
        "informativeness": float(1.0 - zero.mean()),
        "reward": float(reward.mean()),
        "entropy": float(np.mean(series["entropy"][:n])),
        "counterfactual": float(counterfactual_informativeness(reward, run["num_generations"]).mean()),
        "reward_slope": slope(reward),
    }


# -- agreement of two rankings ------------------------------------------------------------------------------------
def spearman(x, y) -> float | None:
    """Spearman's rho of x and y (average ranks for ties); None where either is constant (no ranking)."""
    from scipy.stats import spearmanr

    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    if np.ptp(x) == 0 or np.ptp(y) == 0:
        return None
    return float(spearmanr(x, y).statistic)


def permutation_p(x, y) -> float | None:
    """One-sided exact p-value of Spearman's rho: the share of the orderings of x whose rho is >= the observed one."""
    observed = spearman(x, y)
    if observed is None:
        return None
    from scipy.stats import rankdata

    a, b = rankdata(x), rankdata(y)  # rho is Pearson's r of the ranks; permuting x permutes its ranks
    orders = np.array(list(itertools.permutations(range(a.size))))
    ranked = a[orders] - a.mean()
    rhos = ranked @ (b - b.mean()) / (np.linalg.norm(ranked, axis=1) * np.linalg.norm(b - b.mean()))
    return float(np.mean(rhos >= observed - 1e-12))


def picks(values: dict[float, float]) -> list[float]:
    """The temperatures with the highest signal (several on a tie)."""
    top = max(values.values())
    return [t for t, v in values.items() if v == top]


# -- the study of one task ----------------------------------------------------------------------------------------
def study_task(by_t: dict[float, dict[int, dict]], windows=WINDOWS) -> dict:
    """One task of one run folder: ``by_t[T][seed]`` is the run record. Agreement of each signal's early ranking
    with the final-accuracy ranking (mean over seeds and per seed) and the regret of committing to its pick."""
    temps = sorted(by_t)
    seeds = sorted(set.intersection(*(set(by_t[t]) for t in temps)))  # seeds that have every temperature
    acc = {t: {s: float(by_t[t][s]["after"]["greedy_accuracy"]) for s in seeds} for t in temps}
    acc_mean = [float(np.mean(list(acc[t].values()))) for t in temps]
    best = temps[int(np.argmax(acc_mean))]
    best_acc = max(acc_mean)
    own = [spearman([acc[t][s] for t in temps], acc_mean) for s in seeds]
    out = {"temperatures": temps, "seeds": seeds, "steps": by_t[temps[0]][seeds[0]]["steps"],
           "num_generations": by_t[temps[0]][seeds[0]]["num_generations"],
           "accuracy": {"mean": acc_mean, "best_fixed": best,
                        "per_seed": {str(s): [acc[t][s] for t in temps] for s in seeds},
                        "own_rho_per_seed": _spread(own)},
           "windows": {}}
    for fraction in windows:
        per_run = {t: {s: signals(by_t[t][s], fraction) for s in seeds} for t in temps}
        entry = {"steps": window_steps(out["steps"], fraction), "signals": {}}
        for name in SIGNALS:
            value = {t: {s: per_run[t][s][name] for s in seeds} for t in temps}
            mean = [float(np.mean(list(value[t].values()))) for t in temps]
            pick = picks(dict(zip(temps, mean, strict=True)))
            per_seed_rho, per_seed_regret, per_seed_pick = [], [], []
            for s in seeds:
                mine = [value[t][s] for t in temps]
                per_seed_rho.append(spearman(mine, acc_mean))
                chosen = picks(dict(zip(temps, mine, strict=True)))
                per_seed_pick.append(chosen)
                per_seed_regret.append(float(np.mean([acc[t][s] for t in chosen])) - acc[best][s])
            rm, rlo, rhi = mean_ci(per_seed_regret)
            entry["signals"][name] = {
                "mean": mean,
                "rho": spearman(mean, acc_mean),
                "p_value": permutation_p(mean, acc_mean),
                "per_seed_rho": _spread(per_seed_rho),
                "pick": pick,
                "regret": float(np.mean([acc_mean[temps.index(t)] for t in pick])) - best_acc,
                "per_seed_pick": {str(s): p for s, p in zip(seeds, per_seed_pick, strict=True)},
                "per_seed_regret": {"mean": rm, "lo": rlo, "hi": rhi},
            }
        out["windows"][_window_key(fraction)] = entry
    return out


def _spread(rhos: list[float | None]) -> dict:
    """Mean, min and max of per-seed rhos, leaving out (and counting) the constant ones."""
    known = [r for r in rhos if r is not None]
    return {"values": rhos, "constant": len(rhos) - len(known),
            "mean": float(np.mean(known)) if known else None,
            "min": min(known) if known else None, "max": max(known) if known else None}


def _window_key(fraction: float) -> str:
    return "whole run" if fraction >= 1 else f"first {fraction:.0%}"


def fixed_runs(runs: list[dict]) -> dict[str, dict[float, dict[int, dict]]]:
    """The fixed-temperature runs, by task, temperature and seed (tasks in the benchmark's order)."""
    by_task: dict[str, dict[float, dict[int, dict]]] = {}
    for r in runs:
        if kind_of(r["strategy"]) == "fixed":
            if None in (r["series"].get("zero_advantage_groups") or [None]):
                raise SystemExit(f"{r['task']} {r['strategy']} seed {r['seed']}: no zero_advantage_groups logged "
                                 "(a run recorded before the metric existed); pass run folders that log it")
            t = STRATEGIES[r["strategy"]].value
            by_task.setdefault(r["task"], {}).setdefault(t, {})[r["seed"]] = r
    order = [t for t in TASKS if t in by_task] + sorted(set(by_task) - set(TASKS))
    return {t: by_task[t] for t in order if len(by_task[t]) >= 3}  # fewer than 3 temperatures: no ranking to study


def study(folders: list[Path], windows=WINDOWS) -> dict:
    """The whole study: one cohort per run folder (its seeds), each task with at least three fixed temperatures."""
    cohorts = []
    for folder in folders:
        runs = load_runs(folder.parent if folder.name == "runs" else folder)
        tasks = fixed_runs(runs)
        if not tasks:
            continue
        seeds = sorted({s for by_t in tasks.values() for runs_t in by_t.values() for s in runs_t})
        cohorts.append({"folder": _shown(folder), "label": f"seeds {seeds[0]}-{seeds[-1]}",
                        "tasks": {task: study_task(by_t, windows) for task, by_t in tasks.items()}})
    return {"signals": list(SIGNALS), "windows": [_window_key(f) for f in windows], "cohorts": cohorts}


def _shown(path: Path) -> str:
    """A path as the report shows it: relative to the repository when inside it."""
    path = Path(path).resolve()
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


# -- the report ---------------------------------------------------------------------------------------------------
def _rho(r: float | None) -> str:
    return CONSTANT if r is None else f"{r:+.2f}"


def _rho_cell(sig: dict) -> str:
    spread = sig["per_seed_rho"]
    seeds = (CONSTANT if spread["mean"] is None else
             f"{spread['mean']:+.2f} [{spread['min']:+.2f}, {spread['max']:+.2f}]")
    if spread["constant"] and spread["mean"] is not None:
        seeds += f", {spread['constant']} constant"
    p = "" if sig["p_value"] is None else f" (p {sig['p_value']:.2f})"
    return f"{_rho(sig['rho'])}{p}; seeds {seeds}"


def _t(values: list[float]) -> str:
    return "/".join(f"{t:g}" for t in values)


def _ci(st: dict) -> str:
    if st["lo"] is None or np.isnan(st["lo"]):
        return f"{st['mean']:+.3f}"
    return f"{st['mean']:+.3f} [{st['lo']:+.3f}, {st['hi']:+.3f}]"


def format_report(result: dict, command: str) -> str:
    windows = result["windows"]
    lines = ["# Signal study (issue 20, step 1): which early signal ranks temperatures like the final accuracy", "",
             f"Generated by `{command}` from the committed fixed-temperature runs; do not edit by hand (the "
             "definitions and the maths are in the script's docstring).", "",
             "Signals per run, each averaged over the window's steps and read as higher = better: informativeness "
             "= 1 - the share of zero-advantage groups; reward = the step's mean training reward at T; entropy = "
             "the token entropy of the sampled completions at T; counterfactual = 1 - p^G - (1-p)^G with p the "
             "step's BATCH mean reward (per-prompt success rates are not logged) and G the completions per prompt; "
             "reward_slope = the least-squares slope of the step reward over the window. Not judged here: the "
             "within-group advantages of single completions in mixed groups and likelihoods are not logged in "
             "fixed runs.", "",
             "rho: Spearman's rho between the signal (mean over seeds per T) and the final held-out greedy "
             "accuracy (mean over seeds per T), over the five temperatures, with the one-sided exact permutation "
             "p-value; seeds: each seed's own signal against the mean-accuracy ranking, mean [min, max] over "
             "seeds. The whole-run column is a reference, not an early signal.", ""]
    for cohort in result["cohorts"]:
        tasks = cohort["tasks"]
        lines += [f"## {cohort['label']} (`{cohort['folder']}`)", "",
                  f"Tasks with fixed-temperature runs here: {', '.join(tasks)}.", "",
                  "Best fixed temperature by mean final greedy accuracy, and how much the accuracy ranking itself "
                  "moves between seeds (each seed's own accuracy against the mean ranking):", "",
                  "| task | steps | seeds | best fixed T | accuracy per T (" +
                  _t(next(iter(tasks.values()))["temperatures"]) + ") | own accuracy rho per seed |",
                  "|---|---|---|---|---|---|"]
        for task, entry in tasks.items():
            own = entry["accuracy"]["own_rho_per_seed"]
            lines.append(f"| {task} | {entry['steps']} | {len(entry['seeds'])} | {entry['accuracy']['best_fixed']:g} "
                         f"| {', '.join(f'{a:.3f}' for a in entry['accuracy']['mean'])} "
                         f"| {own['mean']:+.2f} [{own['min']:+.2f}, {own['max']:+.2f}] |")
        lines += ["", f"### Rank agreement with the final accuracy, {cohort['label']}", "",
                  "| task | signal | " + " | ".join(windows) + " |", "|---|---|" + "---|" * len(windows)]
        for task, entry in tasks.items():
            for name in result["signals"]:
                cells = [_rho_cell(entry["windows"][w]["signals"][name]) for w in windows]
                lines.append(f"| {task} | {name} | " + " | ".join(cells) + " |")
        lines += ["", f"### Commit to the early pick, {cohort['label']}", "",
                  "Per window: the T with the highest mean signal and its mean final accuracy minus the best fixed "
                  "T's (regret); per seed: each seed commits to its own signal's pick (mean [95% CI] over seeds of "
                  "its accuracy there minus its accuracy at the best fixed T).", ""]
        early = [w for w in windows if w != "whole run"]
        lines += ["| task (best T) | signal | " + " | ".join(f"{w}: pick, regret | {w}: per seed" for w in early)
                  + " |", "|---|---|" + "---|---|" * len(early)]
        total: dict[tuple[str, str], list[float]] = {}
        total_seed: dict[tuple[str, str], list[float]] = {}
        for task, entry in tasks.items():
            for name in result["signals"]:
                cells = []
                for w in early:
                    sig = entry["windows"][w]["signals"][name]
                    cells += [f"{_t(sig['pick'])}, {sig['regret']:+.3f}", _ci(sig["per_seed_regret"])]
                    total.setdefault((name, w), []).append(sig["regret"])
                    total_seed.setdefault((name, w), []).append(sig["per_seed_regret"]["mean"])
                lines.append(f"| {task} ({entry['accuracy']['best_fixed']:g}) | {name} | " + " | ".join(cells) + " |")
        if len(tasks) > 1:
            for name in result["signals"]:
                cells = [c for w in early for c in (
                    f"mean {np.mean(total[(name, w)]):+.3f}, worst {min(total[(name, w)]):+.3f}",
                    f"mean {np.mean(total_seed[(name, w)]):+.3f}, worst {min(total_seed[(name, w)]):+.3f}")]
                lines.append(f"| mean over tasks | {name} | " + " | ".join(cells) + " |")
        lines += ["", f"### Warmer than the best on the cool-best tasks? {cohort['label']}", "",
                  "Tasks whose best fixed T is at most 1.0; per signal and window, the tasks where the early pick is "
                  "warmer than the best fixed T (a signal that does this cannot be fixed by committing faster):", ""]
        cool = [t for t, e in tasks.items() if e["accuracy"]["best_fixed"] <= 1.0]
        for name in result["signals"]:
            parts = []
            for w in early:
                warm = [f"{t} ({_t(tasks[t]['windows'][w]['signals'][name]['pick'])} > "
                        f"{tasks[t]['accuracy']['best_fixed']:g})" for t in cool
                        if min(tasks[t]["windows"][w]["signals"][name]["pick"]) > tasks[t]["accuracy"]["best_fixed"]]
                parts.append(f"{w}: {', '.join(warm) if warm else 'none'}")
            lines.append(f"- {name} (cool-best tasks: {', '.join(cool) or 'none'}): " + "; ".join(parts))
        lines += ["", f"### The early signals per temperature, mean over seeds, {cohort['label']}", ""]
        for task, entry in tasks.items():
            head = [f"{name} {w.removeprefix('first ')}" for name in result["signals"] for w in early]
            lines += [f"{task} ({entry['steps']} steps; windows of "
                      f"{', '.join(str(entry['windows'][w]['steps']) for w in early)} steps):", "",
                      "| T | final acc. | " + " | ".join(head) + " |", "|---|---|" + "---|" * len(head)]
            for i, t in enumerate(entry["temperatures"]):
                cells = [_value(name, entry["windows"][w]["signals"][name]["mean"][i])
                         for name in result["signals"] for w in early]
                lines.append(f"| {t:g} | {entry['accuracy']['mean'][i]:.3f} | " + " | ".join(cells) + " |")
            lines.append("")
    return "\n".join(lines).rstrip() + "\n"


def _value(name: str, v: float) -> str:
    return f"{v * 1000:+.2f}e-3" if name == "reward_slope" else f"{v:.3f}"


# -- the figure ---------------------------------------------------------------------------------------------------
def plot(result: dict, path: Path) -> Path:
    """Top: per task (first cohort, first 20%), each signal's mean early value against T, min-max normalised, next to
    the final accuracy. Bottom: rho (mean over seeds) per task and window x signal, one heatmap per cohort."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cohorts = result["cohorts"]
    first = cohorts[0]
    tasks = list(first["tasks"])
    early = [w for w in result["windows"] if w != "whole run"]
    shown = early[-1]
    fig = plt.figure(figsize=(3.2 * len(tasks), 7.5))
    grid = fig.add_gridspec(2, max(len(tasks), len(cohorts)), height_ratios=(1, 1.25))
    for i, task in enumerate(tasks):
        ax = fig.add_subplot(grid[0, i])
        entry = first["tasks"][task]
        temps = entry["temperatures"]
        ax.plot(temps, _normalised(entry["accuracy"]["mean"]), "k-", lw=3, label="final accuracy")
        for name in result["signals"]:
            ax.plot(temps, _normalised(entry["windows"][shown]["signals"][name]["mean"]), "o--", lw=1.2, label=name)
        ax.set_title(f"{task} (best T {entry['accuracy']['best_fixed']:g})")
        ax.set_xlabel("fixed T")
        ax.set_xticks(temps)
        if i == 0:
            ax.set_ylabel(f"min-max normalised\n(signals: {shown}, {first['label']})")
    handles, labels = fig.axes[0].get_legend_handles_labels()
    columns = max(len(tasks), len(cohorts))
    span = max(1, (columns - 1) // len(cohorts))  # the last column holds the legend
    heatmaps = []
    for j, cohort in enumerate(cohorts):
        ax = fig.add_subplot(grid[1, j * span:(j + 1) * span])
        heatmaps.append(ax)
        rows = [(task, w) for task in cohort["tasks"] for w in result["windows"]]
        rho = np.array([[np.nan if (r := cohort["tasks"][task]["windows"][w]["signals"][name]["rho"]) is None else r
                         for name in result["signals"]] for task, w in rows])
        image = ax.imshow(rho, cmap="RdBu", vmin=-1, vmax=1, aspect="auto")
        for (a, b), v in np.ndenumerate(rho):
            ax.text(b, a, "n/a" if np.isnan(v) else f"{v:+.1f}", ha="center", va="center", fontsize=7)
        ax.set_xticks(range(len(result["signals"])), result["signals"], rotation=20, fontsize=8)
        ax.set_yticks(range(len(rows)), [f"{task}, {w}" for task, w in rows], fontsize=7)
        ax.set_title(f"Spearman rho with final accuracy, {cohort['label']}", fontsize=9)
    fig.colorbar(image, ax=heatmaps[-1], fraction=0.05)
    if len(cohorts) * span < columns:
        legend = fig.add_subplot(grid[1, len(cohorts) * span:])
        legend.axis("off")
        legend.legend(handles, labels, loc="center", fontsize=9)
    else:
        fig.axes[0].legend(handles, labels, fontsize=7)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tight_layout and a colorbar axis
        fig.tight_layout()
    fig.savefig(path, dpi=110, metadata={"Software": None})
    plt.close(fig)
    return path


def _normalised(values) -> np.ndarray:
    v = np.asarray(values, dtype=float)
    span = np.ptp(v)
    return np.full_like(v, 0.5) if span == 0 else (v - v.min()) / span


# -- the command line ---------------------------------------------------------------------------------------------
def command_line(folders: list[Path]) -> str:
    return "python benchmarks/signal_study.py " + " ".join(f"--runs {_shown(f)}" for f in folders)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=Path, action="append",
                        help="a folder of run JSON files (benchmarks/results/<name>/runs), one cohort of seeds; "
                             "repeat for several (default: per_completion and per_completion_tuning)")
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT,
                        help="where signal_study.json, report.md and signal_study.png go")
    args = parser.parse_args(argv)
    folders = args.runs or list(DEFAULT_RUNS)
    missing = [str(f) for f in folders if not f.is_dir()]
    if missing:
        parser.error(f"no such run folder: {', '.join(missing)}; pass --runs benchmarks/results/<name>/runs")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # mean_ci over a single seed
        result = rounded(study(folders))
    if not result["cohorts"]:
        parser.error("no task with at least three fixed temperatures in " + ", ".join(map(str, folders)))
    args.output.mkdir(parents=True, exist_ok=True)
    command = command_line(folders)
    (args.output / "signal_study.json").write_text(
        json.dumps({"command": command, **result}, indent=1, allow_nan=False) + "\n")
    (args.output / "report.md").write_text(format_report(result, command))
    plot(result, args.output / "signal_study.png")
    print(f"{args.output / 'report.md'}, {args.output / 'signal_study.json'}, {args.output / 'signal_study.png'}")
    return result


if __name__ == "__main__":
    main()
