"""The knob layer: the meta-policies of one or several knobs, for any trainer, with no framework in sight.

An adapter builds one ``KnobSet`` and then, for every generation batch:

    values = knobset.draw()                 # {keyword: value}: what the adapter writes to every copy it knows of
    ... the trainer samples with them; ``used`` is every sampling setting of the batch ({keyword: value}) ...
    metrics = knobset.update_from_logits(logits, tokens, mask, advantages, reward=mean_reward, used=used)

or, where the likelihoods come from elsewhere (captured during generation, gathered across processes):

    knobs = knobset.scoring_knobs(used)     # each adapted knob as it scores this batch (conditioned on ``used``)
    logp = ...                              # [B, K_total]: the knobs' columns side by side, rows in batch order
    metrics = knobset.update(logp, advantages, reward=mean_reward, used=used)

Several knobs are "factored" (one meta-policy per knob; each knob's candidates are scored with the other
settings at the values the batch used, ``given=used``) or a "product" (one meta-policy over every combination,
``metahp.knobs.ProductKnob``). Which rows carry signal is ``metahp.rows``'s rule: zero-advantage rows are never
scored but count in N; rows the sampling candidate finds impossible are left out (``unscored_rows``).
Metrics are named metahp/<...> with one knob, and metahp/prob/<knob>=<v> with several. ``state_dict`` holds
every policy's state (random generators included).

Values per row (``per="completion"`` or ``"prompt"``): per-batch settings are arguments (``used``, ``given``), never
state on a knob, so ``draw(rows=n)`` returns a value per row, ``used`` maps the knob to a [B] vector, and an update
credits each row's own candidate; adapters write what ``draw`` returns to their backend's per-row copies (a logits
processor per row in transformers' generate, one SamplingParams per request in vLLM colocate, a per-row
temperature in the loss).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import Any, ClassVar, Protocol

import torch

from metahp.errors import ConfigError, InputError, StateError
from metahp.knobs import KNOBS, Knob, ProductKnob, make_knob
from metahp.policy import DEFAULT_REWARD, MetaPolicy, check_seed, meta_policy
from metahp.rewards import REWARDS, Reward
from metahp.rows import advantages_of, as_real_array, as_tensor, informative, score_informative_rows, unscorable
from metahp.several_knobs import check_knob_names, name_metrics
from metahp.state import load_policies, require_keys
from metahp.updaters import UPDATERS, Updater

COMBINES = ("factored", "product")
PER = ("batch", "completion", "prompt")
# Per-prompt values: the context of a prompt's group is its pass rate the last time it was trained on.
BUCKETS = ("unseen", "none_correct", "few_correct", "most_correct", "all_correct")


def check_per(per) -> str:
    """One of ``PER``, or a ConfigError that says what each means."""
    if not isinstance(per, str) or per not in PER:
        raise ConfigError(f"per={per!r}: use 'batch' (one value per generation batch), 'completion' (one value per "
                          f"completion, mixed within each group) or 'prompt' (one per prompt, from its past pass "
                          f"rate).")
    return per


def check_combine(combine) -> str:
    """One of ``COMBINES``, or a ConfigError that says what each means."""
    if not isinstance(combine, str) or combine not in COMBINES:
        raise ConfigError(f"combine={combine!r}: use 'factored' (one meta-policy per knob) or 'product' (one over "
                          f"the product of the grids).")
    return combine


def pass_rate_bucket(rate: float | None) -> str:
    """unseen (no history), none_correct (0), few_correct (< 1/2), most_correct (< 1), all_correct (1)."""
    if rate is None:
        return "unseen"
    return ("none_correct" if rate == 0 else "few_correct" if rate < 0.5 else "most_correct" if rate < 1
            else "all_correct")


pass_rate_bucket.labels = BUCKETS  # type: ignore[attr-defined]  # what a context function declares (Context)


class Context(Protocol):
    """Values per prompt: maps a prompt's context (e.g. its past pass rate, None if unseen) to the label of the
    meta-policy that draws its value; ``labels`` lists every label it can give (one meta-policy each, built up front
    so that the state always holds them all). The default is ``pass_rate_bucket`` (labels ``BUCKETS``).

    ``reads`` (optional, default ``"pass_rate"``) says what an adapter passes it: ``"pass_rate"`` (the prompt's
    pass rate the last time it was trained on, None if unseen) or ``"prompt"`` (the prompt's text; see
    ``prompt_context``)."""

    labels: tuple[str, ...]

    def __call__(self, context: Any) -> str: ...


CONTEXT_READS = ("pass_rate", "prompt")


class prompt_context:  # noqa: N801  # used like a function: context=prompt_context(family_of, labels=...)
    """A per-prompt context read from each prompt's text: ``classify(prompt) -> label``, one meta-policy per label.

    For datasets that mix prompt families (math and code, easy and hard sources) whose best temperature differs: each
    family gets its own meta-policy, which learns from that family's groups only.

    >>> ctx = prompt_context(lambda p: "code" if p.startswith("def") else "math", labels=("math", "code"))
    >>> ctx("def f():"), ctx.reads
    ('code', 'prompt')
    """

    reads = "prompt"

    def __init__(self, classify: Callable[[str], str], labels: Sequence[str]):
        if not callable(classify):
            raise ConfigError(f"prompt_context(classify={classify!r:.60}): classify must be a function from a "
                              f"prompt's text to its label.")
        self.classify = classify
        self.labels = tuple(labels) if isinstance(labels, list | tuple) else labels

    def __repr__(self) -> str:
        return f"prompt_context({getattr(self.classify, '__qualname__', self.classify)!s}, labels={self.labels})"

    def __call__(self, prompt: str) -> str:
        if not isinstance(prompt, str):
            raise InputError(f"this context reads each prompt's text (context.reads == 'prompt'), got "
                             f"{type(prompt).__name__}; pass contexts=[each prompt's text].")
        return self.classify(prompt)


def context_reads(context: Context | None) -> str:
    """What an adapter passes a per-prompt context function: ``"pass_rate"`` (also for None, the default buckets)
    or ``"prompt"``."""
    return getattr(context, "reads", "pass_rate") if context is not None else "pass_rate"


class KnobSet:
    """The meta-policies over ``knob`` (a name, a Knob, or a sequence of them) for one trainer.

    Args:
        knob, updater, values, options: as ``metahp.meta_policy`` (with several knobs, grids go in Knob instances;
            an Updater or Reward instance is shared by every policy built here: each keeps its own state).
        seed: the first policy's seed; the next knob's is seed + 1, ... (None: unseeded).
        combine: "factored" or "product" (several knobs only).
        supported: the knob names this trainer can sample with (default: every registered knob).
        who: the trainer's name, for error messages.
        batch_size: completions per update, with ``batch_what`` saying where that number comes from: a product grid
            with more candidates than that is refused (most candidates would never get evidence).
        per: "batch" (one value per generation batch), "completion" (one value per completion: each group of
            ``group_size`` completions mixes the candidates in proportion to the meta-policy; one knob that scales
            the logits, a per-candidate updater, and no more candidates than a group has completions) or "prompt"
            (one value per prompt's group, from one meta-policy per context: by default the prompt's past pass rate,
            ``BUCKETS``; each learns from its own groups with a per-completion reward such as informativeness).
        context: with per="prompt", the function from a prompt's context to its meta-policy's label (``Context``;
            default ``pass_rate_bucket``).

    Each way of drawing is a small strategy (``PerBatch``, ``PerCompletion``, ``PerPrompt``, behind ``Drawing``):
    how values are drawn, how a batch is credited, how the state is laid out.

    >>> ks = KnobSet(("temperature", "top_p"), "tampo", seed=0)
    >>> sorted(ks.draw())
    ['temperature', 'top_p']
    """

    def __init__(self, knob: str | Knob | Sequence[str | Knob] = "temperature", updater: str | Updater = "exp3",
                 values=None, seed: int | None = 0, *, combine: str = "factored",
                 supported: Sequence[str] | None = None, who: str = "this trainer", batch_size: int | None = None,
                 batch_what: str = "a batch", per: str = "batch", group_size: int | None = None,
                 context: Context | None = None, **options):
        knobs = (knob,) if isinstance(knob, str | Knob) else tuple(knob)
        if not knobs:
            raise ConfigError("knob=() adapts nothing; name at least one knob, e.g. knob='temperature'.")
        check_combine(combine)
        names = [k.name if isinstance(k, Knob) else k for k in knobs]
        check_knob_names(names, list(KNOBS) if supported is None else supported, values, who)
        seed = check_seed(seed)
        if options.get("reward") is None:
            options["reward"] = default_reward_for(updater, per)
        if combine == "product" and len(knobs) > 1:
            product = ProductKnob(*(make_knob(k) for k in knobs))
            if batch_size is not None and len(product) > batch_size:
                sizes = " x ".join(str(len(k)) for k in product.knobs)
                raise ConfigError(f"the product grid {product.name} has {sizes} = {len(product)} candidates, more than "
                                  f"the {batch_size} completions of {batch_what}; use combine='factored', smaller "
                                  f"grids, or a larger batch.")
            self.policies: dict[str, MetaPolicy] = {product.name: meta_policy(product, updater, None, seed, **options)}
        else:
            self.policies = {name: meta_policy(k, updater, values, None if seed is None else seed + i, **options)
                             for i, (name, k) in enumerate(zip(names, knobs, strict=True))}
        self.names = tuple(names)
        check_hyperparameter_per([p.knob for p in self.policies.values()], check_per(per))
        drawing = DRAWINGS[per]
        if context is not None and per != "prompt":
            raise ConfigError(f"context= picks the meta-policy of each prompt's group: it needs per='prompt', not "
                              f"per={per!r}.")
        self.group_size = drawing.check(self.policies, group_size, who)
        self.per = per
        if self.per == "prompt":  # one policy per context, the same settings and a seed each
            (policy,) = self.policies.values()
            labels = check_context(context)
            self.policies = {label: meta_policy(policy.knob, updater, None, None if seed is None else seed + i,
                                                **options) for i, label in enumerate(labels)}
        self._drawing: Drawing = drawing(self, context)
        # what an adapter passes as each prompt's context with per="prompt": its past pass rate, or its text
        self.context_reads = context_reads(context)
        # Every adapted knob by its keyword (a product's components): what adapters apply and evaluate.
        self.knobs: dict[str, Knob] = {}
        for policy in self.policies.values():
            parts = policy.knob.knobs if isinstance(policy.knob, ProductKnob) else (policy.knob,)
            self.knobs.update({part.name: part for part in parts})
        self.unscored_rows = 0  # rows left out because the value that sampled them gave them likelihood 0

    def __repr__(self) -> str:
        return f"KnobSet({self.policies!r})"

    @property
    def policy(self) -> MetaPolicy:
        """The meta-policy, when one knob is adapted (else use ``.policies[name]``)."""
        if self.per == "prompt":
            raise AttributeError(f"values per prompt keep one meta-policy per context: use .policies[bucket], "
                                 f"bucket in {list(self.policies)}.")
        if len(self.policies) != 1:
            raise AttributeError(f"several knobs are adapted {list(self.policies)}: use .policies[name].")
        return next(iter(self.policies.values()))

    @property
    def needs_likelihoods(self) -> bool:
        """Whether updates read per-candidate likelihoods (else only the batch's mean reward)."""
        return any(p.needs_likelihoods for p in self.policies.values())

    @property
    def width(self) -> int:
        """K_total: the number of likelihood columns, every policy's candidates side by side."""
        return sum(len(p.knob) for p in self.policies.values())

    # -- drawing --------------------------------------------------------------------------------------------------
    @property
    def knobs_name(self) -> str:
        return next(iter(self.knobs))

    def draw(self, agree: Callable[[str, Any], None] | None = None, rows: int | None = None,
             contexts: Sequence[float | None] | None = None) -> dict[str, Any]:
        """Each policy's value for the next batch, as {keyword: value} (a product's draw sets all its knobs); with
        ``per="completion"``, {keyword: [one value per completion]} for the ``rows`` completions of the batch
        (groups of ``group_size`` consecutive completions); with ``per="prompt"``, the same list with one value per
        group, drawn from the policy of the prompt's context (``contexts``: each prompt's past pass rate or None).

        ``agree(policy_name, value)`` is called after each draw (a distributed adapter checks there that every
        process drew the same)."""
        return self._drawing.draw(agree, rows, contexts)

    # -- scoring --------------------------------------------------------------------------------------------------
    def scoring_knobs(self, used: dict[str, Any] | None) -> list[Knob]:
        """Each policy's knob as it scores a batch sampled with ``used`` (every setting of the batch)."""
        return [p.knob.conditioned(used) for p in self.policies.values()]

    def sequence_logprobs(self, logits, tokens, mask, used: dict[str, Any] | None) -> torch.Tensor:
        """[B, K_total] length-normalised log-likelihoods, every policy's columns side by side (CPU float32)."""
        return torch.cat([k.sequence_logprobs(logits, tokens, mask) for k in self.scoring_knobs(used)], dim=1)

    # -- updating -------------------------------------------------------------------------------------------------
    def update(self, logp=None, advantages=None, *, reward: float | None = None,
               used: dict[str, Any] | None = None, contexts: Sequence[float | None] | None = None,
               measured: Mapping[str, float | None] | None = None) -> dict[str, float]:
        """One meta-update from a whole batch.

        logp: [B, K_total] (``scoring_knobs`` columns; zero-advantage rows may hold anything, they are not read),
            needed when ``needs_likelihoods``; advantages: [B]; reward: the batch's mean task reward (bandits);
            used: the batch's settings, to find each policy's sampling candidate (for the unscorable-row rule);
            measured: what the trainer measured in this step's update ({"grad_alignment": ..., "update_alignment": ...,
            "kl": ..., "clip_fraction": ...}; ``metahp.rewards.MEASUREMENTS``), for the rewards fitted to a
            hyperparameter (``metahp.rewards.Batch.measured``).
        """
        # Checked once; a batch of bandit policies reads only the mean reward, and its advantages stay unchecked.
        adv = advantages_of(advantages) if self._drawing.reads_advantages() else None
        return self._drawing.update(logp, adv, reward, used, contexts, measured)

    def update_from_logits(self, logits, tokens, mask, advantages, *, reward: float | None = None,
                           used: dict[str, Any] | None = None,
                           contexts: Sequence[float | None] | None = None,
                           measured: Mapping[str, float | None] | None = None) -> dict[str, float]:
        """``update`` from the raw logits that sampled the batch ([B, L, V]); zero-advantage rows are not scored."""
        if not self.needs_likelihoods:
            return self.update(advantages=advantages, reward=reward, used=used, contexts=contexts, measured=measured)
        adv = advantages_of(advantages)
        logp = score_informative_rows(lambda z, o, m: self.sequence_logprobs(z, o, m, used), logits, tokens, mask, adv)
        return self.update(logp, adv, reward=reward, used=used, measured=measured)

    def _row_indices(self, policy: MetaPolicy, used: dict[str, Any] | None, rows: int) -> torch.Tensor:
        """With values per completion or prompt, the index of each row's candidate ([B] long), from ``used``."""
        knob = policy.knob
        values = used.get(knob.name) if used else None
        if values is None or isinstance(values, int | float):
            raise InputError(f"values are drawn per {self.per}: pass used={{{knob.name!r}: [the value of every "
                             f"completion]}} (what draw() returned).")
        values = torch.as_tensor(as_real_array(values, f"used[{knob.name!r}]")).reshape(-1)
        if len(values) != rows or not torch.isfinite(values).all():
            raise InputError(f"used[{knob.name!r}] must hold one finite value per completion ({rows}), got "
                             f"{len(values)} values{'' if torch.isfinite(values).all() else ' with NaN or inf'}.")
        grid = torch.tensor(knob.values, dtype=torch.float64)
        # Each row's candidate; float32 copies of the values (a tensor on the way) match to float32 precision.
        distance = (values.unsqueeze(1) - grid.unsqueeze(0)).abs()
        nearest = distance.argmin(dim=1)
        off = distance.gather(1, nearest.unsqueeze(1)).squeeze(1) > 1e-6 * grid[nearest].abs().clamp(min=1)
        if off.any():
            raise InputError(f"used[{knob.name!r}] holds {values[off][:5].tolist()}, which are not candidates "
                             f"{list(knob.values)}.")
        return nearest

    def _used_index(self, policy: MetaPolicy, used: dict[str, Any] | None) -> int | None:
        """The index of the candidate that sampled the batch, if ``used`` says and it is on the grid."""
        if not used:
            return None
        knob = policy.knob
        parts = knob.knobs if isinstance(knob, ProductKnob) else (knob,)
        if any(part.name not in used for part in parts):
            return None
        value = tuple(used[p.name] for p in parts) if isinstance(knob, ProductKnob) else used[knob.name]
        return knob.values.index(value) if value in knob.values else None

    def _warn_unscored(self, name: str, count: int) -> None:
        if self.unscored_rows == 0:
            warnings.warn(f"metahp: {count} completion(s) got likelihood 0 under the {name} value that sampled them "
                          f"(the sampler and metahp decided a truncation boundary differently, e.g. GPU or vLLM "
                          f"kernels); they are left out of the meta-update. .unscored_rows counts them.",
                          stacklevel=5)
        self.unscored_rows += count

    # -- state ----------------------------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """One knob: the policy's own state; several: {"policies": {name: state}} (random generators included);
        values per completion or prompt: {"per": ..., "policies": {...}}, so that no kind loads into another."""
        return self._drawing.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore ``state_dict()`` output, all or nothing (a failure leaves every policy as it was). A state saved
        with values per batch, completion or prompt loads only into a set drawing them the same way; the policies'
        own checks refuse a state of another grid, updater or reward."""
        saved_per = state.get("per", "batch") if isinstance(state, dict) else "batch"
        if saved_per != self.per:
            raise StateError(f"the state was saved with values per {saved_per}, this knob set draws them per "
                             f"{self.per}; attach with per={saved_per!r} to resume it.")
        self._drawing.load_state_dict(state)


# -- the ways of drawing values -------------------------------------------------------------------------------------
class Drawing(Protocol):
    """How a knob set draws values and credits a batch: one value per batch, per completion or per prompt.

    ``check`` refuses policies the way cannot serve (before the set is built) and returns the group size it keeps;
    the instance, built on the finished set, draws, updates and lays out the state."""

    per: ClassVar[str]

    @classmethod
    def check(cls, policies: dict[str, MetaPolicy], group_size, who: str) -> int | None: ...

    def reads_advantages(self) -> bool: ...

    def draw(self, agree, rows, contexts) -> dict[str, Any]: ...

    def update(self, logp, adv: torch.Tensor | None, reward, used, contexts, measured=None) -> dict[str, float]: ...

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


class PerBatch:
    """One value per generation batch from each policy (a product's draw sets all its knobs)."""

    per = "batch"

    def __init__(self, knobset: KnobSet, context: Context | None = None):
        self.ks = knobset

    @classmethod
    def check(cls, policies: dict[str, MetaPolicy], group_size, who: str) -> int | None:
        for policy in policies.values():
            if policy.reward.needs_rows:
                also = " or 'prompt'" if policy.reward.per_group_signal else ""
                raise ConfigError(f"reward {policy.reward.name!r} credits each completion's own value (it reads every "
                                  f"row's candidate), but per='batch' draws one value for the whole batch: it would "
                                  f"fail at the first update. Use per='completion'{also}, or a reward that learns from "
                                  f"one value per batch: {_rewards_where(policy, lambda r: not r.needs_rows)}.")
        return None

    def reads_advantages(self) -> bool:
        # the fitted rewards (needs_measured) score candidates from a measurement alone, never from advantages
        return any(p.reward.kind == "per_candidate" and not p.reward.needs_measured for p in self.ks.policies.values())

    def draw(self, agree, rows, contexts) -> dict[str, Any]:
        values: dict[str, Any] = {}
        for name, policy in self.ks.policies.items():
            value = policy.sample()
            if agree is not None:
                agree(name, value)
            values.update(policy.knob.components(value))
        return values

    def row_indices(self, policy: MetaPolicy, used, rows: int) -> torch.Tensor | None:
        """Each row's candidate index ([B] long), or None when the whole batch used one value."""
        return None

    def update(self, logp, adv, reward, used, contexts, measured=None) -> dict[str, float]:
        ks = self.ks
        metrics: dict[str, float] = {}
        extra = {} if measured is None else {"measured": measured}  # what the trainer measured, when it did
        if ks.needs_likelihoods:
            logp = as_tensor(logp, "logp").detach().cpu().float() if logp is not None else None
            if logp is None or logp.dim() != 2 or logp.shape != (len(adv), ks.width):
                raise InputError(f"logp must be [B, K_total] = [{len(adv)}, {ks.width}] (the scoring knobs' columns "
                                 f"side by side), got {None if logp is None else tuple(logp.shape)}.")
            keep = informative(adv)
        start = 0
        for name, policy in ks.policies.items():
            row_index = self.row_indices(policy, used, len(adv)) if adv is not None else None
            if policy.needs_likelihoods:
                columns = logp[:, start:start + len(policy.knob)]
                start += len(policy.knob)
                sampled = row_index if row_index is not None else ks._used_index(policy, used)
                rows = keep & ~unscorable(columns, sampled)
                skipped = int((keep & ~rows).sum())
                if skipped:
                    ks._warn_unscored(name, skipped)
                scalar = {} if reward is None else {"reward": reward}  # the likelihood rewards do not read it
                per_row = {} if row_index is None else {"rows": row_index[rows]}
                m = policy.update(columns[rows], adv[rows], batch_size=len(adv), **scalar, **per_row, **extra)
            elif policy.reward.kind == "per_candidate":  # from advantages or measurements alone: every row
                m = policy.update(advantages=adv, rows=row_index, batch_size=None if adv is None else len(adv),
                                  **extra)
            else:
                m = policy.update(reward=reward, **extra)
            metrics.update(name_metrics(m, name) if len(ks.policies) > 1 else m)
        return metrics

    def state_dict(self) -> dict[str, Any]:
        policies = self.ks.policies
        if len(policies) == 1:
            return next(iter(policies.values())).state_dict()
        return {"policies": {name: p.state_dict() for name, p in policies.items()}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        policies = self.ks.policies
        if len(policies) == 1:
            next(iter(policies.values())).load_state_dict(state)
            return
        if not isinstance(state, dict):
            raise StateError(f"expected {{'policies': {{name: state}}}}, got {type(state).__name__}.")
        require_keys(state, {"policies"}, "knob set state")
        load_policies(policies, state["policies"], "policies")


class _PerRow(PerBatch):
    """Values per row (completion or prompt): one knob that scales the logits, per-candidate feedback, the group size;
    the state says how it was drawn ({"per": ..., "policies": {...}})."""

    @classmethod
    def check(cls, policies: dict[str, MetaPolicy], group_size, who: str) -> int | None:
        per = cls.per
        if len(policies) != 1:
            raise ConfigError(f"values per {per} adapt one knob for now, not {list(policies)}.")
        (policy,) = policies.values()
        knob = policy.knob
        if getattr(knob, "role", None) != "scales" or isinstance(knob, ProductKnob):
            raise ConfigError(f"values per {per} support a knob that scales the logits (the temperature) for now, "
                              f"not {knob.name!r}: {who} samples each completion at its own temperature.")
        if policy.reward.kind != "per_candidate":
            raise ConfigError(f"values per {per} need a per-candidate updater (tampo, softmax_gradient), not "
                              f"{policy.updater.name!r}, which credits one value per batch.")
        if isinstance(group_size, bool) or not isinstance(group_size, int) or group_size < 2:
            raise ConfigError(f"values per {per} need the group size (completions per prompt, >= 2), got "
                              f"{group_size!r}.")
        return group_size

    def reads_advantages(self) -> bool:
        return True

    def row_indices(self, policy: MetaPolicy, used, rows: int) -> torch.Tensor:
        return self.ks._row_indices(policy, used, rows)

    def state_dict(self) -> dict[str, Any]:
        return {"per": self.per, "policies": {name: p.state_dict() for name, p in self.ks.policies.items()}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        require_keys(state, {"per", "policies"}, "knob set state")
        load_policies(self.ks.policies, state["policies"], "policies")


class PerCompletion(_PerRow):
    """One value per completion: each group of ``group_size`` completions mixes the candidates in proportion to the
    meta-policy (``MetaPolicy.sample_rows``), and an update credits each row's own candidate."""

    per = "completion"

    @classmethod
    def check(cls, policies: dict[str, MetaPolicy], group_size, who: str) -> int | None:
        group_size = super().check(policies, group_size, who)
        (policy,) = policies.values()
        if len(policy.knob) > group_size:
            raise ConfigError(f"the grid has {len(policy.knob)} candidates but a group only {group_size} completions: "
                              f"most candidates would appear in no group. Use at most {group_size} candidates "
                              f"(values=[...]) or more completions per prompt.")
        return group_size

    def draw(self, agree, rows, contexts) -> dict[str, Any]:
        group_size = self.ks.group_size
        if not isinstance(rows, int) or rows < 1 or rows % group_size:
            raise ConfigError(f"draw(rows={rows!r}): values per completion need the batch's number of completions, "
                              f"a multiple of the group size {group_size}.")
        policy = self.ks.policy
        values_per_row = policy.sample_rows(rows // group_size, group_size)
        if agree is not None:
            agree(policy.knob.name, tuple(values_per_row))
        return {policy.knob.name: values_per_row}


class PerPrompt(_PerRow):
    """One value per prompt's group, from the meta-policy of the prompt's context (``context``: a prompt's context,
    e.g. its past pass rate, to a label; default ``pass_rate_bucket``); each policy learns from its own groups and its
    metrics are named metahp/<label>/..."""

    per = "prompt"

    def __init__(self, knobset: KnobSet, context: Context | None = None):
        super().__init__(knobset)
        self.context = pass_rate_bucket if context is None else context

    @classmethod
    def check(cls, policies: dict[str, MetaPolicy], group_size, who: str) -> int | None:
        group_size = super().check(policies, group_size, who)
        (policy,) = policies.values()
        if not policy.reward.per_group_signal:
            # Every completion of a group shares the prompt's value, and advantages sum to 0 within a group:
            # within-group advantage is 0 for every candidate, and likelihoods compare values no row mixed.
            raise ConfigError(f"values per prompt learn from a reward whose signal differs between groups (e.g. how "
                              f"often a value's groups carry a gradient): "
                              f"{_rewards_where(policy, lambda r: r.per_group_signal)}, not {policy.reward.name!r}: "
                              f"with one value per group, the within-group advantage is 0 for every candidate, and "
                              f"likelihoods compare values no row mixed.")
        return group_size

    def labels(self, contexts, error) -> list[str]:
        """Each prompt's label (its policy's name), from its context; the default context checks pass rates."""
        if self.context is pass_rate_bucket:
            contexts = _check_contexts(contexts, error)
        elif contexts is None or isinstance(contexts, str | bytes) or not hasattr(contexts, "__len__") \
                or not len(contexts):
            raise error(f"values per prompt need contexts=[each prompt's context], got {type(contexts).__name__}.")
        labels = [self.context(c) for c in contexts]
        unknown = sorted({label for label in labels if label not in self.ks.policies}, key=str)
        if unknown:
            raise error(f"the context function gave {unknown[:3]}, not among its labels {list(self.ks.policies)}.")
        return labels

    def draw(self, agree, rows, contexts) -> dict[str, Any]:
        ks = self.ks
        labels = self.labels(contexts, ConfigError)
        if not isinstance(rows, int) or rows != len(labels) * ks.group_size:
            raise ConfigError(f"draw(rows={rows!r}, contexts=...): values per prompt need rows = prompts x group "
                              f"size {ks.group_size} = {len(labels) * ks.group_size}.")
        out = []
        for label in labels:
            value = ks.policies[label].sample()
            if agree is not None:
                agree(label, value)
            out += [value] * ks.group_size
        return {ks.knobs_name: out}

    def update(self, logp, adv, reward, used, contexts, measured=None) -> dict[str, float]:
        """Each context's policy learns from the groups drawn in that context (a policy with none stays as it is);
        metrics are named metahp/<context>/..."""
        ks = self.ks
        labels = self.labels(contexts, InputError)
        if len(labels) * ks.group_size != len(adv):
            raise InputError(f"values per prompt: pass contexts=[each prompt's pass rate or None] for the "
                             f"{len(adv)} // {ks.group_size} prompts of the batch, got {len(labels)}.")
        policy = next(iter(ks.policies.values()))
        row_index = self.row_indices(policy, used, len(adv))
        grid = torch.tensor(policy.knob.values, dtype=torch.float64)
        row_labels = [label for label in labels for _ in range(ks.group_size)]
        metrics: dict[str, float] = {}
        for label, policy in ks.policies.items():
            rows = torch.tensor([b == label for b in row_labels])
            if rows.any():
                m = policy.update(advantages=adv[rows], rows=row_index[rows], batch_size=int(rows.sum()))
                m[f"metahp/{policy.knob.name}"] = float(grid[row_index[rows]].mean())  # what its groups used
                metrics.update({k.replace("metahp/", f"metahp/{label}/", 1): v for k, v in m.items()})
            metrics[f"metahp/groups/{label}"] = float(rows.sum()) / len(adv)
        return metrics


DRAWINGS: dict[str, type[PerBatch]] = {d.per: d for d in (PerBatch, PerCompletion, PerPrompt)}


def check_hyperparameter_per(knobs: Sequence[Knob], per: str) -> None:
    """A hyperparameter knob (role "updates") takes one value per batch: every completion of the batch goes through
    the same optimizer update, so a value per completion or per prompt would have no update of its own."""
    hyper = [k.name for k in knobs if getattr(k, "role", None) == "updates"]
    if hyper and per != "batch":
        raise ConfigError(f"{hyper} change the update, not the sampling: all completions of a batch go through one "
                          f"optimizer update, at one value. Use per='batch' (one value per generation batch), not "
                          f"per={per!r}.")


def check_context(context) -> tuple[str, ...]:
    """The labels of a per-prompt context function (``Context``; None: ``BUCKETS``): distinct strings, at least
    one, or a ConfigError that says what a context function is."""
    if context is None:
        return BUCKETS
    labels = getattr(context, "labels", None)
    if not callable(context) or not isinstance(labels, tuple | list) or not labels \
            or not all(isinstance(label, str) and label for label in labels) or len(set(labels)) != len(labels):
        raise ConfigError(f"context={context!r:.80} must be a function from a prompt's context to a label, with "
                          f"context.labels = (every label it gives, distinct strings), e.g. "
                          f"metahp.knobset.pass_rate_bucket (labels {BUCKETS}).")
    if context_reads(context) not in CONTEXT_READS:
        raise ConfigError(f"context.reads={context_reads(context)!r}: a context function reads one of "
                          f"{CONTEXT_READS} (a prompt's past pass rate, or its text).")
    return tuple(labels)


def default_reward_for(updater, per: str) -> str | None:
    """The reward when none is given, chosen here for every adapter alike: with values per completion or per prompt,
    the updater's own ``default_reward`` if it declares one (the uniform mixture, which ignores feedback, reports
    with informativeness: no likelihoods to compute); otherwise, and always with per='batch' (where a reward that
    reads each row's value cannot learn), the feedback kind's default (``metahp.policy.DEFAULT_REWARD``, which
    ``meta_policy`` uses on its own)."""
    if isinstance(updater, str):
        if updater not in UPDATERS:
            return None  # meta_policy's unknown-updater error says what is valid
        updater = UPDATERS[updater]()
    if not isinstance(updater, Updater):
        return None  # meta_policy's error for a wrong type
    own = updater.default_reward
    if per != "batch" and own in REWARDS:
        return own
    return DEFAULT_REWARD[updater.feedback]


def _rewards_where(policy: MetaPolicy, ok: Callable[[type[Reward]], bool]) -> str:
    """The registered rewards that ``ok`` accepts and the policy's updater learns from, as reward='...' choices."""
    names = [name for name, cls in REWARDS.items() if ok(cls) and cls.kind == policy.reward.kind]
    return " or ".join(f"reward={name!r}" for name in names) or "none is registered"


def _check_contexts(contexts, error=ConfigError) -> list[float | None]:
    """Each prompt's past pass rate: None (unseen) or a real number in [0, 1]; at least one prompt."""
    if contexts is None or isinstance(contexts, str | bytes) or not hasattr(contexts, "__len__"):
        raise error(f"values per prompt need contexts=[each prompt's pass rate in [0, 1], or None if unseen], got "
                    f"{type(contexts).__name__}.")
    out = list(contexts)
    bad = [c for c in out if c is not None and (isinstance(c, bool) or not isinstance(c, int | float)
                                                or not 0 <= c <= 1)]
    if bad or not out:
        raise error(f"contexts must be pass rates in [0, 1] or None, one per prompt; got {bad[:3] or out}.")
    return out
