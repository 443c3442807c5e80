"""The learning benchmark's report: the markdown tables (``format_report``) and ``report``, which rebuilds
<out>/report.md, <out>/summary.json and the figures from the saved run and warm-start files."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from learning_figures import (
    plot_accuracy,
    plot_buckets,
    plot_paired,
    plot_reward_curves,
    plot_temperatures,
    plot_zero_advantage,
)
from learning_run import STRATEGIES, kind_of, write_json
from learning_stats import METRICS, summarize


def _fmt(st: dict) -> str:
    if np.isnan(st["lo"]):
        return f"{st['mean']:.3f}"
    return f"{st['mean']:.3f} [{st['lo']:.3f}, {st['hi']:.3f}]"


def _fmt_diff(d: dict | None) -> str:
    if d is None or d["pairs"] == 0:
        return "-"
    if np.isnan(d["lo"]):
        return f"{d['mean']:+.3f}"
    star = " *" if d["lo"] > 0 or d["hi"] < 0 else ""
    return f"{d['mean']:+.3f} [{d['lo']:+.3f}, {d['hi']:+.3f}]{star}"


def headline(summary: dict) -> str:
    """One table: held-out greedy accuracy, mean [95% CI], strategies x tasks."""
    tasks = list(summary)
    names = [s for s in STRATEGIES if any(s in summary[t]["strategies"] for t in tasks)]
    seeds = {t: max(st["n"] for st in summary[t]["greedy_accuracy"]["stats"].values()) for t in tasks}
    head = [f"{t} ({summary[t]['steps'][0]} steps, {seeds[t]} seeds)" for t in tasks]
    lines = ["| strategy | " + " | ".join(head) + " |", "|---" * (len(tasks) + 1) + "|"]
    for s in names:
        cells = [_fmt(summary[t]["greedy_accuracy"]["stats"][s]) if s in summary[t]["strategies"] else "-"
                 for t in tasks]
        lines.append(f"| {s} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def format_report(summary: dict, warm: dict | None = None) -> str:
    lines = ["### Held-out greedy accuracy, mean [95% CI over seeds]", "", headline(summary), ""]
    mean_rank: dict[str, list[float]] = {}
    for task, entry in summary.items():
        acc = entry["greedy_accuracy"]
        ns = sorted({st["n"] for st in acc["stats"].values()})
        lines += [f"### {task}: {entry['steps']} steps, seeds per strategy {ns}; spread of fixed temperatures "
                  f"(greedy accuracy) {entry['fixed_spread']:.3f}", ""]
        if warm and task in warm:
            before = warm[task]
            lines += [f"Before GRPO (the warm start, or a pretrained model as it is; mean over seeds): greedy accuracy "
                      f"{before['greedy_accuracy']:.3f}, pass@k {before['pass@k']:.3f}", ""]
        lines += ["| strategy | greedy acc. [95% CI] | rank | vs best fixed (paired) | vs T=1 (paired) "
                  "| pass@k [95% CI] | rank | vs best fixed | reward AUC [95% CI] | rank | vs best fixed |",
                  "|---|---|---|---|---|---|---|---|---|---|---|"]
        for s in entry["strategies"]:
            cells = []
            for metric, _ in METRICS:
                st = entry[metric]["stats"][s]
                cells += [_fmt(st), f"{st['rank']:g}"]
                cells.append(_fmt_diff(st.get("vs_best_fixed")) if s != entry[metric]["best_fixed"]
                             else "(best fixed)")
                if metric == "greedy_accuracy":
                    cells.append(_fmt_diff(st.get("vs_fixed_1")) if s != "fixed_1" else "-")
            lines.append(f"| {s} | " + " | ".join(cells) + " |")
            mean_rank.setdefault(s, []).append(acc["stats"][s]["rank"])
        lines.append("")
        zero = entry.get("zero_advantage")
        mixed = [s for s in entry["strategies"] if "vs_uniform" in acc["stats"][s]]
        if zero or mixed:
            lines += ["Values per completion: held-out greedy accuracy against the uniform mixture (`rows_uniform`, "
                      "not learned), and the share of zero-advantage groups (all completions of a prompt equally "
                      "rewarded: no gradient), mean over the run, paired by seed against the best fixed temperature "
                      f"({acc['best_fixed']}) and the uniform mixture:", "",
                      "| strategy | greedy acc. vs uniform (paired) | zero-adv. share [95% CI] | vs best fixed | "
                      "vs uniform |", "|---|---|---|---|---|"]
            for s in entry["strategies"]:
                z = (zero or {}).get("stats", {}).get(s)
                cells = [_fmt_diff(acc["stats"][s].get("vs_uniform")) if s != "rows_uniform" else "-",
                         _fmt(z) if z else "-", _fmt_diff(z.get("vs_best_fixed")) if z else "-",
                         _fmt_diff(z.get("vs_uniform")) if z else "-"]
                lines.append(f"| {s} | " + " | ".join(cells) + " |")
            lines.append("")
        phases = entry.get("reward_by_phase")
        if phases:
            n = phases["phases"]
            leaders = ", ".join(f"{i + 1}: {lead}" for i, lead in enumerate(phases["fixed_leader"]))
            lines += [f"Training reward (at the sampled temperature) in each of {n} equal phases of the run, mean "
                      f"[95% CI] over seeds; **bold** = the fixed temperature that leads the phase "
                      f"(leaders by phase: {leaders}):", "",
                      "| strategy | " + " | ".join(f"phase {i + 1}" for i in range(n)) + " |", "|---" * (n + 1) + "|"]
            for s in entry["strategies"]:
                cells = [(f"**{_fmt(st)}**" if phases["fixed_leader"][i] == s else _fmt(st))
                         for i, st in enumerate(phases["stats"][s])]
                lines.append(f"| {s} | " + " | ".join(cells) + " |")
            lines.append("")
        by_instruction = entry.get("greedy_by_instruction")
        if by_instruction:
            kinds = list(next(iter(by_instruction.values())))
            lines += ["Held-out greedy accuracy per instruction, mean [95% CI]:", "",
                      "| strategy | " + " | ".join(kinds) + " |", "|---" * (len(kinds) + 1) + "|"]
            for s in entry["strategies"]:
                lines.append(f"| {s} | " + " | ".join(_fmt(by_instruction[s][k]) for k in kinds) + " |")
            lines.append("")
        if "temperature" in entry:
            shown = [s for s in entry["strategies"] if kind_of(s) in ("entropy", "metahp")]
            if shown:
                lines += ["Temperature used by the adaptive strategies (mean over steps, then seeds; last fifth of "
                          "the run per seed in brackets):", ""]
                for s in shown:
                    t = entry["temperature"][s]
                    per_seed = ", ".join(f"{v:.2f}" for v in t["last_fifth_seeds"])
                    lines.append(f"- {s}: whole run {t['mean']:.2f}, last fifth {t['last_fifth']:.2f} ({per_seed})")
                lines.append("")
    if len(summary) > 1:
        lines += ["### Mean rank over tasks (greedy accuracy; 1 = best)", "", "| strategy | mean rank | tasks |",
                  "|---|---|---|"]
        for s, rs in sorted(mean_rank.items(), key=lambda kv: np.mean(kv[1])):
            lines.append(f"| {s} | {np.mean(rs):.2f} | {len(rs)} |")
        lines.append("")
    lines.append("Intervals: two-sided 95% t-intervals over seeds. Paired differences: strategy minus the fixed "
                 "temperature with the best mean on that task and metric (or T = 1.0), per seed (same warm start, "
                 "same held-out problems); * marks intervals that exclude 0. Choosing the best fixed temperature on "
                 "the evaluation seeds themselves favours that baseline.")
    return "\n".join(lines)


def load_runs(out: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted((out / "runs").glob("*.json"))]


def warm_before(out: Path) -> dict[str, dict[str, float]]:
    """Per task: held-out greedy accuracy and pass@k before GRPO, mean over the seeds' warm starts."""
    warm: dict[str, dict] = {}
    for p in sorted((out / "warm").glob("*.json")):
        w = json.loads(p.read_text())
        k = next(key for key in w["before"] if key.startswith("pass@") and key != "pass@1")
        warm.setdefault(w["task"], {"greedy_accuracy": [], "pass@k": []})
        warm[w["task"]]["greedy_accuracy"].append(w["before"]["greedy_accuracy"])
        warm[w["task"]]["pass@k"].append(w["before"][k])
    return {t: {m: float(np.mean(v)) for m, v in d.items()} for t, d in warm.items()}


