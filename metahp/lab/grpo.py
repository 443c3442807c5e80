"""metahp's reference GRPO trainer: small, readable, and exact about which temperature did what.

Per step (one generation batch):
  1. knobs for this batch come from the attached controller (a meta-policy adapter) or the config;
  2. G completions per prompt are sampled with ``model.generate`` at those knobs, keeping the raw logits
     that sampled every token (``output_logits=True``: no extra forward pass);
  3. strict task rewards, group-normalised advantages A_i = (r_i - mean_g r) / std_g r (0 for uniform groups);
  4. ``epochs`` passes of the clipped policy-ratio loss, log-probs at the sampling temperature:
        ratio_t = exp(log pi_T(o_t) - log pi_T^old(o_t)),
        loss = - sum_t min(ratio_t A, clip(ratio_t, 1 - eps, 1 + eps_high) A) / (number of completion tokens)
               + beta * KL_k3(pi_T || pi_ref,T)    (optional, k3 estimator; eps_high = eps unless clip_eps_high)
     where log pi_T^old comes from the generation logits, so the first epoch has ratio 1 exactly; the update
     measures the clipped fraction, the KL and (if asked) the alignment of successive gradients on the way
     (``Rollout.measured``, for the rewards fitted to a hyperparameter);
  5. the controller learns from the same rollouts (``after_batch``).
Wall time is split into generation / policy update / meta-update. ``train`` checkpoints, writes metrics as
JSON lines, shows a progress bar, and leaves a usable checkpoint when interrupted with Ctrl-C.
"""

from __future__ import annotations

import copy
import json
import math
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from metahp.errors import ConfigError, StateError
from metahp.knobs import KNOBS, active_truncations, sampling_names
from metahp.knobs.learning_rate import scaled_learning_rate
from metahp.knobs.temperature import PerRowTemperature
from metahp.rows import is_per_row
from metahp.state import (
    check_rng_state,
    fsync_tree,
    in_file,
    read_json,
    replace_folder,
    require_int,
    require_keys,
    write_json_atomic,
)

# The hyperparameter knobs (role "updates") this trainer applies, by the config field each stands for; the learning
# rate knob is a multiplier on config.learning_rate (None: no field, configured as 1). A batch's knobs carry them from
# the controller to its loss (beta, epsilon, epsilon_high) and its optimizer steps (learning_rate).
HYPERPARAMETER_FIELDS = {"learning_rate": None, "beta": "kl_beta", "epsilon": "clip_eps",
                         "epsilon_high": "clip_eps_high"}
# What update_policy measures for the rewards fitted to a hyperparameter (metahp.rewards.Batch.measured): the cosine of
# this batch's first gradient with the optimizer step's gradient before it (grad_alignment) and with that step's
# parameter change (update_alignment), the mean per-token KL to the reference (kl_beta > 0) and the share of
# completion tokens the loss clipped. The gradient and the update are kept only when the controller asks for them.
MEASURES = ("grad_alignment", "update_alignment", "kl", "clip_fraction")


class GRPOConfig(BaseModel):
    """Settings of the reference trainer, validated eagerly."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    prompts_per_step: int = Field(8, ge=1, description="prompts per generation batch")
    num_generations: int = Field(8, ge=2, description="G: completions per prompt (>= 2 for a group baseline)")
    max_completion_tokens: int = Field(8, ge=1)
    epochs: int = Field(2, ge=1, description="passes of the clipped loss over each batch")
    learning_rate: float = Field(1e-4, gt=0, description="AdamW; 3e-4 and above made the tiny demo models collapse")
    clip_eps: float = Field(0.2, gt=0, lt=1)
    clip_eps_high: float | None = Field(None, gt=0, lt=1, description="upper clip bound, DAPO's clip-higher "
                                        "(None: clip_eps, symmetric)")
    kl_beta: float = Field(0.0, ge=0, description="weight of KL to the frozen initial policy (0: no reference)")
    max_grad_norm: float = Field(1.0, gt=0)
    temperature: float = Field(1.0, gt=0, description="sampling temperature when no meta-policy adapts it")
    top_p: float = Field(1.0, gt=0, le=1, description="nucleus mass (1.0: off) when not adapted")
    top_k: int = Field(0, ge=0, description="keep the k most likely tokens (0: off) when not adapted")
    min_p: float = Field(0.0, ge=0, lt=1, description="min-p threshold (0.0: off) when not adapted")
    replay_truncation: bool = Field(True, description="compute the loss's log-probs on the truncated support "
                                                      "each completion was sampled from (see docs)")
    eval_temperature: float = Field(1.0, gt=0, description="temperature of pass@k evaluation samples")
    train_set_size: int = Field(0, ge=0, description="0: fresh training problems every step; N: a fixed set of N "
                                                     "problems iterated over in shuffled epochs, as real datasets "
                                                     "are (prompts recur, so each has a history)")
    seed: int = 0

    @classmethod
    def build(cls, **kwargs) -> GRPOConfig:
        try:
            return cls(**kwargs)
        except ValidationError as err:
            problems = "; ".join(f"{'.'.join(map(str, e['loc']))}={e.get('input')!r}: {e['msg']}" for e in err.errors())
            raise ConfigError(f"GRPOConfig: {problems}. Valid settings: {list(cls.model_fields)}.") from None


@dataclass
class Rollout:
    """One generation batch. ``logits`` are the raw logits that sampled each completion token."""

    prompt_ids: torch.Tensor  # [B, P] left-padded
    prompt_mask: torch.Tensor  # [B, P]
    completion_ids: torch.Tensor  # [B, L]
    completion_mask: torch.Tensor  # [B, L] 1 up to and including the first eos
    logits: torch.Tensor  # [B, L, V]
    knobs: dict[str, float]
    support: torch.Tensor | None  # [B, L, V] tokens the truncation kept at each step (None: no truncation)
    completions: list[str]
    rewards: torch.Tensor  # [B]
    advantages: torch.Tensor  # [B]
    problem_ids: list[int] | None = None  # [P] index of each prompt in the fixed training set (None: fresh problems)
    context: BatchContext | None = None  # what was known before sampling (per-prompt pass rates)
    # what update_policy measured on this batch (MEASURES; None: no update, every advantage was 0)
    measured: dict[str, float | None] | None = None


@dataclass(frozen=True)
class BatchContext:
    """What is known about the next batch before it is sampled: its prompts' indices in the fixed training set
    (None with fresh problems) and each prompt's pass rate the last time it was trained on (None: not seen yet)."""

    problem_ids: list[int] | None
    pass_rates: list[float | None]  # [P]
    group_size: int  # G: completions per prompt, consecutive in the batch
    prompts: list[str] | None = None  # [P] each prompt's text (what a context reading prompts is given)

    def for_context(self, reads: str) -> list:
        """Each prompt's context for a per-prompt context function that reads ``reads`` ("pass_rate" or
        "prompt", metahp.knobset.context_reads)."""
        return self.prompts if reads == "prompt" else self.pass_rates


