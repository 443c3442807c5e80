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
    python benchmarks/learning.py --tasks addition sort --task-steps sort=200 --seeds 10   # 300 steps on addition
    python benchmarks/learning.py --report-only            # tables and figures from the saved JSON
    # the real-model benchmark (docs/benchmarks.md): SmolLM2-135M-Instruct as it is, no warm start
    python benchmarks/learning.py --model smollm2 --tasks word_arithmetic --strategies fixed_0.6 fixed_1 exp3 \
        --seeds 5 --first-seed 1 --steps 80 --prompts-per-step 4 --num-generations 4 --eval-problems 64 --k 8 \
        --learning-rate 1e-5 --max-completion-tokens 5 --workers 2 --threads 1 --out benchmarks/results/smollm2
    python benchmarks/learning.py --smoke --out /tmp/lb     # seconds: 1 task, 2 strategies, 1 seed, 3 steps

This file is the command line; the rest lives next to it: learning_run.py (Args, the strategies, the warm start,
one run, the process pool), learning_stats.py (intervals, ranks, paired differences, the summary),
learning_report.py (report.md and summary.json) and learning_figures.py (the four figures).
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:  # imported from a file (the tests) rather than run as a script
    sys.path.insert(0, str(HERE))

from learning_report import report  # noqa: E402
from learning_run import STRATEGIES, TASKS, Args, map_jobs, prepare, run_one, run_path  # noqa: E402


def parse_args(argv=None) -> Args:
    """The command line as ``Args`` (the fields document the options)."""
    d = Args()
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--tasks", nargs="+", default=d.tasks, choices=TASKS,
                   help="default: the four fixed-difficulty tasks; rare_skill is the moving-optimum task (issue 7)")
    p.add_argument("--strategies", nargs="+", default=d.strategies, choices=list(STRATEGIES))
    p.add_argument("--seeds", type=int, default=d.seeds, help="seeds FIRST..FIRST+N-1")
    p.add_argument("--first-seed", type=int, default=d.first_seed,
                   help="e.g. 100 for tuning seeds kept apart from 0..4")
    p.add_argument("--steps", type=int, default=d.steps)
    p.add_argument("--task-steps", nargs="+", default=[], metavar="TASK=STEPS", type=task_steps_entry,
                   help="steps for some tasks, e.g. countdown=100 sort=200 (others: --steps)")
    p.add_argument("--prompts-per-step", type=int, default=d.prompts_per_step)
    p.add_argument("--num-generations", type=int, default=d.num_generations)
    p.add_argument("--eval-problems", type=int, default=d.eval_problems)
    p.add_argument("--k", type=int, default=d.k)
    p.add_argument("--workers", type=int, default=d.workers)
    p.add_argument("--threads", type=int, default=d.threads, help="torch threads per worker")
    p.add_argument("--model", default=d.model, help="'tiny' (warm-started per task and seed) or a pretrained model "
                   "such as 'smollm2', used as it is")
    p.add_argument("--learning-rate", type=float, default=d.learning_rate,
                   help="default: GRPOConfig's (tuned for tiny)")
    p.add_argument("--max-completion-tokens", type=int, default=d.max_completion_tokens,
                   help="default: the task's longest answer in characters + 1 (one token per character)")
    p.add_argument("--train-set-size", type=int, default=d.train_set_size,
                   help="a fixed set of N training problems per (task, seed) iterated in epochs (0: fresh every step)")
    p.add_argument("--out", type=Path, default=d.out)
    p.add_argument("--report-only", action="store_true", help="rebuild tables and figures from <out>/runs")
    p.add_argument("--smoke", action="store_true", help="1 task, 2 strategies, 1 seed, 3 steps, tiny eval")
    parsed = vars(p.parse_args(argv))
    parsed["task_steps"] = dict(parsed["task_steps"])
    unknown = sorted(set(parsed["task_steps"]) - set(parsed["tasks"]))
    if unknown:
        p.error(f"--task-steps names {unknown}, which --tasks does not include ({parsed['tasks']})")
    return Args(**parsed)


def task_steps_entry(text: str) -> tuple[str, int]:
    """One ``TASK=STEPS`` entry of --task-steps."""
    task, sep, steps = text.partition("=")
    if not sep or task not in TASKS or not steps.isdigit() or int(steps) < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: expected TASK=STEPS with TASK one of {list(TASKS)} and STEPS a "
                                         "positive integer, e.g. countdown=100")
    return task, int(steps)


def smoke_sized(args: Args) -> Args:
    """--smoke: 1 task, 2 strategies, 1 seed, 3 steps, a tiny eval and a tiny warm start (cached under
    $METAHP_CACHE)."""
    return dataclasses.replace(args, tasks=["addition"], strategies=["fixed_1", "tampo"], seeds=1, steps=3,
                               eval_problems=16, k=2, prompts_per_step=4, num_generations=4,
                               warm={"steps": 20, "eval_every": 20, "eval_size": 16}, workers=min(args.workers, 2))


def main(argv=None) -> dict:
    args = parse_args(argv)
    if args.smoke:
        args = smoke_sized(args)
    if args.report_only:
        return report(args.out)
    pairs = [(t, s) for s in range(args.first_seed, args.first_seed + args.seeds) for t in args.tasks]
    map_jobs(prepare, [(args, t, s) for t, s in pairs], args.workers, "warm starts")
    # seed-major order: a run cut short still has every strategy on the first seeds; saved runs are skipped
    jobs = [(args, t, s, st) for t, s in pairs for st in args.strategies if not run_path(args.out, t, st, s).exists()]
    print(f"{len(jobs)} runs to do ({len(pairs) * len(args.strategies) - len(jobs)} already saved in {args.out})",
          file=sys.stderr)
    map_jobs(run_one, jobs, args.workers, "runs")
    return report(args.out)


if __name__ == "__main__":
    main()
