"""Cost of the truncation knobs' likelihoods: fast path vs transformers' processors per candidate vs Temperature.

    .venv/bin/python benchmarks/truncation_cost.py             # N = 64 x 128 tokens, V = 49152, K = 8 (minutes)
    .venv/bin/python benchmarks/truncation_cost.py --smoke     # seconds; run by the test suite

Logits are synthetic but LM-shaped: Gaussian noise plus a few boosted tokens per row, so that supports range from
one token to thousands (the sizes are reported). For each knob, interleaved on the same logits: the fast
``token_logprobs`` (one softmax and one sorted slice per token for all candidates), the naive reference
(transformers' TemperatureLogitsWarper + the knob's warper, then log_softmax, one candidate at a time: K full
sorts for top_p) and the Temperature knob with K candidates. The naive path is timed on the first --naive-rows
tokens and scaled linearly to N (it is row-wise; the scaled figure is marked). Median of --repeats. Writes JSON.
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
from metahp.knobs.truncation import _naive_token_logprobs

GRIDS = {
    "top_p": (TopP, (0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.98, 1.0)),
    "top_k": (TopK, (5, 10, 20, 50, 100, 200, 500, 1000)),
    "min_p": (MinP, (0.0, 0.01, 0.02, 0.05, 0.1, 0.15, 0.2, 0.3)),
}


def lm_like_logits(tokens: int, vocab: int, seed: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    logits = torch.randn(tokens, vocab, generator=gen) * 2.0
    boosted = torch.randint(vocab, (tokens, 8), generator=gen)
    boost = torch.rand(tokens, 8, generator=gen) * 14.0  # rows from near-deterministic to flat
    return logits.scatter_add_(1, boosted, boost)


def timed(fn, repeats: int) -> tuple[float, torch.Tensor]:
    times, out = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), out


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=64, help="completions in the GRPO batch")
    parser.add_argument("--length", type=int, default=128, help="completion tokens per completion")
    parser.add_argument("--vocab", type=int, default=49_152, help="vocabulary size (SmolLM2: 49152)")
    parser.add_argument("--chunk", type=int, default=256, help="tokens per call (bounded working memory)")
    parser.add_argument("--naive-rows", type=int, default=512, help="tokens the naive path is timed on")
    parser.add_argument("--temperature", type=float, default=1.0)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, one repeat")
    parser.add_argument("--out", type=Path, default=Path(__file__).with_name("results") / "truncation_cost.json")
    args = parser.parse_args(argv)
    if args.smoke:
        args.batch, args.length, args.vocab, args.chunk, args.naive_rows, args.repeats = 2, 16, 2048, 16, 32, 1
    torch.set_num_threads(args.threads)
    n = args.batch * args.length
    logits = lm_like_logits(n, args.vocab, seed=0)
    tokens = torch.distributions.Categorical(logits=logits / args.temperature).sample()
    naive_rows = min(n, args.naive_rows)

    def chunked(fn, rows):
        return lambda: torch.cat([fn(logits[i:i + args.chunk], tokens[i:i + args.chunk])
                                  for i in range(0, rows, args.chunk)])

    temperature = Temperature([0.6 + 0.9 * k / 7 for k in range(8)])
    temperature_s, _ = timed(chunked(temperature.token_logprobs, n), args.repeats)
    result = {
        "tokens": n, "batch": args.batch, "length": args.length, "vocab": args.vocab, "candidates": 8,
        "chunk": args.chunk, "naive_rows": naive_rows, "temperature_s": temperature_s, "knobs": {},
        "machine": f"{platform.machine()}, {torch.get_num_threads()} torch threads, torch {torch.__version__}",
    }
    probs = torch.softmax(logits[:naive_rows] / args.temperature, dim=-1)
    result["median_tokens_for_90pct_mass"] = int(
        (probs.sort(dim=-1, descending=True).values.cumsum(-1) < 0.9).sum(-1).median()) + 1
    print(f"{n} tokens, V = {args.vocab}, K = 8; Temperature knob: {temperature_s:.3f} s")
    print(f"{'knob':6} {'fast s':>8} {'naive s':>9} {'naive/fast':>10} {'fast/temperature':>16}")
    for name, (cls, grid) in GRIDS.items():
        knob = cls(grid, temperature=args.temperature)
        fast_s, fast = timed(chunked(knob.token_logprobs, n), args.repeats)
        naive_part_s, naive = timed(chunked(lambda z, t, k=knob: _naive_token_logprobs(k, z, t, average_ties=False),
                                            naive_rows), args.repeats)
        naive_s = naive_part_s * n / naive_rows
        head = fast[:naive_rows]
        same = torch.isfinite(head) == torch.isfinite(naive)
        finite = torch.isfinite(naive) & same
        result["knobs"][name] = {
            "grid": list(grid), "fast_s": fast_s, "naive_s_scaled": naive_s, "naive_s_measured": naive_part_s,
            "naive_over_fast": naive_s / fast_s, "fast_over_temperature": fast_s / temperature_s,
            "support_patterns_agree": bool(same.all()),
            "max_abs_diff": float((head[finite] - naive[finite]).abs().max()) if finite.any() else 0.0,
            "fraction_minus_inf": float(torch.isinf(fast).float().mean()),
        }
        print(f"{name:6} {fast_s:8.3f} {naive_s:9.3f} {naive_s / fast_s:10.1f} {fast_s / temperature_s:16.2f}"
              f"   (naive measured on {naive_rows} tokens, scaled)")
    if not args.smoke:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    main()
