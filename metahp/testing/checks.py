"""Conformance checks for updaters, knobs, rewards, meta-policies and adapters (like gymnasium's check_env).

Each property is its own public function (``check_updater_purity``, ``check_knob_masking``, ...);
``check_updater``, ``check_knob``, ``check_reward`` and ``check_adapter`` run all of a plug-in's checks in order.
A failing check raises AssertionError whose message starts with the check's name and the plug-in's, e.g.
``check_updater_learns(my_bandit): ...``; an exception the plug-in itself raises inside a check is reported the
same way (the original is chained). All checks of one kind take the same arguments (some read none of them),
so a list of them can be run in a loop. The checks only read what a plug-in returns: they never modify a knob,
updater or reward, but the policy and adapter checks advance the policy's random generator.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import json
import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

from metahp.errors import ConfigError, StateError
from metahp.knobs import HyperparameterKnob, Knob, Temperature
from metahp.rewards import Batch, Reward, RewardImprovement, TrajectoryLikelihood
from metahp.rewards.base import FEEDBACK_KINDS
from metahp.selection import SELECTIONS
from metahp.updaters import Feedback, Updater

VALUES = (0.6, 0.8, 1.0, 1.2, 1.5)
KINDS = FEEDBACK_KINDS  # one list of feedback kinds, metahp.rewards.base
# The reward a policy round trip pairs with each kind of updater (what meta_policy picks by default).
_DEFAULT_REWARDS: dict[str, Callable[[], Reward]] = {"per_candidate": TrajectoryLikelihood,
                                                     "chosen": RewardImprovement}


# -- naming ------------------------------------------------------------------------------------------------
def _label(plugin: Any) -> str:
    """How a plug-in is named in a failure: its ``name`` when it has a usable one, else its type."""
    name = getattr(plugin, "name", None)
    if isinstance(name, str) and name:
        return name
    return type(plugin).__name__


def _named(check: Callable) -> Callable:
    """Prefix every failure of ``check`` with ``check_name(plug-in):``; the plug-in's own errors become failures."""

    @functools.wraps(check)
    def run(plugin, *args, **kwargs):
        try:
            return check(plugin, *args, **kwargs)
        except AssertionError as err:  # keep what caused it (a plug-in's own error), not the bare assertion
            raise AssertionError(f"{check.__name__}({_label(plugin)}): {err}") from err.__cause__
        except Exception as err:
            raise AssertionError(f"{check.__name__}({_label(plugin)}): raised {type(err).__name__}: {err}") from err

    return run


def _ensure(condition: Any, message: str) -> None:
    """An assert that ``python -O`` keeps."""
    if not condition:
        raise AssertionError(message)


def _same(a: Any, b: Any) -> bool:
    """Exact structural equality of JSON-like values and numpy arrays (a tuple is not a list)."""
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        return type(a) is type(b) and a.shape == b.shape and a.dtype == b.dtype and np.array_equal(a, b)
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list | tuple) and isinstance(b, list | tuple):
        return type(a) is type(b) and len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    try:
        return type(a) is type(b) and bool(a == b)
    except (TypeError, ValueError):
        return False


def _json(value: Any, what: str) -> Any:
    """``json.loads(json.dumps(value))`` with strict JSON (no NaN / Infinity); a failure names ``what``."""
    try:
        text = json.dumps(value, allow_nan=False)
    except (TypeError, ValueError) as err:
        raise AssertionError(f"{what} is not JSON: {err}") from err
    return json.loads(text)


def _assert_distribution(p: Any, k: int, where: str) -> None:
    p = np.asarray(p)
    _ensure(p.shape == (k,), f"{where}: probs has shape {p.shape}, expected ({k},)")
    _ensure(p.dtype.kind == "f", f"{where}: probs has dtype {p.dtype}, expected floats")
    _ensure(np.isfinite(p).all(), f"{where}: probs not finite: {p}")
    _ensure((p >= 0).all(), f"{where}: negative probability: {p}")
    _ensure(abs(p.sum() - 1) < 1e-9, f"{where}: probs sum to {p.sum()!r}, not 1")


# -- updaters ----------------------------------------------------------------------------------------------
def _random_feedback(updater: Updater, k: int, rng: np.random.Generator) -> Feedback:
    if updater.feedback == "per_candidate":
        return Feedback(advantages=rng.normal(scale=rng.choice([1e-6, 0.05, 3.0]), size=k))
    # Rewards inside exp3's default window [-0.5, 0.5], as reward_improvement gives for task rewards in [0, 1].
    return Feedback(chosen=int(rng.integers(k)), reward=float(np.clip(rng.normal(scale=0.3), -0.5, 0.5)))


def _trajectory(updater: Updater, values: tuple, steps: int, seed: int):
    """(state, feedback) pairs of a seeded random run: the state each feedback is applied to."""
    rng = np.random.default_rng(seed)
    state = updater.init(values)
    for _ in range(steps):
        feedback = _random_feedback(updater, len(values), rng)
        yield state, feedback
        state = updater.update(state, feedback)


def _state_equal(a: dict, b: dict) -> bool:
    return isinstance(a, dict) and isinstance(b, dict) and a.keys() == b.keys() and all(
        np.array_equal(np.asarray(a[key]), np.asarray(b[key])) for key in a)


