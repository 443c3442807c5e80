"""Cost of the meta-update's likelihoods against one forward pass of a small transformer, side by side.

    .venv/bin/python benchmarks/likelihood_cost.py                  # B=64, L=256, V=32k, K=10 (a few minutes)
    .venv/bin/python benchmarks/likelihood_cost.py --smoke          # seconds; run by the test suite

Times `Temperature.sequence_logprobs` on the logits of a no-grad forward of a small Qwen2 (hidden 256, 4 layers)
over the same [B, L] batch, median of --repeats runs each, interleaved, and reports the ratio. Writes JSON.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import torch
from transformers import Qwen2Config, Qwen2ForCausalLM

from metahp import Temperature


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--length", type=int, default=256)
    parser.add_argument("--vocab", type=int, default=32_000)
    parser.add_argument("--candidates", type=int, default=10)
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, one repeat")
    parser.add_argument("--out", type=Path, default=Path(__file__).with_name("results") / "likelihood_cost.json")
    args = parser.parse_args(argv)
    if args.smoke:
        args.batch, args.length, args.vocab, args.hidden, args.layers, args.repeats = 4, 16, 512, 32, 1, 1
    torch.manual_seed(0)
    config = Qwen2Config(vocab_size=args.vocab, hidden_size=args.hidden, intermediate_size=4 * args.hidden,
                         num_hidden_layers=args.layers, num_attention_heads=4, num_key_value_heads=4,
                         max_position_embeddings=max(512, args.length))
    model = Qwen2ForCausalLM(config).eval()
    ids = torch.randint(args.vocab, (args.batch, args.length))
    mask = torch.ones(args.batch, args.length)
    knob = Temperature([0.6 + 0.9 * k / max(1, args.candidates - 1) for k in range(args.candidates)])
    forward_s, likelihood_s = [], []
    logits = None
    for _ in range(args.repeats):
        start = time.perf_counter()
        with torch.no_grad():
            logits = model(input_ids=ids).logits
        forward_s.append(time.perf_counter() - start)
        start = time.perf_counter()
        knob.sequence_logprobs(logits, ids, mask)
        likelihood_s.append(time.perf_counter() - start)
    result = {
        "batch": args.batch, "length": args.length, "vocab": args.vocab, "candidates": args.candidates,
        "model": f"Qwen2 hidden {args.hidden}, {args.layers} layers", "threads": torch.get_num_threads(),
        "forward_s": statistics.median(forward_s), "sequence_logprobs_s": statistics.median(likelihood_s),
        "machine": f"{platform.machine()}, {torch.get_num_threads()} torch threads, torch {torch.__version__}",
    }
    result["ratio"] = result["sequence_logprobs_s"] / result["forward_s"]
    print(json.dumps(result, indent=2))
    if not args.smoke:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    main()
