"""Each knob's likelihood cost as a share of a reference-trainer GRPO step, on a real model's logits.

    .venv/bin/python benchmarks/knob_cost_in_step.py --threads 1     # SmolLM2-135M-Instruct (V = 49152);
                                                                     # the committed results (a shared 2-core box)
    .venv/bin/python benchmarks/knob_cost_in_step.py --model tiny    # the tiny char-level Qwen2
    .venv/bin/python benchmarks/knob_cost_in_step.py --smoke         # seconds; run by the test suite

One GRPO step (generation + policy update) is timed, then, on the logits that step sampled with, the
candidate likelihoods of every knob (its default grid) are timed side by side in the same process; this is
repeated for --repeats steps. The share is median likelihood time / median step time (the medians make it
robust to other jobs on the machine; every repeat is kept in the JSON). Writes JSON under benchmarks/results/.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import torch

from metahp.knobs import MinP, Temperature, TopK, TopP
from metahp.lab.grpo import GRPOTrainer
from metahp.lab.models import load_model
from metahp.lab.tasks import make_task


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="smollm2")
    parser.add_argument("--prompts", type=int, default=4)
    parser.add_argument("--generations", type=int, default=4)
    parser.add_argument("--tokens", type=int, default=32, help="max completion tokens")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3, help="GRPO steps timed (each followed by the knobs)")
    parser.add_argument("--smoke", action="store_true")
    parser.add_argument("--out", type=Path, default=Path(__file__).with_name("results") / "knob_cost_in_step.json")
    args = parser.parse_args(argv)
    if args.smoke:
        args.model, args.prompts, args.generations, args.tokens, args.repeats = "tiny", 2, 2, 4, 1
    torch.set_num_threads(args.threads)
    task = make_task("addition", difficulty=2)
    model, tokenizer = load_model(args.model)
    trainer = GRPOTrainer(model, tokenizer, task, prompts_per_step=args.prompts, num_generations=args.generations,
                          max_completion_tokens=args.tokens, epochs=1, seed=0)
    knobs = (Temperature(), TopP(temperature=1.0), TopK(temperature=1.0), MinP(temperature=1.0))
    steps, seconds = [], {knob.name: [] for knob in knobs}
    for _ in range(args.repeats):
        start = time.perf_counter()
        rollout = trainer.generate()
        generation = time.perf_counter() - start
        start = time.perf_counter()
        trainer.update_policy(rollout)
        update = time.perf_counter() - start
        steps.append({"step_s": generation + update, "generation_s": generation, "policy_update_s": update,
                      "completion_tokens": int(rollout.completion_mask.sum())})
        for knob in knobs:
            start = time.perf_counter()
            knob.sequence_logprobs(rollout.logits, rollout.completion_ids, rollout.completion_mask)
            seconds[knob.name].append(time.perf_counter() - start)
    step = statistics.median(s["step_s"] for s in steps)
    result = {"model": args.model, "vocab": rollout.logits.shape[-1], "completions": rollout.logits.shape[0],
              "completion_tokens": steps[0]["completion_tokens"], "step_s": step,
              "generation_s": statistics.median(s["generation_s"] for s in steps),
              "policy_update_s": statistics.median(s["policy_update_s"] for s in steps), "knobs": {},
              "repeats": steps,
              "machine": f"{platform.machine()}, {args.threads} torch threads, torch {torch.__version__}"}
    for knob in knobs:
        median = statistics.median(seconds[knob.name])
        result["knobs"][knob.name] = {
            "candidates": len(knob), "seconds": median, "share_of_step": median / step,
            "seconds_per_repeat": seconds[knob.name],
            "share_per_repeat": [t / s["step_s"] for t, s in zip(seconds[knob.name], steps, strict=True)]}
    print(json.dumps(result, indent=2))
    if not args.smoke:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    main()
