"""How often one completion sampled at temperature T is exactly right, at the warm start GRPO begins from.

    .venv/bin/python benchmarks/discovery_rate.py          # rare_skill, seeds 0-14; about a minute, no training

On rare_skill, before the signature is found, every ``revs`` group fails whole: zero advantage at every temperature,
so a run gets no signal that heat pays until a completion finds the skill. What decides the task is how often that
happens. For each seed's warm start (the cached tiny model every run of that seed starts from; built if missing),
this computes by teacher forcing the exact probability that one completion sampled at T is the right answer,

    P_T(answer) = prod_j softmax(z_j / T)[a_j]      over the answer's tokens a_j and the closing <eos>,

averaged over held-out prompts of each instruction (``rev``: the common skill, ``revs``: the rare one). From the rates
it derives each mixture's discovery rate against fixed 1.5 (a mixture drawing value T with probability w_T finds the
skill at sum_T w_T P_T per completion), and the share of completions a mixture would need at its hottest value to
match fixed 1.5. Writes discovery_rate.json, report.md and discovery_rate.png (the rates against T) to ``--output``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
DEFAULT_OUTPUT = HERE / "results" / "discovery_rate"
TEMPERATURES = (0.6, 0.8, 1.0, 1.2, 1.5, 1.8, 2.0, 2.5, 3.0)
GRID = (0.6, 0.8, 1.0, 1.2, 1.5)  # the sweep's grid, and the grid the learned strategies mix over
REFERENCE = 1.5  # the best fixed value on rare_skill (docs/benchmarks.md)


def answer_probability(model, tokenizer, problems, temperatures) -> np.ndarray:
    """[len(problems), len(temperatures)]: P_T(exact answer, then <eos>) for one completion sampled at each T, with
    no truncation (top-k 0, top-p 1), by teacher forcing the answer after the prompt."""
    import torch

    out = np.zeros((len(problems), len(temperatures)))
    model.eval()
    for i, problem in enumerate(problems):
        prompt = tokenizer(problem.prompt).input_ids
        answer = tokenizer(problem.answer, add_special_tokens=False).input_ids + [tokenizer.eos_token_id]
        with torch.no_grad():
            logits = model(torch.tensor([prompt + answer])).logits[0, len(prompt) - 1:-1].double()
        target = torch.tensor(answer)[:, None]
        for j, t in enumerate(temperatures):
            out[i, j] = float(torch.log_softmax(logits / t, dim=-1).gather(1, target).sum().exp())
    return out


def mixture_rates(rates: dict[float, float], reference: float = REFERENCE, grid=GRID) -> dict:
    """Discovery per completion of mixtures over ``grid``, relative to fixed ``reference``: the uniform mixture, and
    the share s that a mixture would need at a hotter value T (the rest finding nothing) to match fixed ``reference``:
    s = P_ref / P_T (above 1: no share can)."""
    ref = rates[reference]
    uniform = float(np.mean([rates[t] for t in grid]))
    return {"uniform_vs_reference": uniform / ref if ref > 0 else float("nan"),
            "share_needed_at": {f"{t:g}": (ref / rates[t] if rates[t] > 0 else float("inf"))
                                for t in rates if t >= reference}}


def study(seeds, prompts: int, temperatures=TEMPERATURES, task_name: str = "rare_skill", warm=None) -> dict:
    import torch
    from tqdm.auto import tqdm

    from metahp.lab.tasks import make_task
    from metahp.lab.warmstart import build_warm_policy

    torch.set_num_threads(1)  # a tiny model: one thread is fastest (metahp.lab.warmstart)
    per_seed = {}
    for seed in tqdm(list(seeds), desc="warm starts", unit="seed"):
        task = make_task(task_name, None, seed)
        model, tokenizer, _ = build_warm_policy(task, seed=seed, progress=False, **(warm or {}))
        # the held-out problems every run of this seed is evaluated on (benchmarks/learning_run.py: seed + 1)
        problems = task.sample_prompts(4 * prompts, seed + 1, split="eval")
        entry = {}
        for kind in sorted({task.instruction(p) for p in problems}):
            chosen = [p for p in problems if task.instruction(p) == kind][:prompts]
            p = answer_probability(model, tokenizer, chosen, temperatures)
            entry[kind] = {"prompts": len(chosen), "rate": {f"{t:g}": float(v) for t, v in zip(temperatures,
                                                                                             p.mean(0), strict=True)}}
        per_seed[str(seed)] = entry
    kinds = sorted({k for e in per_seed.values() for k in e})
    mean = {k: {f"{t:g}": float(np.mean([e[k]["rate"][f"{t:g}"] for e in per_seed.values()])) for t in temperatures}
            for k in kinds}
    rare = "revs" if "revs" in kinds else kinds[-1]
    mixtures = {s: mixture_rates({t: e[rare]["rate"][f"{t:g}"] for t in temperatures}) for s, e in per_seed.items()}
    return {"task": task_name, "temperatures": list(temperatures), "grid": list(GRID), "reference": REFERENCE,
            "rare_instruction": rare, "per_seed": per_seed, "mean": mean, "mixtures": mixtures}


def report(result: dict) -> str:
    temps = [f"{t:g}" for t in result["temperatures"]]
    rare = result["rare_instruction"]
    lines = ["# Exact-answer rate per completion at the warm start, by sampling temperature", "",
             f"Generated by `benchmarks/discovery_rate.py`; task {result['task']}, seeds "
             f"{', '.join(result['per_seed'])}. P_T = probability that one completion sampled at T is exactly right.",
             "", "| seed | instruction | " + " | ".join(f"T {t}" for t in temps) + " | peak T |",
             "|---|---|" + "---|" * (len(temps) + 1)]
    rows = [(s, k, e[k]["rate"]) for s, e in result["per_seed"].items() for k in sorted(e)]
    rows += [("mean", k, result["mean"][k]) for k in sorted(result["mean"])]
    for seed, kind, rate in rows:
        peak = max(temps, key=lambda t: rate[t])
        lines.append(f"| {seed} | {kind} | " + " | ".join(f"{rate[t]:.2e}" for t in temps) + f" | {peak} |")
    ref = f"{result['reference']:g}"
    hot = [t for t in temps if float(t) >= result["reference"]]
    lines += ["", f"`{rare}`: the uniform mixture over {result['grid']} against fixed {ref} (its discovery rate per "
              f"completion, as a fraction of fixed {ref}'s), and the share of completions a mixture would need at a "
              f"hotter value to match fixed {ref}:", "",
              "| seed | uniform / fixed " + ref + " | " + " | ".join(f"share needed at {t}" for t in hot) + " |",
              "|---|---|" + "---|" * len(hot)]
    for seed, m in result["mixtures"].items():
        lines.append(f"| {seed} | {m['uniform_vs_reference']:.2f} | "
                     + " | ".join(f"{m['share_needed_at'][t]:.2f}" for t in hot) + " |")
    return "\n".join(lines)


def plot(result: dict, path: Path) -> Path:
    """The exact-answer rate against T on a log scale, one panel per instruction: each seed thin, the mean thick, the
    sweep's grid shaded."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    temps = result["temperatures"]
    kinds = sorted(result["mean"])
    fig, axes = plt.subplots(1, len(kinds), figsize=(5.2 * len(kinds), 3.8), squeeze=False)
    for ax, kind in zip(axes[0], kinds, strict=True):
        for entry in result["per_seed"].values():
            ax.plot(temps, [entry[kind]["rate"][f"{t:g}"] for t in temps], color="0.7", lw=0.8)
        ax.plot(temps, [result["mean"][kind][f"{t:g}"] for t in temps], "o-", color="C0", lw=2.5,
                label=f"mean over {len(result['per_seed'])} seeds")
        ax.axvspan(min(result["grid"]), max(result["grid"]), color="C2", alpha=0.12, label="the sweep's grid")
        ax.axvline(result["reference"], color="C3", ls="--", lw=1, label=f"best fixed ({result['reference']:g})")
        ax.set_yscale("log")
        ax.set_xlabel("sampling temperature T")
        ax.set_ylabel("P(one completion exactly right)")
        ax.set_title(f"{result['task']}: {kind}" + (" (the rare skill)" if kind == result["rare_instruction"] else ""))
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110, metadata={"Software": None})
    plt.close(fig)
    return path


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=list(range(15)), help="warm starts (seeds)")
    parser.add_argument("--prompts", type=int, default=150, help="held-out prompts per instruction and seed")
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT)
    parser.add_argument("--smoke", action="store_true", help="one seed, 4 prompts, a tiny warm start (the tests)")
    args = parser.parse_args(argv)
    if args.prompts < 1 or any(seed < 0 for seed in args.seeds):
        parser.error(f"--prompts must be at least 1 and --seeds non-negative, got {args.prompts} and {args.seeds}")
    warm = None
    if args.smoke:
        args.seeds, args.prompts = args.seeds[:1], 4
        warm = {"steps": 2}
    result = study(args.seeds, args.prompts, warm=warm)
    args.output.mkdir(parents=True, exist_ok=True)
    text = report(result)
    (args.output / "discovery_rate.json").write_text(json.dumps(result, indent=1) + "\n")
    (args.output / "report.md").write_text(text + "\n")
    plot(result, args.output / "discovery_rate.png")
    print(text, file=sys.stdout)
    return result


if __name__ == "__main__":
    main()
