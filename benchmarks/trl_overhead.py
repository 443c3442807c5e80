"""Measure the TRL adapter's overhead as a share of TRL's own step time (a script, not a test).

    .venv/bin/python benchmarks/trl_overhead.py --steps 20 --hidden 128 --layers 2 --prompts 8 --generations 8 \
        --length 32

TRL's ``step_time`` metric times each training_step, which includes generation and the metahp wrapper around
it; ``adapter.update_seconds`` times the meta-update alone (likelihood forward, sparsemax, EMA). Also runs the same
settings without metahp, in alternating order, to compare whole step times.
"""

from __future__ import annotations

import argparse
import importlib.util
import statistics
import tempfile
import time
from pathlib import Path

import torch

_TINY = Path(__file__).resolve().parents[1] / "tests" / "trl_tiny.py"
_spec = importlib.util.spec_from_file_location("trl_tiny", _TINY)
trl_tiny = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(trl_tiny)


def run(with_metahp: bool, args) -> dict:
    import metahp

    with tempfile.TemporaryDirectory() as out:
        trainer = trl_tiny.grpo_trainer(
            out, model_kwargs={"hidden": args.hidden, "layers": args.layers}, max_steps=args.steps,
            per_device_train_batch_size=args.prompts * args.generations, num_generations=args.generations,
            max_completion_length=args.length, logging_steps=1)
        adapter = metahp.adapt(trainer, updater="tampo", likelihoods=args.likelihoods) if with_metahp else None
        if adapter is not None and args.sample_at is not None:
            # Same sampling temperature as the plain run (completion lengths, hence step times, comparable); the
            # meta-update still scores the whole default grid.
            adapter.policy.sample = lambda: args.sample_at
        start = time.perf_counter()
        trainer.train()
        wall = time.perf_counter() - start
    steps = [log["step_time"] for log in trainer.state.log_history if "step_time" in log][1:]  # skip warm-up
    lengths = [log["completions/mean_length"] for log in trainer.state.log_history if "step_time" in log]
    result = {"step_time": statistics.median(steps), "wall": wall, "length": statistics.mean(lengths)}
    if adapter is not None:
        updates = adapter.update_seconds[1:]
        result["update"] = statistics.median(updates)
        result["share"] = sum(updates) / sum(steps)
    return result


def main(argv=None) -> list:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--hidden", type=int, default=128)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--prompts", type=int, default=8)
    parser.add_argument("--generations", type=int, default=8)
    parser.add_argument("--length", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--likelihoods", default="auto", choices=["auto", "generate", "forward"])
    parser.add_argument("--sample-at", type=float, default=1.0,
                        help="force the sampled value (as the plain run's); pass a negative number to let metahp draw")
    parser.add_argument("--smoke", action="store_true", help="3 steps, 1 repeat, short completions (for tests)")
    args = parser.parse_args(argv)
    if args.smoke:
        args.steps, args.repeats, args.length, args.prompts, args.generations = 3, 1, 8, 2, 4
    if args.sample_at is not None and args.sample_at <= 0:
        args.sample_at = None
    torch.set_num_threads(args.threads)
    rows = []
    for _ in range(args.repeats):
        for with_metahp in (False, True):
            rows.append((with_metahp, run(with_metahp, args)))
    for with_metahp, r in rows:
        extra = (f"  meta-update median {r['update'] * 1e3:.1f} ms, {100 * r['share']:.2f}% of TRL step time"
                 if with_metahp else "")
        print(f"{'metahp' if with_metahp else 'plain '}  median step_time {r['step_time'] * 1e3:.1f} ms  "
              f"train wall {r['wall']:.1f} s  mean completion length {r['length']:.1f}{extra}")
    return rows


if __name__ == "__main__":
    main()
