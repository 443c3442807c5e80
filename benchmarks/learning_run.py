"""One run of the learning benchmark: its settings (``Args``), the strategies it compares (``Strategy``), the warm
start it starts from (``prepare``), the run itself (``run_one``) and the process pool that runs many (``map_jobs``).

Nothing here imports torch at module level: the parent process only plans and reports; each worker imports what a
run needs.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
DEFAULT_OUT = HERE / "results" / "learning"
# mixed: two prompt families with different best temperatures (issue 20, item 3); mixed.<family>: one family alone
TASKS = ("addition", "countdown", "reverse", "sort", "rare_skill", "mixed", "mixed.reverse", "mixed.sign",
         "word_arithmetic")
FIXED = (0.6, 0.8, 1.0, 1.2, 1.5)
UPDATERS = ("tampo", "softmax_gradient", "exp3", "sliding_window_ucb", "thompson")
PER_COMPLETION = {"per": "completion", "values": list(FIXED)}
# The learning-rate sweep (issue 21): multipliers on GRPOConfig's learning rate, a factor 4 apart. A factor 2 apart
# (the knob's default grid 0.5..2) moved held-out accuracy by about 0.01 on addition in benchmarks/lr_probe.py, less
# than the spread between seeds: too little for any arm to find or lose.
LR_MULTIPLIERS = (0.25, 1.0, 4.0)
# The KL-coefficient sweep (issue 21): GRPOConfig's default 0 (no KL term, as in DAPO and most GRPO recipes now), and
# two weights a factor 4 apart around verl's and TRL's former 0.04 (0.04 itself and 0.16).
BETAS = (0.0, 0.04, 0.16)
# The clip-range sweep (issue 21): GRPOConfig's (and TRL's) default 0.2, half of it and twice it.
EPSILONS = (0.1, 0.2, 0.4)
EPSILONS_HIGH = (0.2, 0.28, 0.4)  # the upper clip bound, epsilon at 0.2: symmetric, DAPO's clip-higher 0.28, wider
# How a clip bound is adapted (epsilon, epsilon_high): (name, updater, options) for the reward improvement (exp3), the
# clipped share against the target 0.1 (clip_target), and not learned (uniform).
CLIP_ARMS = (("exp3", "exp3", {}), ("uniform", "uniform", {"reward": "clip_target"}),
             ("clip_target", "softmax_gradient", {"reward": "clip_target"}))


# -- the strategies ---------------------------------------------------------------------------------------------
@dataclass
class Strategy:
    """How one run sets the sampling temperature."""

    name: str
    """its name in file names, tables, figures and ``--strategies``"""
    kind: str
    """``"fixed"`` (one temperature throughout), ``"schedule"`` (linear in the step), ``"entropy"`` (an
    entropy-target controller), ``"rule"`` (ERPO's per-prompt rule) or ``"metahp"`` (a metahp updater through
    ``metahp.adapt``); the figures colour by it"""
    value: float | None = None
    """fixed: the temperature"""
    start: float | None = None
    """schedule: the temperature at the first step"""
    end: float | None = None
    """schedule: the temperature at the last step"""
    updater: str | None = None
    """metahp: the updater's name"""
    options: dict = field(default_factory=dict)
    """metahp: options passed to ``metahp.adapt`` (empty: the updater's defaults, nothing tuned on these seeds)"""
    knob: str = "temperature"
    """the knob it sets: ``"temperature"``, ``"learning_rate"`` (fixed: a multiplier on the configured learning
    rate, the temperature at 1.0; metahp: adapted over multipliers, issue 21), ``"beta"`` (fixed: GRPOConfig's
    kl_beta; metahp: adapted over the grid), ``"epsilon"`` (fixed: clip_eps; metahp: adapted over the grid) or
    ``"epsilon_high"`` (fixed: clip_eps_high, clip_eps at 0.2; metahp: adapted over the grid)"""
    trainer: dict = field(default_factory=dict)
    """GRPOConfig settings of its own (the adapted beta arms start at kl_beta > 0, so that a reference model exists)"""


