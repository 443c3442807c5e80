"""What the meta-update costs: the candidate likelihoods over a grid of K candidates and vocabulary sizes V, and
the meta-update's share of a reference-trainer step.

    .venv/bin/python benchmarks/cost_grid.py          # a minute or two, one CPU thread; writes results/cost_grid.json
    .venv/bin/python benchmarks/cost_grid.py --smoke  # seconds; run by the test suite

Part 1 times ``Temperature(values).sequence_logprobs(logits, tokens, mask)`` on random float32 logits [B, L, V]
for K in 5, 10, 20 and V in 64, 32000, 49152, 151936 (fastest of --repeats), and its peak memory: torch.profiler
(profile_memory=True) records every CPU allocation and free during one call; replaying them in time order gives
the peak of memory held at once, compared with the size of the logits. A [B, L, V, K] tensor would show as a
peak of K x the logits; the implementation keeps one [tokens, V] buffer per chunk instead.

Part 2 runs the reference GRPO trainer (tiny warm-started model on addition, one torch thread) with
``metahp.adapt(trainer, updater="tampo", values=...)`` for K = 5, 10, 20 and reports the meta-update's share of
the step time.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np
import torch

OUT = Path(__file__).with_name("results") / "cost_grid.json"


def grid(k: int) -> list[float]:
    return [round(0.6 + 0.9 * i / max(1, k - 1), 6) for i in range(k)]


def peak_bytes(fn) -> int:
    """Peak of CPU memory allocated and not yet freed while ``fn()`` runs (torch.profiler, profile_memory)."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    events = sorted((e for e in prof.profiler.kineto_results.events() if e.name() == "[memory]"),
                    key=lambda e: e.start_ns())
    held = peak = 0
    for e in events:
        held += e.nbytes()
        peak = max(peak, held)
    return peak


def likelihood_grid(batch: int, length: int, vocabs, candidates, repeats: int) -> list[dict]:
    from metahp import Temperature

    rows = []
    for vocab in vocabs:
        gen = torch.Generator().manual_seed(vocab)
        logits = torch.randn(batch, length, vocab, generator=gen) * 3
        tokens = torch.randint(vocab, (batch, length), generator=gen)
        mask = torch.ones(batch, length)
        logits_bytes = logits.numel() * logits.element_size()
        for k in candidates:
            knob = Temperature(grid(k))
            knob.sequence_logprobs(logits, tokens, mask)  # warm-up
            times = []
            for _ in range(repeats):
                start = time.perf_counter()
                knob.sequence_logprobs(logits, tokens, mask)
                times.append(time.perf_counter() - start)
            args = (logits, tokens, mask)
            peak = peak_bytes(lambda knob=knob, args=args: knob.sequence_logprobs(*args))
            seconds = min(times)  # the least disturbed repeat: other processes share the machine
            rows.append({"V": vocab, "K": k, "B": batch, "L": length, "seconds": seconds,
                         "ns_per_token_candidate_vocab": 1e9 * seconds / (batch * length * k * vocab),
                         "peak_mib": peak / 2**20, "logits_mib": logits_bytes / 2**20,
                         "peak_over_logits": peak / logits_bytes, "BLVK_tensor_mib": k * logits_bytes / 2**20})
            r = rows[-1]
            print(f"V={vocab:>6} K={k:>2}: {seconds:8.4f} s  ({r['ns_per_token_candidate_vocab']:.3f} ns per "
                  f"token*candidate*vocab)  peak {r['peak_mib']:8.1f} MiB = {r['peak_over_logits']:.2f} x logits "
                  f"({r['logits_mib']:.1f} MiB); a [B,L,V,K] tensor would be {r['BLVK_tensor_mib']:.0f} MiB",
                  flush=True)
        del logits, args
    for vocab in vocabs:  # least-squares t = a + b K per V: b is the cost of one more candidate
        ks = np.array([r["K"] for r in rows if r["V"] == vocab], dtype=float)
        ts = np.array([r["seconds"] for r in rows if r["V"] == vocab])
        if len(ks) > 1:
            slope, intercept = np.polyfit(ks, ts, 1)
            for r in rows:
                if r["V"] == vocab:
                    r["fit_seconds_per_candidate"], r["fit_intercept_seconds"] = float(slope), float(intercept)
            print(f"V={vocab:>6}: t = {intercept:.4f} s + {slope:.4f} s x K  "
                  f"({1e9 * slope / (rows[0]['B'] * rows[0]['L'] * vocab):.2f} ns per token*vocab per candidate)")
    return rows


def trainer_share(candidates, steps: int, warm: dict, prompts: int, generations: int) -> list[dict]:
    import metahp
    from metahp.lab.grpo import GRPOTrainer
    from metahp.lab.tasks import make_task
    from metahp.lab.warmstart import build_warm_policy

    task = make_task("addition", None, 0)
    rows = []
    for k in candidates:
        model, tokenizer, _ = build_warm_policy(task, seed=0, progress=False, **warm)
        trainer = GRPOTrainer(model, tokenizer, task, prompts_per_step=prompts, num_generations=generations,
                              max_completion_tokens=task.max_completion_chars + 1, seed=0)
        metahp.adapt(trainer, updater="tampo", values=grid(k))
        history = trainer.train(steps + 2, progress=False)[2:]  # first two steps: allocator and cache warm-up
        meta = sum(m["time/meta_update"] for m in history)
        total = sum(m["time/generation"] + m["time/policy_update"] + m["time/meta_update"] for m in history)
        rows.append({"K": k, "steps": len(history), "step_s": total / len(history),
                     "meta_update_s": meta / len(history), "share": meta / total,
                     "vocab": len(tokenizer), "batch": prompts * generations})
        r = rows[-1]
        print(f"trainer K={k:>2}: step {r['step_s'] * 1e3:.1f} ms, meta-update {r['meta_update_s'] * 1e3:.2f} ms "
              f"= {100 * r['share']:.2f}% of the step (vocab {r['vocab']}, {r['batch']} completions)", flush=True)
    return rows


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--length", type=int, default=64)
    parser.add_argument("--vocabs", type=int, nargs="+", default=[64, 32_000, 49_152, 151_936])
    parser.add_argument("--candidates", type=int, nargs="+", default=[5, 10, 20])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--steps", type=int, default=30, help="trainer steps per K in part 2")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--smoke", action="store_true", help="tiny sizes; nothing written unless --out is given")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    warm: dict = {}
    prompts = generations = 8
    if args.smoke:
        args.batch, args.length, args.vocabs, args.candidates, args.repeats, args.steps = 2, 8, [64, 512], [2, 4], 1, 2
        warm, prompts, generations = {"steps": 20, "eval_every": 20, "eval_size": 16}, 2, 4
    result = {
        "machine": f"{platform.machine()}, {torch.get_num_threads()} torch thread(s), torch {torch.__version__}",
        "likelihoods": likelihood_grid(args.batch, args.length, args.vocabs, args.candidates, args.repeats),
        "trainer": trainer_share(args.candidates, args.steps, warm, prompts, generations),
    }
    out = args.out if args.out is not None else (None if args.smoke else OUT)
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result, indent=2) + "\n")
        print(f"wrote {out}")
    return result


if __name__ == "__main__":
    np.set_printoptions(precision=4)
    main()
