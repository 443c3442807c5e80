"""metahp on TRL's GRPOTrainer: ``adapter = metahp.adapt(trainer)`` learns sampling knobs online.

Knobs: ``"temperature"`` (default), one truncation knob (``"top_p"``, ``"top_k"``, ``"min_p"``), or the
temperature and one truncation together (``knob=("temperature", "top_p")``): factored by default (one meta-policy
per knob), or ``combine="product"`` (one meta-policy over the product of the two grids, metahp.knobs.ProductKnob;
for small grids: it has K_T * K_c candidates and is refused when that exceeds the generation batch).

What happens at every training generation (TRL's ``_generate_and_score_completions``, wrapped):

1. before: draw each knob's value from its meta-policy (with the product, one draw gives both) and write it to
   EVERY copy TRL keeps:
   ``trainer.generation_config`` (transformers sampling), ``trainer.vllm_generation`` (vLLM sampling), and for the
   temperature also the value TRL 1.16 froze in the fused LM head of the policy and of the reference model (so
   loss, old and reference log-probs of this batch are computed at T). The values then stay fixed until the next
   generation: a buffered batch (steps_per_generation > 1, num_iterations > 1) is trained with the values it was
   sampled with.
2. TRL generates, scores and computes advantages as usual (no extra generation).
3. after: the meta-update from that batch. Each knob's candidates are scored from the raw logits with the other
   sampling settings at the values this batch used (a truncation knob after the batch's temperature; the
   temperature with the batch's truncation, if any, after it; a product candidate (T, c) is c after T).
   Rows with zero advantage are skipped. The [B, K]
   likelihoods and advantages of every rank are gathered, so every rank makes the same update and draws the same
   next values. Metrics go to TRL's training metrics buffer (TensorBoard / W&B see them); the policies'
   state is saved as ``metahp_state.json`` in every checkpoint-N folder and restored by
   ``trainer.train(resume_from_checkpoint=...)``.

Evaluation generations use the user's own settings (``args.temperature`` / ``args.top_p`` ..., or ``eval_value=``),
make no meta-update, and the training values are restored when evaluation ends.

TRL recomputes UNtruncated log-probs for its loss (trl issue 6789); metahp does not change that: see docs/trl.md.

``per="completion"``: one temperature per completion instead (each group mixing the grid as the meta-policy says):
every copy above stays at 1, generate gets a per-row logits processor (vLLM colocate: one SamplingParams per
prompt), the batch carries each row's temperature to
the loss's micro-batches, and each of TRL's log-prob forwards scales row b's hidden states by 1 / t[b] before the
fused head (exact without a head bias or soft-capping, checked at attach). The update learns from the rows'
advantages (informativeness, within-group advantage); see docs/trl.md.

>>> adapter = metahp.adapt(trainer, "temperature", "tampo")      # doctest: +SKIP
>>> trainer.train(); adapter.policy.probs                        # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import math
import os
import time
import warnings
from typing import Any

import torch

from metahp.errors import ConfigError, StateError
from metahp.knobs import KNOBS, Knob, active_truncations, truncation_names
from metahp.knobs.base import CHUNK_ELEMENTS
from metahp.knobs.temperature import PerRowTemperature
from metahp.knobset import KnobSet
from metahp.policy import MetaPolicy
from metahp.rows import informative
from metahp.state import in_file, read_json, require_finite, require_keys, write_json_atomic

from . import trl_1_16 as trl_compat
from .trl_capture import GenerateCapture, sequence_logprobs

SUPPORTED_TRL = trl_compat.SUPPORTED_TRL
STATE_FILE = "metahp_state.json"
# Values per completion: the batch key carrying each row's temperature from generation to the loss's micro-batch.
ROW_TEMPERATURE = "metahp_temperature"
# Truncations transformers applies that only GRPOConfig.generation_kwargs can set; metahp models none of them
# (unless one is registered as a knob: then it is scored like the others).
OTHER_TRUNCATIONS = ("top_h", "typical_p", "epsilon_cutoff", "eta_cutoff")


def supports(trainer) -> bool:
    """True for ``trl.GRPOTrainer`` and its subclasses (without importing trl)."""
    return any(cls.__name__ == "GRPOTrainer" and cls.__module__.startswith("trl.") for cls in type(trainer).__mro__)


def attach(trainer, *, knob="temperature", updater="exp3", values=None, seed=None, eval_value=None,
           likelihoods="auto", combine="factored", per="batch", **options) -> TRLAdapter:
    """Attach meta-policies over ``knob`` to a ``trl.GRPOTrainer``; see the module docstring.

    knob: "temperature", "top_p", "top_k", "min_p" (or a Knob instance), or a tuple of one temperature and one
        truncation knob, e.g. ("temperature", "top_p") (then pass each grid in a Knob instance, not values=).
    combine: with two knobs, "factored" (one meta-policy per knob, each scored with the other at the batch's
        value) or "product" (one meta-policy over every pair of values: it can learn interactions, e.g. a hot
        temperature with a tight nucleus, at K_T * K_c candidates per batch).
    seed: the first meta-policy's seed (the next knob's is seed + 1, ...); None uses ``trainer.args.seed`` (the same
        on every rank, so all ranks agree).
    eval_value: the knob's value for evaluation generations (a dict {name: value} with several knobs); None keeps
        the user's configured value.
    likelihoods: where the candidates' likelihoods come from: "generate" (the logits transformers' generate
        sampled from, captured step by step: no extra forward; TRL's plain transformers path only), "forward" (one
        no-grad forward over the non-zero-advantage rows: any generation backend, vLLM included), or "auto"
        (generate where possible, else forward).
    per: "batch" (one value per generation batch) or "completion" (one temperature per completion, each group
        mixing the grid; sampled with a per-row logits processor, scored by scaling each row's hidden states before
        TRL's fused LM head; transformers generation or vLLM colocate, rewards from advantages: docs/trl.md).
    options: passed to ``metahp.meta_policy`` (e.g. alpha=0.05, nucleus_p=0.7, reward=..., selection=...).
    """
    return TRLAdapter(trainer, knob=knob, updater=updater, values=values, seed=seed, eval_value=eval_value,
                      likelihoods=likelihoods, combine=combine, per=per, **options)


class TRLAdapter:
    """The meta-policies wired into one GRPOTrainer.

    ``.policies`` maps knob names to MetaPolicy objects (one entry, "temperature+top_p", for a product);
    ``.policy`` is the only one when there is one. ``.value`` is the training value applied now (a dict
    {name: value} with several knobs, product or not); ``.history`` lists them, one dict {"step", "value"} per
    generation (``step`` = trainer.state.global_step).
    """

    def __init__(self, trainer, *, knob="temperature", updater="exp3", values=None, seed=None, eval_value=None,
                 likelihoods="auto", combine="factored", per="batch", **options):
        trl_compat.check_version()
        if per == "prompt":
            raise ConfigError("per='prompt' learns from each prompt's past pass rate, which TRL's GRPOTrainer does "
                              "not keep; values per prompt work with metahp's reference trainer "
                              "(metahp.lab.grpo.GRPOTrainer). Use per='completion' or per='batch'.")
        if per == "completion":
            _check_per_completion(trainer)
            if updater == "uniform" and options.get("reward") is None:
                # The mixture ignores its feedback; informativeness needs no likelihoods and its metrics say how
                # often each candidate's completions carried the gradient (the ablation's reading).
                options["reward"] = "informativeness"
        knobs = (knob,) if isinstance(knob, str | Knob) else tuple(knob)
        names = [k.name if isinstance(k, Knob) else k for k in knobs]
        args = trainer.args
        # The knob layer builds the meta-policies (and checks the knob list, the grids and a product's size).
        try:
            self.knobset = KnobSet(
                knobs, updater, values, args.seed if seed is None else seed, combine=combine,
                supported=_supported_knobs(trainer), who="metahp's TRL adapter",
                batch_size=args.generation_batch_size,
                batch_what="a generation batch (GRPOConfig.generation_batch_size = per_device_train_batch_size x "
                           "processes x steps_per_generation)", per=per, group_size=args.num_generations, **options)
        except ConfigError as err:
            if per == "completion" and "per-candidate updater" in str(err):
                raise ConfigError(f"{err} With TRL, values per completion learn from advantages: "
                                  f"updater='softmax_gradient' (or 'tampo') with reward='informativeness' or "
                                  f"'within_group_advantage', or updater='uniform'.") from err
            raise
        self.per = self.knobset.per
        if self.per == "completion" and self.knobset.needs_likelihoods:
            raise ConfigError(f"values per completion in TRL learn from advantages alone (reward='informativeness' or "
                              f"'within_group_advantage', or updater='uniform'), not from "
                              f"{self.policy.reward.name!r}, which needs each completion's likelihood under every "
                              f"candidate; metahp's reference trainer has that (metahp.lab.grpo.GRPOTrainer).")
        for name in names:
            _check_trainer(trainer, name)
        _check_truncations(trainer, names)
        if getattr(trainer, "_metahp_adapter", None) is not None:
            raise ConfigError("this trainer already has a metahp adapter; call adapter.detach() before attaching "
                              "another one.")
        self.trainer = trainer
        self.knob_names = tuple(names)
        self.knob_name = names[0] if len(names) == 1 else "+".join(names)
        self.likelihoods = _check_likelihoods(trainer, likelihoods)
        self.likelihood_source: str | None = None  # where the last meta-update's likelihoods came from
        self._captured: torch.Tensor | None = None
        # The log-prob temperature lives in closures of TRL's fused LM head: find them once, write them per batch.
        self._cells = trl_compat.fused_temperature_cells(trainer) if "temperature" in names else []
        self._current = {name: _config_value(trainer, name) for name in names}  # training values applied now
        self._eval = dict(self._current)
        if eval_value is not None:
            given = eval_value if isinstance(eval_value, dict) else {names[0]: eval_value}
            if len(names) > 1 and not isinstance(eval_value, dict):
                raise ConfigError(f"several knobs are adapted {names}: pass eval_value as a dict {{name: value}}.")
            unknown = set(given) - set(names)
            if unknown:
                raise ConfigError(f"eval_value names {sorted(unknown)}, which are not adapted {names}.")
            for name, v in given.items():
                self._eval[name] = self.knobset.knobs[name].check_value(v)
        self.history: list[dict[str, Any]] = []
        # wall time of each meta-update, likelihood capture during generate included (the adapter's overhead)
        self.update_seconds: list[float] = []
        self._capture_seconds = 0.0
        # Values per completion: this process's rows' temperatures while TRL scores them (None: one value for the
        # batch), and [rows, next row] while a log-prob forward consumes them chunk by chunk.
        self._row_values: torch.Tensor | None = None
        self._scaling: list | None = None
        self._hooks = []
        replacements = {
            "_generate_and_score_completions": self._generate_and_score_completions,
            "evaluation_loop": self._evaluation_loop,
            "_save_checkpoint": self._save_checkpoint,
            "_load_optimizer_and_scheduler": self._load_optimizer_and_scheduler}
        if self.per == "completion":
            backbones = trl_compat.fused_backbones(trainer)  # checks the heads first: nothing is wrapped on refusal
            replacements.update({"_compute_loss": self._compute_loss,
                                 "_get_per_token_logps_and_entropies": self._get_per_token_logps_and_entropies})
            self._hooks = [b.register_forward_hook(self._scale_rows) for _, b in backbones]
        self._wrapped = trl_compat.Wrapped(trainer, replacements)
        trainer._metahp_adapter = self
        if "temperature" in names and getattr(trainer.args, "use_adaptive_entropy", False):
            warnings.warn("metahp: TRL's adaptive entropy controller (use_adaptive_entropy=True) measures the "
                          "entropy at the temperature metahp draws for each batch (or each completion), so it "
                          "reacts to metahp's choice (a hot batch reads as high entropy and lowers the "
                          "coefficient); see docs/trl.md.",
                          stacklevel=3)
        dropout = _active_dropout(trainer.model)
        if dropout:
            warnings.warn(f"metahp: dropout is active while training ({', '.join(dropout)}; GRPOConfig.disable_dropout="
                          f"{getattr(trainer.args, 'disable_dropout', None)}). TRL samples in train mode, so each "
                          f"batch's sampling logits carry one dropout mask that no forward pass can reproduce: the "
                          f"likelihoods captured during generate and the forward path's (eval mode, no dropout) "
                          f"differ, and neither is the policy the loss trains. For exact likelihoods set "
                          f"GRPOConfig(disable_dropout=True) and the model config's attention dropout to 0.",
                          stacklevel=3)
        adapted = [n for n in names if n in truncation_names()]
        if adapted and getattr(trainer, "use_vllm", False) and getattr(trainer, "vllm_importance_sampling_correction",
                                                                       False):
            warnings.warn(f"TRL computes its log-probs without the truncation ({adapted[0]}) but vLLM's with it, so "
                          f"its importance-sampling ratio is the kept probability mass (per token, or its product "
                          f"over the sequence), not a sampler/trainer mismatch: it down-weights the loss more the "
                          f"tighter the {adapted[0]} metahp draws (trl issue 6789; see docs/trl.md). Consider "
                          f"vllm_importance_sampling_correction=False.", stacklevel=3)

    def __repr__(self) -> str:
        return f"TRLAdapter(value={self.value}, policies={self.policies!r})"

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
        return self._single(self._current)

    @property
    def eval_value(self):
        """The value(s) applied for evaluation generations."""
        return self._single(self._eval)

    def _single(self, values: dict[str, Any]):
        return next(iter(values.values())) if len(values) == 1 else dict(values)

    # -- the knobs' copies --------------------------------------------------------------------------------
    def apply(self, value) -> None:
        """Write the value(s) to every copy TRL uses (sampling, and log-probs for the temperature). ``value``: a
        number when one knob is adapted, or a dict {name: value}."""
        if not isinstance(value, dict):
            if len(self.knob_names) != 1:
                raise ConfigError(f"several knobs are adapted {list(self.knob_names)}: pass a dict {{name: value}}.")
            value = {self.knob_names[0]: value}
        for name, v in value.items():
            if name not in self.knob_names:
                raise ConfigError(f"{name!r} is not adapted here {list(self.knob_names)}.")
            self._apply_one(name, v)

    def _apply_one(self, name: str, value) -> None:
        trainer = self.trainer
        # Values per completion: every copy TRL keeps samples and scores at T = 1; the rows' own temperatures act
        # in the logits processor (generation) and on the hidden states (log-probs).
        value = 1.0 if _per_row(value) else _normalise(name, value)
        setattr(trainer, name, value)  # kept in sync for user code; TRL 1.16 itself ignores it at run time
        if getattr(trainer, "generation_config", None) is not None:  # transformers generate / generate_batch
            setattr(trainer.generation_config, name, value)
        if isinstance(getattr(trainer, "generation_kwargs", None), dict):
            trainer.generation_kwargs[name] = value
        if getattr(trainer, "vllm_generation", None) is not None:  # builds SamplingParams from it per call
            setattr(trainer.vllm_generation, name, value)
        if name == "temperature":
            for cell in self._cells:  # fused LM head of the policy and the reference model
                cell.cell_contents = value

    def applied_values(self) -> dict[str, Any]:
        """Every copy's current value, for checks: all copies of one knob must be equal."""
        trainer = self.trainer
        out = {}
        for name in self.knob_names:
            out[f"trainer.{name}"] = getattr(trainer, name)
            if getattr(trainer, "generation_config", None) is not None:
                out[f"generation_config.{name}"] = getattr(trainer.generation_config, name)
            if getattr(trainer, "vllm_generation", None) is not None:
                out[f"vllm_generation.{name}"] = getattr(trainer.vllm_generation, name)
            if name == "temperature":
                for i, cell in enumerate(self._cells):
                    out[f"fused_lm_head[{i}].temperature"] = cell.cell_contents
        return out

    def _used_values(self) -> dict[str, Any]:
        """The sampling settings the next generation uses: adapted knobs as applied, the others as configured
        (generation_kwargs overriding the named fields, as TRL does)."""
        used = {name: _config_value(self.trainer, name) for name in _supported_knobs(self.trainer)}
        used.update(self._current)
        return used

    def scoring_knobs(self) -> list[Knob]:
        """Each policy's knob as it scores the current batch: given the batch's other settings (knob layer)."""
        return self.knobset.scoring_knobs(self._used_values())

    def detach(self) -> None:
        """Undo ``attach``: the trainer's own methods come back; the knobs keep their current values (values per
        completion: the copies go back to the user's value, ``eval_value`` or the configured one). Detach between
        generations: a batch already buffered was scored at its rows' values and would be trained without them."""
        self._wrapped.restore()
        for hook in self._hooks:
            hook.remove()
        if self._hooks:  # values per completion: the copies go back to the user's value, not 1
            self.apply(self._eval)
        self._hooks = []
        self.trainer._metahp_adapter = None

    def _generate_and_score_completions(self, inputs):
        trainer = self.trainer
        original = self._wrapped["_generate_and_score_completions"]
        if not trainer.model.training:  # evaluation: the user's settings, no meta-update
            self.apply(self._eval)
            return original(inputs)
        if self.per == "completion":
            return self._generate_per_completion(original, inputs)
        self._current = {name: _normalise(name, v) for name, v in self.knobset.draw(agree=self._agree).items()}
        self.apply(self._current)
        self.history.append({"step": trainer.state.global_step, "value": self.value})
        self._capture_seconds = 0.0
        if self.likelihoods == "generate" and self.knobset.needs_likelihoods:
            output = self._capturing(original, inputs)
        else:
            output = original(inputs)
        start = time.perf_counter()
        metrics = self._meta_update(output)
        self.update_seconds.append(time.perf_counter() - start + self._capture_seconds)
        trl_compat.log_metrics(trainer, metrics)
        return output

    # -- values per completion ----------------------------------------------------------------------------------
    def _generate_per_completion(self, original, inputs):
        """One temperature per completion of the global generation batch (groups of num_generations consecutive
        rows, each mixing the grid as the meta-policy says); this process samples and scores its slice of rows."""
        trainer = self.trainer
        accelerator = trainer.accelerator
        local = len(inputs)
        drawn = self.knobset.draw(agree=self._agree, rows=local * accelerator.num_processes)
        name, values = next(iter(drawn.items()))
        self._current = {name: [float(v) for v in values]}
        self.apply(self._current)  # every copy at 1
        start = accelerator.process_index * local
        rows = torch.tensor(self._current[name][start:start + local], dtype=torch.float32)
        self.history.append({"step": trainer.state.global_step, "value": sum(self._current[name]) / len(values),
                             "rows": _counts(values, self.policy.knob.values)})
        self._row_values = rows
        try:
            with self._sampling_rows(rows):
                output = original(inputs)  # old and reference log-probs at the rows' values (_scale_rows)
        finally:
            self._row_values = None
        # Travels with the rows through TRL's shuffle and split into micro-batches, to the loss (_compute_loss).
        output[ROW_TEMPERATURE] = rows.to(output["advantages"].device)
        start_time = time.perf_counter()
        advantages = output["advantages"].detach().float()
        if accelerator.num_processes > 1:  # the whole batch's advantages on every rank -> the same update
            advantages = accelerator.gather(advantages)
        metrics = self.knobset.update(advantages=advantages.cpu(), used=self._current)
        self.update_seconds.append(time.perf_counter() - start_time)
        trl_compat.log_metrics(trainer, metrics)
        return output

    @contextlib.contextmanager
    def _sampling_rows(self, rows: torch.Tensor):
        """Generation samples row b at rows[b]: with transformers, a logits processor ahead of its truncation warpers
        (generation's own temperature is 1); with vLLM colocate, one SamplingParams per prompt."""
        trainer = self.trainer
        vllm = getattr(trainer, "vllm_generation", None) if getattr(trainer, "use_vllm", False) else None
        if vllm is not None:
            target, generate = vllm.llm, _per_request(vllm, vllm.llm.generate, rows)
        else:
            target = trainer.accelerator.unwrap_model(trainer.model_wrapped)  # what TRL generates with
            generate = _per_row_generate(target.generate, rows)
        calls = []

        def counted(*args, **kwargs):
            calls.append(1)
            return generate(*args, **kwargs)

        with _generate_replaced(target, counted):
            yield
        if len(calls) != 1:  # else every row was sampled at T = 1 but would be scored at its own value
            raise ConfigError(f"TRL called {'vLLM' if vllm is not None else 'model'}.generate {len(calls)} times for "
                              f"one batch; values per completion need exactly one call over all rows (TRL 1.16's "
                              f"single-turn generation). Use per='batch'.")

    def _compute_loss(self, model, inputs):
        """TRL's loss on a micro-batch, its log-probs at each row's own temperature (carried in the batch)."""
        rows = inputs.get(ROW_TEMPERATURE) if isinstance(inputs, dict) else None
        self._row_values = rows  # None: an evaluation batch, sampled at one value
        try:
            return self._wrapped["_compute_loss"](model, inputs)
        finally:
            self._row_values = None

    def _get_per_token_logps_and_entropies(self, model, input_ids, *args, **kwargs):
        """TRL's chunked log-prob forward; with rows pending, each chunk's hidden states are scaled by its rows'
        1 / T on the way to the fused LM head (_scale_rows), so the loss, old and reference log-probs of row b
        are log_softmax(z_b / t_b)."""
        original = self._wrapped["_get_per_token_logps_and_entropies"]
        rows = self._row_values
        if rows is None:
            return original(model, input_ids, *args, **kwargs)
        if len(rows) != input_ids.size(0):
            raise ConfigError(f"TRL scores {input_ids.size(0)} rows but the batch carries {len(rows)} temperatures "
                              f"per completion: this TRL splits batches in a way metahp does not follow; use "
                              f"per='batch'.")
        self._scaling = [rows.to(input_ids.device), 0]
        try:
            out = original(model, input_ids, *args, **kwargs)
            scaled = self._scaling[1]
        finally:
            self._scaling = None
        if scaled != len(rows):
            raise ConfigError(f"TRL's log-prob forward ran its backbone over {scaled} rows, not {len(rows)}: the "
                              f"temperatures per completion would be misapplied; use per='batch'.")
        return out

    def _scale_rows(self, module, args, output):
        """Forward hook on the backbone under each fused LM head: while a log-prob forward is scoring rows, divide
        the next chunk's last hidden states by the chunk's temperatures (exact for a head without bias or
        soft-capping, checked at attach: (h / t) W^T = (h W^T) / t)."""
        if self._scaling is None:
            return None  # generation, or a forward outside TRL's log-prob pass
        rows, done = self._scaling
        hidden = output.last_hidden_state if hasattr(output, "last_hidden_state") else output[0]
        t = rows[done:done + hidden.size(0)]
        if len(t) != hidden.size(0):
            raise ConfigError(f"TRL's log-prob forward passed more rows than the {len(rows)} temperatures it was "
                              f"given; use per='batch'.")
        self._scaling[1] = done + hidden.size(0)
        # Divide in float32 (a bf16 copy of 0.7 is 0.6992: the row would be scored at another temperature than it
        # was sampled at), on the hidden states' device (a model split across devices ends the backbone elsewhere).
        t = t.to(device=hidden.device, dtype=torch.float32).view(-1, *([1] * (hidden.dim() - 1)))
        scaled = (hidden.float() / t).to(hidden.dtype)
        if hasattr(output, "last_hidden_state"):
            output.last_hidden_state = scaled
            return output
        return (scaled, *output[1:])

    def _capturing(self, original, inputs):
        """Run TRL's generation with the knobs' per-token likelihoods captured inside model.generate."""
        model = self.trainer.accelerator.unwrap_model(self.trainer.model_wrapped)
        generate = model.generate
        calls = []
        self._captured = None
        knobs = self.scoring_knobs()  # the capture scores the candidates during generate

        def capturing_generate(*args, **kwargs):
            capture = GenerateCapture(knobs)
            with capture.hooks(model):
                sequences = generate(*args, **kwargs)
            prompt = kwargs.get("input_ids", args[0] if args else None)
            calls.append(capture.finish(sequences, prompt.size(1)) if isinstance(sequences, torch.Tensor) else None)
            self._capture_seconds += capture.seconds
            return sequences

        with _generate_replaced(model, capturing_generate):
            output = original(inputs)
        self._captured = calls[0] if len(calls) == 1 else None  # several calls (e.g. tools): use a forward
        return output

    def _evaluation_loop(self, *args, **kwargs):
        try:
            return self._wrapped["evaluation_loop"](*args, **kwargs)
        finally:  # a buffered training batch may still be in use: give it back its own values
            self.apply(self._current)

    def _save_checkpoint(self, model, trial, *args, **kwargs):
        out = self._wrapped["_save_checkpoint"](model, trial, *args, **kwargs)
        if self.trainer.args.should_save:
            folder = trl_compat.checkpoint_folder(self.trainer, trial)
            os.makedirs(folder, exist_ok=True)
            write_json_atomic(os.path.join(folder, STATE_FILE), self.state_dict())  # never half-written
        return out

    def state_dict(self) -> dict[str, Any]:
        """What ``metahp_state.json`` holds: the policies' states (random generators included), values, history."""
        policies = self.knobset.state_dict()  # one policy's state, or {"policies": {name: state}}
        return {**({"policy": policies} if len(self.policies) == 1 else policies), "value": self.value,
                "history": self.history}

    def _load_optimizer_and_scheduler(self, checkpoint, *args, **kwargs):
        out = self._wrapped["_load_optimizer_and_scheduler"](checkpoint, *args, **kwargs)
        if checkpoint is not None:
            self.load(checkpoint)
        return out

    def load(self, checkpoint: str) -> None:
        """Restore the meta-policies from ``checkpoint/metahp_state.json`` (done for you on resume).

        All or nothing: the whole file is checked first; a truncated or malformed file raises a StateError that
        names it, and the adapter (policies, values, history) is left as it was."""
        path = os.path.join(checkpoint, STATE_FILE)
        if not os.path.exists(path):
            warnings.warn(f"{path} not found: the checkpoint was saved without metahp, so the meta-policy starts "
                          f"afresh instead of continuing.", stacklevel=2)
            return
        state = read_json(path, "metahp TRL adapter state")
        in_file(path, lambda: self.load_state_dict(state))

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore ``state_dict()`` output, all or nothing: policies, the values applied (written to every copy
        again) and the history."""
        current, history = self._check_state(state)
        policies = {"policies": state["policies"]} if "policies" in state else state["policy"]
        self.knobset.load_state_dict(policies)
        self._current, self.history = current, history
        self.apply(self._current)

    def _check_state(self, state) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        """The adapter's own fields of a saved state: which policies, the values applied, the history."""
        if not isinstance(state, dict) or ("policy" not in state and "policies" not in state):
            raise StateError("not a metahp TRL adapter state; delete it or resume without it.")
        several = "policies" in state
        require_keys(state, {"policies" if several else "policy", "value", "history"}, "state")
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
            if _per_row(v) and self.per != "completion":  # the knob layer refuses the policies' mismatch too
                raise StateError(f"value[{name!r}] holds one value per completion but this adapter draws one per "
                                 f"batch: attach with per='completion', as the saved run did.")
            if _per_row(v):
                current[name] = [require_finite(x, f"value[{name!r}][{i}]") for i, x in enumerate(v)]
            elif v is not None:  # None: the knob was never set (TRL's "not configured")
                require_finite(v, f"value[{name!r}]")
                current[name] = _normalise(name, v)
        history = state["history"]
        if not isinstance(history, list) or not all(isinstance(h, dict) and {"step", "value"} <= set(h)
                                                    for h in history):
            raise StateError("history must be a list of {'step', 'value'} dicts.")
        return current, list(history)

    # -- the meta-update ----------------------------------------------------------------------------------
    def _agree(self, name: str, value) -> None:
        """Every rank draws from the same stream: check that they drew the same (a diverged state is an error)."""
        accelerator = self.trainer.accelerator
        if accelerator.num_processes > 1:
            from accelerate.utils import broadcast_object_list

            box = [value]
            broadcast_object_list(box, from_process=0)
            if box[0] != value:
                raise StateError(f"rank {accelerator.process_index} drew {name}={value} but rank 0 drew {box[0]}: the "
                                 f"meta-policies diverged across ranks (different seeds or a state loaded on some "
                                 f"ranks only).")

    def _meta_update(self, output: dict) -> dict[str, float]:
        """The knob layer's update from this batch; the adapter only finds the likelihoods and gathers them."""
        trainer = self.trainer
        accelerator = trainer.accelerator
        advantages = output["advantages"].detach().float()
        logp = reward = None
        if self.knobset.needs_likelihoods:
            logp = self._captured_logprobs(output)
            self.likelihood_source = "forward" if logp is None else "generate"
            if logp is None:
                logp = self.candidate_logprobs(output)
            if accelerator.num_processes > 1:  # same [N, K] and [N] on every rank -> the same update everywhere
                logp = accelerator.gather(logp.to(accelerator.device))
                advantages = accelerator.gather(advantages)
        else:  # bandit feedback: the global mean reward TRL just logged
            reward = trl_compat.batch_mean_reward(trainer)
        return self.knobset.update(logp, advantages.cpu(), reward=reward, used=self._used_values())

    def _captured_logprobs(self, output: dict) -> torch.Tensor | None:
        captured, self._captured = self._captured, None
        completion_ids = output["completion_ids"]
        if captured is None or captured.size(0) != completion_ids.size(0) or captured.size(1) < completion_ids.size(1):
            return None
        mask = output["completion_mask"]
        if "tool_mask" in output:
            mask = mask * output["tool_mask"]
        return sequence_logprobs(captured[:, :completion_ids.size(1)], mask.cpu())

    @torch.no_grad()
    def candidate_logprobs(self, output: dict) -> torch.Tensor:
        """l[B, K]: each completion's length-normalised log-likelihood under every candidate of every knob, the
        knobs' columns side by side in ``.policies`` order (rows with zero advantage are left at 0, never
        computed). One no-grad forward of the informative rows, in chunks, with raw logits at completion positions
        only: exactly the logits TRL's loss divides by T."""
        trainer = self.trainer
        knobs = self.scoring_knobs()
        advantages = output["advantages"]
        completion_ids, completion_mask = output["completion_ids"], output["completion_mask"]
        mask = completion_mask if "tool_mask" not in output else completion_mask * output["tool_mask"]
        ids = torch.cat([output["prompt_ids"], completion_ids], dim=1)
        attention_mask = torch.cat([output["prompt_mask"], completion_mask], dim=1)
        n_rows, n_keep = completion_ids.shape
        out = torch.zeros(n_rows, sum(len(k) for k in knobs), dtype=torch.float32)
        rows = torch.nonzero(informative(advantages)).flatten()  # zero-advantage rows are never scored
        accelerator = trainer.accelerator
        vocab = accelerator.unwrap_model(trainer.model).config.get_text_config().vocab_size
        per_chunk = max(1, min(trainer.args.per_device_train_batch_size, CHUNK_ELEMENTS // ((n_keep + 1) * vocab)))
        n_chunks = math.ceil(len(rows) / per_chunk)
        if accelerator.num_processes > 1:
            # Sharded models (FSDP, ZeRO-3) gather weights in every forward: all ranks must run as many.
            n_chunks = int(accelerator.gather(torch.tensor([n_chunks], device=accelerator.device)).max())
        # Score in eval mode: the logits that sampled the batch came from generate (eval mode, no dropout); a
        # train-mode forward would draw a fresh dropout mask and score other logits (GRPOConfig.disable_dropout
        # is False by default). The trainer's mode is put back afterwards.
        with trl_compat.no_gradient_checkpointing(trainer), _eval_mode(trainer.model):
            for i in range(n_chunks):
                chunk = rows[i * per_chunk:(i + 1) * per_chunk]
                dummy = len(chunk) == 0  # this rank has no rows left but others do
                take = rows.new_zeros(1) if dummy else chunk
                with accelerator.autocast():
                    # logits_to_keep = C + 1: the logit at position t predicts token t + 1
                    logits = trainer.model(input_ids=ids[take], attention_mask=attention_mask[take],
                                           logits_to_keep=n_keep + 1, use_cache=False).logits[:, :-1]
                if not dummy:
                    scored = [k.sequence_logprobs(logits, completion_ids[take], mask[take]) for k in knobs]
                    out[chunk.cpu()] = torch.cat(scored, dim=1).to(out.device)
        return out


def _active_dropout(model) -> list[str]:
    """Where dropout acts in train mode: nn.Dropout modules with p > 0 and config fields such as
    attention_dropout > 0 (applied functionally inside attention; TRL's disable_dropout does not zero them)."""
    found = sorted({f"{type(m).__name__}(p={m.p})" for m in model.modules()
                    if isinstance(m, torch.nn.Dropout) and m.p > 0})
    config = getattr(model, "config", None)
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    for key, value in sorted(vars(text).items() if text is not None else ()):
        if key.endswith("dropout") and isinstance(value, int | float) and not isinstance(value, bool) and value > 0:
            found.append(f"config.{key}={value}")
    return found


@contextlib.contextmanager
def _eval_mode(model):
    """``model.eval()`` for the duration, then the mode of every submodule as it was."""
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield model
    finally:
        for module, training in modes:
            module.training = training


def _per_row(value) -> bool:
    """Whether a knob's value is one value per completion (a list) rather than one for the batch."""
    return isinstance(value, list | tuple)


def _counts(values, grid) -> dict[str, int]:
    """How many completions drew each candidate, labelled as in the metrics."""
    return {f"{g:g}": sum(1 for v in values if abs(v - g) <= 1e-9 * max(1.0, abs(g))) for g in grid}


@contextlib.contextmanager
def _generate_replaced(target, generate):
    """``target.generate`` is ``generate`` for the duration; then whatever it was (the class's method, or an
    instance attribute someone set before)."""
    own = target.__dict__.get("generate")
    target.generate = generate
    try:
        yield
    finally:
        if own is None:
            del target.generate
        else:
            target.generate = own


def _per_row_generate(generate, rows: torch.Tensor):
    """transformers' ``model.generate`` with row b of every step's scores divided by rows[b]."""

    def per_row_generate(*args, **kwargs):
        prompt = kwargs.get("input_ids", args[0] if args else None)
        if prompt is None or prompt.size(0) != len(rows):
            raise ConfigError(f"TRL generated {None if prompt is None else prompt.size(0)} rows in one call but this "
                              f"process drew {len(rows)} values per completion: only TRL's single-turn generation "
                              f"(one generate call per batch) is supported.")
        config = kwargs.get("generation_config")
        if config is not None and getattr(config, "temperature", 1.0) not in (None, 1.0):
            raise ConfigError(f"generation_config.temperature is {config.temperature} while values per completion "
                              f"are applied: something set it after metahp (leave the temperature to metahp).")
        processors = list(kwargs.pop("logits_processor", None) or [])
        return generate(*args, logits_processor=[PerRowTemperature(rows.to(prompt.device)), *processors], **kwargs)

    return per_row_generate


def _per_request(vllm, generate, rows: torch.Tensor):
    """vLLM's ``LLM.generate`` (TRL's colocate mode) with one SamplingParams per prompt, prompt b at rows[b]. With
    tensor parallelism TRL gathers the group's prompts in rank order; the rows are gathered the same way."""

    def per_request_generate(prompts, sampling_params=None, **kwargs):
        values = rows.tolist()
        group = getattr(vllm, "tensor_parallel_size", 1) or 1
        if group > 1:
            gathered = [None] * group
            torch.distributed.all_gather_object(gathered, values, group=vllm.tp_group)
            values = [v for part in gathered for v in part]
        if sampling_params is None or isinstance(sampling_params, list | tuple) or len(prompts) != len(values):
            raise ConfigError(f"TRL's vLLM colocate call passed {len(prompts)} prompts and "
                              f"{type(sampling_params).__name__} sampling settings for {len(values)} values per "
                              f"completion: this TRL generates differently from the one metahp supports (1.16); use "
                              f"per='batch'.")
        if getattr(sampling_params, "temperature", 1.0) != 1.0 or getattr(sampling_params, "n", 1) != 1:
            raise ConfigError(f"vLLM's sampling settings have temperature={sampling_params.temperature}, "
                              f"n={sampling_params.n} while values per completion are applied (metahp expects 1 and "
                              f"1: one completion per prompt, each at its own temperature).")
        per_prompt = []
        for value in values:
            params = sampling_params.clone()
            params.temperature = value
            per_prompt.append(params)
        return generate(prompts, sampling_params=per_prompt, **kwargs)

    return per_request_generate


def _check_per_completion(trainer) -> None:
    """Values per completion need TRL's single-turn transformers generation: one generate call over the batch's
    rows, where a logits processor gives each row its own temperature."""
    args = trainer.args
    if getattr(trainer, "use_vllm", False) and getattr(args, "vllm_mode", None) != "colocate":
        raise ConfigError(f"values per completion with vLLM in {getattr(args, 'vllm_mode', '?')!r} mode are not "
                          f"supported: TRL's server client sends one set of sampling settings for the whole request. "
                          f"Use vllm_mode='colocate' (one SamplingParams per prompt), transformers generation "
                          f"(use_vllm=False), or per='batch'.")
    if getattr(args, "use_transformers_paged", False) or getattr(trainer, "use_transformers_continuous_batching",
                                                                  False):
        raise ConfigError("values per completion need transformers' generate (a logits processor per row); "
                          "continuous batching (generate_batch) takes none. Turn it off or use per='batch'.")
    if getattr(trainer, "tools", None):
        raise ConfigError("values per completion with tools (multi-turn generation) are not supported: later turns "
                          "regenerate a subset of rows. Use per='batch'.")
    if getattr(args, "padding_free", False):
        raise ConfigError("values per completion scale each row's hidden states; padding_free packs all rows into "
                          "one. Set padding_free=False or use per='batch'.")


def _normalise(name: str, value):
    """A knob value as TRL and transformers expect it (top_k an int; None kept: 'not set')."""
    if value is None:
        return None
    return int(value) if name == "top_k" else float(value)


def _supported_knobs(trainer) -> list[str]:
    """The registered knobs TRL can sample with: those GRPOConfig has a field for (and so TRL a copy of)."""
    return [name for name in KNOBS if hasattr(trainer.args, name)]


def _config_value(trainer, name: str):
    """The value TRL samples with when metahp does not set it: generation_kwargs overrides the named field."""
    kwargs = trainer.args.generation_kwargs or {}
    value = kwargs[name] if name in kwargs else getattr(trainer, name, getattr(trainer.args, name, None))
    return _normalise(name, value)


def _check_truncations(trainer, names: list[str]) -> None:
    """One truncation at a time: the adapted one, or at most one fixed in the config."""
    kwargs = trainer.args.generation_kwargs or {}
    other = [k for k in OTHER_TRUNCATIONS if kwargs.get(k) is not None and k not in KNOBS]
    if other:
        raise ConfigError(f"GRPOConfig.generation_kwargs sets {other}, a truncation metahp does not model, so it "
                          f"cannot score candidates of {names}; remove it (top_p, top_k and min_p are modelled).")
    configured = {n: _config_value(trainer, n) for n in _supported_knobs(trainer)}
    active = dict(active_truncations(configured))
    adapted = [n for n in names if n in truncation_names()]
    if adapted:
        fixed = {n: v for n, v in active.items() if n != adapted[0]}
        if fixed:
            off = ", ".join(f"{n}={KNOBS[n].off_value}" for n in fixed)
            raise ConfigError(f"metahp adapts {adapted[0]} but the config also truncates with {fixed}: transformers "
                              f"applies top_k, top_p and min_p in sequence and metahp scores one truncation at a "
                              f"time. Set {off} in GRPOConfig (and generation_kwargs).")
    elif len(active) > 1:
        raise ConfigError(f"the config truncates with {active} at once; metahp scores the temperature with one "
                          f"truncation applied after it. Keep one of top_p, top_k, min_p.")


def _check_likelihoods(trainer, likelihoods: str) -> str:
    if likelihoods not in ("auto", "generate", "forward"):
        raise ConfigError(f"likelihoods={likelihoods!r}; use 'auto', 'generate' or 'forward'.")
    plain = not (getattr(trainer, "use_vllm", False) or getattr(trainer, "use_transformers_continuous_batching", False)
                 or getattr(trainer, "tools", None))
    if likelihoods == "generate" and not plain:
        raise ConfigError("likelihoods='generate' needs TRL's plain transformers generation (no vLLM, no continuous "
                          "batching, no tools); use likelihoods='forward' or 'auto'.")
    if likelihoods == "auto":
        return "generate" if plain else "forward"
    return likelihoods


def _check_trainer(trainer, knob: str) -> None:
    args = trainer.args
    if args.generation_kwargs and knob in args.generation_kwargs:
        raise ConfigError(f"GRPOConfig.generation_kwargs sets {knob}={args.generation_kwargs[knob]!r}, which "
                          f"overrides every value metahp applies; remove it from generation_kwargs (set the "
                          f"evaluation value with metahp.adapt(..., eval_value=...) instead).")
    if getattr(trainer, "rollout_func", None) is not None:
        raise ConfigError(f"the trainer has a rollout_func, which samples with settings metahp cannot see; metahp "
                          f"can only guarantee that sampling and log-probs use the same {knob} with TRL's own "
                          f"generation (transformers or vLLM). Remove rollout_func.")
    if getattr(args, "use_liger_kernel", False) and (args.liger_kernel_config or {}).get("fused_linear_cross_entropy"):
        raise ConfigError("liger's fused linear cross-entropy freezes the temperature at construction; set "
                          "liger_kernel_config={'fused_linear_cross_entropy': False}.")
    if trl_compat.is_vision_model(trainer):
        raise ConfigError("metahp's TRL adapter supports text-only models for now (its likelihood forward does not "
                          "pass images); use a text model.")