STRATEGIES: dict[str, Strategy] = {s.name: s for s in (
    *(Strategy(f"fixed_{t:g}", "fixed", value=t) for t in FIXED),
    Strategy("ramp_0.9_1.5", "schedule", start=0.9, end=1.5),  # the TAMPO paper's heuristic
    Strategy("ramp_1.5_0.6", "schedule", start=1.5, end=0.6),
    Strategy("entropy_target", "entropy"),
    *(Strategy(u, "metahp", updater=u) for u in UPDATERS),
    # One temperature per completion over the fixed sweep's grid, mixed within each group (issue 13): the uniform
    # mixture (not learned: the ablation), and the meta-policy learned from each signal.
    Strategy("rows_uniform", "metahp", updater="uniform", options={**PER_COMPLETION}),
    *(Strategy(f"rows_{signal}", "metahp", updater="softmax_gradient", options={**PER_COMPLETION, "reward": reward})
      for signal, reward in (("informative", "informativeness"), ("advantage", "within_group_advantage"),
                             ("likelihood", "trajectory_likelihood"))),
    # Tuning candidates (seeds 10-14 only): how fast the informativeness policy moves (softmax_gradient's lr).
    *(Strategy(f"rows_informative_lr{lr:g}", "metahp", updater="softmax_gradient",
               options={**PER_COMPLETION, "reward": "informativeness", "lr": lr}) for lr in (0.25, 4.0, 16.0)),
    # One temperature per prompt from its past pass rate (needs --train-set-size: prompts must recur): ERPO's rule
    # (hot only after an all-correct group) and a meta-policy per pass-rate bucket learned from informativeness.
    Strategy("prompt_erpo", "rule", options={"base": 1.0, "hot": 1.2}),
    Strategy("prompt_informative", "metahp", updater="softmax_gradient",
             options={"per": "prompt", "values": list(FIXED), "reward": "informativeness"}),
    # One temperature per prompt family, read from the prompt (tasks with families: mixed): a meta-policy per family
    # learned from informativeness, at softmax_gradient's default lr and at the tuning candidates' (seeds 10-14).
    *(Strategy(f"prompt_family{suffix}", "metahp", updater="softmax_gradient",
               options={"per": "prompt", "values": list(FIXED), "reward": "informativeness", "context": "family",
                        **extra}) for suffix, extra in (("", {}), ("_lr0.25", {"lr": 0.25}), ("_lr4", {"lr": 4.0}))),
    # One temperature per group (the whole group at one value), drawn from one meta-policy shared by every prompt and
    # learned from informativeness: each group then measures "how informative is a whole group at T", the signal the
    # signal study found to rank the temperatures like the final accuracy (issue 20). Tuning candidates: lr 1 and 4.
    *(Strategy(f"group_informative{suffix}", "metahp", updater="softmax_gradient",
               options={"per": "prompt", "values": list(FIXED), "reward": "informativeness", "context": "shared",
                        **extra}) for suffix, extra in (("", {}), ("_lr4", {"lr": 4.0}))),
    # The learning rate as the knob (issue 21), the temperature at 1.0: a sweep of multipliers on the configured rate,
    # and one run adapting over the same multipliers, learned from the reward improvement (exp3, the default
    # updater), from the alignment of successive gradients (softmax_gradient, the fitted signal), or not learned
    # (uniform: the ablation; it ignores its feedback, and gradient_alignment is the per-candidate signal this knob
    # accepts). All at their defaults: nothing tuned.
    *(Strategy(f"lr_x{m:g}", "fixed", value=m, knob="learning_rate") for m in LR_MULTIPLIERS),
    *(Strategy(f"lr_{name}", "metahp", updater=updater, knob="learning_rate",
               options={"values": list(LR_MULTIPLIERS), **extra})
      for name, updater, extra in (("exp3", "exp3", {}), ("uniform", "uniform", {"reward": "gradient_alignment"}),
                                   ("alignment", "softmax_gradient", {"reward": "gradient_alignment"}),
                                   # added after the first run: AdamW's hypergradient (the previous update's direction)
                                   ("update", "softmax_gradient", {"reward": "update_alignment"}))),
    # beta as the knob, the temperature at 1.0: the sweep, and one run adapting over it (starting at kl_beta 0.04 so
    # that the reference model exists; a candidate 0 switches the KL term off for its batch), learned from the reward
    # improvement (exp3), from the KL against verl's target 0.1 (kl_target), or not learned (uniform).
    *(Strategy(f"beta_{b:g}", "fixed", value=b, knob="beta") for b in BETAS),
    *(Strategy(f"beta_{name}", "metahp", updater=updater, knob="beta", trainer={"kl_beta": 0.04},
               options={"values": list(BETAS), **extra})
      for name, updater, extra in (("exp3", "exp3", {}), ("uniform", "uniform", {"reward": "kl_target"}),
                                   ("kl_target", "softmax_gradient", {"reward": "kl_target"}))),
    # epsilon as the knob, the temperature at 1.0, two epochs per batch (GRPOConfig's default; with one, nothing
    # clips): the sweep, and one run adapting over it from the default 0.2, learned from the reward improvement
    # (exp3), from the clipped share against the target 0.1 (clip_target), or not learned (uniform).
    *(Strategy(f"eps_{e:g}", "fixed", value=e, knob="epsilon") for e in EPSILONS),
    *(Strategy(f"eps_{name}", "metahp", updater=updater, knob="epsilon", options={"values": list(EPSILONS), **extra})
      for name, updater, extra in CLIP_ARMS),
    # epsilon_high (DAPO's clip-higher) as the knob, epsilon at its default 0.2, the temperature at 1.0, two epochs:
    # the sweep over the upper bound, and one run adapting it, learned as for epsilon.
    *(Strategy(f"epsh_{e:g}", "fixed", value=e, knob="epsilon_high") for e in EPSILONS_HIGH),
    *(Strategy(f"epsh_{name}", "metahp", updater=updater, knob="epsilon_high",
               options={"values": list(EPSILONS_HIGH), **extra})
      for name, updater, extra in CLIP_ARMS),
)}


