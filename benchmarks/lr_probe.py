"""A probe of the learning-rate knob on the reference trainer (issue 21): fixed multipliers of the configured learning
rate against exp3 adapting the multiplier over the same grid, on tuning seeds only. A probe, not the reporting run:
it tunes nothing and decides nothing; the protocol's report on seeds 0-9 is still to run.

    .venv/bin/python benchmarks/lr_probe.py --steps 100 --seeds 10 11 12 13 14

Each run starts from the seed's warm start (benchmarks/learning_run.py's ``load_policy``), trains ``steps`` GRPO
steps at temperature 1.0, and is scored by held-out greedy accuracy (the seed's eval problems, the same for every
strategy). Writes one JSON with every run and prints a table of means and paired differences against the
hindsight-best fixed multiplier.
"""

from __future__ import annotations

import argparse
import json
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent


@dataclass
class Args:
    task: str = "addition"
    """the task (metahp.lab.tasks)"""
    seeds: list[int] = field(default_factory=lambda: [10, 11, 12, 13, 14])
    """tuning seeds only (10-14); 0-9 are the reporting seeds"""
    steps: int = 100
    """GRPO steps per run"""
    multipliers: list[float] = field(default_factory=lambda: [0.5, 1.0, 2.0])
    """the fixed multipliers, and the grid exp3 adapts over"""
    eval_problems: int = 256
    """held-out problems per seed"""
    workers: int = 2
    """processes (one torch thread each)"""
    out: Path = HERE / "results" / "lr_probe" / "probe.json"
    """where the runs are written"""


def run(args: Args, seed: int, strategy: str) -> dict:
    """One run: strategy 'fixed_<m>' or 'exp3'."""
    import sys

    import torch

    torch.set_num_threads(1)
    sys.path.insert(0, str(HERE))  # learning_run, beside this file, when loaded by path
    from learning_run import Args as LearningArgs
    from learning_run import load_policy, trainer_settings

    import metahp
    from metahp.knobs import LearningRate
    from metahp.lab.grpo import GRPOTrainer
    from metahp.lab.tasks import make_task

    task = make_task(args.task, None, seed)
    learning = LearningArgs(tasks=[args.task])
    model, tokenizer, _ = load_policy(learning, task, seed)
    trainer = GRPOTrainer(model, tokenizer, task, prompts_per_step=8, num_generations=8, temperature=1.0,
                          **trainer_settings(learning, task, seed))
    grid = LearningRate(args.multipliers)
    if strategy == "exp3":
        metahp.adapt(trainer, knob=grid, updater="exp3", seed=seed)
    else:  # a fixed multiplier, through the same knob (the constant updater never moves)
        metahp.adapt(trainer, knob=grid, updater="constant", updater_options={"value": float(strategy[6:])})
    start = time.perf_counter()
    history = trainer.train(args.steps, progress=False)
    after = trainer.evaluate(task.sample_prompts(args.eval_problems, seed + 1, split="eval"), k=8)
    return {"seed": seed, "strategy": strategy, "greedy_accuracy": after["greedy_accuracy"],
            "reward_auc": float(np.mean([m["reward"] for m in history])), "seconds": time.perf_counter() - start,
            "multipliers": [m["knob/learning_rate"] for m in history]}


def main(args: Args) -> None:
    if not set(args.seeds) <= set(range(10, 15)):
        raise SystemExit(f"seeds {args.seeds}: a probe uses the tuning seeds 10-14 only (0-9 are for reporting).")
    strategies = [f"fixed_{m:g}" for m in args.multipliers] + ["exp3"]
    jobs = [(args, seed, s) for seed in args.seeds for s in strategies]
    with ProcessPoolExecutor(args.workers) as pool:
        runs = list(pool.map(run, *zip(*jobs, strict=True)))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"args": {k: str(v) for k, v in asdict(args).items()}, "runs": runs}, indent=1))
    acc = {s: np.array([r["greedy_accuracy"] for r in runs if r["strategy"] == s]) for s in strategies}
    best = max((s for s in strategies if s != "exp3"), key=lambda s: acc[s].mean())
    print(f"{args.task}, seeds {args.seeds}, {args.steps} steps; hindsight-best fixed: {best}")
    print("| strategy | greedy accuracy (mean) | minus best fixed (mean, min, max over seeds) |")
    print("| --- | --- | --- |")
    for s in strategies:
        d = acc[s] - acc[best]
        print(f"| {s} | {acc[s].mean():.3f} | {d.mean():+.3f} ({d.min():+.3f}, {d.max():+.3f}) |")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", default=Args.task)
    parser.add_argument("--steps", type=int, default=Args.steps)
    parser.add_argument("--seeds", type=int, nargs="+", default=[10, 11, 12, 13, 14])
    parser.add_argument("--workers", type=int, default=Args.workers)
    main(Args(**vars(parser.parse_args())))
