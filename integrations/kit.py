"""The adapter kit: what every adapter of a trainer metahp does not own needs, written once.

An adapter says where its trainer keeps each copy of a knob and where the logits are; the kit does the rest:

- ``Copies``: the registry of a knob's copies inside the trainer (apply a value to all, read them back);
- ``KitAdapter``: a base class holding the knob layer (``metahp.knobset.KnobSet``), the values applied now and for
  evaluation, the history, and one versioned state envelope (written atomically, checked whole, the file named on
  error);
- ``Processes``: agreement and gathering across processes (every rank makes the same update and the same draw);
- ``candidate_logprobs``: the no-grad likelihood forward of a transformers model (chunked, eval mode, informative
  rows only), with ``eval_mode`` and ``dropout_warning``;
- per-row helpers: ``per_row_generate`` (a per-row logits processor for transformers' ``generate``),
  ``per_request_params`` (one sampling setting per request, as vLLM takes them), ``RowScaler`` (rows scaled by
  1 / T ahead of a fused LM head), ``replaced`` and ``single_call`` (a trainer's generate swapped for the
  duration, called exactly once).

A minimal adapter subclasses ``KitAdapter``, fills ``Copies`` in ``__init__``, and calls ``draw_and_apply`` before
its trainer generates and ``self.knobset.update(...)`` after (docs/extending.md).
"""

from __future__ import annotations

import contextlib
import math
import os
import warnings
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch

from metahp.errors import ConfigError, InputError, StateError
from metahp.knobs import KNOBS, active_truncations, truncation_names
from metahp.knobs.base import CHUNK_ELEMENTS
from metahp.knobs.temperature import PerRowTemperature
from metahp.knobset import KnobSet
from metahp.policy import MetaPolicy
from metahp.rows import informative, is_per_row
from metahp.state import in_file, read_json, require_finite, require_keys, write_json_atomic

STATE_FILE = "metahp_state.json"
# The adapter state envelope's version; states written before it had no "format" key and load as version 1.
STATE_FORMAT = "metahp.adapter/1"


# -- the copies of a knob -----------------------------------------------------------------------------------------
class Copies:
    """Where a trainer keeps each copy of a knob: a label, a getter and a setter per copy.

    ``apply(name, value)`` writes one value to every copy of knob ``name``; ``read()`` returns {label: value} for
    every copy (what ``metahp.testing.check_adapter_copies`` compares with the value applied). A label ends with the
    knob's name (``generation_config.temperature``, ``fused_lm_head[0].temperature``).
    """

    def __init__(self):
        self._copies: dict[str, list[tuple[str, Callable[[], Any], Callable[[Any], None]]]] = {}

    def add(self, name: str, label: str, get: Callable[[], Any], set: Callable[[Any], None]) -> None:  # noqa: A002
        self._copies.setdefault(name, []).append((label, get, set))

    def attribute(self, name: str, label: str, obj: Any, attr: str | None = None) -> None:
        """A copy that is an attribute of ``obj`` (``attr`` defaults to the knob's name)."""
        attr = attr or name
        self.add(name, label, lambda: getattr(obj, attr), lambda v: setattr(obj, attr, v))

    def key(self, name: str, label: str, mapping: dict, key: str | None = None) -> None:
        """A copy that is an entry of a dict (``key`` defaults to the knob's name)."""
        key = key or name
        self.add(name, label, lambda: mapping.get(key), lambda v: mapping.__setitem__(key, v))

    def apply(self, name: str, value) -> None:
        for _, _, set_ in self._copies.get(name, ()):
            set_(value)

    def read(self) -> dict[str, Any]:
        return {label: get() for copies in self._copies.values() for label, get, _ in copies}


class Wrapped:
    """Methods of a trainer (or of an object it holds) replaced by an adapter's until ``restore``: the originals
    stay callable as ``wrapped[name]``, and an attribute the object had set on itself comes back as it was."""

    def __init__(self, target, replacements: dict[str, Callable]):
        self.target = target
        self.originals = {name: getattr(target, name) for name in replacements}
        self._own = {name: vars(target).get(name) for name in replacements}  # set on the instance before us
        for name, replacement in replacements.items():
            setattr(target, name, replacement)

    def __getitem__(self, name: str) -> Callable:
        return self.originals[name]

    def restore(self) -> None:
        for name, own in self._own.items():
            if own is None:
                vars(self.target).pop(name, None)
            else:
                setattr(self.target, name, own)
        self.originals.clear()