def kind_of(strategy: str) -> str:
    """The kind of a strategy by name; "" for a name no longer in STRATEGIES (an old run file)."""
    return STRATEGIES[strategy].kind if strategy in STRATEGIES else ""


# -- the settings -----------------------------------------------------------------------------------------------
@dataclass
class Args:
    """The benchmark's settings: one field per command-line option (``--first-seed`` is ``first_seed``)."""

    tasks: list[str] = field(default_factory=lambda: list(TASKS[:4]))
    """tasks to train on; default: the four fixed-difficulty tasks; rare_skill is the moving-optimum task (issue 7)"""
    strategies: list[str] = field(default_factory=lambda: list(STRATEGIES))
    """strategies to compare, by name (keys of STRATEGIES); default: all of them"""
    seeds: int = 5
    """number of seeds: FIRST_SEED .. FIRST_SEED + SEEDS - 1; each seed has its own warm start and held-out problems"""
    first_seed: int = 0
    """the first seed, e.g. 100 for tuning seeds kept apart from 0..4"""
    steps: int = 300
    """GRPO steps per run"""
    task_steps: dict = field(default_factory=dict)
    """steps for some tasks by name (e.g. {"countdown": 100}), overriding ``steps`` for those tasks"""
    prompts_per_step: int = 8
    """prompts per GRPO step"""
    num_generations: int = 8
    """completions per prompt"""
    eval_problems: int = 256
    """held-out problems per seed (the same for every strategy)"""
    k: int = 8
    """k of the held-out pass@k, sampled at T = 1"""
    workers: int = 2
    """processes running runs in parallel (1: in this process)"""
    threads: int = 1
    """torch threads per worker"""
    model: str = "tiny"
    """'tiny' (warm-started per task and seed) or a pretrained model such as 'smollm2' (or a saved folder), used as
    it is"""
    learning_rate: float | None = None
    """GRPO learning rate; default: GRPOConfig's (tuned for tiny)"""
    max_completion_tokens: int | None = None
    """completion length; default: the task's longest answer in characters + 1 (one token per character)"""
    train_set_size: int = 0
    """0: fresh training problems every step; N: a fixed set of N problems per (task, seed), iterated in epochs"""
    out: Path = DEFAULT_OUT
    """results folder: runs/ and warm/ (one JSON per run and per warm start), report.md, summary.json, figures"""
    report_only: bool = False
    """rebuild tables and figures from <out>/runs; run nothing"""
    smoke: bool = False
    """1 task, 2 strategies, 1 seed, 3 steps, tiny eval"""
    warm: dict = field(default_factory=dict)
    """not an option: settings for the tiny model's warm start (``build_warm_policy``); --smoke makes it tiny"""


