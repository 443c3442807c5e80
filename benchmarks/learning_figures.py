"""The learning benchmark's figures: final accuracy, paired differences against the best fixed temperature, the
temperature used over the run, and training-reward curves. Colours and line styles follow the strategy's kind."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
from learning_run import STRATEGIES, TASKS, kind_of

COLOURS = {"fixed": "0.55", "schedule": "tab:blue", "entropy": "tab:green", "metahp": "tab:orange"}


def _colour(strategy: str) -> str:
    return COLOURS.get(kind_of(strategy), "k")


def _pyplot():
    """matplotlib.pyplot on the Agg backend (files only, no display)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_accuracy(summary: dict, path: Path) -> Path:
    plt = _pyplot()
    tasks = list(summary)
    fig, axes = plt.subplots(1, len(tasks), figsize=(max(7.0, 4.2 * len(tasks)), 5.2), squeeze=False,
                             layout="constrained")
    for ax, task in zip(axes[0], tasks, strict=True):
        entry = summary[task]["greedy_accuracy"]
        names = summary[task]["strategies"]
        for i, s in enumerate(names):
            st = entry["stats"][s]
            err = None if np.isnan(st["lo"]) else [[st["mean"] - st["lo"]], [st["hi"] - st["mean"]]]
            ax.errorbar(st["mean"], i, xerr=err, fmt="o", color=_colour(s), capsize=3)
        best = entry["best_fixed"]
        if best is not None:
            ax.axvline(entry["stats"][best]["mean"], color="0.7", ls=":", lw=1)
        ax.set_yticks(range(len(names)), names if ax is axes[0][0] else [""] * len(names))
        ax.invert_yaxis()
        n = max(st["n"] for st in entry["stats"].values())
        ax.set_title(f"{task} ({n} seeds, {summary[task]['steps'][0]} steps)")
        ax.set_xlabel("held-out greedy accuracy (mean, 95% CI)")
        ax.grid(axis="x", alpha=0.3)
    fig.suptitle("Final held-out greedy accuracy per strategy\ngrey: fixed T, blue: schedules, green: entropy "
                 "target, orange: metahp updaters (defaults)", fontsize=10)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_paired(summary: dict, path: Path, metric: str = "greedy_accuracy") -> Path:
    """Per task: each strategy minus the best fixed temperature, paired by seed (mean, 95% CI)."""
    plt = _pyplot()
    tasks = list(summary)
    fig, axes = plt.subplots(1, len(tasks), figsize=(max(7.0, 4.2 * len(tasks)), 5.2), squeeze=False,
                             layout="constrained")
    for ax, task in zip(axes[0], tasks, strict=True):
        entry = summary[task][metric]
        names = summary[task]["strategies"]
        for i, s in enumerate(names):
            d = entry["stats"][s].get("vs_best_fixed")
            if d is None or s == entry["best_fixed"]:
                ax.plot(0, i, "D", color=_colour(s))
                continue
            err = None if np.isnan(d["lo"]) else [[d["mean"] - d["lo"]], [d["hi"] - d["mean"]]]
            ax.errorbar(d["mean"], i, xerr=err, fmt="o", color=_colour(s), capsize=3)
        ax.axvline(0, color="0.5", lw=1)
        ax.set_yticks(range(len(names)), names if ax is axes[0][0] else [""] * len(names))
        ax.invert_yaxis()
        ax.set_title(f"{task}: vs best fixed ({entry['best_fixed']}, diamond)")
        ax.set_xlabel(f"paired difference in {metric.replace('_', ' ')} (mean, 95% CI)")
        ax.grid(axis="x", alpha=0.3)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _smoothed_mean(runs: list[dict], task: str, strategy: str, key: str, parts: int):
    """(steps, values): a series averaged over seeds, then a moving mean over 1/parts of the run; None if absent."""
    series = [r["series"][key] for r in runs if r["task"] == task and r["strategy"] == strategy
              and r["series"].get(key) is not None]
    if not series:
        return None
    steps = min(len(x) for x in series)
    mean = np.mean([x[:steps] for x in series], axis=0)
    window = max(1, steps // parts)
    return np.arange(window, steps + 1), np.convolve(mean, np.ones(window) / window, mode="valid")


def plot_temperatures(runs: list[dict], path: Path, key: str = "temperature") -> Path:
    """Per task: the knob's value used (mean over seeds, moving mean) for the adaptive strategies and the schedules;
    ``key`` is the series: "temperature", "learning_rate" (the multiplier) or "beta" (the hyperparameter arms)."""
    plt = _pyplot()
    tasks = [t for t in TASKS if any(r["task"] == t for r in runs)]
    shown = [s for s in STRATEGIES if STRATEGIES[s].kind in ("schedule", "entropy", "metahp")
             and STRATEGIES[s].knob == key]
    cols = min(2, len(tasks))
    rows = -(-len(tasks) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(6 * cols, 4.2 * rows), squeeze=False, sharey=True,
                             layout="constrained")
    cmap = plt.get_cmap("tab10")
    for ax in axes.flat[len(tasks):]:
        ax.set_visible(False)
    for ax, task in zip(axes.flat, tasks, strict=False):  # a spare panel when the count is odd
        for i, s in enumerate(shown):
            curve = _smoothed_mean(runs, task, s, key, parts=20)
            if curve is None:
                continue
            style = "--" if STRATEGIES[s].kind == "schedule" else "-"
            ax.plot(*curve, style, color=cmap(i % 10), label=s, lw=1.3)
        ax.set_title(f"{task}: {key.replace('_', ' ')} used")
        ax.set_xlabel("GRPO step")
        ax.grid(alpha=0.3)
    for row in axes:
        label = {"temperature": "T", "learning_rate": "multiplier"}.get(key, key)
        row[0].set_ylabel(f"{label} (mean over seeds, moving mean)")
    axes.flat[0].legend(fontsize=7, loc="best")
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_reward_curves(runs: list[dict], path: Path) -> Path:
    """Per task: training reward over the run (mean over seeds, moving mean) for every fixed temperature, the
    schedules and the adaptive strategies: where the fixed-temperature curves cross, the best temperature moved."""
    plt = _pyplot()
    tasks = [t for t in TASKS if any(r["task"] == t for r in runs)]
    fig, axes = plt.subplots(len(tasks), 2, figsize=(13, 4.2 * len(tasks)), squeeze=False, sharey="row",
                             layout="constrained")
    fixed = [s for s in STRATEGIES if STRATEGIES[s].kind == "fixed"]
    others = [s for s in STRATEGIES if STRATEGIES[s].kind != "fixed"]
    cool_to_hot = plt.get_cmap("coolwarm")
    tab = plt.get_cmap("tab10")
    for row, task in zip(axes, tasks, strict=True):
        for panel, (ax, names) in enumerate(zip(row, (fixed, others), strict=True)):
            for i, s in enumerate(names):
                curve = _smoothed_mean(runs, task, s, "reward", parts=15)
                if curve is None:
                    continue
                if panel == 0:
                    colour, style = cool_to_hot(i / max(1, len(names) - 1)), "-"
                else:
                    colour, style = tab(i % 10), "--" if STRATEGIES[s].kind == "schedule" else "-"
                ax.plot(*curve, style, color=colour, label=s, lw=1.3)
            ax.set_title(f"{task}: " + ("fixed temperatures" if panel == 0 else "schedules and adaptive"))
            ax.set_xlabel("GRPO step")
            ax.grid(alpha=0.3)
            ax.legend(fontsize=7, loc="best")
        row[0].set_ylabel("training reward (mean over seeds, moving mean)")
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_zero_advantage(runs: list[dict], path: Path) -> Path:
    """Per task: the share of zero-advantage groups over training (mean over seeds, moving mean), fixed
    temperatures cool to hot, the other strategies in colour: the groups that carry no gradient."""
    plt = _pyplot()
    have = [r for r in runs if all(v is not None for v in r["series"].get("zero_advantage_groups") or [None])]
    tasks = [t for t in TASKS if any(r["task"] == t for r in have)]
    cols = min(2, len(tasks))
    rows = -(-len(tasks) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(6 * cols, 4.2 * rows), squeeze=False, sharey=True,
                             layout="constrained")
    fixed = [s for s in STRATEGIES if STRATEGIES[s].kind == "fixed"]
    others = [s for s in STRATEGIES if STRATEGIES[s].kind != "fixed"]
    cool_to_hot, tab = plt.get_cmap("coolwarm"), plt.get_cmap("tab10")
    for ax in axes.flat[len(tasks):]:
        ax.set_visible(False)
    for ax, task in zip(axes.flat, tasks, strict=False):
        for i, s in enumerate(fixed + others):
            curve = _smoothed_mean(have, task, s, "zero_advantage_groups", parts=15)
            if curve is None:
                continue
            is_fixed = i < len(fixed)
            colour = cool_to_hot(i / max(1, len(fixed) - 1)) if is_fixed else tab((i - len(fixed)) % 10)
            ax.plot(*curve, ":" if is_fixed else "-", color=colour, label=s, lw=1.6 if not is_fixed else 1.2)
        ax.set_title(f"{task}: share of zero-advantage groups")
        ax.set_xlabel("GRPO step")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="best")
    for row in axes:
        row[0].set_ylabel("zero-advantage groups (mean over seeds, moving mean)")
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_buckets(runs: list[dict], path: Path) -> Path:
    """Values per prompt: for each task and strategy with one meta-policy per pass-rate bucket, each bucket's
    expected temperature over training (mean over the seeds where the bucket was updated, carried forward between
    its updates) and, below, the share of groups each bucket drew."""
    plt = _pyplot()
    have = [r for r in runs if r["series"].get("buckets")]
    panels = sorted({(r["task"], r["strategy"]) for r in have})
    fig, axes = plt.subplots(2, len(panels), figsize=(6 * len(panels), 7.5), squeeze=False, sharex="col",
                             layout="constrained")
    tab = plt.get_cmap("tab10")
    for col, (task, strategy) in enumerate(panels):
        mine = [r for r in have if r["task"] == task and r["strategy"] == strategy]
        for i, bucket in enumerate(mine[0]["series"]["buckets"]):
            curves, shares = [], []
            for r in mine:
                b = r["series"]["buckets"][bucket]
                last, carried = float("nan"), []
                for v in b["temperature_mean"]:
                    last = v if v is not None else last
                    carried.append(last)
                curves.append(carried)
                shares.append(b["groups"])
            steps = np.arange(1, len(curves[0]) + 1)
            with warnings.catch_warnings():  # steps before any seed updated the bucket: NaN, not drawn
                warnings.simplefilter("ignore", RuntimeWarning)
                mean_t = np.nanmean(np.array(curves, dtype=float), axis=0)
            axes[0, col].plot(steps, mean_t, color=tab(i), label=bucket, lw=1.4)
            window = max(1, len(steps) // 15)  # a trailing moving mean: no edge effects at either end
            share = np.convolve(np.mean(shares, axis=0), np.ones(window) / window, mode="valid")
            axes[1, col].plot(steps[window - 1:], share, color=tab(i), label=bucket, lw=1.2)
        axes[0, col].set_title(f"{task}, {strategy}: each bucket's expected T")
        axes[1, col].set_title("share of groups per bucket (moving mean)")
        axes[1, col].set_xlabel("GRPO step")
        for ax in axes[:, col]:
            ax.grid(alpha=0.3)
            ax.legend(fontsize=7, loc="best")
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