def check_framework_version(found: str, supported: tuple[tuple[int, int], tuple[int, int]], who: str,
                            package: str) -> None:
    """Refuse a framework version outside ``supported`` ([low, high) on (major, minor)): where a trainer keeps its
    copies of the knobs changes between versions. ``who``: the adapter ("metahp's TRL adapter"); ``package``: the
    name to install ("trl")."""
    try:
        major, minor = (int(p) for p in found.split(".")[:2])
    except ValueError:
        major = minor = -1
    low, high = supported
    if not low <= (major, minor) < high:
        raise ConfigError(f"{who} supports {package} {low[0]}.{low[1]}.x, found {package} {found}: where {package} "
                          f"keeps its copies of the temperature changes between versions. Install "
                          f"'{package}>={low[0]}.{low[1]},<{high[0]}.{high[1]}'.")


def backend_value(name: str, value):
    """A knob value as the trainer's backend takes it (``KNOBS[name].backend_value``: top_k an int, ...)."""
    cls = KNOBS.get(name)
    return cls.backend_value(value) if cls is not None else value


# -- processes ----------------------------------------------------------------------------------------------------
class Processes:
    """This process among ``count``: gathering tensors and checking that every rank drew the same value.

    ``gather(t)`` concatenates every rank's ``t`` along dim 0 (same shape on every rank); ``broadcast(box)``
    replaces ``box[0]`` by rank 0's. One process: both are the identity.
    """

    def __init__(self, count: int = 1, index: int = 0, gather: Callable | None = None,
                 broadcast: Callable | None = None, device: Any = None, gather_objects: Callable | None = None):
        self.count, self.index, self.device = count, index, device
        self._gather, self._broadcast, self._gather_objects = gather, broadcast, gather_objects

    @classmethod
    def of_accelerator(cls, accelerator) -> Processes:
        """The processes of an ``accelerate.Accelerator`` (TRL, and any trainer built on transformers' Trainer)."""
        def broadcast(box):
            from accelerate.utils import broadcast_object_list

            broadcast_object_list(box, from_process=0)

        def gather_objects(items):
            from accelerate.utils import gather_object

            return gather_object(items)

        return cls(accelerator.num_processes, accelerator.process_index, accelerator.gather, broadcast,
                   accelerator.device, gather_objects)

    def gather_objects(self, items: list) -> list:
        """Every rank's list of picklable items (e.g. prompt texts), concatenated in rank order."""
        if self.count == 1:
            return list(items)
        if self._gather_objects is None:
            raise ConfigError(f"{self.count} processes were given no way to gather objects: pass "
                              f"Processes(..., gather_objects=...).")
        return list(self._gather_objects(list(items)))

    def gather(self, tensor: torch.Tensor) -> torch.Tensor:
        if self.count == 1:
            return tensor
        return self._gather(tensor if self.device is None else tensor.to(self.device))

    def max(self, n: int) -> int:
        """The largest ``n`` over the ranks (e.g. forward passes: sharded models gather weights in every one)."""
        if self.count == 1:
            return n
        return int(self.gather(torch.tensor([n], device=self.device)).max())

    def agree(self, name: str, value) -> None:
        """Every rank draws from the same stream: check that they drew the same (a diverged state is an error)."""
        if self.count == 1:
            return
        box = [value]
        self._broadcast(box)
        if box[0] != value:
            raise StateError(f"rank {self.index} drew {name}={value} but rank 0 drew {box[0]}: the meta-policies "
                             f"diverged across ranks (different seeds or a state loaded on some ranks only).")