def report(out: Path) -> dict:
    runs = load_runs(out)
    if not runs:
        raise SystemExit(f"no runs in {out / 'runs'}")
    summary = summarize(runs)
    warm = warm_before(out)
    text = format_report(summary, warm)
    (out / "report.md").write_text(text + "\n")
    write_json(out / "summary.json", {"summary": summary, "warm_before": warm,
                                      "runs": len(runs), "wall_s_total": sum(r["train_s"] + r["eval_s"] for r in runs)})
    figures = [plot_accuracy(summary, out / "accuracy.png"), plot_paired(summary, out / "paired.png"),
               plot_reward_curves(runs, out / "reward.png")]
    if any(r.get("knob", "temperature") == "temperature" and kind_of(r["strategy"]) != "fixed" for r in runs):
        figures.append(plot_temperatures(runs, out / "temperature.png"))
    if any(entry.get("zero_advantage") for entry in summary.values()):
        figures.append(plot_zero_advantage(runs, out / "zero_advantage.png"))
    # the hyperparameter arms (issue 21): the value each batch used
    for knob in ("learning_rate", "beta", "epsilon", "epsilon_high"):
        if any(r["series"].get(knob) for r in runs):
            figures.append(plot_temperatures(runs, out / f"{knob}.png", key=knob))
    if any(r["series"].get("buckets") for r in runs):
        figures.append(plot_buckets(runs, out / "buckets.png"))
    print(text)
    print(f"\nreport: {out / 'report.md'}; figures: {', '.join(map(str, figures))}")
    return summary
