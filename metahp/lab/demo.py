"""`metahp demo`: one GRPO run with the temperature learned online, beside the sweep of fixed temperatures it
replaces, all from the same warm start.

Steps: warm start a tiny model on a task where the temperature matters (or load it from the cache); then from that
same checkpoint and seed run GRPO once with ``metahp.adapt(trainer, knob=..., values=sweep)`` (adapt's default
updater unless --updater names another) and once at each fixed value of the sweep; evaluate every run on held-out
problems (greedy accuracy, pass@1 and pass@k), print a table with the compute of each (one run against the sweep's
runs), and draw the meta-policy's distribution across steps above the reward curves of every run. Re-running on
the same machine with the same seed and cached warm start repeats the numbers; another machine's CPU rounds
differently and its numbers move (README), so compare the runs of one demo.
"""

from __future__ import annotations

import copy
import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

import metahp
from metahp.errors import ConfigError
from metahp.integrations import DEFAULT_UPDATER

# The fixed values a temperature sweep tries (the benchmarks' grid, docs/benchmarks.md); the adaptive run learns over
# the same values, so it replaces exactly this sweep.
SWEEP = (0.6, 0.8, 1.0, 1.2, 1.5)


@dataclass
class DemoSettings:
    # rare_skill: the task of the benchmarks where the temperature matters most (fixed 1.5 beat 1.0 by 0.25 held-out
    # greedy accuracy over 10 seeds; docs/benchmarks.md); on addition every value of the sweep ends within noise
    task: str = "rare_skill"
    difficulty: int | None = None
    model: str = "tiny"
    steps: int = 200
    knob: str = "temperature"
    updater: str = DEFAULT_UPDATER  # metahp.adapt's default, so the demo shows what users get without choosing
    sweep: tuple[float, ...] = SWEEP  # the fixed runs, and the adaptive run's grid
    seed: int = 0
    output_dir: str = "runs/demo"
    eval_problems: int = 256
    k: int = 8
    prompts_per_step: int = 8
    num_generations: int = 8
    warm_steps: int | None = None  # None: the warm start's own budget (it stops early once in its target band)
    options: dict = field(default_factory=dict)


@dataclass
class RunResult:
    name: str
    before: dict
    after: dict
    history: list[dict]
    wall_s: float

    @property
    def mean_reward(self) -> float:
        return float(np.mean([m["reward"] for m in self.history]))

    @property
    def meta_share(self) -> float:
        meta = sum(m["time/meta_update"] for m in self.history)
        total = sum(m["time/generation"] + m["time/policy_update"] + m["time/meta_update"] for m in self.history)
        return meta / total if total else 0.0


def run_names(settings: DemoSettings) -> list[str]:
    """"adaptive", then one fixed run per value of the sweep ("fixed_0.6", ...)."""
    return ["adaptive", *(f"fixed_{v:g}" for v in settings.sweep)]


def _grpo_run(name, model, tokenizer, task, settings: DemoSettings, eval_set, before, fixed: float | None,
              progress: bool) -> RunResult:
    from metahp.lab.grpo import GRPOTrainer

    knobs = {} if fixed is None else {settings.knob: fixed}
    trainer = GRPOTrainer(model, tokenizer, task, prompts_per_step=settings.prompts_per_step,
                          num_generations=settings.num_generations, max_completion_tokens=task.max_completion_chars + 1,
                          seed=settings.seed, **knobs)
    if fixed is None:
        metahp.adapt(trainer, knob=settings.knob, updater=settings.updater, values=list(settings.sweep),
                     **settings.options)
    start = time.perf_counter()
    history = trainer.train(settings.steps, output_dir=Path(settings.output_dir) / name, progress=progress,
                            description=name)
    wall = time.perf_counter() - start
    return RunResult(name, before, trainer.evaluate(eval_set, k=settings.k), history, wall)


def run_demo(settings: DemoSettings, progress: bool = True) -> dict:
    """Run the comparison; returns the summary also written to output_dir/summary.json."""
    from metahp.lab.grpo import GRPOTrainer
    from metahp.lab.tasks import make_task
    from metahp.lab.warmstart import build_warm_policy

    out = Path(settings.output_dir)
    if out.exists() and any((out / name / "metrics.jsonl").exists() for name in run_names(settings)):
        raise ConfigError(f"{out} already holds a demo run; pass another --output-dir or delete it.")
    if len(settings.sweep) < 2 or len(set(settings.sweep)) != len(settings.sweep):
        raise ConfigError(f"sweep={list(settings.sweep)}: give at least two distinct values (the fixed runs, and "
                          f"the grid the adaptive run learns over).")
    out.mkdir(parents=True, exist_ok=True)
    task = make_task(settings.task, settings.difficulty, settings.seed)
    start = time.perf_counter()
    warm = {} if settings.warm_steps is None else {"steps": settings.warm_steps, "eval_every": settings.warm_steps}
    model, tokenizer, warm_info = build_warm_policy(task, seed=settings.seed, model=settings.model,
                                                    progress=progress, **warm)
    warm_s = time.perf_counter() - start
    eval_set = task.sample_prompts(settings.eval_problems, settings.seed + 1, split="eval")
    probe = GRPOTrainer(copy.deepcopy(model), tokenizer, task, max_completion_tokens=task.max_completion_chars + 1,
                        seed=settings.seed)
    before = probe.evaluate(eval_set, k=settings.k)
    runs = []
    for name, fixed in zip(run_names(settings), (None, *settings.sweep), strict=True):
        runs.append(_grpo_run(name, copy.deepcopy(model), tokenizer, task, settings, eval_set, before, fixed,
                              progress))
    best = best_fixed(runs)
    adaptive = runs[0]
    summary = {
        "settings": asdict(settings), "warm_start": {**warm_info, "seconds": warm_s},
        "runs": {r.name: {"before": r.before, "after": r.after, "mean_training_reward": r.mean_reward,
                          "wall_s": r.wall_s, "meta_update_share": r.meta_share} for r in runs},
        "best_fixed": {"run": best.name, "greedy_accuracy": best.after["greedy_accuracy"]},
        "adaptive_minus_best_fixed": adaptive.after["greedy_accuracy"] - best.after["greedy_accuracy"],
        "compute": {"adaptive_runs": 1, "sweep_runs": len(settings.sweep), "adaptive_steps": settings.steps,
                    "sweep_steps": settings.steps * len(settings.sweep), "adaptive_wall_s": adaptive.wall_s,
                    "sweep_wall_s": sum(r.wall_s for r in runs[1:])},
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2, default=str))
    print(format_table(settings, runs))
    figure = plot(settings, runs, out / "demo.png")
    print(f"\nfigure: {figure}\nmetrics (JSON lines): {out}/<run>/metrics.jsonl for the runs "
          f"{', '.join(run_names(settings))}\nsummary: {out / 'summary.json'}")
    return summary


