"""SmolLM2-135M-Instruct through TRL's GRPOTrainer on word_arithmetic: fixed temperatures against metahp (issue 20,
item 5: the real client). A benchmark, not a test; ``--smoke`` is what the suite runs.

    .venv/bin/python benchmarks/trl_smollm2.py --strategies fixed_0.6 fixed_1 fixed_1.5 exp3 \
        rows_informative_lr0.25 --seeds 5 --first-seed 1 --steps 40 --workers 2 --out benchmarks/results/trl_smollm2

Each run: the installed SmolLM2 (no warm start, as a user's run), TRL's GRPOTrainer with transformers generation
on the CPU, ``prompts`` prompts x ``generations`` completions per step, one optimizer step per generation batch
(TRL's defaults: one iteration, no KL), the reward the task's verifier. The strategies are benchmarks/learning_run's
names: ``fixed_T`` sets GRPOConfig(temperature=T); a metahp strategy calls ``metahp.adapt(trainer, ...)`` with its
options. After training: greedy accuracy and pass@k at T = 1 on the seed's held-out problems (the same for every
strategy). Records have learning_run's layout, so ``learning_report.report`` builds the tables and figures.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from learning_run import STRATEGIES, map_jobs, run_path, write_json  # noqa: E402

TASK = "word_arithmetic"


def _problems(seed: int, n: int, split: str):
    from metahp.lab.tasks import make_task

    task = make_task(TASK, None, seed)
    return task, task.sample_prompts(n, seed + 1 if split == "eval" else seed, split=split)


def evaluate(model, tokenizer, task, problems, max_tokens: int, k: int, seed: int) -> dict:
    """Greedy accuracy and pass@k (k samples at T = 1) of ``model`` on ``problems``."""
    import numpy as np
    import torch

    from metahp.lab.grpo import pass_at_k

    model.eval()
    enc = tokenizer([p.prompt for p in problems], return_tensors="pt", padding=True)
    width = enc["input_ids"].shape[1]
    with torch.no_grad():
        greedy = model.generate(**enc, do_sample=False, max_new_tokens=max_tokens,
                                pad_token_id=tokenizer.pad_token_id)
        torch.manual_seed(seed + 10_007)
        sampled = model.generate(**enc, do_sample=True, temperature=1.0, top_p=1.0, top_k=0,
                                 max_new_tokens=max_tokens, num_return_sequences=k,
                                 pad_token_id=tokenizer.pad_token_id)
    texts = tokenizer.batch_decode(greedy[:, width:], skip_special_tokens=True)
    samples = tokenizer.batch_decode(sampled[:, width:], skip_special_tokens=True)
    correct = np.array([task.reward(p, t) for p, t in
                        zip([p for p in problems for _ in range(k)], samples, strict=True)]).reshape(-1, k)
    return {"greedy_accuracy": float(np.mean([task.reward(p, t) for p, t in zip(problems, texts, strict=True)])),
            f"pass@{k}": float(np.mean([pass_at_k(k, int(c), k) for c in correct.sum(1)])),
            "pass@1": float(correct.mean())}


def run_one(args, seed: int, strategy_name: str) -> dict:
    """One TRL GRPO run; writes its record to <out>/runs/ and returns a short summary."""
    import torch

    torch.set_num_threads(args.threads)
    from datasets import Dataset
    from transformers.utils import logging as hf_logging
    from trl import GRPOConfig, GRPOTrainer

    import metahp
    from metahp.lab.models import load_model

    hf_logging.disable_progress_bar()
    strategy = STRATEGIES[strategy_name]
    task, train = _problems(seed, args.steps * args.prompts, "train")
    _, eval_set = _problems(seed, args.eval_problems, "eval")
    model, tokenizer = load_model(args.model)
    tokenizer.padding_side = "left"
    answers = {p.prompt: p for p in train}

    def verifier(prompts, completions, **kwargs):
        return [task.reward(answers[p], c) for p, c in zip(prompts, completions, strict=True)]

    with tempfile.TemporaryDirectory() as out:
        config = GRPOConfig(
            output_dir=out, use_cpu=True, bf16=False, report_to="none", seed=seed, data_seed=seed,
            per_device_train_batch_size=args.prompts * args.generations, num_generations=args.generations,
            max_completion_length=args.max_completion_tokens, max_steps=args.steps, learning_rate=args.learning_rate,
            logging_steps=1, save_strategy="no", disable_tqdm=True, dataloader_num_workers=0,
            gradient_checkpointing=False, top_k=0, top_p=1.0,
            temperature=strategy.value if strategy.kind == "fixed" else 1.0)
        trainer = GRPOTrainer(model=model, reward_funcs=verifier, args=config, processing_class=tokenizer,
                              train_dataset=Dataset.from_dict({"prompt": [p.prompt for p in train]}))
        adapter = None
        if strategy.kind == "metahp":
            adapter = metahp.adapt(trainer, knob="temperature", updater=strategy.updater, **strategy.options)
        elif strategy.kind != "fixed":
            raise SystemExit(f"{strategy_name}: only fixed and metahp strategies run through TRL")
        start = time.perf_counter()
        trainer.train()
        train_s = time.perf_counter() - start
    logs = [entry for entry in trainer.state.log_history if "reward" in entry]
    if adapter is not None:  # the values each step sampled with (a list per completion: their mean)
        temperatures = [float(entry["value"]) for entry in adapter.history]  # per completion: already the mean
    else:
        temperatures = [float(strategy.value)] * len(logs)
    start = time.perf_counter()
    after = evaluate(trainer.model, tokenizer, task, eval_set, args.max_completion_tokens, args.k, seed)
    eval_s = time.perf_counter() - start
    record = {
        "task": TASK, "strategy": strategy_name, "seed": seed, "steps": args.steps, "model": args.model,
        "trainer": "trl", "learning_rate": args.learning_rate, "max_completion_tokens": args.max_completion_tokens,
        "prompts_per_step": args.prompts, "num_generations": args.generations, "train_set_size": 0,
        "eval_problems": args.eval_problems, "k": args.k, "after": after,
        "reward_auc": float(sum(e["reward"] for e in logs) / max(1, len(logs))),
        "train_s": train_s, "eval_s": eval_s,
        "meta_update_share": (sum(adapter.update_seconds) / train_s) if adapter is not None else 0.0,
        "series": {"temperature": temperatures, "reward": [e["reward"] for e in logs],
                   "entropy": [e.get("entropy") for e in logs],
                   "temperature_mean": [e.get("metahp/temperature_mean") for e in logs] if adapter else None,
                   "zero_advantage_groups": [e.get("frac_reward_zero_std") for e in logs]},
    }
    write_json(run_path(Path(args.out), TASK, strategy_name, seed), record)
    return {"task": TASK, "strategy": strategy_name, "seed": seed, "greedy_accuracy": after["greedy_accuracy"],
            "wall_s": train_s + eval_s}


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--strategies", nargs="+", default=["fixed_0.6", "fixed_1", "fixed_1.5", "exp3",
                                                             "rows_informative_lr0.25"])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--first-seed", type=int, default=1)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--prompts", type=int, default=4, help="prompts per step")
    parser.add_argument("--generations", type=int, default=5, help="completions per prompt (>= the grid's 5 values "
                                                                    "for values per completion)")
    parser.add_argument("--learning-rate", type=float, default=1e-5)
    parser.add_argument("--max-completion-tokens", type=int, default=5)
    parser.add_argument("--eval-problems", type=int, default=64)
    parser.add_argument("--k", type=int, default=8)
    parser.add_argument("--model", default="smollm2")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=HERE / "results" / "trl_smollm2")
    parser.add_argument("--report-only", action="store_true")
    parser.add_argument("--smoke", action="store_true", help="2 strategies, 1 seed, 2 steps, 4 held-out problems")
    args = parser.parse_args(argv)
    unknown = [s for s in args.strategies if s not in STRATEGIES]
    if unknown:
        parser.error(f"unknown strategies {unknown}; valid: {sorted(STRATEGIES)}")
    if args.smoke:
        args.strategies, args.seeds, args.steps, args.eval_problems, args.k = ["fixed_1", "exp3"], 1, 2, 4, 2
    return args


def main(argv=None) -> dict:
    args = parse_args(argv)
    from learning_report import report

    if not args.report_only:
        jobs = [(args, seed, s) for seed in range(args.first_seed, args.first_seed + args.seeds)
                for s in args.strategies if not run_path(args.out, TASK, s, seed).exists()]
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
        started = time.perf_counter()
        map_jobs(run_one, jobs, args.workers, "trl runs")
        print(json.dumps({"runs": len(jobs), "wall_s": time.perf_counter() - started}))
    return report(args.out)


if __name__ == "__main__":
    main()