# -- the adapter base class ---------------------------------------------------------------------------------------
class KitAdapter:
    """The meta-policies wired into one trainer: values, copies, history and state, for any adapter.

    ``.policies`` maps knob names to MetaPolicy objects (one entry, e.g. "temperature+top_p", for a product);
    ``.policy`` is the only one when there is one. ``.value`` is the training value applied now (a dict
    {name: value} with several knobs; a list per completion with values per completion); ``.history`` lists one
    dict {"step", "value"} per generation (and "rows": counts per candidate with values per completion).

    A subclass sets ``self.copies`` (a ``Copies``) and ``self.processes``, and calls ``draw_and_apply(step)``
    before its trainer generates. Values per completion: every copy holds the knob's off value (1 for the
    temperature), the rows' own values act in per-row sampling and scoring.
    """

    who = "this adapter"

    def __init__(self, knobset: KnobSet, current: dict[str, Any], eval_value=None):
        self.knobset = knobset
        self.knob_names = tuple(knobset.knobs)
        self.per = knobset.per
        self.copies = Copies()
        self.processes = Processes()
        self._current = {name: self.to_backend(name, v) for name, v in current.items()}  # training values now
        self._configured = dict(self._current)  # the user's values: what detach() gives back
        self._eval = dict(self._current)  # the values evaluation generations use
        if eval_value is not None:
            names = list(self.knob_names)
            if len(names) > 1 and not isinstance(eval_value, dict):
                raise ConfigError(f"several knobs are adapted {names}: pass eval_value as a dict {{name: value}}.")
            given = eval_value if isinstance(eval_value, dict) else {names[0]: eval_value}
            unknown = set(given) - set(names)
            if unknown:
                raise ConfigError(f"eval_value names {sorted(unknown)}, which are not adapted {names}.")
            for name, v in given.items():
                self._eval[name] = self.to_backend(name, knobset.knobs[name].check_value(v))
        self.history: list[dict[str, Any]] = []

    def __repr__(self) -> str:
        return f"{type(self).__name__}(value={self.value}, policies={self.policies!r})"

    @property
    def policies(self) -> dict[str, MetaPolicy]:
        """The meta-policies by name (one entry, e.g. "temperature+top_p", for a product)."""
        return self.knobset.policies

    @property
    def policy(self) -> MetaPolicy:
        """The meta-policy, when one knob is adapted (else use ``.policies[name]``)."""
        return self.knobset.policy

    @property
    def unscored_rows(self) -> int:
        """Rows left out of meta-updates because the value that sampled them gave them likelihood 0."""
        return self.knobset.unscored_rows

    @property
    def value(self):
        """The training value applied now; a dict {name: value} when several knobs are adapted."""
        return _single(self._current)

    @property
    def eval_value(self):
        """The value(s) applied for evaluation generations."""
        return _single(self._eval)

    # -- the copies ---------------------------------------------------------------------------------------------
    def to_backend(self, name: str, value):
        """A knob value as this trainer's copies take it (default: ``KNOBS[name].backend_value``)."""
        return backend_value(name, value)

    def apply(self, value) -> None:
        """Write the value(s) to every copy (``value``: a number with one knob, or a dict {name: value}); a list of
        values per completion puts every copy at the knob's off value."""
        if not isinstance(value, dict):
            if len(self.knob_names) != 1:
                raise ConfigError(f"several knobs are adapted {list(self.knob_names)}: pass a dict {{name: value}}.")
            value = {self.knob_names[0]: value}
        for name, v in value.items():
            if name not in self.knob_names:
                raise ConfigError(f"{name!r} is not adapted here {list(self.knob_names)}.")
            self.copies.apply(name, self.to_backend(name, KNOBS[name].off_value if is_per_row(v) else v))

    def applied_values(self) -> dict[str, Any]:
        """Every copy's current value, for checks: all copies of one knob must be equal."""
        return self.copies.read()

    def detach(self) -> None:
        """Give every copy back the user's configured value (a subclass also unhooks its trainer)."""
        self.apply(self._configured)

    def draw_and_apply(self, step: int, rows: int | None = None, contexts=None) -> dict[str, Any]:
        """Draw the next values (``rows``: the batch's completions, used with values per row; ``contexts``: each
        prompt's context, with values per prompt), check that every rank drew the same, write them to every copy and
        record them in the history; returns {name: value(s)}."""
        drawn = self.knobset.draw(agree=self.processes.agree, rows=rows, contexts=contexts)
        if rows is None or self.per == "batch":
            self._current = {name: self.to_backend(name, v) for name, v in drawn.items()}
            self.history.append({"step": step, "value": self.value})
        else:
            name, values = next(iter(drawn.items()))
            self._current = {name: [float(v) for v in values]}
            grid = next(iter(self.policies.values())).knob.values  # per prompt: one policy per context, one grid
            self.history.append({"step": step, "value": sum(self._current[name]) / len(values),
                                 "rows": {f"{g:g}": sum(1 for v in values if abs(v - g) <= 1e-9 * max(1.0, abs(g)))
                                          for g in grid}})
        self.apply(self._current)
        return dict(self._current)

    # -- state --------------------------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """The state envelope: its format, the policies' states (random generators included), values, history."""
        policies = self.knobset.state_dict()  # one policy's state, or {"policies": {name: state}}
        return {"format": STATE_FORMAT, **({"policy": policies} if len(self.policies) == 1 else policies),
                "value": self.value, "history": self.history}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore ``state_dict()`` output, all or nothing: policies, the values applied (written to every copy
        again) and the history; a malformed state raises a StateError and leaves the adapter as it was."""
        current, history = self._check_state(state)
        # one policy's state nested under "policy"; several spread as the knob layer writes them ("per", "policies")
        policies = {k: state[k] for k in ("per", "policies") if k in state} if "policies" in state else state["policy"]
        self.knobset.load_state_dict(policies)
        self._current, self.history = current, history
        self.apply(self._current)

    def save(self, folder: str) -> str:
        """Write ``folder/metahp_state.json`` atomically (never half-written); returns its path."""
        os.makedirs(folder, exist_ok=True)
        path = os.path.join(folder, STATE_FILE)
        write_json_atomic(path, self.state_dict())
        return path

    def load(self, folder: str) -> None:
        """Restore the meta-policies from ``folder/metahp_state.json`` (done for you on resume).

        All or nothing: the whole file is checked first; a truncated or malformed file raises a StateError that
        names it, and the adapter (policies, values, history) is left as it was."""
        path = os.path.join(folder, STATE_FILE)
        if not os.path.exists(path):
            warnings.warn(f"{path} not found: the checkpoint was saved without metahp, so the meta-policy starts "
                          f"afresh instead of continuing.", stacklevel=2)
            return
        state = read_json(path, f"metahp {self.who} state")
        in_file(path, lambda: self.load_state_dict(state))

    def _check_state(self, state) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        """The envelope's own fields of a saved state: its format, which policies, the values applied, the
        history."""
        if not isinstance(state, dict) or ("policy" not in state and "policies" not in state):
            raise StateError(f"not a metahp {self.who} state; delete it or resume without it.")
        if "format" in state and state["format"] != STATE_FORMAT:
            raise StateError(f"format {state['format']!r} is not {STATE_FORMAT!r}: the state was written by another "
                             f"metahp version.")
        several = "policies" in state
        expected = {"policies" if several else "policy", "value", "history"} | ({"format"} & set(state))
        if several:
            expected |= {"per"} & set(state)  # values per prompt: one policy per context
        require_keys(state, expected, "state")
        saved = state["policies"] if several else {"(one knob)": None}
        if several and not isinstance(saved, dict):
            raise StateError(f"policies must be a mapping of knob name -> policy state, got {type(saved).__name__}.")
        if (several and set(saved) != set(self.policies)) or (not several and len(self.policies) != 1):
            raise StateError(f"the state adapts knobs {sorted(saved)}, this adapter {sorted(self.policies)}; attach "
                             f"the same knobs as the saved run.")
        value = state["value"]
        current = dict(value) if isinstance(value, dict) else {self.knob_names[0]: value}
        if set(current) != set(self.knob_names):
            raise StateError(f"value={value!r} names knobs {sorted(current)}, this adapter {list(self.knob_names)}.")
        for name, v in current.items():
            if is_per_row(v) and self.per == "batch":  # the knob layer refuses the policies' mismatch too
                raise StateError(f"value[{name!r}] holds one value per completion but this adapter draws one per "
                                 f"batch: attach with per='completion', as the saved run did.")
            if is_per_row(v):
                current[name] = [require_finite(x, f"value[{name!r}][{i}]") for i, x in enumerate(v)]
            elif v is not None:  # None: the knob was never set (the trainer's "not configured")
                require_finite(v, f"value[{name!r}]")
                current[name] = self.to_backend(name, v)
        history = state["history"]
        if not isinstance(history, list) or not all(isinstance(h, dict) and {"step", "value"} <= set(h)
                                                    for h in history):
            raise StateError("history must be a list of {'step', 'value'} dicts.")
        return current, list(history)


def _single(values: dict[str, Any]):
    return next(iter(values.values())) if len(values) == 1 else dict(values)


# -- sampling settings the likelihoods model ---------------------------------------------------------------------
# Truncations transformers applies that no built-in knob models.
OTHER_TRUNCATIONS = ("top_h", "typical_p", "epsilon_cutoff", "eta_cutoff")
# transformers' generation settings that change the sampled distribution in a way no knob's likelihood models,
# with their "off" value.
UNMODELLED = {"repetition_penalty": 1.0, "no_repeat_ngram_size": 0, "encoder_repetition_penalty": 1.0,
              "encoder_no_repeat_ngram_size": 0, "bad_words_ids": None, "suppress_tokens": None,
              "begin_suppress_tokens": None, "sequence_bias": None, "renormalize_logits": False}


def check_sampling_settings(configured: dict[str, Any], extra: dict[str, Any], names: Sequence[str],
                            likelihoods: bool, where: str) -> None:
    """Refuse sampling settings the candidates' likelihoods cannot follow, before any generation runs.

    configured: the trainer's value of every knob it can sample with ({name: value}); extra: its other generation
    settings (transformers' keywords); names: the adapted knobs; likelihoods: whether an updater scores candidates.
    - another truncation than the adapted one, or several fixed ones: metahp scores one truncation at a time;
    - a truncation no knob models (``OTHER_TRUNCATIONS``): refused;
    - a setting that reshapes the distribution (``UNMODELLED``: repetition penalties, banned tokens) or a registered
      knob the trainer has no field for: refused when likelihoods score the candidates (they would score another
      distribution than the one sampled), warned about otherwise (it acts on every candidate alike).
    """
    other = [k for k in OTHER_TRUNCATIONS if extra.get(k) is not None]
    if other:
        raise ConfigError(f"{where} sets {other}, a truncation metahp does not model, so it cannot score candidates "
                          f"of {list(names)}; remove it (top_p, top_k and min_p are modelled).")
    active = dict(active_truncations(configured))
    adapted = [n for n in names if n in truncation_names()]
    if adapted:
        fixed = {n: v for n, v in active.items() if n != adapted[0]}
        if fixed:
            off = ", ".join(f"{n}={KNOBS[n].off_value}" for n in fixed)
            raise ConfigError(f"metahp adapts {adapted[0]} but the config also truncates with {fixed}: samplers apply "
                              f"top_k, top_p and min_p in sequence and metahp scores one truncation at a time. Set "
                              f"{off} in {where}.")
    elif len(active) > 1:
        raise ConfigError(f"the config truncates with {active} at once; metahp scores the temperature with one "
                          f"truncation applied after it. Keep one of top_p, top_k, min_p.")
    found = {k: v for k, v in extra.items() if k in UNMODELLED and v != UNMODELLED[k]}
    found |= {k: v for k, v in extra.items() if k in KNOBS and k not in configured}
    if found and likelihoods:
        raise ConfigError(f"{where} sets {found}, which change the sampled distribution in a way metahp's "
                          f"likelihoods do not model: the candidates would be scored on another distribution than "
                          f"the one sampled. Remove them, or use an updater that learns from rewards or advantages "
                          f"alone (e.g. updater='exp3').")
    if found:
        warnings.warn(f"metahp: {where} sets {found}; they change the sampled distribution, which this updater does "
                      f"not score (it learns from rewards or advantages), so they act on every candidate alike.",
                      stacklevel=5)


def likelihood_source(likelihoods: str, plain: bool, plain_what: str) -> str:
    """Where candidates' likelihoods come from: "generate" (captured while transformers' generate samples: no extra
    forward; ``plain`` says whether the trainer generates that way, ``plain_what`` names it), "forward" (one no-grad
    forward: any backend) or "auto" (generate where possible)."""
    if likelihoods not in ("auto", "generate", "forward"):
        raise ConfigError(f"likelihoods={likelihoods!r}; use 'auto', 'generate' or 'forward'.")
    if likelihoods == "generate" and not plain:
        raise ConfigError(f"likelihoods='generate' needs {plain_what}; use likelihoods='forward' or 'auto'.")
    if likelihoods == "auto":
        return "generate" if plain else "forward"
    return likelihoods


# -- the likelihood forward of a transformers model ---------------------------------------------------------------
@torch.no_grad()
def candidate_logprobs(model, knobs: Sequence, *, prompt_ids: torch.Tensor, prompt_mask: torch.Tensor,
                       completion_ids: torch.Tensor, completion_mask: torch.Tensor, advantages: torch.Tensor,
                       vocab: int, max_rows: int, scored_mask: torch.Tensor | None = None,
                       processes: Processes | None = None,
                       autocast: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext,
                       ) -> torch.Tensor:
    """l[B, K]: each completion's length-normalised log-likelihood under every candidate of every knob (columns
    side by side in ``knobs`` order). Rows with zero advantage are left at 0, never computed. ``scored_mask``: the
    completion tokens to score, where it differs from the attention mask (tool outputs the policy did not sample).

    One no-grad forward of the informative rows, in chunks of at most ``max_rows`` rows and about CHUNK_ELEMENTS
    logits, with raw logits at completion positions only (``logits_to_keep = C + 1``: the logit at position t
    predicts token t + 1). With several processes every rank runs as many forwards (sharded models, FSDP or
    ZeRO-3, gather weights in each one): a rank without rows left runs a dummy one. Call it inside ``eval_mode``:
    the logits that sampled the batch had no dropout."""
    n_rows, n_keep = completion_ids.shape
    ids = torch.cat([prompt_ids, completion_ids], dim=1)
    attention_mask = torch.cat([prompt_mask, completion_mask], dim=1)
    scored_mask = completion_mask if scored_mask is None else scored_mask
    out = torch.zeros(n_rows, sum(len(k) for k in knobs), dtype=torch.float32)
    rows = torch.nonzero(informative(advantages)).flatten()
    per_chunk = max(1, min(max_rows, CHUNK_ELEMENTS // ((n_keep + 1) * vocab)))
    n_chunks = math.ceil(len(rows) / per_chunk)
    if processes is not None:
        n_chunks = processes.max(n_chunks)
    for i in range(n_chunks):
        chunk = rows[i * per_chunk:(i + 1) * per_chunk]
        dummy = len(chunk) == 0  # this rank has no rows left but others do
        take = rows.new_zeros(1) if dummy else chunk
        with autocast():
            logits = model(input_ids=ids[take], attention_mask=attention_mask[take], logits_to_keep=n_keep + 1,
                           use_cache=False).logits[:, :-1]
        if not dummy:
            scored = [k.sequence_logprobs(logits, completion_ids[take], scored_mask[take]) for k in knobs]
            out[chunk.cpu()] = torch.cat(scored, dim=1).to(out.device)
    return out


@contextlib.contextmanager
def eval_mode(model) -> Iterator:
    """``model.eval()`` for the duration, then the mode of every submodule as it was."""
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield model
    finally:
        for module, training in modes:
            module.training = training


def active_dropout(model) -> list[str]:
    """Where dropout acts in train mode: nn.Dropout modules with p > 0 and config fields such as
    attention_dropout > 0 (applied functionally inside attention, which nn.Dropout settings do not reach)."""
    found = sorted({f"{type(m).__name__}(p={m.p})" for m in model.modules()
                    if isinstance(m, torch.nn.Dropout) and m.p > 0})
    config = getattr(model, "config", None)
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    for key, value in sorted(vars(text).items() if text is not None else ()):
        if key.endswith("dropout") and isinstance(value, int | float) and not isinstance(value, bool) and value > 0:
            found.append(f"config.{key}={value}")
    return found


def dropout_warning(model, setting: str) -> str | None:
    """The warning for a model that samples in train mode with dropout active (None when none is); ``setting``
    names the trainer's switch that turns it off, e.g. "GRPOConfig(disable_dropout=True)"."""
    dropout = active_dropout(model)
    if not dropout:
        return None
    return (f"metahp: dropout is active while training ({', '.join(dropout)}). The trainer samples in train mode, "
            f"so each batch's sampling logits carry one dropout mask that no forward pass can reproduce: the "
            f"likelihoods captured during generate and the forward path's (eval mode, no dropout) differ, and "
            f"neither is the policy the loss trains. For exact likelihoods set {setting} and the model config's "
            f"attention dropout to 0.")