def best_fixed(runs: list[RunResult]) -> RunResult:
    """The fixed run a sweep would pick in hindsight: the highest held-out greedy accuracy (the lower value on a
    tie)."""
    return max(runs[1:], key=lambda r: r.after["greedy_accuracy"])


def _label(settings: DemoSettings, r: RunResult) -> str:
    if r.name == "adaptive":
        return f"adaptive {settings.knob} ({settings.updater})"
    return f"fixed {settings.knob} {r.name.split('_', 1)[1]}"


def format_table(settings: DemoSettings, runs: list[RunResult]) -> str:
    k = settings.k
    head = (f"{'run':<34}{'greedy acc':>16}{'pass@1':>16}{f'pass@{k}':>16}{'train reward':>14}{'wall s':>8}"
            f"{'meta share':>12}")
    lines = [f"\n{settings.task} (difficulty {settings.difficulty or 'default'}), {settings.steps} GRPO steps per run, "
             f"seed {settings.seed}; held-out: {settings.eval_problems} problems, before -> after", head,
             "-" * len(head)]
    best = best_fixed(runs)
    for r in runs:
        cells = [f"{r.before[m]:.3f} -> {r.after[m]:.3f}" for m in ("greedy_accuracy", "pass@1", f"pass@{k}")]
        share = f"{100 * r.meta_share:.2f}%" if r.name == "adaptive" else "-"
        mark = "  <- the sweep's pick" if r is best else ""
        lines.append(f"{_label(settings, r):<34}{cells[0]:>16}{cells[1]:>16}{cells[2]:>16}{r.mean_reward:>14.3f}"
                     f"{r.wall_s:>8.1f}{share:>12}{mark}")
    adaptive = runs[0]
    gap = adaptive.after["greedy_accuracy"] - best.after["greedy_accuracy"]
    sweep_s = sum(r.wall_s for r in runs[1:])
    lines += ["", f"adaptive minus the sweep's pick ({_label(settings, best)}): {gap:+.3f} held-out greedy accuracy "
                  f"(one seed: see docs/benchmarks.md for intervals over seeds)",
              f"compute: the adaptive run is 1 run of {settings.steps} steps ({adaptive.wall_s:.0f} s); the sweep it "
              f"replaces is {len(runs) - 1} runs, {settings.steps * (len(runs) - 1)} steps ({sweep_s:.0f} s)"]
    return "\n".join(lines)


def plot(settings: DemoSettings, runs: list[RunResult], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    adaptive = next(r for r in runs if r.name == "adaptive")
    prob_keys = sorted((k for k in adaptive.history[0] if k.startswith("metahp/prob/")),
                       key=lambda k: float(k.rsplit("/", 1)[1]))
    values = [float(k.rsplit("/", 1)[1]) for k in prob_keys]
    probs = np.array([[m[k] for k in prob_keys] for m in adaptive.history]).T  # [K, steps]
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(9, 7), sharex=True, height_ratios=[1.2, 1], layout="constrained")
    image = top.imshow(probs, aspect="auto", origin="lower", cmap="viridis", interpolation="nearest",
                       extent=(0.5, len(adaptive.history) + 0.5, -0.5, len(values) - 0.5))
    top.set_yticks(range(len(values)), [f"{v:g}" for v in values])
    chosen = [values.index(m[f"knob/{settings.knob}"]) for m in adaptive.history]
    top.plot(range(1, len(chosen) + 1), chosen, ".", color="white", markersize=3, label="value used")
    top.set_ylabel(settings.knob)
    top.set_title(f"meta-policy over {settings.knob} ({settings.updater}); dots: value used for the batch")
    top.legend(loc="upper right", fontsize=8)
    fig.colorbar(image, ax=top, label="probability", pad=0.01)
    window = max(1, len(adaptive.history) // 15)
    greys = plt.cm.Greys(np.linspace(0.35, 0.85, max(1, len(runs) - 1)))
    for i, r in enumerate(runs):
        rewards = np.array([m["reward"] for m in r.history])
        smooth = np.convolve(rewards, np.ones(window) / window, mode="valid")
        style = (dict(color="tab:orange", linewidth=2.2) if r.name == "adaptive"
                 else dict(color=greys[i - 1], linewidth=1.2))
        bottom.plot(np.arange(window, len(rewards) + 1), smooth, label=_label(settings, r), **style)
    bottom.set_xlabel("GRPO step")
    bottom.set_ylabel(f"training reward (moving mean, {window} steps)")
    bottom.legend(fontsize=7, ncol=2)
    fig.colorbar(image, ax=bottom).ax.set_visible(False)  # keeps both panels the same width
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
