"""The `metahp` command line."""

from __future__ import annotations

import argparse
import sys

import numpy as np

from metahp.errors import MetaHPError
from metahp.lab.demo import DemoSettings


def synthetic(args: argparse.Namespace) -> int:
    """Several updaters side by side on synthetic rollouts (no model): a numeric look at the meta-update."""
    from metahp import meta_policy
    from metahp.lab.synthetic import run

    print(f"synthetic rollouts, {args.steps} steps, seed {args.seed}: success is likelier when sampling cool\n")
    print(f"{'updater':<20}{'mean reward':>12}{'E[T] at end':>13}   distribution over 0.6 ... 1.5 at the end")
    for name in args.updaters:
        policy = meta_policy("temperature", name, seed=args.seed)
        history = run(policy, steps=args.steps, seed=args.seed)
        reward = np.mean([m["reward"] for m in history])
        bars = "".join(" ▁▂▃▄▅▆▇█"[min(8, int(p * 16))] for p in policy.probs)
        print(f"{name:<20}{reward:>12.3f}{policy.expected_value:>13.2f}   {bars}  {np.round(policy.probs, 2)}")
    return 0


def run_demo_doc() -> str:
    from metahp.lab import demo

    return demo.__doc__


def demo_command(args: argparse.Namespace) -> int:
    import torch

    from metahp.lab.demo import run_demo

    if args.model == "tiny":
        # A tiny model's ops are too small to split across threads: one thread ran its GRPO steps faster here.
        torch.set_num_threads(1)
    settings = DemoSettings(task=args.task, difficulty=args.difficulty, model=args.model, steps=args.steps,
                            knob=args.knob, updater=args.updater, sweep=tuple(args.sweep),
                            seed=args.seed, output_dir=args.output_dir, eval_problems=args.eval_problems)
    if args.smoke:
        settings.steps, settings.eval_problems, settings.prompts_per_step, settings.num_generations = 3, 16, 2, 4
        settings.warm_steps = 10
        settings.sweep = tuple(args.sweep[:2]) if len(args.sweep) > 2 else tuple(args.sweep)
    run_demo(settings, progress=not args.no_progress)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="metahp", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    syn = sub.add_parser("synthetic", help="compare updaters on synthetic rollouts (seconds, no model)")
    syn.add_argument("--steps", type=int, default=60)
    syn.add_argument("--seed", type=int, default=0)
    syn.add_argument("--updaters", nargs="+", default=["tampo", "softmax_gradient", "exp3", "sliding_window_ucb",
                                                       "thompson", "constant"])
    syn.set_defaults(func=synthetic)
    demo = sub.add_parser("demo", help="one GRPO run with the temperature learned online, beside the sweep of fixed "
                                       "values it replaces (about 3 minutes on 2 CPUs)",
                          description=run_demo_doc())
    defaults = DemoSettings()
    demo.add_argument("--task", default=defaults.task,
                      help="rare_skill (default: the temperature matters), addition, countdown, reverse, sort")
    demo.add_argument("--difficulty", type=int, default=None, help="task difficulty (default: the task's own)")
    demo.add_argument("--model", default=defaults.model, help="'tiny' (random Qwen2, warm-started), 'smollm2', "
                                                               "or a local model folder")
    demo.add_argument("--steps", type=int, default=defaults.steps)
    demo.add_argument("--knob", default=defaults.knob)
    demo.add_argument("--updater", default=defaults.updater,
                      help=f"the adaptive run's updater (default: {defaults.updater}, metahp.adapt's default; "
                           f"'tampo' is the paper's rule, metahp.meta_policy's default)")
    demo.add_argument("--sweep", type=float, nargs="+", default=list(defaults.sweep),
                      help=f"the fixed values a sweep tries, each a run, and the adaptive run's grid (default: "
                           f"{' '.join(f'{v:g}' for v in defaults.sweep)})")
    demo.add_argument("--seed", type=int, default=defaults.seed)
    demo.add_argument("--output-dir", default=defaults.output_dir)
    demo.add_argument("--eval-problems", type=int, default=defaults.eval_problems)
    demo.add_argument("--smoke", action="store_true", help="a few steps on a tiny budget (for tests)")
    demo.add_argument("--no-progress", action="store_true")
    demo.set_defaults(func=demo_command)
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except MetaHPError as err:
        print(f"metahp: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
