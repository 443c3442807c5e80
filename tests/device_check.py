"""Check every knob on an accelerator against the CPU: same results, outputs on the device, timings, syncs.

Not a test module (pytest collects test_*.py only) and needs no pytest: run it from the repository root on a GPU
machine,

    python tests/device_check.py --out DIR [--device cuda] [--wheels WHEELS_DIR]

``--wheels`` installs the *.whl files of a folder (metahp's own dependencies, e.g. pydantic, pydantic_core, scipy)
into WHEELS_DIR/site, without an index, and imports from there. The script writes DIR/device_check.json, prints a
summary and exits non-zero when a correctness check fails. tests/test_devices.py runs it on the CPU with a tiny
vocabulary so that it keeps working.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
import warnings
import zipfile
from functools import partial
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ATOL = 1e-4  # on log-likelihoods of size ~1..20: float32 rounding differs between CPU and GPU kernels, not more
# A row whose support differs between CPU and device (a probability within float rounding of a cut) is counted
# and reported; more than this fraction of rows (and more than one) fails the check.
SUPPORT_TOLERANCE = 0.01


def install_wheels(folder: Path) -> None:
    site = folder / "site"
    wheels = sorted(str(w) for w in folder.glob("*.whl"))
    if wheels:
        done = subprocess.run([sys.executable, "-m", "pip", "install", "--no-index", "--no-deps", "--quiet",
                               "--upgrade", "--target", str(site), *wheels], check=False)
        if done.returncode != 0:  # no pip: a wheel is a zip of the installed files, unpacking it is enough to import
            for wheel in wheels:
                zipfile.ZipFile(wheel).extractall(site)
    sys.path.insert(0, str(site))


def make_knobs():
    from metahp.knobs import MinP, ProductKnob, Temperature, TopK, TopP

    return {"temperature": Temperature(), "temperature+top_p": Temperature(truncation=("top_p", 0.9)),
            "top_p": TopP(temperature=0.8), "top_p_eps": TopP([0.5, 0.9, 0.95], epsilon=0.05),
            "top_k": TopK(temperature=1.3), "top_k_eps": TopK([5, 50], epsilon=0.05),
            "min_p": MinP(temperature=0.7), "min_p_eps": MinP([0.05, 0.2], epsilon=0.05),
            "product": ProductKnob(Temperature([0.7, 1.0, 1.3]), TopP([0.8, 0.95, 1.0]))}


def make_batch(torch, batch: int, length: int, vocab: int, seed: int):
    """Logits of varied sharpness with some banned (-inf) tokens, tokens sampled from them, right padding."""
    gen = torch.Generator().manual_seed(seed)
    scale = torch.empty(batch, length, 1).uniform_(0.5, 4.0, generator=gen)
    logits = torch.randn(batch, length, vocab, generator=gen) * scale
    logits[0, : length // 2, : vocab // 10] = float("-inf")
    tokens = torch.multinomial(torch.softmax(logits.reshape(-1, vocab), -1), 1, generator=gen).reshape(batch, length)
    lengths = torch.randint(1, length + 1, (batch,), generator=gen)
    lengths[0] = length
    mask = torch.arange(length) < lengths.unsqueeze(1)
    return logits, tokens, mask


def compare(torch, got, want) -> dict:
    """Max |diff| where both are finite, rows whose pattern of -inf (the support) differs, and NaNs."""
    got = got.cpu().double()
    want = want.double()
    finite = torch.isfinite(got) & torch.isfinite(want)
    differ = (torch.isfinite(got) != torch.isfinite(want)) | (torch.isinf(got) & torch.isinf(want) & (got != want))
    diff = (got - want)[finite].abs()
    return {"max_abs_diff": float(diff.max()) if diff.numel() else 0.0,
            "support_rows_differ": int(differ.any(dim=1).sum()), "rows": got.shape[0],
            "nan": int(torch.isnan(got).sum())}


def timed(torch, fn, device, repeats: int) -> float:
    fn()  # warm-up (kernel selection, allocator)
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def count_syncs(torch, fn, device):
    """Device -> host synchronisations during one call (CUDA's sync debug mode), or None off CUDA."""
    if device.type != "cuda":
        return None
    torch.cuda.synchronize()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            fn()
        finally:
            torch.cuda.set_sync_debug_mode("default")
    return sum("synchroniz" in str(w.message) for w in caught)


def check_knob(torch, knob, logits, tokens, mask, device, repeats: int) -> dict:
    result = {"candidates": len(knob)}
    for dtype in (torch.float32, torch.bfloat16):
        z = logits.to(dtype)
        zd, td, md = z.to(device), tokens.to(device), mask.to(device)
        rows, rows_d, taken_d = z[mask], zd[md], td[md]
        tok_cpu, seq_cpu = knob.token_logprobs(rows, tokens[mask]), knob.sequence_logprobs(z, tokens, mask)
        tok_dev, seq_dev = knob.token_logprobs(rows_d, taken_d), knob.sequence_logprobs(zd, td, md)
        part = {"token": compare(torch, tok_dev, tok_cpu), "sequence": compare(torch, seq_dev, seq_cpu),
                "token_device": str(tok_dev.device), "sequence_device": str(seq_dev.device),
                "sequence_dtype": str(seq_dev.dtype).removeprefix("torch.")}
        ok = part["token_device"] == str(rows_d.device) and part["sequence_device"] == "cpu"
        ok &= part["sequence_dtype"] == "float32" and tuple(seq_dev.shape) == (len(mask), len(knob))
        for c in (part["token"], part["sequence"]):
            ok &= c["nan"] == 0 and c["max_abs_diff"] <= ATOL
            ok &= c["support_rows_differ"] <= max(1, SUPPORT_TOLERANCE * c["rows"])
        part["max_abs_diff"] = max(part["token"]["max_abs_diff"], part["sequence"]["max_abs_diff"])
        part["support_rows_differ"] = part["token"]["support_rows_differ"] + part["sequence"]["support_rows_differ"]
        on_cpu = partial(knob.sequence_logprobs, z, tokens, mask)
        on_device = partial(knob.sequence_logprobs, zd, td, md)
        part["cpu_s"] = timed(torch, on_cpu, torch.device("cpu"), repeats)
        part["device_s"] = timed(torch, on_device, device, repeats)
        part["syncs_sequence"] = count_syncs(torch, on_device, device)
        part["syncs_token"] = count_syncs(torch, partial(knob.token_logprobs, rows_d, taken_d), device)
        part["ok"] = bool(ok)
        result[str(dtype).removeprefix("torch.")] = part
    result["ok"] = result["float32"]["ok"] and result["bfloat16"]["ok"]
    return result


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, type=Path, help="folder for device_check.json")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--wheels", type=Path, help="folder of *.whl to install into WHEELS/site and import")
    parser.add_argument("--vocab", type=int, default=49152)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--length", type=int, default=32)  # 8 x 32 = 256 positions, some padding
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.wheels:
        install_wheels(args.wheels)
    if sys.path[0] != str(ROOT):
        sys.path.insert(0, str(ROOT))  # this checkout's metahp, not an installed one
    import torch

    import metahp

    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print(f"device {args.device} requested but torch.cuda.is_available() is False", file=sys.stderr)
        return 2
    logits, tokens, mask = make_batch(torch, args.batch, args.length, args.vocab, args.seed)
    report = {"device": args.device, "device_name": torch.cuda.get_device_name(device) if device.type == "cuda"
              else "cpu", "torch": torch.__version__, "metahp": str(Path(metahp.__file__).parent),
              "shape": [args.batch, args.length, args.vocab], "positions": int(mask.sum()), "atol": ATOL,
              "cpu_threads": torch.get_num_threads(), "knobs": {}}
    for name, knob in make_knobs().items():
        try:
            report["knobs"][name] = check_knob(torch, knob, logits, tokens, mask, device, args.repeats)
        except Exception as error:  # report it and go on with the other knobs
            report["knobs"][name] = {"ok": False, "error": f"{type(error).__name__}: {error}"}
    report["ok"] = all(r["ok"] for r in report["knobs"].values())
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "device_check.json").write_text(json.dumps(report, indent=2))
    print(f"{report['device_name']}, torch {report['torch']}, logits {report['shape']}, "
          f"{report['positions']} positions")
    print(f"{'knob':18} {'dtype':9} {'ok':3} {'max|diff|':>10} {'supp.diff':>9} {'cpu s':>8} {'dev s':>8} "
          f"{'syncs seq/tok':>13}")
    for name, r in report["knobs"].items():
        if "error" in r:
            print(f"{name:18} ERROR {r['error']}")
            continue
        for dtype in ("float32", "bfloat16"):
            p = r[dtype]
            print(f"{name:18} {dtype:9} {'yes' if p['ok'] else 'NO':3} {p['max_abs_diff']:10.2e} "
                  f"{p['support_rows_differ']:9d} {p['cpu_s']:8.4f} {p['device_s']:8.4f} "
                  f"{str(p['syncs_sequence']):>6}/{str(p['syncs_token']):<6}")
    print("ALL OK" if report["ok"] else "FAILED", "->", args.out / "device_check.json")
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