class KnobController(Protocol):
    """What the trainer asks of an attached meta-policy adapter (``context``: per-prompt values need it)."""

    def knobs_for_next_batch(self, context: BatchContext | None = None) -> dict[str, float]: ...
    def after_batch(self, rollout: Rollout) -> dict[str, float]: ...
    def state_dict(self) -> dict[str, Any]: ...
    def load_state_dict(self, state: dict[str, Any]) -> None: ...


def group_advantages(rewards: torch.Tensor) -> torch.Tensor:
    """GRPO advantages A = (r - mean_group r) / std_group r for rewards [P, G]; 0 where a group is uniform."""
    mean = rewards.mean(dim=1, keepdim=True)
    std = rewards.std(dim=1, keepdim=True, unbiased=False)
    return torch.where(std > 0, (rewards - mean) / std.clamp(min=1e-8), torch.zeros_like(rewards))


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k from n samples with c correct (Chen et al., 2021): 1 - C(n-c, k) / C(n, k)."""
    if n - c < k:
        return 1.0
    return 1.0 - math.prod((n - c - i) / (n - i) for i in range(k))


class GRPOTrainer:
    """GRPO on a ``metahp.lab.tasks`` task with a causal LM from transformers.

    >>> import metahp
    >>> from metahp.lab.models import char_tokenizer, tiny_model
    >>> from metahp.lab.tasks import make_task
    >>> task = make_task("addition", difficulty=1)
    >>> tokenizer = char_tokenizer(task.alphabet)
    >>> model = tiny_model(tokenizer, hidden=32, layers=1, heads=2)
    >>> trainer = GRPOTrainer(model, tokenizer, task, GRPOConfig(prompts_per_step=2, num_generations=2, seed=0))
    >>> adapter = metahp.adapt(trainer, knob="temperature")   # optional: learn the temperature
    >>> history = trainer.train(steps=2, progress=False)
    >>> [m["step"] for m in history], adapter.policy.step
    ([1, 2], 2)
    """

    def __init__(self, model, tokenizer, task, config: GRPOConfig | None = None, **settings):
        if config is not None and settings:
            raise ConfigError("pass either config=GRPOConfig(...) or keyword settings, not both.")
        self.config = config if config is not None else GRPOConfig.build(**settings)
        if tokenizer.pad_token_id is None or tokenizer.eos_token_id is None:
            raise ConfigError("the tokenizer needs pad and eos tokens (set tokenizer.pad_token = tokenizer.eos_token "
                              "if it has none).")
        tokenizer.padding_side = "left"  # not saved with tokenizers: set it again here
        self.model, self.tokenizer, self.task = model, tokenizer, task
        self.reference = None
        if self.config.kl_beta > 0:
            self.reference = copy.deepcopy(model).eval().requires_grad_(False)
        self.optimizer = torch.optim.AdamW(model.parameters(), lr=self.config.learning_rate)
        self.controller: KnobController | None = None
        self.last_knobs: dict[str, float] = {}
        self.step = 0
        self.history: list[dict[str, float]] = []
        self._rng = np.random.default_rng(self.config.seed)
        # The fixed training set (train_set_size > 0) comes from its own stream, so fresh-problem runs are unchanged.
        self.train_set = (task.sample_prompts(self.config.train_set_size, np.random.default_rng([self.config.seed, 1]),
                                              split="train") if self.config.train_set_size else None)
        self._train_queue: list[int] = []  # indices of the current epoch still to be served
        self.served = 0  # training problems served so far (epoch = served // train_set_size)
        self.pass_rates: dict[int, float] = {}  # fixed set: each problem's pass rate the last time it was trained on
        # The last optimizer step's flattened gradient, kept (and checkpointed) only while the controller measures
        # grad_alignment: the next batch's first gradient is compared with it.
        self.previous_gradient: torch.Tensor | None = None
        # The last optimizer step's parameter change (theta before minus theta after), kept (and checkpointed) only
        # while the controller measures update_alignment: the next batch's first gradient is compared with it.
        self.previous_update: torch.Tensor | None = None
        torch.manual_seed(self.config.seed)

    # -- knobs -------------------------------------------------------------------------------------------
    def attach(self, controller: KnobController) -> None:
        if self.controller is not None:
            raise ConfigError("a meta-policy is already attached to this trainer; attach one adapter per trainer "
                              "(several knobs go through one adapter).")
        self.controller = controller

    def configured(self, name: str):
        """A knob's value when no controller adapts it: the config's field (``HYPERPARAMETER_FIELDS`` names the
        hyperparameters' fields; the learning-rate multiplier is 1), else the knob's off value (a knob registered
        outside metahp has no field)."""
        if name == "epsilon_high" and self.config.clip_eps_high is None:
            return self.config.clip_eps  # symmetric: the upper bound is clip_eps
        if name in HYPERPARAMETER_FIELDS:
            field = HYPERPARAMETER_FIELDS[name]
            return KNOBS[name].off_value if field is None else getattr(self.config, field)
        return getattr(self.config, name, KNOBS[name].off_value)

    def knobs(self, context: BatchContext | None = None) -> dict[str, float]:
        """Every registered sampling knob's value for the next batch (metahp.knobs.KNOBS), and the hyperparameters
        the controller adapts: the controller's where it adapts the knob, else ``configured``."""
        cfg = self.config
        knobs = {name: self.configured(name) for name in sampling_names()}
        if self.controller is not None:
            knobs.update(self.controller.knobs_for_next_batch(context))
        rows = cfg.prompts_per_step * cfg.num_generations
        for name, value in knobs.items():
            if is_per_row(value) and len(value) != rows:
                raise ConfigError(f"the controller gave {len(value)} values of {name} for the {rows} completions of a "
                                  f"batch (prompts_per_step x num_generations); give one per completion, or one value.")
        active = active_truncations(knobs)
        if len(active) > 1:
            # transformers applies them in sequence (top_k, top_p, min_p); metahp's likelihoods model one cut.
            off = {name: KNOBS[name].off_value for name, _ in active}
            raise ConfigError(f"truncation knobs {[n for n, _ in active]} are all active; metahp scores one "
                              f"truncation at a time. Leave all but one at their off values {off}.")
        return knobs

    # -- rollouts ----------------------------------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        """Where the model lives; rollouts, logits and advantages are kept there (CPU or GPU alike)."""
        return next(self.model.parameters()).device

    def _encode(self, prompts: list[str]):
        return self.tokenizer(prompts, return_tensors="pt", padding=True).to(self.device)

    def _decode(self, completion: torch.Tensor) -> tuple[torch.Tensor, list[str]]:
        """Completion mask (1 up to and including the first eos) and the text the verifier judges."""
        is_eos = completion == self.tokenizer.eos_token_id
        after_eos = (is_eos.cumsum(dim=1) - is_eos.long()) > 0
        mask = (~after_eos).long()
        # Text up to (not including) the first eos, other special tokens kept: a completion that sampled e.g.
        # <pad> is judged as written by the strict verifier, not silently cleaned up.
        keep = (mask.bool() & ~is_eos).tolist()
        texts = [self.tokenizer.decode([t for t, k in zip(row, ks, strict=True) if k], skip_special_tokens=False)
                 for row, ks in zip(completion.tolist(), keep, strict=True)]
        return mask, texts

    @torch.no_grad()
    def _sample(self, prompts: list[str], knobs: dict[str, float], max_new_tokens: int):
        enc = self._encode(prompts)
        self.model.eval()
        truncating = bool(active_truncations(knobs))
        # Every registered sampling knob, as generate takes it (top_k 0 and min_p None switch those off).
        sampling = {name: KNOBS[name].backend_value(knobs.get(name, KNOBS[name].off_value))
                    for name in sampling_names() if not is_per_row(knobs.get(name))}
        processors = []
        if is_per_row(knobs.get("temperature")):
            # One temperature per completion: generate samples at T = 1 after this processor, which transformers
            # runs before its truncation warpers (temperature first, as with one value).
            sampling["temperature"] = 1.0
            processors.append(PerRowTemperature(torch.tensor(knobs["temperature"], device=self.device)))
        out = self.model.generate(
            **enc, do_sample=True, **sampling, max_new_tokens=max_new_tokens, logits_processor=processors or None,
            output_logits=True, output_scores=truncating, return_dict_in_generate=True,
            pad_token_id=self.tokenizer.pad_token_id, eos_token_id=self.tokenizer.eos_token_id,
        )
        completion = out.sequences[:, enc["input_ids"].shape[1]:]
        logits = torch.stack(out.logits, dim=1).float()  # raw: before the temperature and truncation warpers
        mask, texts = self._decode(completion)
        support = None
        if truncating:
            # The processed scores are -inf exactly where the truncation removed a token, ties as transformers
            # broke them; positions after eos are padding: leave them untruncated so they stay finite.
            support = torch.isfinite(torch.stack(out.scores, dim=1)) | ~mask.bool().unsqueeze(-1)
        return enc["input_ids"], enc["attention_mask"], completion, mask, logits, support, texts

    def generate(self) -> Rollout:
        """Sample this step's batch at the controller's knobs and score it."""
        cfg = self.config
        problem_ids = self._next_problem_ids(cfg.prompts_per_step) if self.train_set is not None else None
        problems = ([self.train_set[i] for i in problem_ids] if problem_ids is not None
                    else self.task.sample_prompts(cfg.prompts_per_step, self._rng, split="train"))
        context = BatchContext(problem_ids, [self.pass_rates.get(i) for i in problem_ids] if problem_ids is not None
                               else [None] * cfg.prompts_per_step, cfg.num_generations,
                               [p.prompt for p in problems])
        knobs = self.knobs(context)  # after the problems: a per-prompt controller reads their history
        self.last_knobs = dict(knobs)  # what the batch is sampled with and its loss replays (adapters check it)
        prompts = [p.prompt for p in problems for _ in range(cfg.num_generations)]
        pids, pmask, cids, cmask, logits, support, texts = self._sample(prompts, knobs, cfg.max_completion_tokens)
        targets = [p for p in problems for _ in range(cfg.num_generations)]
        rewards = torch.tensor([self.task.reward(p, c) for p, c in zip(targets, texts, strict=True)],
                               device=self.device)
        advantages = group_advantages(rewards.view(cfg.prompts_per_step, cfg.num_generations)).view(-1)
        if problem_ids is not None:  # the pass rate of each prompt's group, for the next time it comes round
            for i, rate in zip(problem_ids, (rewards.view(cfg.prompts_per_step, -1) > 0).float().mean(1).tolist(),
                               strict=True):
                self.pass_rates[i] = rate
        return Rollout(pids, pmask, cids, cmask, logits, knobs, support, texts, rewards, advantages, problem_ids,
                       context)

    def _next_problem_ids(self, n: int) -> list[int]:
        """The next ``n`` problems of the fixed training set: epochs of shuffled passes over it, back to back."""
        while len(self._train_queue) < n:
            self._train_queue.extend(int(i) for i in self._rng.permutation(len(self.train_set)))
        ids, self._train_queue = self._train_queue[:n], self._train_queue[n:]
        self.served += n
        return ids

    # -- policy update -----------------------------------------------------------------------------------
    def sampling_logprobs(self, logits: torch.Tensor, rollout: Rollout) -> torch.Tensor:
        """log-probs of the completion tokens from raw logits [B, L, V]: temperature, then (with
        ``replay_truncation``) the truncated support each token was sampled from, renormalised."""
        scaled = logits.float() / _temperature_of(rollout.knobs, logits)
        if rollout.support is not None and self.config.replay_truncation:
            scaled = scaled.masked_fill(~rollout.support, float("-inf"))
        return torch.log_softmax(scaled, dim=-1).gather(-1, rollout.completion_ids.unsqueeze(-1)).squeeze(-1)

    def completion_logprobs(self, model, rollout: Rollout) -> torch.Tensor:
        """log pi(o_t) of every completion token under ``model`` at the batch's knobs (with grad if the model
        has it): [B, L]."""
        ids = torch.cat([rollout.prompt_ids, rollout.completion_ids], dim=1)
        mask = torch.cat([rollout.prompt_mask, rollout.completion_mask], dim=1)
        # Same positions as generate used with left padding.
        positions = (mask.cumsum(dim=1) - 1).clamp(min=0)
        # Only the positions that predict completion tokens go through the LM head: on a real vocabulary
        # (SmolLM2, V = 49k) the full [B, prompt + completion, V] logits and their backward took half the update.
        keep = rollout.completion_ids.shape[1] + 1
        logits = model(input_ids=ids, attention_mask=mask, position_ids=positions, logits_to_keep=keep).logits
        return self.sampling_logprobs(logits[:, :-1], rollout)

    def loss(self, new_logp, old_logp, ref_logp, advantages, mask, knobs: dict | None = None,
             measures: dict | None = None) -> torch.Tensor:
        """Clipped policy-ratio loss averaged over completion tokens, plus beta * k3 KL to the reference; beta and
        the clip range, ratio in [1 - epsilon, 1 + epsilon_high], are the batch's ``knobs`` where a controller adapts
        them, else the config's (epsilon_high: clip_eps_high, or epsilon itself when that is None).

        A dict passed as ``measures`` receives what the loss measured on the way (no extra computation of note):
        ``clip_fraction``, the share of completion tokens whose ratio the clip binds (below 1 - eps with A < 0, above
        1 + eps_high with A > 0), and with a reference model ``kl``, the mean per-token k3 KL to it."""
        knobs = knobs or {}
        eps = knobs.get("epsilon", self.config.clip_eps)
        eps_high = knobs.get("epsilon_high", eps if self.config.clip_eps_high is None else self.config.clip_eps_high)
        beta = knobs.get("beta", self.config.kl_beta)
        ratio = torch.exp(new_logp - old_logp)
        adv = advantages.unsqueeze(1)
        per_token = -torch.min(ratio * adv, ratio.clamp(1 - eps, 1 + eps_high) * adv)
        mask = mask.float()
        tokens = mask.sum().clamp(min=1)
        measured = {} if measures is None else measures
        if measures is not None:
            with torch.no_grad():
                clipped = ((ratio < 1 - eps) & (adv < 0)) | ((ratio > 1 + eps_high) & (adv > 0))
                measured["clip_fraction"] = float((clipped.float() * mask).sum() / tokens)
        if ref_logp is not None:
            delta = ref_logp - new_logp
            kl = torch.exp(delta) - delta - 1
            if measures is not None:
                measured["kl"] = float((kl.detach() * mask).sum() / tokens)
            if beta > 0:
                per_token = per_token + beta * kl
        return (per_token * mask).sum() / tokens

    def update_policy(self, rollout: Rollout) -> float:
        old_logp = self.sampling_logprobs(rollout.logits, rollout)  # exact: the logits that sampled the batch
        ref_logp = None
        if self.reference is not None:
            with torch.no_grad():
                ref_logp = self.completion_logprobs(self.reference, rollout)
        self.model.train()
        asked = getattr(self.controller, "measures", ()) if self.controller else ()
        gradients, updates = "grad_alignment" in asked, "update_alignment" in asked
        if not gradients:  # not asked now: a copy from steps ago must not pass for "the previous step's" later
            self.previous_gradient = None
        if not updates:
            self.previous_update = None
        losses, measured = [], []
        alignment = update_alignment = None
        for epoch in range(self.config.epochs):
            new_logp = self.completion_logprobs(self.model, rollout)
            measures: dict[str, float] = {}
            loss = self.loss(new_logp, old_logp, ref_logp, rollout.advantages, rollout.completion_mask,
                             rollout.knobs, measures=measures)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.config.max_grad_norm)
            # only when asked: a model-sized copy of the gradient (and of the parameters, for the update) per step
            gradient = _flat_gradient(self.model) if gradients or updates else None
            if gradients:
                if epoch == 0:  # this batch's first gradient against the optimizer step's before it
                    alignment = _cosine(gradient, self.previous_gradient)
                self.previous_gradient = gradient
            if updates:
                if epoch == 0:  # this batch's first gradient against the optimizer step's update before it
                    update_alignment = _cosine(gradient, self.previous_update)
                before = _flat_parameters(self.model)
            # the batch's learning-rate multiplier (1 unless adapted) on the configured rate, for this step only
            with scaled_learning_rate(self.optimizer, rollout.knobs.get("learning_rate", 1.0)):
                self.optimizer.step()
            if updates:
                self.previous_update = before - _flat_parameters(self.model)
            losses.append(float(loss.detach()))
            measured.append(measures)
        # what the step measured, travelling with its batch to the controller: means over the epochs. The clipped
        # fraction only over the epochs after the first: the first epoch's ratio is exactly 1 (the old log-probs are
        # the sampling logits'), so it never clips; with one epoch nothing can clip (None: not measurable).
        rollout.measured = {name: float(np.mean([m[name] for m in measured])) for name in measured[0]}
        if "clip_fraction" in rollout.measured:
            later = [m["clip_fraction"] for m in measured[1:]]
            rollout.measured["clip_fraction"] = float(np.mean(later)) if later else None
        if gradients:
            rollout.measured["grad_alignment"] = alignment
        if updates:
            rollout.measured["update_alignment"] = update_alignment
        return float(np.mean(losses))

    # -- one step, many steps ----------------------------------------------------------------------------
    def train_step(self) -> dict[str, float]:
        t0 = time.perf_counter()
        rollout = self.generate()
        t1 = time.perf_counter()
        loss = self.update_policy(rollout) if rollout.advantages.abs().sum() > 0 else 0.0
        t2 = time.perf_counter()
        meta = self.controller.after_batch(rollout) if self.controller is not None else {}
        t3 = time.perf_counter()
        mask = rollout.completion_mask.bool()
        scaled = rollout.logits / _temperature_of(rollout.knobs, rollout.logits)
        if rollout.support is not None:
            scaled = scaled.masked_fill(~rollout.support, float("-inf"))
        logp = torch.log_softmax(scaled, -1)
        entropy = -(logp.exp() * logp.nan_to_num(neginf=0.0)).sum(-1)[mask].mean()  # of what was sampled
        groups = rollout.rewards.view(self.config.prompts_per_step, self.config.num_generations)
        self.step += 1
        metrics = {
            "step": self.step, "reward": float(rollout.rewards.mean()),
            **({"epoch": self.served / len(self.train_set)} if self.train_set is not None else {}),
            "pass_rate": float((groups.max(dim=1).values > 0).float().mean()),  # prompts with >= 1 success
            # groups whose completions all got the same reward: zero advantage, no gradient from them
            "zero_advantage_groups": float((groups.amax(dim=1) == groups.amin(dim=1)).float().mean()),
            "entropy": float(entropy), "loss": loss, "completion_tokens": float(mask.sum(1).float().mean()),
            **{f"knob/{k}": float(np.mean(v)) if is_per_row(v) else v for k, v in rollout.knobs.items()},
            "time/generation": t1 - t0, "time/policy_update": t2 - t1, "time/meta_update": t3 - t2,
            # what the update measured on the way (the clipped share, the KL to the reference), as TRL logs them
            **{f"update/{k}": v for k, v in (rollout.measured or {}).items() if k in ("clip_fraction", "kl")},
            **meta,
        }
        self.history.append(metrics)
        return metrics

    def train(self, steps: int, *, output_dir: str | Path | None = None, save_every: int = 0,
              progress: bool = True, description: str = "GRPO") -> list[dict[str, float]]:
        """Run until ``self.step == steps``; metrics go to output_dir/metrics.jsonl, checkpoints to output_dir."""
        from tqdm.auto import tqdm

        out = Path(output_dir) if output_dir is not None else None
        if out is not None:
            out.mkdir(parents=True, exist_ok=True)
        bar = tqdm(total=steps, initial=self.step, desc=description, disable=not progress, leave=False)
        try:
            while self.step < steps:
                metrics = self.train_step()
                if out is not None:
                    with open(out / "metrics.jsonl", "a") as f:
                        f.write(json.dumps(metrics) + "\n")
                    if save_every and self.step % save_every == 0:
                        self.save_checkpoint(out / "checkpoint")
                bar.set_postfix(reward=f"{metrics['reward']:.2f}", T=f"{metrics['knob/temperature']:.2f}")
                bar.update(1)
        except KeyboardInterrupt:
            if out is not None:
                self.save_checkpoint(out / "checkpoint")
                print(f"\ninterrupted at step {self.step}: checkpoint in {out / 'checkpoint'}; resume with "
                      f"trainer.load_checkpoint(...) then train(...)")
            raise
        finally:
            bar.close()
        if out is not None:
            self.save_checkpoint(out / "checkpoint")
        return self.history

    # -- evaluation --------------------------------------------------------------------------------------
    @torch.no_grad()
    def evaluate(self, problems, k: int = 8) -> dict[str, float]:
        """Held-out greedy accuracy and pass@k (k samples at ``eval_temperature``); restores RNG afterwards."""
        rng_state = _rng_states()  # evaluation must not change the training run's random stream
        try:
            enc = self._encode([p.prompt for p in problems])
            self.model.eval()
            greedy = self.model.generate(**enc, do_sample=False, max_new_tokens=self.config.max_completion_tokens,
                                         pad_token_id=self.tokenizer.pad_token_id,
                                         eos_token_id=self.tokenizer.eos_token_id)
            _, texts = self._decode(greedy[:, enc["input_ids"].shape[1]:])
            greedy_acc = float(np.mean([self.task.reward(p, t) for p, t in zip(problems, texts, strict=True)]))
            torch.manual_seed(self.config.seed + 10_007)
            prompts = [p.prompt for p in problems for _ in range(k)]
            *_, samples = self._sample(prompts, {"temperature": self.config.eval_temperature},
                                       self.config.max_completion_tokens)
            correct = np.array([self.task.reward(p, t) for p, t in
                                zip([p for p in problems for _ in range(k)], samples, strict=True)]).reshape(-1, k)
            pass_k = float(np.mean([pass_at_k(k, int(c), k) for c in correct.sum(1)]))
            pass_1 = float(correct.mean())
        finally:
            _set_rng_states(rng_state)
        return {"greedy_accuracy": greedy_acc, f"pass@{k}": pass_k, "pass@1": pass_1}

    # -- checkpoints -------------------------------------------------------------------------------------
    def save_checkpoint(self, path: str | Path) -> Path:
        """Model, tokenizer, optimizer, random states, history and the meta-policy's state: resumes exactly.

        The checkpoint is written into a temporary folder beside ``path``, fsynced, then moved into place
        (metahp.state.replace_folder): a crash while saving leaves the previous complete checkpoint, never a mix.
        """
        import shutil
        import tempfile

        from transformers.utils import logging as hf_logging

        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".saving", dir=path.parent))
        try:
            bars = hf_logging.is_progress_bar_enabled()
            hf_logging.disable_progress_bar()  # a "Writing model shards" bar per checkpoint would bury ours
            try:
                self.model.save_pretrained(staging)
            finally:
                if bars:
                    hf_logging.enable_progress_bar()
            self.tokenizer.save_pretrained(staging)
            torch.save({"optimizer": self.optimizer.state_dict(), "torch_rng": torch.get_rng_state(),
                        "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else None,
                        "reference": None if self.reference is None else self.reference.state_dict(),
                        "previous_gradient": None if self.previous_gradient is None
                        else self.previous_gradient.detach().cpu(),
                        "previous_update": None if self.previous_update is None
                        else self.previous_update.detach().cpu()},
                       staging / "trainer.pt")
            state = {"step": self.step, "history": self.history, "numpy_rng": self._rng.bit_generator.state,
                     "python_rng": random.getstate(), "config": self.config.model_dump(),
                     "train_queue": self._train_queue, "served": self.served,
                     "pass_rates": {str(i): r for i, r in self.pass_rates.items()}}
            write_json_atomic(staging / "trainer_state.json", state)
            if self.controller is not None:
                write_json_atomic(staging / "metahp_state.json", self.controller.state_dict())
            fsync_tree(staging)
            replace_folder(staging, path)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        return path

    def load_checkpoint(self, path: str | Path) -> None:
        """Restore ``save_checkpoint`` output into this trainer (same model architecture and settings).

        All or nothing: every file is read and checked before anything is assigned, so a malformed checkpoint
        raises a StateError naming the file and leaves the trainer (and its meta-policy) as it was."""
        path = Path(path)
        previous = path.with_name(path.name + ".previous")
        if not path.exists() and previous.exists():
            raise StateError(f"{path} does not exist but {previous} does: a save was interrupted after the previous "
                             f"checkpoint was set aside. {previous} is complete; load it (or rename it to {path}).")
        if not (path / "trainer_state.json").exists():
            raise StateError(f"{path} is not a metahp GRPO checkpoint (no trainer_state.json); pass the folder "
                             f"written by save_checkpoint / train(output_dir=...).")
        # 1. read and check everything, assigning nothing
        state_file = path / "trainer_state.json"
        state = in_file(state_file, lambda: _check_trainer_state(read_json(state_file, "trainer state")))
        saved = state["config"]
        size = saved.get("train_set_size", 0)
        if size != self.config.train_set_size or (size and saved.get("seed") != self.config.seed):
            seed = saved.get("seed")
            what = f"a fixed training set of {size} problems drawn with seed {seed}" if size else "fresh problems"
            settings = f"train_set_size={size}, seed={seed}" if size else "train_set_size=0"
            raise StateError(f"{state_file}: the run trained on {what}; build the trainer with {settings} to resume "
                             f"it.")
        out_of_set = [i for i in [*state.get("train_queue", []), *map(int, state.get("pass_rates", {}))]
                      if i >= max(size, 0)]
        if out_of_set:
            raise StateError(f"{state_file}: train_queue / pass_rates name problems {out_of_set[:3]} outside the "
                             f"training set of {size}; the file is corrupted.")
        meta_file = path / "metahp_state.json"
        if self.controller is not None and not meta_file.exists():
            raise StateError(f"{path} has no metahp_state.json but a meta-policy is attached; it was saved "
                             f"without one. Attach the same adapter as the saved run, or none.")
        meta = read_json(meta_file, "meta-policy state") if self.controller is not None else None
        from safetensors.torch import load_file

        weights = _load_blob(path / "model.safetensors", "model weights", load_file)
        blob = _load_blob(path / "trainer.pt", "optimizer and random state",
                          lambda f: torch.load(f, weights_only=False))
        if not isinstance(blob, dict) or not {"optimizer", "torch_rng", "reference"} <= set(blob):
            raise StateError(f"{path / 'trainer.pt'}: expected a dict with optimizer, torch_rng and reference; the "
                             f"file is not from save_checkpoint.")
        _check_shapes(self.model, weights, path / "model.safetensors")
        _check_optimizer(self.optimizer, blob["optimizer"], path / "trainer.pt")
        previous_gradient = _check_gradient(self.model, blob.get("previous_gradient"), path / "trainer.pt")
        previous_update = _check_gradient(self.model, blob.get("previous_update"), path / "trainer.pt",
                                          "previous_update")
        # 2. the meta-policy checks its own state as it loads (all or nothing); then the rest is assigned
        backup = self.controller.state_dict() if self.controller is not None else None
        if self.controller is not None:
            in_file(meta_file, lambda: self.controller.load_state_dict(meta))
        try:
            self.model.load_state_dict(weights, strict=False)
            self.optimizer.load_state_dict(blob["optimizer"])
            torch.set_rng_state(blob["torch_rng"])
            if blob.get("cuda_rng") is not None and torch.cuda.is_available():
                torch.cuda.set_rng_state_all(blob["cuda_rng"])
            if self.reference is not None and blob["reference"] is not None:
                self.reference.load_state_dict(blob["reference"])
        except Exception as err:
            if backup is not None:
                self.controller.load_state_dict(backup)
            raise StateError(f"{path}: the checkpoint does not fit this trainer ({err}); build the trainer with the "
                             f"same model and settings as the saved run.") from None
        self.step, self.history = state["step"], state["history"]
        self.previous_gradient = None if previous_gradient is None else previous_gradient.to(self.device)
        self.previous_update = None if previous_update is None else previous_update.to(self.device)
        self._train_queue, self.served = list(state.get("train_queue", [])), state.get("served", 0)
        self.pass_rates = {int(i): float(r) for i, r in state.get("pass_rates", {}).items()}
        self._rng.bit_generator.state = state["numpy_rng"]
        random.setstate(tuple(x if not isinstance(x, list) else tuple(x) for x in state["python_rng"]))


