"""Each knob's likelihood cost as a share of a reference-trainer GRPO step, on a real model's logits.

    .venv/bin/python benchmarks/knob_cost_in_step.py                 # SmolLM2-135M-Instruct (V = 49152)
    .venv/bin/python benchmarks/knob_cost_in_step.py --model tiny    # the tiny char-level Qwen2
    .venv/bin/python benchmarks/knob_cost_in_step.py --smoke         # seconds; run by the test suite

One GRPO step (generation + policy update) is timed, then, on the logits that step sampled with, the
candidate likelihoods of every knob (its default grid) are timed side by side in the same process. The share
is likelihood time / step time. Writes JSON under benchmarks/results/.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import torch

from metahp.grpo import GRPOTrainer
from metahp.knobs import MinP, Temperature, TopK, TopP
from metahp.models import load_model
from metahp.tasks import make_task


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="smollm2")
    parser.add_argument("--prompts", type=int, default=4)
    parser.add_argument("--generations", type=int, default=4)
    parser.add_argument("--tokens", type=int, default=32, help="max completion tokens")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--smoke", action="store_true")
    parser.add_argument("--out", type=Path, default=Path(__file__).with_name("results") / "knob_cost_in_step.json")
    args = parser.parse_args(argv)
    if args.smoke:
        args.model, args.prompts, args.generations, args.tokens = "tiny", 2, 2, 4
    torch.set_num_threads(args.threads)
    task = make_task("addition", difficulty=2)
    model, tokenizer = load_model(args.model)
    trainer = GRPOTrainer(model, tokenizer, task, prompts_per_step=args.prompts, num_generations=args.generations,
                          max_completion_tokens=args.tokens, epochs=1, seed=0)
    start = time.perf_counter()
    rollout = trainer.generate()
    generation = time.perf_counter() - start
    start = time.perf_counter()
    trainer.update_policy(rollout)
    update = time.perf_counter() - start
    step = generation + update
    result = {"model": args.model, "vocab": rollout.logits.shape[-1], "completions": rollout.logits.shape[0],
              "completion_tokens": int(rollout.completion_mask.sum()), "step_s": step, "generation_s": generation,
              "policy_update_s": update, "knobs": {},
              "machine": f"{platform.machine()}, {args.threads} torch threads, torch {torch.__version__}"}
    for knob in (Temperature(), TopP(temperature=1.0), TopK(temperature=1.0), MinP(temperature=1.0)):
        start = time.perf_counter()
        knob.sequence_logprobs(rollout.logits, rollout.completion_ids, rollout.completion_mask)
        seconds = time.perf_counter() - start
        result["knobs"][knob.name] = {"candidates": len(knob), "seconds": seconds, "share_of_step": seconds / step}
    print(json.dumps(result, indent=2))
    if not args.smoke:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    main()