@_named
def check_updater_interface(updater: Updater, values: Sequence[float] = VALUES, *, steps: int = 30,
                            seed: int = 0) -> None:
    """A non-empty name, a known feedback kind and selection, JSON options (they go into the policy's state).
    (Every updater check takes the same arguments; this one reads none of them.)"""
    _ensure(isinstance(updater, Updater), f"not an Updater but a {type(updater).__name__}")
    _ensure(isinstance(updater.name, str) and updater.name, f"name {updater.name!r} is not a non-empty string")
    _ensure(updater.feedback in KINDS, f"unknown feedback kind {updater.feedback!r}; expected one of {KINDS}")
    _ensure(updater.selection in SELECTIONS, f"default selection {updater.selection!r} unknown; valid: "
                                             f"{sorted(SELECTIONS)}")
    _ensure(isinstance(updater.options, dict), f"options is a {type(updater.options).__name__}, not a dict")
    _ensure(_same(_json(updater.options, "options"), updater.options), "options change through JSON "
                                                                        "(use lists and plain numbers)")


@_named
def check_updater_distribution(updater: Updater, values: Sequence[float] = VALUES, *, steps: int = 30,
                               seed: int = 0) -> None:
    """``probs`` is a distribution over the K candidates at init (K = 1, 2 and len(values)) and after every step."""
    values = tuple(values)
    for size in sorted({1, 2, len(values)}):
        _assert_distribution(updater.probs(updater.init(values[:size])), size, f"at init, K={size}")
    for step, (state, feedback) in enumerate(_trajectory(updater, values, steps, seed)):
        _assert_distribution(updater.probs(updater.update(state, feedback)), len(values), f"after step {step}")


@_named
def check_updater_purity(updater: Updater, values: Sequence[float] = VALUES, *, steps: int = 30,
                         seed: int = 0) -> None:
    """Neither ``update`` nor ``probs`` modifies the state it is given."""
    for step, (state, feedback) in enumerate(_trajectory(updater, tuple(values), steps, seed)):
        before = copy.deepcopy(state)
        updater.probs(state)
        _ensure(_state_equal(before, state), f"probs mutated its input state at step {step}")
        updater.update(state, feedback)
        _ensure(_state_equal(before, state), f"update mutated its input state at step {step}")


@_named
def check_updater_determinism(updater: Updater, values: Sequence[float] = VALUES, *, steps: int = 30,
                              seed: int = 0) -> None:
    """The same state and feedback give the same new state and the same probs (no hidden randomness)."""
    for step, (state, feedback) in enumerate(_trajectory(updater, tuple(values), steps, seed)):
        first = updater.update(copy.deepcopy(state), feedback)
        second = updater.update(copy.deepcopy(state), feedback)
        _ensure(_state_equal(first, second), f"update is not deterministic at step {step}")
        _ensure(np.array_equal(updater.probs(first), updater.probs(second)),
                f"probs is not deterministic at step {step}")


def _to_json(state: dict) -> dict:
    return {key: np.asarray(value).tolist() for key, value in state.items()}  # what the policy's state_dict does


