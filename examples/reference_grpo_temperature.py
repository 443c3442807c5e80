"""GRPO on 2-digit addition with metahp's reference trainer while TAMPO learns the sampling temperature.

Run:  .venv/bin/python examples/reference_grpo_temperature.py            (about a minute on 2 CPU cores)
"""

import argparse

import numpy as np

import metahp
from metahp.lab.grpo import GRPOTrainer
from metahp.lab.tasks import make_task
from metahp.lab.warmstart import build_warm_policy

parser = argparse.ArgumentParser()
parser.add_argument("--steps", type=int, default=150, help="GRPO steps (one generation batch each)")
parser.add_argument("--updater", default="tampo", help=f"one of {sorted(metahp.UPDATERS)}")
parser.add_argument("--warm-steps", type=int, default=1500, help="budget of the supervised warm start")
args = parser.parse_args()

task = make_task("addition", difficulty=2)  # prompts like "12+34=", strict 0/1 verifier
# A tiny Qwen2 with a character tokenizer, warm-started to solve some problems (cached after the first run).
model, tokenizer, info = build_warm_policy(task, seed=0, steps=args.warm_steps)
print(f"warm start: greedy pass rate {info['pass_rate']:.2f} ({'cached' if info['cached'] else 'trained'})")

trainer = GRPOTrainer(model, tokenizer, task, prompts_per_step=8, num_generations=8,
                      max_completion_tokens=task.max_completion_chars + 1, seed=0)
adapter = metahp.adapt(trainer, knob="temperature", updater=args.updater)  # the one metahp line

history = trainer.train(args.steps, output_dir="runs/example")
held_out = task.sample_prompts(256, rng=1, split="eval")
print("held-out after GRPO:", trainer.evaluate(held_out, k=8))
print("temperatures used:", np.round([m["knob/temperature"] for m in history[-10:]], 1))
print("meta-policy now:", dict(zip(adapter.policy.values, np.round(adapter.policy.probs, 2), strict=True)))
share = sum(m["time/meta_update"] for m in history) / sum(
    m["time/generation"] + m["time/policy_update"] + m["time/meta_update"] for m in history)
print(f"meta-update share of step time: {100 * share:.2f}%")