# -- values per row: sampling -------------------------------------------------------------------------------------
@contextlib.contextmanager
def replaced(target, name: str, replacement: Callable) -> Iterator:
    """``target.<name>`` is ``replacement`` for the duration; then whatever it was (the class's method, or an
    instance attribute someone set before)."""
    own = target.__dict__.get(name)
    setattr(target, name, replacement)
    try:
        yield
    finally:
        if own is None:
            delattr(target, name)  # (a class's __dict__ is read-only: delattr works on classes and instances)
        else:
            setattr(target, name, own)


@contextlib.contextmanager
def single_call(target, name: str, replacement: Callable, what: str) -> Iterator:
    """``replaced``, and exactly one call of it inside the block (else rows would be sampled at the copies' value
    but scored at their own): a ConfigError naming ``what`` otherwise."""
    calls = []

    def counted(*args, **kwargs):
        calls.append(1)
        return replacement(*args, **kwargs)

    with replaced(target, name, counted):
        yield
    if len(calls) != 1:
        raise ConfigError(f"{what} was called {len(calls)} times for one batch; values per completion need exactly "
                          f"one call over all rows. Use per='batch'.")


def prompt_text(prompt) -> str:
    """A prompt as a per-prompt context reads it: the text itself, or a conversation's message contents joined by
    newlines (a chat prompt is a list of {"role", "content"} messages)."""
    if isinstance(prompt, str):
        return prompt
    if isinstance(prompt, list | tuple) and all(isinstance(m, dict) and "content" in m for m in prompt):
        return "\n".join(m["content"] if isinstance(m["content"], str) else str(m["content"]) for m in prompt)
    raise InputError(f"a prompt for a per-prompt context must be a text or a list of chat messages, got "
                     f"{type(prompt).__name__}.")