def steps_for(args: Args, task: str) -> int:
    """GRPO steps of a run on ``task``: its entry in ``task_steps``, else ``steps``."""
    return int(args.task_steps.get(task, args.steps))


# -- files ------------------------------------------------------------------------------------------------------
def run_path(out: Path, task: str, strategy: str, seed: int) -> Path:
    return out / "runs" / f"{task}__{strategy}__seed{seed}.json"


def write_json(path: Path, data) -> None:
    """Write atomically: a reader (or a resumed run) never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=1, default=float))
    os.replace(tmp, path)


# -- the starting point -----------------------------------------------------------------------------------------
def _init_worker(threads: int = 1):
    import torch

    torch.set_num_threads(threads)  # tiny models: one thread per process is fastest; two processes use both cores


def load_policy(args: Args, task, seed: int):
    """The policy a run starts from: the cached warm start of the tiny model, or a pretrained model as it is.

    A pretrained model (``args.model``, e.g. ``"smollm2"``) gets no supervised warm start: GRPO starts from what it
    already knows, as a user's run would."""
    from metahp.lab.warmstart import build_warm_policy

    if args.model == "tiny":
        return build_warm_policy(task, seed=seed, progress=False, **args.warm)
    from transformers.utils import logging as hf_logging

    from metahp.lab.models import load_model

    # the "Loading weights" bar, once per run, would bury the runs bar (transformers' GGUF conversion bar is a
    # plain tqdm that no setting turns off without turning off ours too)
    hf_logging.disable_progress_bar()
    model, tokenizer = load_model(args.model)
    return model, tokenizer, {"model": args.model, "warm_start": None}


def trainer_settings(args: Args, task, seed: int) -> dict:
    """GRPO settings shared by every run of a (task, seed) (a pretrained model needs its own learning rate and
    length)."""
    settings = {"max_completion_tokens": args.max_completion_tokens or task.max_completion_chars + 1, "seed": seed}
    if args.learning_rate:
        settings["learning_rate"] = args.learning_rate
    if args.train_set_size:
        settings["train_set_size"] = args.train_set_size
    return settings


def prepare(args: Args, task_name: str, seed: int) -> dict:
    """Warm start for one (task, seed) (built or read from the cache) and its held-out score before GRPO."""
    _init_worker(args.threads)
    from metahp.lab.grpo import GRPOTrainer
    from metahp.lab.tasks import make_task

    path = Path(args.out) / "warm" / f"{task_name}__seed{seed}.json"
    if path.exists():
        return json.loads(path.read_text())
    start = time.perf_counter()
    task = make_task(task_name, None, seed)
    model, tokenizer, info = load_policy(args, task, seed)
    warm_s = time.perf_counter() - start
    eval_set = task.sample_prompts(args.eval_problems, seed + 1, split="eval")
    probe = GRPOTrainer(model, tokenizer, task, **trainer_settings(args, task, seed))
    result = {"task": task_name, "seed": seed, "warm_start": {**info, "seconds": warm_s},
              "before": probe.evaluate(eval_set, k=args.k)}
    write_json(path, result)
    return result


