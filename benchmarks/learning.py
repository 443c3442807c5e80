"""Learning benchmark: does an adapted temperature beat fixed and scheduled ones, across seeds, at equal budgets?

For every (task, seed) one warm start (cached, built first), then from that same checkpoint one GRPO run per
strategy with the same steps, prompts per step and completions per prompt:

- fixed temperatures 0.6, 0.8, 1.0, 1.2, 1.5;
- schedules: linear 0.9 -> 1.5 over the run (the TAMPO paper's heuristic), linear 1.5 -> 0.6;
- an entropy-target controller (metahp.lab.baselines.EntropyTarget: holds the first batch's token entropy at T=1.0,
  T bounded to [0.5, 1.6]);
- metahp's updaters through ``metahp.adapt(trainer, updater=...)`` with their DEFAULT hyperparameters and the
  default grid 0.6..1.5 (nothing tuned on these seeds).

Each run is evaluated on the same held-out problems per seed (greedy accuracy, pass@k at T=1) and writes one
JSON file to <out>/runs/ (atomically; existing files are skipped, so an interrupted run resumes). The report
(<out>/report.md, <out>/summary.json, accuracy.png, temperature.png) is rebuilt from those files: means with
95% t-intervals over seeds, ranks, and paired differences (by seed) against the best fixed temperature.

    python benchmarks/learning.py --tasks addition reverse sort --seeds 5 --steps 300 --workers 2
    python benchmarks/learning.py --report-only            # tables and figures from the saved JSON
    # the real-model benchmark (docs/benchmarks.md): SmolLM2-135M-Instruct as it is, no warm start
    python benchmarks/learning.py --model smollm2 --tasks word_arithmetic --strategies fixed_0.6 fixed_1 exp3 \
        --seeds 5 --first-seed 1 --steps 80 --prompts-per-step 4 --num-generations 4 --eval-problems 64 --k 8 \
        --learning-rate 1e-5 --max-completion-tokens 5 --workers 2 --threads 1 --out benchmarks/results/smollm2
    python benchmarks/learning.py --smoke --out /tmp/lb     # seconds: 1 task, 2 strategies, 1 seed, 3 steps
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
DEFAULT_OUT = HERE / "results" / "learning"
TASKS = ("addition", "countdown", "reverse", "sort", "rare_skill", "word_arithmetic")
FIXED = (0.6, 0.8, 1.0, 1.2, 1.5)
UPDATERS = ("tampo", "softmax_gradient", "exp3", "sliding_window_ucb", "thompson")
# name -> (kind, parameters)
STRATEGIES: dict[str, tuple] = {
    **{f"fixed_{t:g}": ("fixed", t) for t in FIXED},
    "ramp_0.9_1.5": ("schedule", 0.9, 1.5),
    "ramp_1.5_0.6": ("schedule", 1.5, 0.6),
    "entropy_target": ("entropy",),
    **{name: ("metahp", name) for name in UPDATERS},
}
ADAPTIVE = ("entropy_target", *UPDATERS)


# -- statistics ---------------------------------------------------------------------------------------------
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


# -- one run ------------------------------------------------------------------------------------------------
def run_path(out: Path, task: str, strategy: str, seed: int) -> Path:
    return out / "runs" / f"{task}__{strategy}__seed{seed}.json"


def write_json(path: Path, data) -> None:
    """Write atomically: a reader (or a resumed run) never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=1, default=float))
    os.replace(tmp, path)


def _init_worker(threads: int = 1):
    import torch

    torch.set_num_threads(threads)  # tiny models: one thread per process is fastest; two processes use both cores


def load_policy(job: dict, task):
    """The policy a run starts from: the cached warm start of the tiny model, or a pretrained model as it is.

    A pretrained model (``job["model"]``, e.g. ``"smollm2"``) gets no supervised warm start: GRPO starts from what
    it already knows, as a user's run would."""
    from metahp.lab.warmstart import build_warm_policy

    if job.get("model", "tiny") == "tiny":
        return build_warm_policy(task, seed=job["seed"], progress=False, **job.get("warm", {}))
    from transformers.utils import logging as hf_logging

    from metahp.lab.models import load_model

    # the "Loading weights" bar, once per run, would bury the runs bar (transformers' GGUF conversion bar is a
    # plain tqdm that no setting turns off without turning off ours too)
    hf_logging.disable_progress_bar()
    model, tokenizer = load_model(job["model"])
    return model, tokenizer, {"model": job["model"], "warm_start": None}