def group_prompts(prompts: Sequence, group_size: int, processes: Processes) -> list[str]:
    """The text of each group's prompt across the global batch (every rank's rows in rank order, groups of
    ``group_size`` consecutive rows that share one prompt), for a per-prompt context that reads prompts."""
    texts = processes.gather_objects([prompt_text(p) for p in prompts])
    if len(texts) % group_size:
        raise InputError(f"{len(texts)} rows do not split into groups of {group_size}.")
    groups = [texts[i:i + group_size] for i in range(0, len(texts), group_size)]
    if any(len(set(g)) != 1 for g in groups):
        raise InputError(f"values per prompt need each group's {group_size} rows to share one prompt, consecutive "
                         f"in the batch; a group mixes prompts.")
    return [g[0] for g in groups]


def per_row_generate(generate: Callable, rows: torch.Tensor, who: str) -> Callable:
    """transformers' ``model.generate`` with row b of every step's scores divided by rows[b] (a logits processor
    ahead of the truncation warpers; generation's own temperature must be 1)."""

    def generate_per_row(*args, **kwargs):
        prompt = kwargs.get("input_ids", args[0] if args else None)
        if prompt is None or prompt.size(0) != len(rows):
            raise ConfigError(f"{who} generated {None if prompt is None else prompt.size(0)} rows in one call but "
                              f"this process drew {len(rows)} values per completion: only single-turn generation "
                              f"(one generate call per batch) is supported.")
        config = kwargs.get("generation_config")
        if config is not None and getattr(config, "temperature", 1.0) not in (None, 1.0):
            raise ConfigError(f"generation_config.temperature is {config.temperature} while values per completion "
                              f"are applied: something set it after metahp (leave the temperature to metahp).")
        processors = list(kwargs.pop("logits_processor", None) or [])
        return generate(*args, logits_processor=[PerRowTemperature(rows.to(prompt.device)), *processors], **kwargs)

    return generate_per_row