def _temperature_of(knobs: dict, logits: torch.Tensor):
    """The batch's temperature as a divisor of logits [B, L, V]: a number, or [B, 1, 1] for one per completion."""
    t = knobs["temperature"]
    if not is_per_row(t):
        return t
    return torch.as_tensor(t, dtype=logits.dtype, device=logits.device).view(-1, *([1] * (logits.dim() - 1)))


def _flat_gradient(model) -> torch.Tensor:
    """Every parameter's gradient, flattened into one float32 vector in parameter order (0 where a parameter has
    none), detached."""
    return torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).detach().reshape(-1).float()
                      for p in model.parameters()])


def _flat_parameters(model) -> torch.Tensor:
    """Every parameter, flattened into one float32 vector in parameter order, detached (a copy)."""
    return torch.cat([p.detach().reshape(-1).float() for p in model.parameters()])


def _cosine(a: torch.Tensor, b: torch.Tensor | None) -> float | None:
    """cos(a, b); None without b or where either is zero (no direction to compare)."""
    if b is None:
        return None
    norms = float(a.norm()) * float(b.norm())
    return float(a.double() @ b.double().to(a.device)) / norms if norms > 0 else None


def _check_gradient(model, saved, where: Path, name: str = "previous_gradient") -> torch.Tensor | None:
    """The checkpoint's previous gradient (or update, ``name``): None, or a finite vector of the model's parameter
    count."""
    if saved is None:
        return None
    size = sum(p.numel() for p in model.parameters())
    if not isinstance(saved, torch.Tensor) or saved.shape != (size,) or not torch.isfinite(saved).all():
        raise StateError(f"{where}: {name} must be a finite vector of the model's {size} parameters, got "
                         f"{type(saved).__name__} {tuple(getattr(saved, 'shape', ()))}; the file is corrupted or from "
                         f"another model.")
    return saved


