"""What values per completion cost in a reference-trainer step, against one value per batch (issue 13's goal: at
most 1% of a step, no extra forward pass).

    .venv/bin/python benchmarks/per_row_cost.py --steps 40 --rounds 5     # the measurement in docs/benchmarks.md
    .venv/bin/python benchmarks/per_row_cost.py --smoke                  # seconds; run by the test suite

Two trainers from the demo's warm-started tiny model (addition, seed 0) and the same seed: one at a fixed
temperature 1.0 (per batch), one with ``metahp.adapt(per="completion", updater="uniform")`` over five temperatures
(per completion: the per-row sampling processor and the per-row division in the loss, and a meta-update that reads
no likelihood). They run ``--steps`` steps each, alternating in ``--rounds`` rounds so that both see the same
machine load; the result is the ratio of median step times (generation + policy update + meta-update) and the
model's forward calls outside generation per step (the loss's epochs) of each.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

import torch


def build(per_row: bool, args):
    import metahp
    from metahp.lab.grpo import GRPOTrainer
    from metahp.lab.models import char_tokenizer, tiny_model
    from metahp.lab.tasks import make_task

    if args.smoke:  # a random model: seconds, but few batches with an advantage to train on
        task = make_task("addition", difficulty=2)
        tok = char_tokenizer(task.alphabet)
        model = tiny_model(tok, hidden=64, layers=2, heads=4, seed=0)
    else:  # the demo's warm start (cached after the first build): batches that train, as in a real run
        from metahp.lab.warmstart import build_warm_policy

        task = make_task("addition", None, 0)
        model, tok, _ = build_warm_policy(task, seed=0, progress=False)
    trainer = GRPOTrainer(model, tok, task, prompts_per_step=args.prompts, num_generations=args.generations,
                          max_completion_tokens=task.max_completion_chars + 1, seed=0)
    if per_row:
        metahp.adapt(trainer, per="completion", updater="uniform", values=[0.6, 0.8, 1.0, 1.2, 1.5])
    # Forward passes outside generation (the loss's epochs; a meta-update that needed logits would add some).
    calls = {"forward": 0, "generating": False}
    generate = trainer.model.generate

    def counted_generate(*a, **kw):
        calls["generating"] = True
        try:
            return generate(*a, **kw)
        finally:
            calls["generating"] = False

    trainer.model.generate = counted_generate
    trainer.model.register_forward_pre_hook(
        lambda *a: None if calls["generating"] else calls.__setitem__("forward", calls["forward"] + 1))
    return trainer, calls


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=40, help="steps per trainer per round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--prompts", type=int, default=8)
    parser.add_argument("--generations", type=int, default=8)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--smoke", action="store_true")
    parser.add_argument("--out", type=Path, default=None, help="write the result as JSON here")
    args = parser.parse_args(argv)
    if args.smoke:
        args.steps, args.rounds, args.prompts, args.generations = 2, 1, 2, 5
    torch.set_num_threads(args.threads)
    runs = {name: build(name == "per_completion", args) for name in ("per_batch", "per_completion")}
    times: dict[str, list[float]] = {name: [] for name in runs}
    forwards: dict[str, list[int]] = {name: [] for name in runs}
    for _ in range(args.rounds):
        for name, (trainer, calls) in runs.items():
            for _ in range(args.steps):
                before = calls["forward"]
                m = trainer.train_step()
                times[name].append(m["time/generation"] + m["time/policy_update"] + m["time/meta_update"])
                forwards[name].append(calls["forward"] - before)
    result = {
        "median_step_s": {name: statistics.median(t) for name, t in times.items()},
        "forwards_outside_generation_per_step": {name: sorted(set(f)) for name, f in forwards.items()},
        "steps_per_trainer": args.steps * args.rounds,
        "settings": {k: v for k, v in vars(args).items() if k != "out"} | {"out": None},
    }
    med = result["median_step_s"]
    result["per_completion_over_per_batch"] = med["per_completion"] / med["per_batch"]
    print(json.dumps(result, indent=2))
    if args.out is not None:
        args.out.write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    main()