def per_request_params(sampling_params, values: Sequence[float], n_prompts: int, who: str) -> list:
    """One vLLM ``SamplingParams`` per prompt, prompt b's at temperature values[b] (clones of the one given)."""
    if sampling_params is None or isinstance(sampling_params, list | tuple) or n_prompts != len(values):
        raise ConfigError(f"{who} passed {n_prompts} prompts and {type(sampling_params).__name__} sampling settings "
                          f"for {len(values)} values per completion: this generates differently from what metahp "
                          f"supports; use per='batch'.")
    if getattr(sampling_params, "temperature", 1.0) != 1.0 or getattr(sampling_params, "n", 1) != 1:
        raise ConfigError(f"vLLM's sampling settings have temperature={sampling_params.temperature}, "
                          f"n={sampling_params.n} while values per completion are applied (metahp expects 1 and 1: "
                          f"one completion per prompt, each at its own temperature).")
    out = []
    for value in values:
        params = sampling_params.clone()
        params.temperature = value
        out.append(params)
    return out


# -- values per row: scoring --------------------------------------------------------------------------------------
class RowScaler:
    """Row b's logits divided by t[b] by scaling its last hidden states ahead of an LM head: exact for a head
    without bias or soft-capping ((h / t) W^T = (h W^T) / t), which the adapter checks when it attaches.

    Forward hooks on ``backbones`` (the modules whose output the head projects); ``with scaler.rows(t):`` scales
    the forwards inside the block, consuming t chunk by chunk in row order, and checks that exactly len(t) rows
    went through. Outside a block the hooks do nothing (generation, other forwards)."""

    def __init__(self, backbones: Sequence[torch.nn.Module], who: str):
        self.who = who
        self._pending: list | None = None  # [rows, rows done]
        self._hooks = [b.register_forward_hook(self._scale) for b in backbones]

    @contextlib.contextmanager
    def rows(self, t: torch.Tensor) -> Iterator:
        self._pending = [t, 0]
        try:
            yield
            done = self._pending[1]
        finally:
            self._pending = None
        if done != len(t):
            raise ConfigError(f"{self.who}'s log-prob forward ran its backbone over {done} rows, not {len(t)}: the "
                              f"temperatures per completion would be misapplied; use per='batch'.")

    def remove(self) -> None:
        for hook in self._hooks:
            hook.remove()
        self._hooks = []

    def _scale(self, module, args, output):
        if self._pending is None:
            return None
        rows, done = self._pending
        hidden = output.last_hidden_state if hasattr(output, "last_hidden_state") else output[0]
        t = rows[done:done + hidden.size(0)]
        if len(t) != hidden.size(0):
            raise ConfigError(f"{self.who}'s log-prob forward passed more rows than the {len(rows)} temperatures it "
                              f"was given; use per='batch'.")
        self._pending[1] = done + hidden.size(0)
        # Divide in float32 (a bf16 copy of 0.7 is 0.6992: the row would be scored at another temperature than it
        # was sampled at), on the hidden states' device (a model split across devices ends the backbone elsewhere).
        t = t.to(device=hidden.device, dtype=torch.float32).view(-1, *([1] * (hidden.dim() - 1)))
        scaled = (hidden.float() / t).to(hidden.dtype)
        if hasattr(output, "last_hidden_state"):
            output.last_hidden_state = scaled
            return output
        return (scaled, *output[1:])
