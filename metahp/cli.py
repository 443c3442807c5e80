"""The `metahp` command line."""

from __future__ import annotations

import argparse
import sys

import numpy as np

from metahp.errors import MetaHPError


def synthetic(args: argparse.Namespace) -> int:
    """Several updaters side by side on synthetic rollouts (no model): a numeric look at the meta-update."""
    from metahp import meta_policy
    from metahp.synthetic import run

    print(f"synthetic rollouts, {args.steps} steps, seed {args.seed}: success is likelier when sampling cool\n")
    print(f"{'updater':<20}{'mean reward':>12}{'E[T] at end':>13}   distribution over 0.6 ... 1.5 at the end")
    for name in args.updaters:
        policy = meta_policy("temperature", name, seed=args.seed)
        history = run(policy, steps=args.steps, seed=args.seed)
        reward = np.mean([m["reward"] for m in history])
        bars = "".join(" ▁▂▃▄▅▆▇█"[min(8, int(p * 16))] for p in policy.probs)
        print(f"{name:<20}{reward:>12.3f}{policy.expected_value:>13.2f}   {bars}  {np.round(policy.probs, 2)}")
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
    demo = sub.add_parser("demo", help="the main demo (for now: the synthetic comparison)")
    demo.add_argument("--steps", type=int, default=60)
    demo.add_argument("--seed", type=int, default=0)
    demo.set_defaults(func=synthetic, updaters=syn.get_default("updaters"))
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except MetaHPError as err:
        print(f"metahp: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