def trainer_settings(job: dict, task) -> dict:
    """GRPO settings shared by every run of a job (a pretrained model needs its own learning rate and length)."""
    settings = {"max_completion_tokens": job.get("max_completion_tokens") or task.max_completion_chars + 1,
                "seed": job["seed"]}
    if job.get("learning_rate"):
        settings["learning_rate"] = job["learning_rate"]
    return settings


def prepare(job: dict) -> dict:
    """Warm start for one (task, seed) (built or read from the cache) and its held-out score before GRPO."""
    _init_worker(job.get("threads", 1))
    from metahp.lab.grpo import GRPOTrainer
    from metahp.lab.tasks import make_task

    path = Path(job["out"]) / "warm" / f"{job['task']}__seed{job['seed']}.json"
    if path.exists():
        return json.loads(path.read_text())
    start = time.perf_counter()
    task = make_task(job["task"], None, job["seed"])
    model, tokenizer, info = load_policy(job, task)
    warm_s = time.perf_counter() - start
    eval_set = task.sample_prompts(job["eval_problems"], job["seed"] + 1, split="eval")
    probe = GRPOTrainer(model, tokenizer, task, **trainer_settings(job, task))
    result = {"task": job["task"], "seed": job["seed"], "warm_start": {**info, "seconds": warm_s},
              "before": probe.evaluate(eval_set, k=job["k"])}
    write_json(path, result)
    return result


def run_one(job: dict) -> dict:
    """One GRPO run of one strategy from the (cached) warm start; writes and returns its JSON record."""
    _init_worker(job.get("threads", 1))
    import metahp
    from metahp.lab.baselines import EntropyTarget, LinearSchedule
    from metahp.lab.grpo import GRPOTrainer
    from metahp.lab.tasks import make_task

    task_name, strategy, seed, steps = job["task"], job["strategy"], job["seed"], job["steps"]
    task = make_task(task_name, None, seed)
    model, tokenizer, info = load_policy(job, task)
    spec = STRATEGIES[strategy]
    trainer = GRPOTrainer(model, tokenizer, task, prompts_per_step=job["prompts_per_step"],
                          num_generations=job["num_generations"], temperature=spec[1] if spec[0] == "fixed" else 1.0,
                          **trainer_settings(job, task))
    if spec[0] == "schedule":
        trainer.attach(LinearSchedule(spec[1], spec[2], steps))
    elif spec[0] == "entropy":
        trainer.attach(EntropyTarget(target=None, start=1.0, bounds=(0.5, 1.6)))
    elif spec[0] == "metahp":
        metahp.adapt(trainer, knob="temperature", updater=spec[1])  # defaults: grid 0.6..1.5, default options
    start = time.perf_counter()
    history = trainer.train(steps, progress=False)
    train_s = time.perf_counter() - start
    eval_set = task.sample_prompts(job["eval_problems"], seed + 1, split="eval")
    start = time.perf_counter()
    after = trainer.evaluate(eval_set, k=job["k"])
    if hasattr(task, "instruction"):  # tasks mixing instructions (rare_skill): greedy accuracy per instruction
        from metahp.lab.warmstart import greedy_accuracy

        kinds = sorted({task.instruction(p) for p in eval_set})
        after["greedy_by_instruction"] = {
            kind: greedy_accuracy(trainer.model, tokenizer, task, [p for p in eval_set if task.instruction(p) == kind])
            for kind in kinds}
    eval_s = time.perf_counter() - start
    meta = sum(m["time/meta_update"] for m in history)
    total = sum(m["time/generation"] + m["time/policy_update"] + m["time/meta_update"] for m in history)
    record = {
        "task": task_name, "strategy": strategy, "seed": seed, "steps": steps, "model": job.get("model", "tiny"),
        "learning_rate": trainer.config.learning_rate, "max_completion_tokens": trainer.config.max_completion_tokens,
        "prompts_per_step": job["prompts_per_step"], "num_generations": job["num_generations"],
        "eval_problems": job["eval_problems"], "k": job["k"], "warm_pass_rate": info.get("pass_rate"),
        "after": after, "reward_auc": float(np.mean([m["reward"] for m in history])),
        "train_s": train_s, "eval_s": eval_s, "meta_update_share": meta / total if total else 0.0,
        "series": {
            "temperature": [m["knob/temperature"] for m in history],
            "reward": [m["reward"] for m in history],
            "entropy": [m["entropy"] for m in history],
            # metahp updaters: expected temperature under the meta-policy after each update
            "temperature_mean": [m.get("metahp/temperature_mean") for m in history] if spec[0] == "metahp" else None,
        },
    }
    if spec[0] == "metahp":
        record["final_probs"] = {k.rsplit("/", 1)[1]: v for k, v in history[-1].items() if k.startswith("metahp/prob/")}
    write_json(run_path(Path(job["out"]), task_name, strategy, seed), record)
    return {"task": task_name, "strategy": strategy, "seed": seed, "greedy_accuracy": after["greedy_accuracy"],
            "wall_s": train_s + eval_s}