def _rng_states():
    return torch.get_rng_state(), torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else None


def _set_rng_states(states) -> None:
    cpu, cuda = states
    torch.set_rng_state(cpu)
    if cuda is not None:
        torch.cuda.set_rng_state_all(cuda)


def _check_trainer_state(state) -> dict:
    # train_queue and served came with the fixed training set: a checkpoint written before them has neither.
    optional = {"train_queue", "served", "pass_rates"} & set(state) if isinstance(state, dict) else set()
    require_keys(state, {"step", "history", "numpy_rng", "python_rng", "config"} | optional, "trainer state")
    if optional:
        require_int(state.get("served", 0), "served", 0)
        if not isinstance(state.get("train_queue", []), list):
            raise StateError("train_queue must be a list of training-set indices.")
        for i in state.get("train_queue", []):
            require_int(i, "train_queue[]", 0)
        rates = state.get("pass_rates", {})
        if not isinstance(rates, dict) or not all(str(k).isdigit() and isinstance(v, int | float)
                                                  and not isinstance(v, bool) and 0 <= v <= 1
                                                  for k, v in rates.items()):
            raise StateError("pass_rates must map training-set indices to pass rates in [0, 1].")
    require_int(state["step"], "step", 0)
    if not isinstance(state["history"], list) or not all(isinstance(m, dict) for m in state["history"]):
        raise StateError("history must be a list of per-step metric dicts.")
    check_rng_state(state["numpy_rng"], "numpy_rng")
    py = state["python_rng"]
    if not (isinstance(py, list) and len(py) == 3 and isinstance(py[1], list) and len(py[1]) == 625
            and all(isinstance(x, int) and not isinstance(x, bool) and 0 <= x < 1 << 32 for x in py[1])):
        raise StateError("python_rng is not a random.getstate() value (version, 625 words, gauss).")
    try:
        random.Random().setstate(tuple(x if not isinstance(x, list) else tuple(x) for x in py))
    except (TypeError, ValueError) as err:
        raise StateError(f"python_rng: Python refused the generator state ({err}).") from None
    if not isinstance(state["config"], dict):
        raise StateError("config must be a dict of GRPOConfig settings.")
    return state