@_named
def check_updater_json_round_trip(updater: Updater, values: Sequence[float] = VALUES, *, steps: int = 30,
                                  seed: int = 0, horizon: int = 5) -> None:
    """Every state survives ``json.dumps`` / ``json.loads`` (arrays as lists, strict JSON): the restored state
    equals the original and ``horizon`` further updates from either give the same probs."""
    values = tuple(values)
    run = list(_trajectory(updater, values, steps + horizon, seed))
    for step in range(0, steps, max(1, steps // 6)):
        state = run[step][0]
        _ensure(isinstance(state, dict) and all(isinstance(key, str) for key in state),
                f"state at step {step} is not a dict with string keys")
        loaded = _json(_to_json(state), f"state at step {step}")
        restored = {key: np.asarray(loaded[key], dtype=np.asarray(value).dtype) for key, value in state.items()}
        _ensure(_state_equal(restored, state), f"state at step {step} changes through JSON")
        original = state
        for later, (_, feedback) in enumerate(run[step:step + horizon], start=step):
            original, restored = updater.update(original, feedback), updater.update(restored, feedback)
            _ensure(np.allclose(updater.probs(original), updater.probs(restored), rtol=1e-12, atol=1e-15),
                    f"resumed from the JSON of step {step}'s state, probs differ at step {later}")


@_named
def check_updater_state(updater: Updater, values: Sequence[float] = VALUES, *, steps: int = 30,
                        seed: int = 0) -> None:
    """The state is a dict of numeric, finite arrays whose keys ``update`` never changes (a policy checks a loaded
    state against exactly these keys)."""
    values = tuple(values)
    keys = None
    for step, (state, feedback) in enumerate(_trajectory(updater, values, steps, seed)):
        new = updater.update(state, feedback)
        keys = set(state) if keys is None else keys
        _ensure(isinstance(new, dict) and set(new) == keys,
                f"update changed the state's keys at step {step}: {sorted(keys)} -> {sorted(new)}")
        for key, value in new.items():
            arr = np.asarray(value)
            _ensure(arr.dtype.kind in "fiub", f"state[{key!r}] holds {arr.dtype}, not numbers")
            _ensure(np.isfinite(arr.astype(float)).all(), f"state[{key!r}] not finite after step {step}")


@_named
def check_updater_zero_advantages(updater: Updater, values: Sequence[float] = VALUES, *, steps: int = 30,
                                  seed: int = 0) -> None:
    """Per-candidate updaters: all-zero advantages leave the distribution as it is (a batch whose groups all had
    zero reward variance carries no information). Scalar-feedback updaters have no such neutral feedback: skipped."""
    if updater.feedback != "per_candidate":
        return
    k = len(values)
    for step, (state, _) in enumerate(_trajectory(updater, tuple(values), steps, seed)):
        p0 = updater.probs(state)
        p1 = updater.probs(updater.update(state, Feedback(advantages=np.zeros(k))))
        _ensure(np.allclose(p0, p1, rtol=0, atol=1e-12), f"all-zero advantages changed the distribution at step "
                                                         f"{step}: {p0} -> {p1}")


@_named
def check_updater_learns(updater: Updater, values: Sequence[float] = VALUES, *, steps: int = 30,
                         bandit_steps: int = 300, seed: int = 0) -> None:
    """A consistently better candidate (the first, then the last) ends up the most probable and gains probability.

    Per-candidate updaters get advantages +0.1 for it and -0.1 for the others, ``steps`` times. Scalar-feedback
    (``chosen``) updaters play ``bandit_steps`` rounds: the candidate is drawn from the updater's own probs with a
    seeded generator and rewarded +0.3 if it is the better one, else -0.3 (inside exp3's default window).
    """
    values = tuple(values)
    k = len(values)
    _ensure(k >= 2, "needs at least two candidates")
    for best in (0, k - 1):
        rng = np.random.default_rng(seed)
        state = updater.init(values)
        p0 = np.asarray(updater.probs(state))
        if updater.feedback == "per_candidate":
            advantages = np.full(k, -0.1)
            advantages[best] = 0.1
            for _ in range(steps):
                state = updater.update(state, Feedback(advantages=advantages.copy()))
            how = f"advantage +0.1 vs -0.1 for {steps} steps"
        else:
            for _ in range(bandit_steps):
                chosen = int(rng.choice(k, p=np.asarray(updater.probs(state), dtype=np.float64)))
                state = updater.update(state, Feedback(chosen=chosen, reward=0.3 if chosen == best else -0.3))
            how = f"reward +0.3 vs -0.3 when chosen, {bandit_steps} rounds sampled from its probs"
        p = np.asarray(updater.probs(state))
        _ensure(p[best] == p.max() and p[best] >= p0[best] + 0.1,
                f"candidate {best} ({values[best]}) was consistently better ({how}) but its probability went "
                f"{p0[best]:.3f} -> {p[best]:.3f}; final probs {np.round(p, 3)}")


def _grpo_batch(rng: np.random.Generator, groups: int = 2, size: int = 4, length: int = 4,
                vocab: int = 11) -> tuple:
    """(logits, tokens, mask, advantages, mean reward) of a random GRPO batch: binary rewards per group,
    group-normalised advantages (zero-variance groups give 0), the most likely token at every step (possible
    under every knob, truncations included), left padding."""
    b = groups * size
    logits = torch.from_numpy(rng.normal(scale=3.0, size=(b, length, vocab)).astype(np.float32))
    tokens = logits.argmax(dim=-1)
    mask = torch.ones(b, length, dtype=torch.long)
    mask[0, 0] = 0
    rewards = rng.integers(0, 2, size=(groups, size)).astype(np.float64)
    std = rewards.std(axis=1, keepdims=True)
    adv = np.where(std > 0, (rewards - rewards.mean(axis=1, keepdims=True)) / np.where(std > 0, std, 1), 0.0)
    return logits, tokens, mask, adv.ravel(), float(rewards.mean())


def _policy_step(policy, batch) -> tuple:
    logits, tokens, mask, adv, reward = batch
    value = policy.sample()
    metrics = policy.update_from_logits(logits, tokens, mask, adv, reward=reward)
    return value, np.asarray(policy.probs).tolist(), metrics


@_named
def check_policy_json_round_trip(policy, *, steps: int = 4, seed: int = 0) -> None:
    """A meta-policy's ``state_dict()`` survives JSON: after ``steps`` random batches the state is saved through
    ``json.dumps`` / ``json.loads``; ``steps`` more batches are run, the saved state is loaded back and the same
    batches run again: the draws, probs and metrics must repeat exactly, and ``state_dict()`` right after the
    load must equal the saved state. Advances the policy (it ends where the continued run ended)."""
    rng = np.random.default_rng(seed)
    batches = [_grpo_batch(rng) for _ in range(2 * steps)]
    for batch in batches[:steps]:
        _policy_step(policy, batch)
    saved = _json(policy.state_dict(), "state_dict()")
    first = [_policy_step(policy, batch) for batch in batches[steps:]]
    end = _json(policy.state_dict(), "state_dict()")
    policy.load_state_dict(json.loads(json.dumps(saved)))
    _ensure(_same(_json(policy.state_dict(), "state_dict()"), saved),
            "state_dict() right after load_state_dict(json state) differs from the state loaded")
    again = [_policy_step(policy, batch) for batch in batches[steps:]]
    for i, (a, b) in enumerate(zip(first, again, strict=True)):
        _ensure(_same(a[0], b[0]), f"batch {i} after the reload drew {b[0]!r}, the uninterrupted run {a[0]!r}")
        _ensure(np.allclose(a[1], b[1], rtol=1e-12, atol=1e-15), f"batch {i} after the reload: probs {b[1]} "
                                                                 f"instead of {a[1]}")
        _ensure(a[2].keys() == b[2].keys() and np.allclose([a[2][k] for k in a[2]], [b[2][k] for k in a[2]],
                                                           rtol=1e-12, atol=1e-15),
                f"batch {i} after the reload: metrics differ")
    _ensure(_same(_json(policy.state_dict(), "state_dict()"), end), "the reloaded run ends in another state")


@_named
def check_updater_policy_round_trip(updater: Updater, values: Sequence[float] = VALUES, *, steps: int = 30,
                                    seed: int = 0) -> None:
    """``check_policy_json_round_trip`` on a temperature meta-policy built with this updater and its kind's default
    reward: the policy's state checks (types, shapes, dtypes, keys) accept the states this updater produces."""
    from metahp.policy import GridMetaPolicy

    policy = GridMetaPolicy(Temperature(tuple(values)), updater, _DEFAULT_REWARDS[updater.feedback](),
                            selection=updater.selection, seed=seed)
    check_policy_json_round_trip(policy, seed=seed)


UPDATER_CHECKS = (check_updater_interface, check_updater_distribution, check_updater_purity,
                  check_updater_determinism, check_updater_json_round_trip, check_updater_state,
                  check_updater_policy_round_trip, check_updater_zero_advantages, check_updater_learns)


def check_updater(updater: Updater, values: Sequence[float] = VALUES, steps: int = 30, seed: int = 0, *,
                  learns: bool = True) -> None:
    """Run every updater check (``UPDATER_CHECKS``, in that order); the first failure is raised.

    ``learns=False`` skips ``check_updater_learns``, for an updater that ignores feedback by design (the built-in
    ``constant``, the fixed baseline every adaptive updater is compared with); nothing else is skipped.
    """
    for check in UPDATER_CHECKS:
        if learns or check is not check_updater_learns:
            check(updater, tuple(values), steps=steps, seed=seed)


# -- knobs -------------------------------------------------------------------------------------------------
def _knob_inputs(vocab: int, batch: int, length: int, seed: int) -> tuple:
    """Random logits [B, L, V] (a few -inf: banned tokens), tokens sampled from them, a mask with left padding
    and a padded last position."""
    gen = torch.Generator().manual_seed(seed)
    logits = torch.randn(batch, length, vocab, generator=gen) * 3
    banned = torch.rand(batch, length, vocab, generator=gen) < 0.1
    banned[..., 0] = False  # every position keeps a possible token
    logits[banned] = -math.inf
    tokens = torch.multinomial(torch.softmax(logits.reshape(-1, vocab), dim=-1), 1, generator=gen)
    tokens = tokens.reshape(batch, length)
    mask = torch.ones(batch, length, dtype=torch.bool)
    mask[0, : min(2, length - 1)] = False  # left padding
    mask[-1, -1] = False
    return logits, tokens, mask, gen


@_named
def check_knob_registry(knob: Knob, *, vocab: int = 37, batch: int = 3, length: int = 5, seed: int = 0) -> None:
    """A non-empty ``name`` (the backend keyword and the metric prefix), and a class that builds with its default
    values (``make_knob(name)`` does ``cls()``). A composite knob whose name is set per instance
    (``ProductKnob``: no class-level ``name``) is never built by name, so it is not constructed here."""
    _ensure(isinstance(knob, Knob), f"not a Knob but a {type(knob).__name__}")
    name = getattr(knob, "name", None)
    _ensure(isinstance(name, str) and name, f"{type(knob).__name__}.name is {name!r}, not a non-empty string")
    if isinstance(getattr(type(knob), "name", None), str):
        fresh = type(knob)()
        _ensure(len(fresh.values) >= 1, f"{type(knob).__name__}() has no candidates")
        _ensure(fresh.name == name, f"{type(knob).__name__}().name is {fresh.name!r}, not {name!r}")


@_named
def check_knob_grid(knob: Knob, *, vocab: int = 37, batch: int = 3, length: int = 5, seed: int = 0) -> None:
    """The candidate grid is non-empty, sorted, without duplicates, and ``len(knob)`` counts it."""
    values = tuple(knob.values)
    _ensure(values, "empty candidate grid")
    _ensure(list(values) == sorted(values) and len(set(values)) == len(values), f"grid not sorted/unique: {values}")
    _ensure(len(knob) == len(values), f"len(knob) = {len(knob)} but the grid has {len(values)} candidates")


@_named
def check_knob_normalised(knob: Knob, *, vocab: int = 37, batch: int = 3, length: int = 5, seed: int = 0) -> None:
    """For every candidate, ``token_logprobs`` over all tokens of a position is a distribution over the vocabulary
    (the per-token probabilities sum to 1), also where some logits are -inf (banned tokens)."""
    logits, _, _, _ = _knob_inputs(vocab, 1, length, seed)
    rows = logits[0]  # [L, V]
    with torch.no_grad():
        every = torch.stack([knob.token_logprobs(rows, torch.full((length,), v)) for v in range(vocab)])
    _ensure(every.shape == (vocab, length, len(knob)),
            f"token_logprobs of [{length}, {vocab}] logits has shape {tuple(every.shape[1:])}, expected "
            f"({length}, {len(knob)})")
    _ensure(not torch.isnan(every).any(), "token_logprobs returned NaN")
    total = torch.logsumexp(every.double(), dim=0)  # [L, K]
    _ensure(torch.allclose(total, torch.zeros_like(total), atol=1e-4),
            f"token probabilities do not sum to 1 over the vocabulary: sums {total.exp().flatten()[:6].tolist()}")


@_named
def check_knob_output(knob: Knob, *, vocab: int = 37, batch: int = 3, length: int = 5, seed: int = 0) -> None:
    """``sequence_logprobs`` returns a float32 [B, K] CPU tensor of log-likelihoods: no NaN, none positive."""
    logits, tokens, mask, _ = _knob_inputs(vocab, batch, length, seed)
    out = knob.sequence_logprobs(logits, tokens, mask)
    _ensure(isinstance(out, torch.Tensor), f"sequence_logprobs returned a {type(out).__name__}, not a tensor")
    _ensure(tuple(out.shape) == (batch, len(knob)), f"sequence_logprobs shape {tuple(out.shape)}, expected "
                                                    f"({batch}, {len(knob)})")
    _ensure(out.dtype == torch.float32 and out.device.type == "cpu", f"sequence_logprobs is {out.dtype} on "
                                                                       f"{out.device}, expected float32 on cpu")
    _ensure(not torch.isnan(out).any(), "sequence_logprobs returned NaN")
    _ensure((out <= 1e-6).all(), f"a log-likelihood is positive: {out.max().item():.3g}")


@_named
def check_knob_masking(knob: Knob, *, vocab: int = 37, batch: int = 3, length: int = 5, seed: int = 0) -> None:
    """Only completion tokens count: each row is the mean of ``token_logprobs`` over its masked-in tokens (length
    normalisation), padded positions may hold any logits and tokens, and an all-padding row scores 0."""
    logits, tokens, mask, gen = _knob_inputs(vocab, batch, length, seed)
    out = knob.sequence_logprobs(logits, tokens, mask)
    with torch.no_grad():
        for row in range(batch):
            kept = mask[row]
            expected = knob.token_logprobs(logits[row][kept], tokens[row][kept]).float().mean(dim=0)
            _ensure(torch.allclose(out[row], expected, atol=1e-5),
                    f"row {row} is not the mean token log-likelihood over its {int(kept.sum())} completion tokens: "
                    f"{out[row].tolist()} vs {expected.tolist()}")
    noisy = logits.clone()
    noisy[~mask] = torch.randn(int((~mask).sum()), vocab, generator=gen) * 100
    junk = tokens.clone()
    junk[~mask] = 0
    _ensure(torch.allclose(out, knob.sequence_logprobs(noisy, junk, mask), atol=1e-5),
            "the logits or tokens at padded positions changed the result")
    empty = mask.clone()
    empty[0] = False
    got = knob.sequence_logprobs(logits, tokens, empty)[0]
    _ensure(torch.equal(got, torch.zeros_like(got)), f"an all-padding row scores {got.tolist()}, not 0")


@_named
def check_knob_chunking(knob: Knob, *, vocab: int = 37, batch: int = 3, length: int = 5, seed: int = 0) -> None:
    """The block size does not matter: one token per block, a few tokens per block, and the default agree."""
    logits, tokens, mask, _ = _knob_inputs(vocab, batch, length, seed)
    out = knob.sequence_logprobs(logits, tokens, mask)
    for chunk in (1, 3 * vocab + 1):
        _ensure(torch.allclose(out, knob.sequence_logprobs(logits, tokens, mask, chunk_elements=chunk), atol=1e-5),
                f"chunk_elements={chunk} changed the result")


@_named
def check_knob_no_graph(knob: Knob, *, vocab: int = 37, batch: int = 3, length: int = 5, seed: int = 0) -> None:
    """``sequence_logprobs`` of logits that require grad keeps no autograd graph (it would pin the LM's
    activations until the next step)."""
    logits, tokens, mask, _ = _knob_inputs(vocab, batch, length, seed)
    logits.requires_grad_(True)
    out = knob.sequence_logprobs(logits, tokens, mask)
    _ensure(not out.requires_grad and out.grad_fn is None, "sequence_logprobs kept an autograd graph")


# A float32 likelihood against the float64 log-softmax of the sampler's float32 scores agrees within
# SAMPLER_ATOL + SAMPLER_RTOL * |log-likelihood|: float32 rounding grows with the magnitude (a log-likelihood of -185
# at T = 0.1 is off by 1.5e-5), while a wrong formula is off by far more.
SAMPLER_ATOL = 1e-5
SAMPLER_RTOL = 1e-6


def _reference_logprobs(knob: Knob, value, rows: torch.Tensor) -> torch.Tensor:
    """log_softmax of the reference sampler's processed scores of ``rows`` [N, V] for one candidate (float64)."""
    try:
        warper = knob.reference_warper(value)
    except ImportError as err:
        raise AssertionError(f"cannot build the reference sampler {knob.reference_sampler} ({err}); this check "
                             f"compares the knob with it and cannot pass without it: install it (transformers: pip "
                             f"install transformers)") from err
    return torch.log_softmax(torch.as_tensor(warper(None, rows.clone())).double(), dim=-1)


@_named
def check_knob_matches_sampler(knob: Knob, *, vocab: int = 37, batch: int = 3, length: int = 5,
                               seed: int = 0) -> None:
    """For every candidate and every token, ``token_logprobs`` equals the log-softmax of the reference sampler's
    processed logits (``knob.reference_warper(value)``, built from ``knob.reference_sampler``, e.g. transformers'
    TopPLogitsWarper after the knob's temperature): -inf exactly where the sampler removes a token, the same finite
    log-likelihood elsewhere (within ``SAMPLER_ATOL + SAMPLER_RTOL * |value|``: float32). Run on B * L random rows
    of logits, some -inf, without ties (a cut through a tie group is scored by its marginal over tie orders, which
    no single run of a sampler shows). A knob that names no ``reference_sampler`` fails, as does a missing
    transformers: the form checks alone pass a knob computing softmax(z * T)."""
    sampler = getattr(knob, "reference_sampler", None)
    _ensure(isinstance(sampler, str) and sampler,
            f"{type(knob).__name__}.reference_sampler is {sampler!r}: name the sampler whose distribution the knob "
            f"reproduces, e.g. reference_sampler = 'transformers.TopPLogitsWarper' (override reference_warper(value) "
            f"if its processor is not built as Class(value))")
    logits, _, _, _ = _knob_inputs(vocab, batch, length, seed)
    rows = logits.reshape(-1, vocab)  # [N, V]
    n = rows.shape[0]
    with torch.no_grad():  # every token of the vocabulary taken in turn: [N, V, K]
        every = torch.stack([knob.token_logprobs(rows, torch.full((n,), v)) for v in range(vocab)], dim=1)
    _ensure(tuple(every.shape) == (n, vocab, len(knob)),
            f"token_logprobs of [{n}, {vocab}] logits has shape {tuple(every.shape[::2])}, expected ({n}, {len(knob)})")
    every = every.double()
    for k, value in enumerate(knob.values):
        got, want = every[..., k], _reference_logprobs(knob, value, rows)
        where = f"candidate {knob.label(value)}"
        _ensure(tuple(want.shape) == (n, vocab), f"{where}: {sampler} returned scores of shape "
                                                 f"{tuple(want.shape)} for [{n}, {vocab}] logits")
        _ensure(not torch.isnan(got).any(), f"{where}: token_logprobs returned NaN")
        for wrong, says in ((torch.isneginf(want) & ~torch.isneginf(got), "removes"),
                            (~torch.isneginf(want) & torch.isneginf(got), "keeps")):
            if wrong.any():
                r, v = (int(i) for i in wrong.nonzero()[0])
                raise AssertionError(f"{where}: {sampler} {says} token {v} of row {r} (log-likelihood "
                                     f"{want[r, v].item():.6g}) but token_logprobs gives {got[r, v].item():.6g} "
                                     f"({int(wrong.sum())} such tokens of {n * vocab})")
        finite = torch.isfinite(want)
        excess = torch.where(finite, (got - want).abs() - SAMPLER_RTOL * want.abs(), 0.0)  # both -inf: 0
        if excess.max() > SAMPLER_ATOL:
            r, v = divmod(int(excess.argmax()), vocab)
            raise AssertionError(f"{where}: token {v} of row {r} has log-likelihood {got[r, v].item():.6g} but "
                                 f"{sampler} gives {want[r, v].item():.6g} (they differ by "
                                 f"{abs(got[r, v] - want[r, v]).item():.2g}, more than {SAMPLER_ATOL} + "
                                 f"{SAMPLER_RTOL} * |{want[r, v].item():.3g}|; {int((excess > SAMPLER_ATOL).sum())} "
                                 f"such tokens of {n * vocab})")


# Chunking before masking: the masking check scores rows on their own, so a knob that depends on the block it is
# given would fail there first, under the wrong name. The comparison with the sampler comes last: a knob wrong in
# form fails the check that names what is wrong first.
KNOB_CHECKS = (check_knob_registry, check_knob_grid, check_knob_normalised, check_knob_output, check_knob_chunking,
               check_knob_masking, check_knob_no_graph, check_knob_matches_sampler)


@_named
def check_knob_has_no_likelihood(knob: Knob, *, vocab: int = 37, batch: int = 3, length: int = 5,
                                 seed: int = 0) -> None:
    """A hyperparameter knob (role "updates") refuses to score completions: ``sequence_logprobs`` and
    ``token_logprobs`` raise a ConfigError (every candidate sampled the batch alike, so there is nothing to score),
    and ``meta_policy`` refuses it with a reward that needs likelihoods."""
    from metahp.policy import meta_policy

    logits, tokens, mask, _ = _knob_inputs(vocab, batch, length, seed)
    _ensure(knob.role == "updates", f"role is {knob.role!r}, not 'updates'")
    for what, call in (("sequence_logprobs", lambda: knob.sequence_logprobs(logits, tokens, mask)),
                       ("token_logprobs", lambda: knob.token_logprobs(logits[0], tokens[0]))):
        try:
            call()
        except ConfigError:
            continue
        except Exception as err:  # noqa: BLE001  a crash is not the clear refusal the check asks for
            _ensure(False, f"{what} raised {type(err).__name__}: {err}, not a ConfigError")
        _ensure(False, f"{what} returned likelihoods; a hyperparameter has none: raise a ConfigError")
    try:
        meta_policy(knob, "tampo", seed=seed)
    except ConfigError:
        return
    _ensure(False, "meta_policy(knob, 'tampo') accepted a reward that needs likelihoods")


@_named
def check_knob_domain(knob: Knob, *, vocab: int = 37, batch: int = 3, length: int = 5, seed: int = 0) -> None:
    """A hyperparameter knob's candidates lie in its declared domain (``lower``, ``upper``, open or closed); a value
    just outside each finite end is refused with a ConfigError, the end itself accepted where the interval is
    closed."""
    _ensure(isinstance(knob, HyperparameterKnob), f"not a HyperparameterKnob but a {type(knob).__name__}")
    cls = type(knob)
    for v in knob.values:
        _ensure(cls.lower <= v <= cls.upper and not (cls.lower_open and v == cls.lower)
                and not (cls.upper_open and v == cls.upper), f"candidate {v} lies outside {cls.domain()}")
    for end, is_open, outward in ((cls.lower, cls.lower_open, -1), (cls.upper, cls.upper_open, 1)):
        if not math.isfinite(end):
            continue
        outside = end + outward * max(1e-6, abs(end) * 1e-6)
        try:
            knob.check_value(outside)
        except ConfigError:
            pass
        else:
            _ensure(False, f"check_value({outside:g}) accepted a value outside {cls.domain()}")
        if is_open:
            try:
                knob.check_value(end)
            except ConfigError:
                continue
            _ensure(False, f"check_value({end:g}) accepted the open end of {cls.domain()}")
        else:
            try:
                knob.check_value(end)
            except ConfigError as err:
                _ensure(False, f"check_value({end:g}) refused the closed end of {cls.domain()}: {err}")


# A hyperparameter knob changes the update, not the sampling: no likelihood, so the likelihood checks do not apply.
HYPERPARAMETER_KNOB_CHECKS = (check_knob_registry, check_knob_grid, check_knob_domain, check_knob_has_no_likelihood)


def check_knob(knob: Knob, vocab: int = 37, batch: int = 3, length: int = 5, seed: int = 0) -> None:
    """Run every knob check in order (``KNOB_CHECKS``; for a hyperparameter knob, role "updates",
    ``HYPERPARAMETER_KNOB_CHECKS``); the first failure is raised."""
    checks = HYPERPARAMETER_KNOB_CHECKS if getattr(knob, "role", None) == "updates" else KNOB_CHECKS
    for check in checks:
        check(knob, vocab=vocab, batch=batch, length=length, seed=seed)


# -- rewards -----------------------------------------------------------------------------------------------
def _reward_batches(k: int, count: int, seed: int) -> list[Batch]:
    """GRPO-like batches with every field a reward may read: 2 groups of 4, one of them sometimes of zero
    variance; seq_logprobs <= 0 with an occasional -inf (a candidate that cannot produce a trajectory); each row's
    candidate (values per completion), the grid size and its values, and what a trainer measures in its update
    (``Batch.measured``: gradient alignment, KL, clip fraction)."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(count):
        rewards = rng.integers(0, 2, size=(2, 4)).astype(np.float64)
        if i % 3 == 1:
            rewards[1] = rewards[1, 0]
        std = rewards.std(axis=1, keepdims=True)
        adv = np.where(std > 0, (rewards - rewards.mean(axis=1, keepdims=True)) / np.where(std > 0, std, 1), 0.0)
        logp = -rng.exponential(2.0, size=(8, k))
        if k > 1:
            logp[0, int(rng.integers(k))] = -np.inf
        measured = {"grad_alignment": float(rng.uniform(-1, 1)), "update_alignment": float(rng.uniform(-1, 1)),
                    "kl": float(rng.exponential(0.1)), "clip_fraction": float(rng.uniform(0, 0.3))}
        out.append(Batch(seq_logprobs=logp, advantages=adv.ravel(), batch_size=8, mean_reward=float(rewards.mean()),
                         row_candidates=rng.integers(0, k, size=8), candidates=k, measured=measured,
                         values=np.geomspace(0.05, 0.5, k)))
    return out


def _reward_run(reward: Reward, k: int, steps: int, seed: int):
    """(state, batch) pairs of a run: the state each batch is scored with."""
    state = reward.init()
    for batch in _reward_batches(k, steps, seed):
        yield state, batch
        state = reward(state, batch)[1]


@_named
def check_reward_interface(reward: Reward, k: int = 5, *, steps: int = 6, seed: int = 0) -> None:
    """A Reward with a non-empty name, a known kind, JSON options and a dict ``init()``."""
    _ensure(isinstance(reward, Reward), f"not a metahp.rewards.Reward but a {type(reward).__name__}")
    _ensure(isinstance(reward.name, str) and reward.name, f"name {reward.name!r} is not a non-empty string")
    _ensure(reward.kind in KINDS, f"unknown kind {reward.kind!r}; expected one of {KINDS}")
    _ensure(isinstance(reward.options, dict), f"options is a {type(reward.options).__name__}, not a dict")
    _ensure(_same(_json(reward.options, "options"), reward.options), "options change through JSON")
    _ensure(isinstance(reward.init(), dict), f"init() returned a {type(reward.init()).__name__}, not a dict")


@_named
def check_reward_purity(reward: Reward, k: int = 5, *, steps: int = 6, seed: int = 0) -> None:
    """``reward(state, batch)`` modifies neither the state nor the batch's arrays."""
    for step, (state, batch) in enumerate(_reward_run(reward, k, steps, seed)):
        before, batch_before = copy.deepcopy(state), copy.deepcopy(batch)
        reward(state, batch)
        _ensure(_same(state, before), f"__call__ mutated its input state at step {step}: {before!r} -> {state!r}")
        _ensure(all(_same(getattr(batch, f), getattr(batch_before, f)) for f in ("seq_logprobs", "advantages")),
                f"__call__ mutated the batch at step {step}")


@_named
def check_reward_output(reward: Reward, k: int = 5, *, steps: int = 6, seed: int = 0) -> None:
    """Returns (feedback, new state): a finite float array [K] for ``per_candidate``, a finite float for
    ``chosen``; the new state a dict."""
    for step, (state, batch) in enumerate(_reward_run(reward, k, steps, seed)):
        result = reward(state, batch)
        _ensure(isinstance(result, tuple) and len(result) == 2, f"__call__ returned {type(result).__name__}, "
                                                                f"not (feedback, state)")
        feedback, new = result
        if reward.kind == "per_candidate":
            _ensure(isinstance(feedback, np.ndarray) and feedback.shape == (k,) and feedback.dtype.kind == "f",
                    f"per_candidate feedback at step {step} is {type(feedback).__name__} "
                    f"{getattr(feedback, 'shape', '')}, expected a float array of shape ({k},)")
            _ensure(np.isfinite(feedback).all(), f"feedback not finite at step {step}: {feedback}")
        else:
            _ensure(isinstance(feedback, float), f"chosen feedback at step {step} is a {type(feedback).__name__}, "
                                                 f"expected a float")
            _ensure(math.isfinite(feedback), f"feedback not finite at step {step}: {feedback}")
        _ensure(isinstance(new, dict), f"new state at step {step} is a {type(new).__name__}, not a dict")


@_named
def check_reward_json_round_trip(reward: Reward, k: int = 5, *, steps: int = 6, seed: int = 0) -> None:
    """Every state is strict JSON that comes back equal (no tuples, numpy scalars, NaN), and scoring a batch from
    the JSON copy gives the same feedback and next state as from the original."""
    for step, (state, batch) in enumerate(_reward_run(reward, k, steps, seed)):
        loaded = _json(state, f"state at step {step}")
        _ensure(_same(loaded, state), f"state at step {step} changes through JSON: {state!r} -> {loaded!r}")
        (a, sa), (b, sb) = reward(state, batch), reward(loaded, batch)
        _ensure(np.array_equal(np.asarray(a), np.asarray(b)) and _same(_json(sa, "state"), _json(sb, "state")),
                f"scoring from the JSON copy of step {step}'s state differs")


@_named
def check_reward_state(reward: Reward, k: int = 5, *, steps: int = 6, seed: int = 0) -> None:
    """``reward.check_state`` (run before a policy loads a state) accepts ``init()`` and every state the reward
    produces, as JSON gives them back."""
    for step, (state, _) in enumerate(_reward_run(reward, k, steps, seed)):
        try:
            reward.check_state(json.loads(json.dumps(state)))
        except StateError as err:
            raise AssertionError(f"check_state refused {'init()' if step == 0 else f'the state of step {step}'}: "
                                 f"{err}") from None


@_named
def check_reward_zero_advantages(reward: Reward, k: int = 5, *, steps: int = 6, seed: int = 0) -> None:
    """Per-candidate rewards: a batch whose advantages are all zero gives all-zero feedback (only advantages carry
    preference); for a reward that reads measurements (``needs_measured``), one whose measurements could not be taken
    (None) as well. Scalar (``chosen``) rewards are judged on the task reward instead: skipped."""
    if reward.kind != "per_candidate":
        return
    for step, (state, batch) in enumerate(_reward_run(reward, k, steps, seed)):
        unmeasured = {**(batch.measured or {}), **dict.fromkeys(reward.needs_measured)}
        zero = dataclasses.replace(batch, advantages=np.zeros_like(batch.advantages), measured=unmeasured)
        feedback = np.asarray(reward(state, zero)[0])
        _ensure(np.array_equal(feedback, np.zeros(k)), f"all-zero advantages gave feedback {feedback} at step {step}")


REWARD_CHECKS = (check_reward_interface, check_reward_output, check_reward_purity, check_reward_json_round_trip,
                 check_reward_state, check_reward_zero_advantages)


def check_reward(reward: Reward, k: int = 5, steps: int = 6, seed: int = 0) -> None:
    """Run every reward check (``REWARD_CHECKS``, in that order) on ``steps`` random batches of K candidates."""
    for check in REWARD_CHECKS:
        check(reward, k, steps=steps, seed=seed)
