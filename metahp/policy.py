"""The meta-policy: a distribution over a knob's candidate values, sampled once per generation batch and
updated from that batch's rollouts (no extra generation).

``MetaPolicy`` is the contract adapters and users rely on; ``GridMetaPolicy`` composes a knob, a reward, an
updater and a selection rule; ``meta_policy(...)`` builds one by name.
"""

from __future__ import annotations

import copy
import warnings
from abc import ABC, abstractmethod
from collections.abc import Mapping
from typing import Any, NamedTuple

import numpy as np

from metahp import _options
from metahp.errors import ConfigError, InputError, StateError
from metahp.knobs import Knob, make_knob
from metahp.rewards import REWARDS, Batch, Reward
from metahp.rows import advantages_of, as_real_array, informative, score_informative_rows, unscorable
from metahp.selection import SELECTIONS, selection_options, stratified_counts
from metahp.state import check_rng_state, require_int, require_keys
from metahp.updaters import UPDATERS, Feedback, Updater, check_updater_fields

STATE_FORMAT = "metahp.GridMetaPolicy/1"
DEFAULT_REWARD = {"per_candidate": "trajectory_likelihood", "chosen": "reward_improvement"}


class MetaPolicy(ABC):
    """A distribution over candidate values of one sampling knob, learned online.

    Lifecycle per generation batch: ``value = policy.sample()`` (or ``policy.sample_rows(groups, group_size)``, one
    value per completion) -> roll out at it -> train -> ``metrics = policy.update(...)`` from the same rollouts.

    What the knob layer (``metahp.knobset.KnobSet``) and the adapters read of every policy, so every subclass sets
    or implements it: ``knob`` (its ``values`` are the candidates), ``updater`` (``name``, ``feedback``) and
    ``reward`` (``name``, ``kind`` and what it needs of a batch: ``needs_likelihoods``, ``needs_rows``,
    ``per_group_signal``) as attributes; ``probs``, ``needs_likelihoods`` and ``chosen_index`` as properties;
    ``sample``, ``sample_rows``, ``update``, ``state_dict`` and ``load_state_dict`` as methods.
    """

    #: The adapted knob; ``knob.values`` are the candidates.
    knob: Knob
    #: How the distribution moves (the knob layer names ``updater.name`` in its messages).
    updater: Updater
    #: What each batch tells the policy: its ``kind`` (per-candidate or chosen-value feedback) and its needs decide
    #: which rows the knob layer scores and passes, and which ways of drawing values (per batch, completion, prompt)
    #: it can learn from.
    reward: Reward
    #: The number of updates so far.
    step: int

    @property
    def values(self) -> tuple[float, ...]:
        """The candidate values, sorted ascending."""
        return self.knob.values

    @property
    @abstractmethod
    def probs(self) -> np.ndarray:
        """The current distribution over ``values`` (non-negative, sums to 1)."""

    @property
    @abstractmethod
    def needs_likelihoods(self) -> bool:
        """Whether ``update`` uses per-candidate likelihoods (else only advantages or the batch's mean reward)."""

    @property
    @abstractmethod
    def chosen_index(self) -> int | None:
        """The index of the value last drawn by ``sample()``: the candidate that sampled the batch (None before the
        first draw, and after ``sample_rows``, whose rows each have their own)."""

    @property
    def value(self) -> float | None:
        """The value last drawn by ``sample()`` (None before the first draw)."""
        return None if self.chosen_index is None else self.values[self.chosen_index]

    @abstractmethod
    def sample(self) -> float:
        """Draw the value for the next generation batch (from the policy's own seeded generator)."""

    @abstractmethod
    def sample_rows(self, groups: int, group_size: int) -> list:
        """Draw one value per completion for ``groups`` groups of ``group_size`` completions (group by group), for
        values per completion; ``update(..., rows=...)`` then credits each completion's own candidate."""

    @abstractmethod
    def update(self, seq_logprobs=None, advantages=None, *, reward: float | None = None,
               batch_size: int | None = None, rows=None, measured=None) -> dict[str, float]:
        """Learn from one batch; return its metrics: metahp/<knob> (the value used), metahp/<knob>_mean,
        metahp/prob/<v>, and metahp/advantage/<v> (per-candidate updaters) or metahp/bandit_reward (bandits).
        ``measured``: what the trainer measured in this step's update ({"kl": ..., ...}; ``Batch.measured``)."""

    @abstractmethod
    def state_dict(self) -> dict[str, Any]:
        """JSON-safe state, including the random generator: save -> load -> continue equals continue."""

    @abstractmethod
    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore ``state_dict()`` output; refuses a state from another knob, grid or updater."""

    @property
    def expected_value(self) -> float | dict[str, float]:
        """The mean value under ``probs`` (one per knob for a product of knobs)."""
        means = self._component_means(self.probs)
        return next(iter(means.values())) if len(means) == 1 else means

    def _component_means(self, probs: np.ndarray) -> dict[str, float]:
        parts = [self.knob.components(v) for v in self.values]
        return {name: float(sum(p * c[name] for p, c in zip(probs, parts, strict=True))) for name in parts[0]}

    def update_from_logits(self, logits, tokens, mask, advantages, *, reward: float | None = None,
                           measured=None) -> dict[str, float]:
        """``update`` from the logits that sampled the batch ([B, L, V], raw, unscaled), at the value ``sample()``
        drew.

        Which rows count is ``metahp.rows``'s rule, as in the knob layer: rows with zero advantage carry no signal,
        so their likelihoods are never computed (they still count in the batch size N of a_k = (1/N) sum_i w_ik A_i);
        rows the value that sampled them finds impossible (a truncation boundary decided differently by the sampler's
        arithmetic) are left out, with a warning.
        """
        advantages = advantages_of(advantages, finite=self.needs_likelihoods)  # update() checks the others
        if not self.needs_likelihoods:
            return self.update(advantages=advantages, reward=reward, measured=measured)
        logp = score_informative_rows(self.knob.sequence_logprobs, logits, tokens, mask, advantages)
        keep = informative(advantages)
        rows = keep & ~unscorable(logp, self.chosen_index)
        skipped = int((keep & ~rows).sum())
        if skipped:
            warnings.warn(f"metahp: {skipped} completion(s) got likelihood 0 under the {self.knob.name} value that "
                          f"sampled them ({self.value}); they are left out of the meta-update.", stacklevel=2)
        return self.update(logp[rows], advantages[rows], reward=reward, batch_size=len(advantages), measured=measured)


class GridMetaPolicy(MetaPolicy):
    """Knob + reward + updater + selection, over a finite grid of candidates."""

    def __init__(self, knob: Knob, updater: Updater, reward: Reward, selection: str = "nucleus",
                 seed: int | None = 0, nucleus_p: float = 0.7):
        check_feedback(updater, reward)
        check_knob_reward(knob, updater, reward)
        if selection not in SELECTIONS:
            raise ConfigError(f"unknown selection {selection!r}; valid selections: {sorted(SELECTIONS)}.")
        self.knob = knob
        self.updater = updater
        self.reward = reward
        self.selection = selection
        self.nucleus_p = nucleus_p
        self._rng = np.random.default_rng(check_seed(seed))
        self._updater_state = updater.init(knob.values)
        self._reward_state = reward.init()
        self._chosen: int | None = None
        self._row_shares: np.ndarray | None = None  # share of the last per-completion draw at each candidate
        self.step = 0

    def __repr__(self) -> str:
        return (f"GridMetaPolicy(knob={self.knob!r}, updater={self.updater.name}{self.updater.options}, "
                f"reward={self.reward.name}{self.reward.options}, selection={self.selection!r})")

    @property
    def probs(self) -> np.ndarray:
        return self.updater.probs(self._updater_state)

    @property
    def needs_likelihoods(self) -> bool:
        return self.reward.needs_likelihoods

    @property
    def chosen_index(self) -> int | None:
        return self._chosen

    def sample(self) -> float:
        kwargs = {"nucleus_p": self.nucleus_p} if self.selection == "nucleus" else {}
        self._chosen = SELECTIONS[self.selection](self.probs, self._rng, **kwargs)
        self._row_shares = None
        return self.values[self._chosen]

    def sample_rows(self, groups: int, group_size: int) -> list:
        """One value per completion: each group of ``group_size`` completions mixes the candidates in proportion to
        ``probs`` (``stratified_counts``: candidate k gets floor or ceil of G p_k completions of every group).
        Returns ``groups * group_size`` values, group by group, candidates in grid order within a group; the
        update then credits each completion's own candidate (``update(..., rows=...)``)."""
        if self.reward.kind != "per_candidate":
            raise ConfigError(f"values per completion need per-candidate feedback; updater {self.updater.name!r} "
                              f"learns from the batch's one value. Use tampo or softmax_gradient.")
        indices = np.concatenate([np.repeat(np.arange(len(self.values)), stratified_counts(self.probs, group_size,
                                                                                           self._rng))
                                  for _ in range(groups)])
        self._chosen = None
        self._row_shares = np.bincount(indices, minlength=len(self.values)) / len(indices)
        return [self.values[i] for i in indices]

    def update(self, seq_logprobs=None, advantages=None, *, reward: float | None = None,
               batch_size: int | None = None, rows=None, measured=None) -> dict[str, float]:
        batch = self._check_batch(seq_logprobs, advantages, reward, batch_size, rows, measured)
        # Nothing is assigned until the reward and the updater have both accepted the batch: an error leaves the
        # policy as it was.
        signal, reward_state = self.reward(self._reward_state, batch)
        if self.reward.kind == "per_candidate":
            feedback = Feedback(advantages=np.asarray(signal, dtype=np.float64), chosen=self._chosen)
        else:
            if self._chosen is None:
                raise InputError(f"updater {self.updater.name!r} credits the value that was used: call sample() "
                                 f"before update().")
            feedback = Feedback(chosen=self._chosen, reward=float(signal))
        with np.errstate(all="ignore"):  # an overflow is reported below, as an error that says which feedback
            updater_state = self.updater.update(self._updater_state, feedback)
            probs = np.asarray(self.updater.probs(updater_state), dtype=np.float64)
        if not np.isfinite(probs).all():
            raise InputError(f"updater {self.updater.name!r}: this batch's feedback "
                             f"({feedback.reward if feedback.advantages is None else feedback.advantages!r:.80}) "
                             f"would leave no finite distribution (NaN or overflow); check the rewards and "
                             f"advantages passed to update(). The policy is unchanged.")
        self._updater_state = updater_state
        self._reward_state = reward_state
        self.step += 1
        return self._metrics(feedback, probs)

    def _metrics(self, feedback: Feedback, probs: np.ndarray) -> dict[str, float]:
        metrics: dict[str, float] = {}
        if self._chosen is not None:
            for name, v in self.knob.components(self.values[self._chosen]).items():
                metrics[f"metahp/{name}"] = float(v)
        elif self._row_shares is not None:  # values per completion: their mean, and the share of rows at each value
            for name, mean in self._component_means(self._row_shares).items():
                metrics[f"metahp/{name}"] = mean
            for v, share in zip(self.values, self._row_shares, strict=True):
                metrics[f"metahp/rows/{self.knob.label(v)}"] = float(share)
        for name, mean in self._component_means(probs).items():
            metrics[f"metahp/{name}_mean"] = mean
        for v, p in zip(self.values, probs, strict=True):
            metrics[f"metahp/prob/{self.knob.label(v)}"] = float(p)
        if feedback.advantages is not None:
            for v, a in zip(self.values, feedback.advantages, strict=True):
                metrics[f"metahp/advantage/{self.knob.label(v)}"] = float(a)
        if feedback.reward is not None:
            metrics["metahp/bandit_reward"] = feedback.reward
        return metrics

    def _check_batch(self, seq_logprobs, advantages, reward, batch_size, rows=None, measured=None) -> Batch:
        k = len(self.values)
        if measured is not None:  # each reward checks the measurements it reads (and says who measures them)
            if not isinstance(measured, Mapping) or not all(isinstance(key, str) for key in measured):
                raise InputError(f"measured={measured!r:.80} must map measurement names (e.g. 'kl') to numbers or "
                                 f"None, what the trainer measured in this step's update.")
            measured = dict(measured)
        logp = adv = None
        if reward is not None and (isinstance(reward, bool) or not isinstance(reward, int | float | np.number)
                                   or not np.isfinite(reward)):
            raise InputError(f"reward={reward!r} must be a finite number: the batch's mean task reward.")
        if batch_size is not None and (isinstance(batch_size, bool) or not isinstance(batch_size, int | np.integer)):
            raise InputError(f"batch_size={batch_size!r} must be an integer: the number of trajectories in the "
                             f"batch, scored or skipped.")
        if advantages is not None:
            adv = advantages_of(advantages).numpy()
        if seq_logprobs is not None:
            logp = as_real_array(seq_logprobs, "seq_logprobs")
            if logp.ndim != 2 or logp.shape[1] != k:
                raise InputError(f"seq_logprobs must be [B, K] with K = {k} candidates {list(self.values)}, got "
                                 f"shape {logp.shape}; compute it with policy.knob.sequence_logprobs().")
            if np.isnan(logp).any() or np.isposinf(logp).any():
                raise InputError("seq_logprobs contain NaN or +inf; log-likelihoods must be finite or -inf.")
            if (logp > _LOGP_SLACK).any():
                row, col = np.argwhere(logp > _LOGP_SLACK)[0]
                raise InputError(f"seq_logprobs[{row}, {col}] = {logp[row, col]:.4g} is positive; a log-likelihood is "
                                 f"<= 0. Pass log-probabilities (e.g. knob.sequence_logprobs), not logits or probs.")
            if adv is None or len(adv) != len(logp):
                raise InputError(f"seq_logprobs has {len(logp)} rows but advantages has "
                                 f"{None if adv is None else len(adv)}; pass one advantage per trajectory.")
            dead = ~np.isfinite(logp).any(axis=1) & (adv != 0)
            if dead.any():
                raise InputError(f"trajectories {np.flatnonzero(dead)[:5].tolist()} are impossible under every "
                                 f"candidate (all -inf); widen the grid or check the logits.")
        if self.needs_likelihoods:
            if logp is None:
                raise InputError("this policy's reward needs seq_logprobs=[B, K] and advantages=[B] (or call "
                                 "update_from_logits); got no seq_logprobs.")
            if batch_size is None and len(logp) == 0:
                raise InputError("empty batch: seq_logprobs has 0 rows; pass at least one trajectory.")
        row_candidates = None
        if rows is not None:
            row_candidates = as_real_array(rows, "rows")
            if adv is None or row_candidates.shape != adv.shape:
                raise InputError(f"rows has shape {row_candidates.shape}; pass one candidate index per advantage "
                                 f"({None if adv is None else len(adv)}).")
            if not (np.isfinite(row_candidates).all() and (row_candidates == np.round(row_candidates)).all()
                    and ((row_candidates >= 0) & (row_candidates < k)).all()):
                raise InputError(f"rows must hold candidate indices in [0, {k}), got {row_candidates[:5].tolist()}.")
            row_candidates = row_candidates.astype(np.int64)
        n = batch_size if batch_size is not None else (len(logp) if logp is not None else None)
        if n is not None and (n < 1 or (logp is not None and n < len(logp))):
            raise InputError(f"batch_size={n} must be >= 1 and >= the {0 if logp is None else len(logp)} rows "
                             f"passed (it counts every trajectory, scored or skipped).")
        return Batch(seq_logprobs=logp, advantages=adv, batch_size=n, mean_reward=reward, row_candidates=row_candidates,
                     candidates=k, measured=measured, values=np.asarray(self.values, dtype=np.float64))

    # -- checkpointing ------------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {
            "format": STATE_FORMAT,
            "knob": self.knob.name,
            "values": [list(v) if isinstance(v, tuple) else v for v in self.values],  # as JSON gives it back
            "updater": self.updater.name,
            "updater_options": dict(self.updater.options),
            "reward": self.reward.name,
            "reward_options": dict(self.reward.options),
            "selection": self.selection,
            "nucleus_p": self.nucleus_p,
            "updater_state": {k: np.asarray(v).tolist() for k, v in self._updater_state.items()},
            "reward_state": copy.deepcopy(self._reward_state),
            "rng": copy.deepcopy(self._rng.bit_generator.state),
            "chosen_index": self._chosen,
            "step": self.step,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore ``state_dict()`` output, all or nothing: the whole state is checked first (keys, types, shapes,
        finite values, a distribution that is valid, the random generator), and only then assigned; on any
        problem a StateError names the field and this policy is unchanged."""
        parsed = self._parse_state(state)
        (self._updater_state, self._reward_state, self._rng, self._chosen, self.step) = parsed

    def _parse_state(self, state: Any) -> tuple:
        if not isinstance(state, dict) or state.get("format") != STATE_FORMAT:
            raise StateError(f"not a metahp meta-policy state (expected format {STATE_FORMAT!r}); pass the dict "
                             f"returned by policy.state_dict() (or json.load of it).")
        mine = self.state_dict()
        require_keys(state, set(mine), "meta-policy state")
        for key in ("knob", "values", "updater", "updater_options", "reward", "reward_options", "selection",
                    "nucleus_p"):
            if not _same(state[key], mine[key]):
                raise StateError(f"state dict has {key}={state[key]!r} but this policy has {key}="
                                 f"{mine[key]!r}; build the policy with the same settings before loading.")
        k = len(self.values)
        template = self.updater.init(self.values)
        require_keys(state["updater_state"], set(template), "updater_state")
        restored = {}
        for key, like in template.items():
            where = f"updater_state[{key!r}]"
            try:
                raw = np.asarray(state["updater_state"][key])
            except (TypeError, ValueError):
                raw = np.asarray(None)
            if raw.dtype.kind not in "biuf" or raw.dtype.kind == "b" and like.dtype.kind != "b":
                raise StateError(f"{where} must hold numbers, got {state['updater_state'][key]!r:.80}.")
            if not np.isfinite(raw.astype(np.float64)).all():
                raise StateError(f"{where} holds NaN or infinite values; the state is corrupted.")
            arr = raw.astype(like.dtype)
            if like.dtype.kind in "iu" and not np.array_equal(arr, raw):
                raise StateError(f"{where} must hold integers, got {raw.tolist()!r:.80}.")
            if arr.ndim != like.ndim or (arr.ndim and like.shape[0] == k and arr.shape != like.shape):
                raise StateError(f"{where} has shape {arr.shape}, expected {like.shape}.")
            if key in self.updater.nonnegative and (arr < 0).any():
                raise StateError(f"{where} holds negative values, which {self.updater.name} never produces.")
            restored[key] = arr
        try:
            probs = np.asarray(self.updater.probs(restored), dtype=np.float64)
        except Exception as err:  # any failure of the updater on this state means the state is inconsistent
            raise StateError(f"updater_state does not give {self.updater.name} a distribution ({err}).") from None
        if probs.shape != (k,) or not np.isfinite(probs).all() or (probs < 0).any() or abs(probs.sum() - 1) > 1e-6:
            raise StateError(f"updater_state gives {self.updater.name} the distribution {probs!r:.120}, not one over "
                             f"{k} candidates; the state is corrupted.")
        reward_state = copy.deepcopy(state["reward_state"])
        self.reward.check_state(reward_state)
        rng = np.random.default_rng()
        try:
            rng.bit_generator.state = copy.deepcopy(check_rng_state(state["rng"]))
        except (TypeError, ValueError, OverflowError, KeyError) as err:
            raise StateError(f"rng: numpy refused the generator state ({err}).") from None
        chosen = state["chosen_index"]
        if chosen is not None:
            require_int(chosen, "chosen_index", 0, k)
        step = require_int(state["step"], "step", 0)
        return restored, reward_state, rng, chosen, step


def _same(a, b) -> bool:
    try:
        return bool(a == b)
    except (TypeError, ValueError):  # e.g. an array compared with a list: not what state_dict() writes
        return False


# Length-normalised log-likelihoods are <= 0; float32 rounding of an almost-certain completion can give a hair above.
_LOGP_SLACK = 1e-4


def check_seed(seed):
    """None or a non-negative integer (numpy's generators take nothing else)."""
    if seed is None:
        return None
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
        raise ConfigError(f"seed={seed!r} must be a non-negative integer (or None for a random seed).")
    return int(seed)


def meta_policy(knob: str | Knob = "temperature", updater: str | Updater = "tampo", values=None,
                seed: int | None = 0, *, reward: str | Reward | None = None, selection: str | None = None,
                **options) -> GridMetaPolicy:
    """Build a meta-policy by name or from instances. The default updater here is ``tampo`` (the paper's rule,
    exactly); ``metahp.adapt`` on a trainer defaults to ``metahp.config.DEFAULT_UPDATER`` instead, the rule the
    benchmarks favour (docs/benchmarks.md).

    >>> policy = meta_policy("temperature", "tampo", seed=0)   # TAMPO exactly: grid 0.6..1.5, alpha 0.05
    >>> policy.values[:3], policy.probs[:3]
    ((0.6, 0.7, 0.8), array([0.1, 0.1, 0.1]))

    ``updater``: a registered updater's name (``UPDATERS``) or an ``Updater`` (``metahp.updaters.tampo(alpha=0.1)``);
    ``reward``: a registered reward's name (``REWARDS``), a ``Reward`` instance, or None for the updater's default.
    ``options`` go to whichever component declares them: the updater (e.g. alpha, lr, gamma, window), the
    reward (normalizer, baseline_alpha) or the selection (nucleus_p, only under selection="nucleus"). Unknown
    names list the valid ones; a component given as an instance takes its options in its own constructor.
    """
    knob_obj = make_knob(knob, values)
    parts = components(updater, reward, selection, options)
    # Instantiating the updater's state now surfaces grid problems (e.g. constant's value not in the grid).
    parts.updater.init(knob_obj.values)
    return GridMetaPolicy(knob_obj, parts.updater, parts.reward, parts.selection, seed, nucleus_p=parts.nucleus_p)


class Components(NamedTuple):
    """What ``meta_policy`` combines with a knob, checked. ``options``: which component took which of the options
    passed, {"updater": {...}, "reward": {...}, "selection": {...}}."""

    updater: Updater
    reward: Reward
    selection: str
    nucleus_p: float
    options: dict[str, dict]


def components(updater: str | Updater = "tampo", reward: str | Reward | None = None, selection: str | None = None,
               options: dict | None = None) -> Components:
    """The updater, reward and selection of ``meta_policy(knob, updater, reward=..., selection=..., **options)``,
    with every check that needs no grid: names or instances, each option routed to the component that declares it
    (an unknown one lists the valid ones), each component's own validation, and feedback the reward can give."""
    updater_obj, taken, options, takers = _updater(updater, dict(options or {}))
    reward_obj, options, reward_takers = _reward(reward, updater_obj, options)
    why = "as asked" if selection else f"the default of updater {updater_obj.name!r}"
    selection = selection or updater_obj.selection
    if selection not in SELECTIONS:
        raise ConfigError(f"unknown selection {selection!r}; valid selections: {sorted(SELECTIONS)}.")
    if selection != "nucleus" and "nucleus_p" in options:  # it would be stored and never read
        raise ConfigError(f"nucleus_p={options['nucleus_p']!r} does nothing here: only selection='nucleus' reads it, "
                          f"and this policy draws with selection={selection!r} ({why}). Pass selection='nucleus' "
                          f"with it to draw from the nucleus, or leave nucleus_p out.")
    selection_takers = {"selection": selection_options} if selection == "nucleus" else {}
    routed = _options.route(options, {**reward_takers, **selection_takers, **takers})
    if reward_obj is None:
        name = reward or DEFAULT_REWARD[updater_obj.feedback]
        reward_obj = _options.build(f"reward {name!r}", REWARDS[name], routed["reward"])
    sel = _options.build("selection", selection_options, routed.get("selection", {}))
    check_feedback(updater_obj, reward_obj)
    return Components(updater_obj, reward_obj, selection, sel["nucleus_p"],
                      {"updater": taken, "reward": routed.get("reward", {}), "selection": routed.get("selection", {})})


def check_feedback(updater: Updater, reward: Reward) -> None:
    """The reward must give the feedback the updater learns from."""
    if updater.feedback != reward.kind:
        raise ConfigError(
            f"updater {updater.name!r} learns from {updater.feedback} feedback but reward {reward.name!r} "
            f"gives {reward.kind} feedback; use reward={DEFAULT_REWARD[updater.feedback]!r} (its default)"
            f"{_per_candidate_hint() if updater.feedback == 'chosen' else ''}.")


def _per_candidate_hint() -> str:
    """A bandit paired with a per-candidate reward: name the updaters that learn from it."""
    names = sorted(name for name, factory in UPDATERS.items() if factory().feedback == "per_candidate"
                   and name != "uniform")
    return f", or an updater that learns from a score per candidate, {names} (e.g. updater='softmax_gradient')"


def check_knob_reward(knob: Knob, updater: Updater, reward: Reward) -> None:
    """A reward fitted to some knobs (``Reward.fitted_knobs``: gradient_alignment to the learning rate) is refused on
    any other. A hyperparameter knob (role "updates": the learning rate, beta, epsilon) has no likelihood: every
    candidate would have sampled the batch alike. Refuse a reward that scores candidates by likelihood, naming what
    learns."""
    fitted = getattr(reward, "fitted_knobs", None)
    if fitted is not None and knob.name not in fitted:
        own = [name for name, cls in REWARDS.items() if knob.name in (cls.fitted_knobs or ())]
        signal = f"its own signal, reward={own[0]!r}, or " if own else ""
        raise ConfigError(f"reward {reward.name!r} is fitted to {list(fitted)} (it reads a measurement about that "
                          f"knob), not to {knob.name!r}; adapt {knob.name} with {signal}a bandit updater and "
                          f"reward='reward_improvement', e.g. updater='exp3'.")
    if getattr(knob, "role", None) != "updates" or not reward.needs_likelihoods:
        return
    bandits = sorted(name for name, factory in UPDATERS.items() if factory().feedback == "chosen")
    rewards = sorted(name for name, cls in REWARDS.items() if cls.kind == "chosen" and not cls.needs_likelihoods)
    own = sorted(name for name, cls in REWARDS.items() if knob.name in (cls.fitted_knobs or ()))
    also = (f", or updater='softmax_gradient' with the signal fitted to it, reward={own[0]!r} "
            f"(docs/hyperparameters.md)" if own else "")
    raise ConfigError(f"{knob.name} is a hyperparameter knob (it changes the update, not the sampling): a completion "
                      f"is equally likely under every candidate, so reward {reward.name!r} (updater "
                      f"{updater.name!r}), which scores candidates by likelihood, cannot learn it. Use a bandit "
                      f"updater {bandits} with reward {rewards}, e.g. updater='exp3'{also}.")


def _updater(updater, options: dict) -> tuple[Updater, dict, dict, dict]:
    """The Updater, the options it took, the options left for the other components, and {label: factory} of what
    takes options here (for the unknown-option error's list)."""
    if isinstance(updater, Updater):
        check_updater_fields(updater, f"updater {updater.name!r}")
        factory = UPDATERS.get(updater.name)
        own = set(updater.options) | set(_options.accepted(factory) if factory is not None else ())
        where = f"metahp.updaters.{updater.name}" if factory is not None else updater.name
        _refuse_instance_options("updater", updater.name, own, options, lambda key, value: f"updater={where}("
                                 f"{key}={value!r})")
        return updater, {}, options, {}
    if isinstance(updater, str):
        if updater not in UPDATERS:
            raise ConfigError(f"unknown updater {updater!r}; valid updaters: {sorted(UPDATERS)} (or an Updater, e.g. "
                              f"metahp.updaters.tampo(alpha=0.1); metahp.register_updater adds your own).")
        factory = UPDATERS[updater]
        mine = _options.accepted(factory)
        taken = {k: v for k, v in options.items() if k in mine}
        built = _options.build(f"updater {updater!r}", factory, taken)
        return built, taken, {k: v for k, v in options.items() if k not in mine}, {f"updater {updater!r}": factory}
    named = [name for name, f in UPDATERS.items() if f is updater]
    hint = (f"; it is the factory of {named[0]!r}: pass its name (updater={named[0]!r}) or call it "
            f"(updater={named[0]}(...))" if named else
            "; a factory is called (updater=factory(...)) or registered (metahp.register_updater)" if callable(updater)
            else "")
    raise ConfigError(f"unknown updater {updater!r:.80}: neither a registered updater's name {sorted(UPDATERS)} nor "
                      f"an Updater (e.g. metahp.updaters.tampo(alpha=0.1)){hint}.")


def _reward(reward, updater: Updater, options: dict) -> tuple[Reward | None, dict, dict]:
    """The Reward when given as an instance (else None: built once the options are routed), the options left, and
    {"reward": class} when it takes options here."""
    if isinstance(reward, Reward):
        own = set(reward.options) | set(_options.accepted(type(reward)))
        cls = type(reward).__name__
        _refuse_instance_options("reward", reward.name, own, options, lambda key, value: f"reward={cls}("
                                 f"{key}={value!r})")
        return reward, options, {}
    if reward is None or isinstance(reward, str):
        name = reward or DEFAULT_REWARD[updater.feedback]
        if name not in REWARDS:
            raise ConfigError(f"unknown reward {name!r}; valid rewards: {sorted(REWARDS)} (or a Reward instance; "
                              f"metahp.register_reward adds your own).")
        return None, options, {"reward": REWARDS[name]}
    hint = (f"; it is a class: pass an instance (reward={reward.__name__}(...)) or its name (reward={reward.name!r})"
            if isinstance(reward, type) and issubclass(reward, Reward) and hasattr(reward, "name") else "")
    raise ConfigError(f"unknown reward {reward!r:.80}: neither a registered reward's name {sorted(REWARDS)}, a "
                      f"Reward instance, nor None (the updater's default){hint}.")


def _refuse_instance_options(what: str, name: str, own: set[str], options: dict, example) -> None:
    """A component passed as an instance was built already: its options beside it would be silently ignored."""
    for key, value in options.items():
        if key in own:
            raise ConfigError(f"{key}={value!r} is an option of the {what} {name!r}, which is passed as an instance: "
                              f"set it where the instance is built ({example(key, value)}), not beside it.")
