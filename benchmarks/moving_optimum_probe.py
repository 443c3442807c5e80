"""Probe for a task whose best temperature moves during training (groundwork for issue 7; not a result).

Idea: warm-start on additions WITHOUT carries, then run GRPO on additions WITH carries. At first the policy
rarely gets a carry right, so successes must be found by exploring (hot sampling should help); once the carry
is learned, cooler sampling should exploit it. The probe runs GRPO at a few fixed temperatures and records
held-out greedy accuracy on carry problems at checkpoints, to see whether the ranking of temperatures changes
over training.

    .venv/bin/python benchmarks/moving_optimum_probe.py                    # 3 temperatures x 2 seeds, ~5 min
    .venv/bin/python benchmarks/moving_optimum_probe.py --smoke            # seconds; run by the test suite
"""

from __future__ import annotations

import argparse
import copy
import json
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

from metahp.lab.tasks import Addition, Problem


def carries(a: int, b: int) -> bool:
    while a or b:
        if a % 10 + b % 10 >= 10:
            return True
        a, b = a // 10, b // 10
    return False


class CarryAddition(Addition):
    """Addition restricted to problems with (``with_carry=True``) or without any carry."""

    def __init__(self, difficulty: int | None = None, seed: int | None = 0, with_carry: bool = True):
        super().__init__(difficulty, seed)
        self.with_carry = with_carry

    @property
    def spec(self):
        return {**super().spec, "carry": self.with_carry}  # a separate warm-start cache entry

    def _generate(self, rng: np.random.Generator) -> Problem:
        while True:
            problem = super()._generate(rng)
            a, b = (int(x) for x in problem.prompt[:-1].split("+"))
            if carries(a, b) == self.with_carry:
                return problem


def run(job: dict) -> dict:
    import torch

    from metahp.lab.grpo import GRPOTrainer
    from metahp.lab.warmstart import build_warm_policy

    torch.set_num_threads(1)
    warm_task = CarryAddition(job["difficulty"], job["seed"], with_carry=False)
    task = CarryAddition(job["difficulty"], job["seed"], with_carry=True)
    model, tokenizer, info = build_warm_policy(warm_task, seed=job["seed"], progress=False, **job["warm"])
    trainer = GRPOTrainer(copy.deepcopy(model), tokenizer, task, temperature=job["temperature"], seed=job["seed"],
                          prompts_per_step=job["prompts"], num_generations=job["generations"],
                          max_completion_tokens=task.max_completion_chars + 1)
    eval_set = task.sample_prompts(job["eval_problems"], 10_000 + job["seed"], split="eval")
    curve = [(0, trainer.evaluate(eval_set, k=2)["greedy_accuracy"])]
    for stop in range(job["every"], job["steps"] + 1, job["every"]):
        trainer.train(stop, progress=False)
        curve.append((stop, trainer.evaluate(eval_set, k=2)["greedy_accuracy"]))
    reward = [m["reward"] for m in trainer.history]
    return {**{k: job[k] for k in ("temperature", "seed")}, "warm_pass_rate_no_carry": info["pass_rate"],
            "curve": curve, "train_reward": reward}


def main(argv=None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--temperatures", type=float, nargs="+", default=[0.6, 1.0, 1.4])
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--every", type=int, default=100)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--smoke", action="store_true")
    parser.add_argument("--out", type=Path, default=Path(__file__).with_name("results") / "moving_optimum_probe.json")
    args = parser.parse_args(argv)
    base = {"difficulty": 2, "prompts": 8, "generations": 8, "eval_problems": 256, "warm": {}}
    if args.smoke:
        args.temperatures, args.seeds, args.steps, args.every, args.workers = [0.6, 1.4], 1, 2, 1, 1
        base.update(prompts=2, generations=2, eval_problems=8, warm={"steps": 5, "eval_every": 5})
    jobs = [{**base, "temperature": t, "seed": s, "steps": args.steps, "every": args.every}
            for s in range(args.seeds) for t in args.temperatures]
    if args.workers > 1:
        for seed in range(args.seeds):  # warm starts first, once per seed, so workers only read the cache
            run({**jobs[seed * len(args.temperatures)], "steps": 0, "every": 1})
        with ProcessPoolExecutor(args.workers) as pool:
            results = list(pool.map(run, jobs))
    else:
        results = [run(job) for job in jobs]
    print(f"{'T':>5} {'seed':>5}  greedy accuracy on carry problems at " +
          ", ".join(str(step) for step, _ in results[0]["curve"]) + " steps")
    for r in results:
        print(f"{r['temperature']:>5} {r['seed']:>5}  " + "  ".join(f"{acc:.3f}" for _, acc in r["curve"]))
    if not args.smoke:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=1) + "\n")
    return results


if __name__ == "__main__":
    main()