def _load_blob(path: Path, what: str, load):
    if not path.exists():
        raise StateError(f"{path}: file not found; the checkpoint is incomplete ({what} missing).")
    try:
        return load(path)
    except Exception as err:  # truncated or corrupted: torch and safetensors raise many kinds
        raise StateError(f"{path}: cannot read the {what} ({type(err).__name__}: {err}); the file is truncated or "
                         f"corrupted. Resume from an earlier checkpoint.") from None


def _check_shapes(model, weights: dict, where: Path) -> None:
    own = model.state_dict()
    unknown = sorted(set(weights) - set(own))
    wrong = [k for k in weights if k in own and tuple(weights[k].shape) != tuple(own[k].shape)]
    if unknown or wrong:
        raise StateError(f"{where}: the weights do not fit this model (unknown {unknown[:3]}, other shapes "
                         f"{wrong[:3]}); build the trainer with the saved run's model.")


def _check_optimizer(optimizer, saved, where: Path) -> None:
    groups = saved.get("param_groups") if isinstance(saved, dict) else None
    own = optimizer.state_dict()["param_groups"]
    if (not isinstance(groups, list) or len(groups) != len(own)
            or any(len(g.get("params", ())) != len(o["params"]) for g, o in zip(groups, own, strict=True))):
        raise StateError(f"{where}: the optimizer state does not fit this model's parameters; build the trainer "
                         f"with the saved run's model.")