# -- one run ----------------------------------------------------------------------------------------------------
def run_one(args: Args, task_name: str, seed: int, strategy_name: str) -> dict:
    """One GRPO run of one strategy from the (cached) warm start; writes its JSON record to <out>/runs/ and returns
    a short summary for the progress bar."""
    _init_worker(args.threads)
    import metahp
    from metahp.lab.baselines import EntropyTarget, LinearSchedule
    from metahp.lab.grpo import HYPERPARAMETER_FIELDS, GRPOTrainer
    from metahp.lab.tasks import make_task

    strategy = STRATEGIES[strategy_name]
    task = make_task(task_name, None, seed)
    model, tokenizer, info = load_policy(args, task, seed)

    # the trainer, and what sets its temperature (or its learning rate)
    settings = trainer_settings(args, task, seed)
    fixed_temperature = strategy.kind == "fixed" and strategy.knob == "temperature"
    if strategy.kind == "fixed" and strategy.knob == "learning_rate":
        from metahp.lab.grpo import GRPOConfig

        base = settings.get("learning_rate", GRPOConfig.model_fields["learning_rate"].default)
        settings["learning_rate"] = base * strategy.value
    elif strategy.kind == "fixed" and HYPERPARAMETER_FIELDS.get(strategy.knob):  # beta, epsilon, epsilon_high
        settings[HYPERPARAMETER_FIELDS[strategy.knob]] = strategy.value
    settings.update(strategy.trainer)
    trainer = GRPOTrainer(model, tokenizer, task, prompts_per_step=args.prompts_per_step,
                          num_generations=args.num_generations,
                          temperature=strategy.value if fixed_temperature else 1.0, **settings)
    if strategy.kind == "schedule":
        trainer.attach(LinearSchedule(strategy.start, strategy.end, steps_for(args, task_name)))
    elif strategy.kind == "entropy":  # holds the first batch's token entropy at T = 1.0, T bounded to [0.5, 1.6]
        trainer.attach(EntropyTarget(target=None, start=1.0, bounds=(0.5, 1.6)))
    elif strategy.kind == "rule":
        from metahp.lab.baselines import ERPO

        trainer.attach(ERPO(**strategy.options))
    elif strategy.kind == "metahp":  # default grid 0.6..1.5
        options = dict(strategy.options)
        if options.get("context") == "family":  # a meta-policy per prompt family, read from each prompt's text
            if not hasattr(task, "family_context"):
                raise ValueError(f"{strategy_name} needs a task with prompt families (mixed), not {task_name}")
            options["context"] = task.family_context()
        elif options.get("context") == "shared":  # one meta-policy for every prompt: a value per group, not per family
            from metahp.knobset import prompt_context

            options["context"] = prompt_context(lambda prompt: "all", labels=("all",))
        metahp.adapt(trainer, knob=strategy.knob, updater=strategy.updater, **options)

    # train
    start = time.perf_counter()
    history = trainer.train(steps_for(args, task_name), progress=False)
    train_s = time.perf_counter() - start

    # evaluate on the seed's held-out problems (the same for every strategy)
    eval_set = task.sample_prompts(args.eval_problems, seed + 1, split="eval")
    start = time.perf_counter()
    after = trainer.evaluate(eval_set, k=args.k)
    if hasattr(task, "instruction"):  # tasks mixing instructions (rare_skill): greedy accuracy per instruction
        from metahp.lab.warmstart import greedy_accuracy

        kinds = sorted({task.instruction(p) for p in eval_set})
        after["greedy_by_instruction"] = {
            kind: greedy_accuracy(trainer.model, tokenizer, task, [p for p in eval_set if task.instruction(p) == kind])
            for kind in kinds}
    eval_s = time.perf_counter() - start

    # the record
    meta = sum(m["time/meta_update"] for m in history)
    total = sum(m["time/generation"] + m["time/policy_update"] + m["time/meta_update"] for m in history)
    adapted = strategy.kind == "metahp"
    record = {
        "task": task_name, "strategy": strategy_name, "seed": seed, "steps": steps_for(args, task_name),
        "model": args.model, "knob": strategy.knob,
        "learning_rate": trainer.config.learning_rate, "max_completion_tokens": trainer.config.max_completion_tokens,
        "prompts_per_step": args.prompts_per_step, "num_generations": args.num_generations,
        "train_set_size": args.train_set_size,
        "eval_problems": args.eval_problems, "k": args.k, "warm_pass_rate": info.get("pass_rate"),
        "after": after, "reward_auc": float(np.mean([m["reward"] for m in history])),
        "train_s": train_s, "eval_s": eval_s, "meta_update_share": meta / total if total else 0.0,
        "series": {
            "temperature": [m["knob/temperature"] for m in history],
            "reward": [m["reward"] for m in history],
            "entropy": [m["entropy"] for m in history],
            # metahp updaters: expected temperature under the meta-policy after each update
            "temperature_mean": [m.get("metahp/temperature_mean") for m in history] if adapted else None,
            # an adapted hyperparameter (learning-rate multiplier, beta, epsilon, epsilon_high): the value each batch
            # used, and its expected value under the meta-policy
            **({strategy.knob: [m.get(f"metahp/{strategy.knob}") for m in history],
                f"{strategy.knob}_mean": [m.get(f"metahp/{strategy.knob}_mean") for m in history]}
               if adapted and strategy.knob in HYPERPARAMETER_FIELDS else {}),
            # the share of tokens the loss clipped (epochs after the first) and the KL to the reference, per step
            "clip_fraction": [m.get("update/clip_fraction") for m in history],
            "kl": [m.get("update/kl") for m in history],
            # groups whose completions all got the same reward (no gradient), per step
            "zero_advantage_groups": [m.get("zero_advantage_groups") for m in history],
        },
    }
    if adapted and strategy.options.get("per") == "prompt":  # one meta-policy per context: bucket or family
        from metahp.knobset import BUCKETS

        labels = tuple(options["context"].labels) if options.get("context") is not None else BUCKETS
        record["series"]["buckets"] = {bucket: {
            # the bucket's policy: expected temperature after each update; the share of the batch's groups it drew
            "temperature_mean": [m.get(f"metahp/{bucket}/temperature_mean") for m in history],
            "groups": [m.get(f"metahp/groups/{bucket}", 0.0) for m in history]} for bucket in labels}
    if adapted:
        record["final_probs"] = {k.rsplit("/", 1)[1]: v for k, v in history[-1].items() if k.startswith("metahp/prob/")}
    write_json(run_path(Path(args.out), task_name, strategy_name, seed), record)
    return {"task": task_name, "strategy": strategy_name, "seed": seed, "greedy_accuracy": after["greedy_accuracy"],
            "wall_s": train_s + eval_s}


# -- many runs --------------------------------------------------------------------------------------------------
def _call(item):
    fn, job = item
    return fn(*job)


def map_jobs(fn, jobs: list[tuple], workers: int, desc: str) -> list:
    """``fn(*job)`` for every job, in ``workers`` forked processes (1: in this one), with a progress bar."""
    from tqdm.auto import tqdm

    bar = tqdm(total=len(jobs), desc=desc, unit="run")
    results = []
    if workers <= 1:
        for job in jobs:
            results.append(fn(*job))
            bar.update(1)
    else:
        import multiprocessing as mp

        # fork: the parent has imported no torch state worth protecting (it only plans, then reports)
        with mp.get_context("fork").Pool(workers, maxtasksperchild=20) as pool:
            for r in pool.imap_unordered(_call, [(fn, job) for job in jobs]):
                results.append(r)
                if isinstance(r, dict) and "greedy_accuracy" in r:
                    bar.set_postfix_str(f"{r['task']}/{r['strategy']}/s{r['seed']} acc={r['greedy_accuracy']:.3f}")
                bar.update(1)
    bar.close()
    return results
