"""Statistics of the learning benchmark: t-intervals over seeds, ranks, differences paired by seed, and the per-task
summary (``summarize``) that the report and the figures are drawn from."""

from __future__ import annotations

import numpy as np
from learning_run import STRATEGIES, TASKS, kind_of

METRICS = (("greedy_accuracy", "held-out greedy accuracy"), ("pass@k", "held-out pass@k (T=1)"),
           ("reward_auc", "training reward AUC (mean reward over steps)"))
PHASES = 5
UNIFORM = "rows_uniform"  # the per-completion ablation: the grid mixed evenly in every group, never learned


def rounded(obj):
    """Floats to 6 decimals, so a JSON record does not depend on the last bits of a platform's arithmetic; NaN becomes
    None (JSON has no NaN). Dicts, lists and tuples are walked."""
    if isinstance(obj, float):
        if np.isnan(obj):
            return None
        return round(obj, 6)
    if isinstance(obj, dict):
        return {k: rounded(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [rounded(v) for v in obj]
    return obj


def mean_ci(values, level: float = 0.95) -> tuple[float, float, float]:
    """Mean and two-sided t-interval over seeds: mean +- t_{(1+level)/2, n-1} * sd / sqrt(n) (nan if n < 2)."""
    from scipy import stats

    x = np.asarray(values, dtype=float)
    mean = float(x.mean()) if x.size else float("nan")
    if x.size < 2:
        return mean, float("nan"), float("nan")
    half = float(stats.t.ppf(0.5 + level / 2, x.size - 1) * x.std(ddof=1) / np.sqrt(x.size))
    return mean, mean - half, mean + half


def ranks(means: dict[str, float]) -> dict[str, float]:
    """Rank 1 = highest mean; ties share the average rank."""
    from scipy.stats import rankdata

    names = list(means)
    r = rankdata([-means[n] for n in names], method="average")
    return {n: float(v) for n, v in zip(names, r, strict=True)}


def paired_diff(a: dict[int, float], b: dict[int, float], level: float = 0.95) -> tuple[float, float, float, int]:
    """Mean of a[seed] - b[seed] over the seeds both have, with its t-interval, and the number of pairs."""
    seeds = sorted(set(a) & set(b))
    m, lo, hi = mean_ci([a[s] - b[s] for s in seeds], level)
    return m, lo, hi, len(seeds)


def metric_value(run: dict, metric: str) -> float:
    """One metric of one run record (``pass@k`` is the record's own k)."""
    if metric == "reward_auc":
        return run["reward_auc"]
    if metric == "pass@k":
        return run["after"][f"pass@{run['k']}"]
    return run["after"][metric]


def summarize(runs: list[dict]) -> dict:
    """Per task and metric: mean, 95% interval, n, rank; paired differences against the best fixed temperature."""
    summary: dict = {}
    tasks = [t for t in TASKS if any(r["task"] == t for r in runs)]
    tasks += sorted({r["task"] for r in runs} - set(tasks))
    for task in tasks:
        by_strategy: dict[str, dict[int, dict]] = {}
        for r in runs:
            if r["task"] == task:
                by_strategy.setdefault(r["strategy"], {})[r["seed"]] = r
        order = [s for s in STRATEGIES if s in by_strategy] + sorted(set(by_strategy) - set(STRATEGIES))
        entry: dict = {"strategies": order, "steps": sorted({r["steps"] for s in by_strategy.values()
                                                            for r in s.values()})}
        for metric, _ in METRICS:
            values = {s: {seed: metric_value(r, metric) for seed, r in by_strategy[s].items()} for s in order}
            stats = {s: dict(zip(("mean", "lo", "hi"), mean_ci(list(values[s].values())), strict=True),
                             n=len(values[s])) for s in order}
            for s, r in ranks({s: stats[s]["mean"] for s in order}).items():
                stats[s]["rank"] = r
            fixed = [s for s in order if kind_of(s) == "fixed"]
            best_fixed = max(fixed, key=lambda s: stats[s]["mean"]) if fixed else None
            if best_fixed is not None:
                for s in order:
                    m, lo, hi, n = paired_diff(values[s], values[best_fixed])
                    stats[s]["vs_best_fixed"] = {"mean": m, "lo": lo, "hi": hi, "pairs": n}
            if "fixed_1" in values:  # T = 1.0: the value a user gets without choosing
                for s in order:
                    m, lo, hi, n = paired_diff(values[s], values["fixed_1"])
                    stats[s]["vs_fixed_1"] = {"mean": m, "lo": lo, "hi": hi, "pairs": n}
            if UNIFORM in values:  # the mixture that never learns: does learning (not mixing alone) help?
                for s in order:
                    m, lo, hi, n = paired_diff(values[s], values[UNIFORM])
                    stats[s]["vs_uniform"] = {"mean": m, "lo": lo, "hi": hi, "pairs": n}
            entry[metric] = {"best_fixed": best_fixed, "stats": stats}
        entry["temperature"] = {}
        for s in order:  # temperature used: whole run and last fifth, mean over steps then seeds
            series = [np.asarray(r["series"]["temperature"]) for r in by_strategy[s].values()]
            tail = [x[-max(1, len(x) // 5):] for x in series]
            entry["temperature"][s] = {"mean": float(np.mean([x.mean() for x in series])),
                                       "last_fifth": float(np.mean([x.mean() for x in tail])),
                                       "last_fifth_seeds": [float(x.mean()) for x in tail]}
        entry["reward_by_phase"] = reward_by_phase({s: by_strategy[s] for s in order})
        zero = zero_advantage({s: by_strategy[s] for s in order}, entry["greedy_accuracy"]["best_fixed"])
        if zero:
            entry["zero_advantage"] = zero
        instructions = sorted({k for s in by_strategy.values() for r in s.values()
                               for k in r["after"].get("greedy_by_instruction", {})})
        if instructions:  # tasks that mix instructions: which skill each strategy learned
            entry["greedy_by_instruction"] = {
                s: {k: dict(zip(("mean", "lo", "hi"), mean_ci([r["after"]["greedy_by_instruction"][k]
                                                               for r in by_strategy[s].values()]), strict=True))
                    for k in instructions} for s in order}
        fixed_means = [entry["greedy_accuracy"]["stats"][s]["mean"] for s in order if s.startswith("fixed_")]
        entry["fixed_spread"] = float(max(fixed_means) - min(fixed_means)) if fixed_means else float("nan")
        summary[task] = entry
    return summary


def reward_by_phase(by_strategy: dict[str, dict[int, dict]], phases: int = PHASES) -> dict:
    """Training reward (at the sampled temperature) in each fifth of the run: mean [95% CI] over seeds per strategy,
    and which fixed temperature leads each phase. A leader that changes between phases is a moving optimum: no
    single fixed temperature collects the most reward throughout."""
    shortest = min(len(r["series"]["reward"]) for runs in by_strategy.values() for r in runs.values())
    phases = max(1, min(phases, shortest))  # a smoke run of 3 steps has 3 phases, not 5 with empty ones
    out: dict = {"phases": phases, "stats": {}}
    for s, runs in by_strategy.items():
        per_seed = [np.array_split(np.asarray(r["series"]["reward"], dtype=float), phases) for r in runs.values()]
        out["stats"][s] = [dict(zip(("mean", "lo", "hi"), mean_ci([float(x[i].mean()) for x in per_seed]),
                                    strict=True)) for i in range(phases)]
    fixed = [s for s in by_strategy if kind_of(s) == "fixed"]
    out["fixed_leader"] = [max(fixed, key=lambda s: out["stats"][s][i]["mean"]) if fixed else None
                           for i in range(phases)]
    return out


def zero_advantage(by_strategy: dict[str, dict[int, dict]], best_fixed: str | None) -> dict:
    """Share of GRPO groups whose completions all got the same reward (zero advantage: no gradient), averaged over
    the run, per strategy: mean [95% CI] over seeds, and paired by seed against the fixed temperature with the best
    held-out greedy accuracy and against the uniform mixture. Empty for runs recorded before the metric existed."""
    values = {}
    for s, runs in by_strategy.items():
        per_seed = {seed: [v for v in r["series"].get("zero_advantage_groups") or [] if v is not None]
                    for seed, r in runs.items()}
        if all(per_seed.values()):
            values[s] = {seed: float(np.mean(v)) for seed, v in per_seed.items()}
    if not values:
        return {}
    out: dict = {"best_fixed": best_fixed, "stats": {}}
    for s, by_seed in values.items():
        st = dict(zip(("mean", "lo", "hi"), mean_ci(list(by_seed.values())), strict=True), n=len(by_seed))
        for key, other in (("vs_best_fixed", best_fixed), ("vs_uniform", UNIFORM)):
            if other in values and other != s:
                m, lo, hi, n = paired_diff(by_seed, values[other])
                st[key] = {"mean": m, "lo": lo, "hi": hi, "pairs": n}
        out["stats"][s] = st
    return out