def _map(fn, jobs, workers: int, desc: str):
    from tqdm.auto import tqdm

    bar = tqdm(total=len(jobs), desc=desc, unit="run")
    results = []
    if workers <= 1:
        for job in jobs:
            results.append(fn(job))
            bar.update(1)
    else:
        import multiprocessing as mp

        # fork: the parent has imported no torch state worth protecting (it only plans, then reports)
        with mp.get_context("fork").Pool(workers, maxtasksperchild=20) as pool:
            for r in pool.imap_unordered(fn, jobs):
                results.append(r)
                if isinstance(r, dict) and "greedy_accuracy" in r:
                    bar.set_postfix_str(f"{r['task']}/{r['strategy']}/s{r['seed']} acc={r['greedy_accuracy']:.3f}")
                bar.update(1)
    bar.close()
    return results


# -- report -------------------------------------------------------------------------------------------------
METRICS = (("greedy_accuracy", "held-out greedy accuracy"), ("pass@k", "held-out pass@k (T=1)"),
           ("reward_auc", "training reward AUC (mean reward over steps)"))


def load_runs(out: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted((out / "runs").glob("*.json"))]


def _value(run: dict, metric: str) -> float:
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
            values = {s: {seed: _value(r, metric) for seed, r in by_strategy[s].items()} for s in order}
            stats = {s: dict(zip(("mean", "lo", "hi"), mean_ci(list(values[s].values())), strict=True),
                             n=len(values[s])) for s in order}
            for s, r in ranks({s: stats[s]["mean"] for s in order}).items():
                stats[s]["rank"] = r
            fixed = [s for s in order if STRATEGIES.get(s, ("",))[0] == "fixed"]
            best_fixed = max(fixed, key=lambda s: stats[s]["mean"]) if fixed else None
            if best_fixed is not None:
                for s in order:
                    m, lo, hi, n = paired_diff(values[s], values[best_fixed])
                    stats[s]["vs_best_fixed"] = {"mean": m, "lo": lo, "hi": hi, "pairs": n}
            if "fixed_1" in values:  # T = 1.0: the value a user gets without choosing
                for s in order:
                    m, lo, hi, n = paired_diff(values[s], values["fixed_1"])
                    stats[s]["vs_fixed_1"] = {"mean": m, "lo": lo, "hi": hi, "pairs": n}
            entry[metric] = {"best_fixed": best_fixed, "stats": stats}
        entry["temperature"] = {}
        for s in order:  # temperature used: whole run and last fifth, mean over steps then seeds
            series = [np.asarray(r["series"]["temperature"]) for r in by_strategy[s].values()]
            tail = [x[-max(1, len(x) // 5):] for x in series]
            entry["temperature"][s] = {"mean": float(np.mean([x.mean() for x in series])),
                                       "last_fifth": float(np.mean([x.mean() for x in tail])),
                                       "last_fifth_seeds": [float(x.mean()) for x in tail]}
        entry["reward_by_phase"] = reward_by_phase({s: by_strategy[s] for s in order})
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


PHASES = 5


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
    fixed = [s for s in by_strategy if STRATEGIES.get(s, ("",))[0] == "fixed"]
    out["fixed_leader"] = [max(fixed, key=lambda s: out["stats"][s][i]["mean"]) if fixed else None
                           for i in range(phases)]
    return out


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
            shown = [s for s in entry["strategies"] if STRATEGIES.get(s, ("",))[0] in ("entropy", "metahp")]
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


def _colour(strategy: str) -> str:
    kind = STRATEGIES.get(strategy, ("other",))[0]
    return {"fixed": "0.55", "schedule": "tab:blue", "entropy": "tab:green", "metahp": "tab:orange"}.get(kind, "k")


def plot_accuracy(summary: dict, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

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
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

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
    series = [r["series"][key] for r in runs if r["task"] == task and r["strategy"] == strategy]
    if not series:
        return None
    steps = min(len(x) for x in series)
    mean = np.mean([x[:steps] for x in series], axis=0)
    window = max(1, steps // parts)
    return np.arange(window, steps + 1), np.convolve(mean, np.ones(window) / window, mode="valid")


def plot_temperatures(runs: list[dict], path: Path) -> Path:
    """Per task: temperature used (mean over seeds, moving mean) for the adaptive strategies and the schedules."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = [t for t in TASKS if any(r["task"] == t for r in runs)]
    shown = [s for s in STRATEGIES if STRATEGIES[s][0] in ("schedule", "entropy", "metahp")]
    cols = min(2, len(tasks))
    rows = -(-len(tasks) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(6 * cols, 4.2 * rows), squeeze=False, sharey=True,
                             layout="constrained")
    cmap = plt.get_cmap("tab10")
    for ax in axes.flat[len(tasks):]:
        ax.set_visible(False)
    for ax, task in zip(axes.flat, tasks, strict=False):  # a spare panel when the count is odd
        for i, s in enumerate(shown):
            curve = _smoothed_mean(runs, task, s, "temperature", parts=20)
            if curve is None:
                continue
            style = "--" if STRATEGIES[s][0] == "schedule" else "-"
            ax.plot(*curve, style, color=cmap(i % 10), label=s, lw=1.3)
        ax.set_title(f"{task}: temperature used")
        ax.set_xlabel("GRPO step")
        ax.grid(alpha=0.3)
    for row in axes:
        row[0].set_ylabel("T (mean over seeds, moving mean)")
    axes.flat[0].legend(fontsize=7, loc="best")
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_reward_curves(runs: list[dict], path: Path) -> Path:
    """Per task: training reward over the run (mean over seeds, moving mean) for every fixed temperature, the
    schedules and the adaptive strategies: where the fixed-temperature curves cross, the best temperature moved."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = [t for t in TASKS if any(r["task"] == t for r in runs)]
    fig, axes = plt.subplots(len(tasks), 2, figsize=(13, 4.2 * len(tasks)), squeeze=False, sharey="row",
                             layout="constrained")
    fixed = [s for s in STRATEGIES if STRATEGIES[s][0] == "fixed"]
    others = [s for s in STRATEGIES if STRATEGIES[s][0] != "fixed"]
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
                    colour, style = tab(i % 10), "--" if STRATEGIES[s][0] == "schedule" else "-"
                ax.plot(*curve, style, color=colour, label=s, lw=1.3)
            ax.set_title(f"{task}: " + ("fixed temperatures" if panel == 0 else "schedules and adaptive"))
            ax.set_xlabel("GRPO step")
            ax.grid(alpha=0.3)
            ax.legend(fontsize=7, loc="best")
        row[0].set_ylabel("training reward (mean over seeds, moving mean)")
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def report(out: Path) -> dict:
    runs = load_runs(out)
    if not runs:
        raise SystemExit(f"no runs in {out / 'runs'}")
    summary = summarize(runs)
    warm: dict[str, dict] = {}
    for p in sorted((out / "warm").glob("*.json")):
        w = json.loads(p.read_text())
        k = next(key for key in w["before"] if key.startswith("pass@") and key != "pass@1")
        warm.setdefault(w["task"], {"greedy_accuracy": [], "pass@k": []})
        warm[w["task"]]["greedy_accuracy"].append(w["before"]["greedy_accuracy"])
        warm[w["task"]]["pass@k"].append(w["before"][k])
    warm = {t: {m: float(np.mean(v)) for m, v in d.items()} for t, d in warm.items()}
    text = format_report(summary, warm)
    (out / "report.md").write_text(text + "\n")
    write_json(out / "summary.json", {"summary": summary, "warm_before": warm,
                                      "runs": len(runs), "wall_s_total": sum(r["train_s"] + r["eval_s"] for r in runs)})
    figures = [plot_accuracy(summary, out / "accuracy.png"), plot_paired(summary, out / "paired.png"),
               plot_temperatures(runs, out / "temperature.png"), plot_reward_curves(runs, out / "reward.png")]
    print(text)
    print(f"\nreport: {out / 'report.md'}; figures: {', '.join(map(str, figures))}")
    return summary


# -- main ---------------------------------------------------------------------------------------------------
def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--tasks", nargs="+", default=list(TASKS[:4]), choices=TASKS,
                   help="default: the four fixed-difficulty tasks; rare_skill is the moving-optimum task (issue 7)")
    p.add_argument("--strategies", nargs="+", default=list(STRATEGIES), choices=list(STRATEGIES))
    p.add_argument("--seeds", type=int, default=5, help="seeds FIRST..FIRST+N-1")
    p.add_argument("--first-seed", type=int, default=0, help="e.g. 100 for tuning seeds kept apart from 0..4")
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--prompts-per-step", type=int, default=8)
    p.add_argument("--num-generations", type=int, default=8)
    p.add_argument("--eval-problems", type=int, default=256)
    p.add_argument("--k", type=int, default=8)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--threads", type=int, default=1, help="torch threads per worker")
    p.add_argument("--model", default="tiny", help="'tiny' (warm-started per task and seed) or a pretrained model "
                   "such as 'smollm2', used as it is")
    p.add_argument("--learning-rate", type=float, default=None, help="default: GRPOConfig's (tuned for tiny)")
    p.add_argument("--max-completion-tokens", type=int, default=None,
                   help="default: the task's longest answer in characters + 1 (one token per character)")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT)
    p.add_argument("--report-only", action="store_true", help="rebuild tables and figures from <out>/runs")
    p.add_argument("--smoke", action="store_true", help="1 task, 2 strategies, 1 seed, 3 steps, tiny eval")
    args = p.parse_args(argv)
    warm: dict = {}
    if args.smoke:
        args.tasks, args.strategies, args.seeds, args.steps = ["addition"], ["fixed_1", "tampo"], 1, 3
        args.eval_problems, args.k, args.prompts_per_step, args.num_generations = 16, 2, 4, 4
        warm = {"steps": 20, "eval_every": 20, "eval_size": 16}  # a tiny warm start, cached under $METAHP_CACHE
        args.workers = min(args.workers, 2)
    if args.report_only:
        return report(args.out)
    common = {"out": str(args.out), "steps": args.steps, "prompts_per_step": args.prompts_per_step,
              "num_generations": args.num_generations, "eval_problems": args.eval_problems, "k": args.k,
              "warm": warm, "threads": args.threads, "model": args.model, "learning_rate": args.learning_rate,
              "max_completion_tokens": args.max_completion_tokens}
    pairs = [(t, s) for s in range(args.first_seed, args.first_seed + args.seeds) for t in args.tasks]
    _map(prepare, [{**common, "task": t, "seed": s} for t, s in pairs], args.workers, "warm starts")
    # seed-major order: a run cut short still has every strategy on the first seeds
    jobs = [{**common, "task": t, "seed": s, "strategy": st} for t, s in pairs for st in args.strategies
            if not run_path(args.out, t, st, s).exists()]
    print(f"{len(jobs)} runs to do ({len(pairs) * len(args.strategies) - len(jobs)} already saved in {args.out})",
          file=sys.stderr)
    _map(run_one, jobs, args.workers, "runs")
    return report(args.out)


if __name__ == "__main__":
    main()
