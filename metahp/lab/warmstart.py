"""Warm start: a short supervised phase on task demonstrations, so GRPO starts from a policy that solves some
but not all prompts (greedy pass rate in a target band, 10-60% by default), cached on disk.

Next-token cross-entropy on prompt + demonstration + <eos>, loss on the completion tokens only, AdamW; the
greedy pass rate on a fixed eval-split set is measured every ``eval_every`` steps and training stops as soon as
it reaches the band. The result is cached in ``$METAHP_CACHE`` (default ``~/.cache/metahp``) under a hash of
the task, the model's config and initial weights, the seed and the settings, so a second run loads it.

Example::

    from metahp.lab.warmstart import build_warm_policy
    model, tokenizer, info = build_warm_policy("addition", difficulty=2, seed=0)
    info["pass_rate"], info["cached"]
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import json
import os
import shutil
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from tqdm.auto import tqdm

from metahp.errors import ConfigError
from metahp.lab.tasks import Problem, Task, make_task

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerFast

# Bump when the training recipe changes in a way that invalidates cached checkpoints.
_RECIPE_VERSION = 1
# How often a warm start may roll back after overshooting the target band.
_MAX_ROLLBACKS = 3


@dataclass(frozen=True)
class WarmStartSettings:
    """Everything that shapes the warm-started weights besides the task, model and seed (part of the cache key)."""

    steps: int = 1500
    target: tuple[float, float] = (0.1, 0.6)
    batch_size: int = 64
    lr: float = 3e-3
    weight_decay: float = 0.01
    eval_every: int = 25
    eval_size: int = 256  # 128 measured too noisy: the stopping set overstated the pass rate by up to 4 points
    # at least this many steps before early stopping may trigger (a random model can pass a few easy prompts)
    min_steps: int = 0

    def __post_init__(self):
        lo, hi = self.target
        if not 0.0 <= lo <= hi <= 1.0:
            raise ConfigError(f"target must be a band (lo, hi) with 0 <= lo <= hi <= 1, got {self.target!r}.")
        for name in ("steps", "batch_size", "eval_every", "eval_size"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < (0 if name == "steps" else 1):
                raise ConfigError(f"warm start {name} must be a positive int, got {v!r}.")
        if not self.lr > 0:
            raise ConfigError(f"warm start lr must be > 0, got {self.lr!r}.")


def cache_dir() -> Path:
    """The metahp cache folder: ``$METAHP_CACHE`` if set, else ``~/.cache/metahp``."""
    return Path(os.environ.get("METAHP_CACHE") or Path.home() / ".cache" / "metahp").expanduser()


# Below this many parameters one thread is fastest: the matmuls are too small to amortise thread
# synchronisation, and on a shared 2-core machine two threads measured 10x slower per step (0.62 s vs 0.066 s).
_SINGLE_THREAD_PARAMS = 10_000_000


@contextlib.contextmanager
def torch_threads(n: int | None, model: PreTrainedModel | None = None) -> Iterator[None]:
    """Use ``n`` intra-op threads inside the block, then restore the old count.

    ``n=None`` picks 1 thread for models under 10M parameters, else all cores (at most 8).
    """
    import torch

    if n is None:
        small = model is not None and sum(p.numel() for p in model.parameters()) < _SINGLE_THREAD_PARAMS
        n = 1 if small else max(1, min(os.cpu_count() or 1, 8))
    old = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)


def _encode(tokenizer: PreTrainedTokenizerFast, problems: Sequence[Problem]) -> dict[str, Any]:
    """Left-padded prompt batch (with <bos>), as torch tensors."""
    return tokenizer([p.prompt for p in problems], return_tensors="pt", padding=True)


def greedy_completions(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerFast, task: Task, problems: Sequence[Problem],
    batch_size: int = 256,
) -> list[str]:
    """The greedy completion of each problem, decoded without special tokens (what the verifier sees)."""
    import torch

    out: list[str] = []
    was_training = model.training
    model.eval()
    try:
        for i in range(0, len(problems), batch_size):
            batch = _encode(tokenizer, problems[i : i + batch_size])
            with torch.no_grad():
                ids = model.generate(
                    **batch, do_sample=False, max_new_tokens=task.max_completion_chars + 1,
                    pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
                )
            out += tokenizer.batch_decode(ids[:, batch["input_ids"].shape[1] :], skip_special_tokens=True)
    finally:
        model.train(was_training)
    return out


def greedy_accuracy(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerFast, task: Task, problems: Sequence[Problem]
) -> float:
    """The fraction of ``problems`` whose greedy completion the task's verifier accepts.

    Example: ``greedy_accuracy(model, tok, task, task.eval_problems(128))``.
    """
    if not problems:
        raise ConfigError("greedy_accuracy needs at least one problem.")
    completions = greedy_completions(model, tokenizer, task, problems)
    return float(np.mean([task.reward(p, c) for p, c in zip(problems, completions, strict=True)]))


def _supervised_batch(tokenizer: PreTrainedTokenizerFast, task: Task, problems: Sequence[Problem],
                      rng: np.random.Generator):
    """input_ids, attention_mask and labels (-100 outside the completion) for prompt + demonstration + <eos>.

    The demonstration is ``task.warm_start_completion(problem, rng)``: the task's answer unless it shapes it.
    """
    import torch

    rows, label_rows = [], []
    for p in problems:
        prompt = tokenizer(p.prompt).input_ids
        completion = tokenizer(task.warm_start_completion(p, rng), add_special_tokens=False).input_ids
        completion.append(tokenizer.eos_token_id)
        rows.append(prompt + completion)
        label_rows.append([-100] * len(prompt) + completion)
    width = max(map(len, rows))
    # Right padding here: labels shift inside the model, and the loss ignores the pads anyway.
    ids = torch.full((len(rows), width), tokenizer.pad_token_id, dtype=torch.long)
    labels = torch.full((len(rows), width), -100, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, (r, lr) in enumerate(zip(rows, label_rows, strict=True)):
        ids[i, : len(r)] = torch.tensor(r)
        labels[i, : len(lr)] = torch.tensor(lr)
        mask[i, : len(r)] = 1
    return ids, mask, labels


def _fingerprint(model: PreTrainedModel, tokenizer: PreTrainedTokenizerFast) -> str:
    """A hash of the model's config, initial weights and vocabulary: two models with equal fingerprints train
    to the same warm start."""
    import torch

    config = model.config.to_dict()
    for volatile in ("transformers_version", "_name_or_path", "torch_dtype", "dtype"):
        config.pop(volatile, None)
    h = hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode())
    h.update(json.dumps(tokenizer.get_vocab(), sort_keys=True).encode())
    for name, tensor in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(tensor.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def cache_key(task: Task, model: PreTrainedModel, tokenizer: PreTrainedTokenizerFast, seed: int,
              settings: WarmStartSettings) -> str:
    """The cache key of a warm start: a hash of (task, difficulty, model config and weights, seed, settings)."""
    payload = {"recipe": _RECIPE_VERSION, "task": task.spec, "model": _fingerprint(model, tokenizer), "seed": seed,
               "settings": asdict(settings)}
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:32]


def warm_start(
    task: Task,
    tokenizer: PreTrainedTokenizerFast,
    model: PreTrainedModel,
    *,
    steps: int = 1500,
    target: tuple[float, float] = (0.1, 0.6),
    seed: int = 0,
    cache: bool = True,
    progress: bool = True,
    num_threads: int | None = None,
    **settings: Any,
) -> tuple[PreTrainedModel, dict[str, Any]]:
    """Train ``model`` in place on demonstrations until its greedy eval pass rate reaches ``target`` (or for
    ``steps`` steps); return it with an info dict.

    Extra keyword settings: batch_size, lr, weight_decay, eval_every, eval_size, min_steps (see
    WarmStartSettings). ``info`` holds ``pass_rate`` (greedy, eval split), ``steps`` (trained),
    ``in_band``, ``seconds``, ``history`` [(step, pass_rate)], ``rollbacks``, ``cached`` (True when loaded
    from the cache, without training) and ``path`` (the cached checkpoint, or None with ``cache=False``).
    When one evaluation jumps over the band, training rolls back to the last state below it and evaluates after
    every step (at most 3 times, halving the lr after the first); a model already at or above ``target[0]``
    is not trained.

    Example: ``model, info = warm_start(make_task("addition"), tok, tiny_model(tok), steps=500, seed=0)``.
    """
    import torch

    task = task.warm_start_task()  # a task's variant (one family of "mixed") starts where the whole task does
    try:
        cfg = WarmStartSettings(steps=steps, target=tuple(target), **settings)
    except TypeError as e:
        valid = list(WarmStartSettings.__dataclass_fields__)
        raise ConfigError(f"unknown warm start setting: {e}; valid settings: {valid}.") from e
    key = cache_key(task, model, tokenizer, seed, cfg)
    path = cache_dir() / "warmstart" / key
    if cache and (path / "info.json").is_file():
        loaded = type(model).from_pretrained(path, local_files_only=True)
        model.load_state_dict(loaded.state_dict())
        info = json.loads((path / "info.json").read_text())
        info.update(cached=True, path=str(path))
        return model.eval(), info

    start = time.perf_counter()
    eval_set = task.eval_problems(cfg.eval_size, seed=seed)
    rng = np.random.default_rng(seed)
    lo, hi = cfg.target
    history: list[tuple[int, float]] = []
    with torch_threads(num_threads, model), torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        # linear warm-up over the first 5% of steps: tiny models at lr 3e-3 diverge without it
        warmup = max(1, cfg.steps // 20)
        rate = greedy_accuracy(model, tokenizer, task, eval_set)
        history.append((0, rate))
        step, since_eval, interval, rollbacks, lr_scale = 0, 0, cfg.eval_every, 0, 1.0
        # the state at the last evaluation below the band, to roll back to when a jump overshoots it
        snapshot = _snapshot(model, optimizer, step)
        done = cfg.min_steps == 0 and rate >= lo  # supervised training would only raise it further
        bar = tqdm(total=cfg.steps, desc=f"warm start {task.name}", disable=not progress, leave=False)
        while step < cfg.steps and not done:
            model.train()
            ids, mask, labels = _supervised_batch(tokenizer, task, task.sample_prompts(cfg.batch_size, rng), rng)
            loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            for group in optimizer.param_groups:
                group["lr"] = cfg.lr * lr_scale * min(1.0, (step + 1) / warmup)
            optimizer.step()
            step, since_eval = step + 1, since_eval + 1
            bar.update(1)
            if since_eval < interval and step < cfg.steps:
                continue
            since_eval = 0
            rate = greedy_accuracy(model, tokenizer, task, eval_set)
            history.append((step, rate))
            bar.set_postfix(loss=f"{loss.item():.3f}", pass_rate=f"{rate:.2f}")
            if step < cfg.min_steps:
                snapshot = _snapshot(model, optimizer, step) if rate < lo else snapshot
            elif rate > hi and rollbacks < _MAX_ROLLBACKS:
                # Overshot the band between two evaluations (easy tasks learn in a few dozen steps): go back to
                # the last state below it and evaluate after every step; on later overshoots, halve the lr too.
                step = _restore(model, optimizer, snapshot)
                lr_scale *= 0.5 if rollbacks else 1.0
                interval, rollbacks = 1, rollbacks + 1
                rate = next(r for s, r in reversed(history) if s == step)
                history.append((step, rate))
                bar.n = step
                bar.refresh()
            elif rate >= lo:
                done = True  # in the band, or above it with no rollback left (then info["in_band"] is False)
            else:
                snapshot = _snapshot(model, optimizer, step)
        bar.close()
    model.eval()
    info: dict[str, Any] = {
        "task": task.name, "difficulty": task.difficulty, "seed": seed, "key": key, "pass_rate": rate,
        "steps": step, "in_band": lo <= rate <= hi, "target": [lo, hi], "seconds": time.perf_counter() - start,
        "history": history, "rollbacks": rollbacks, "eval_size": cfg.eval_size, "cached": False, "path": None,
    }
    if cache:
        info["path"] = str(_save_atomically(model, tokenizer, info, path))
    return model, info


def _snapshot(model, optimizer, step: int) -> dict[str, Any]:
    return {"model": copy.deepcopy(model.state_dict()), "optimizer": copy.deepcopy(optimizer.state_dict()),
            "step": step}


def _restore(model, optimizer, snapshot: dict[str, Any]) -> int:
    model.load_state_dict(snapshot["model"])
    optimizer.load_state_dict(snapshot["optimizer"])
    return snapshot["step"]


def _save_atomically(model: PreTrainedModel, tokenizer: PreTrainedTokenizerFast, info: dict[str, Any],
                     path: Path) -> Path:
    """Write the checkpoint to a temp folder next to ``path`` and rename it into place, so a reader never sees
    a half-written checkpoint and two concurrent writers do not mix files."""
    from metahp.lab.models import save

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}-", dir=path.parent))
    try:
        save(model, tokenizer, tmp)
        (tmp / "info.json").write_text(json.dumps({**info, "path": None}, indent=1))
        try:
            os.rename(tmp, path)
        except OSError:
            # another process finished the same warm start first: its checkpoint is equivalent, keep it
            if not (path / "info.json").is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return path


def build_warm_policy(
    task_name: str | Task = "addition",
    difficulty: int | None = None,
    seed: int = 0,
    model: str = "tiny",
    *,
    hidden: int = 128,
    layers: int = 2,
    heads: int = 4,
    **warm_kwargs: Any,
) -> tuple[PreTrainedModel, PreTrainedTokenizerFast, dict[str, Any]]:
    """A warm-started policy for a task: tokenizer, model and warm start (or its cached result) in one call.

    ``model="tiny"`` builds a char tokenizer over the task's alphabet and a random Qwen2 (hidden, layers,
    heads, seeded by ``seed``); ``"smollm2"`` or a local folder loads that model instead.
    Example: ``model, tok, info = build_warm_policy("addition", difficulty=2, seed=0)``.
    """
    from metahp.lab.models import char_tokenizer, load_model, tiny_model

    task = make_task(task_name, difficulty, seed)
    if model == "tiny":
        tokenizer = char_tokenizer(task.alphabet)
        policy = tiny_model(tokenizer, hidden=hidden, layers=layers, heads=heads, seed=seed)
    else:
        policy, tokenizer = load_model(model)
    policy, info = warm_start(task, tokenizer, policy, seed=seed, **warm_kwargs)
    return policy, tokenizer, info


__all__ = ["WarmStartSettings", "build_warm_policy", "cache_dir", "cache_key", "greedy_accuracy",
           "greedy_completions", "warm_start"]
