"""metahp on TRL's GRPOTrainer: ``adapter = metahp.adapt(trainer)`` learns sampling knobs online (docs/trl.md).

Knobs: the temperature (default), one truncation (top_p, top_k, min_p), or the temperature with one truncation,
factored or as a product; and the update's hyperparameters (``trl_hyperparameters``). At every training generation
(TRL's ``_generate_and_score_completions``, wrapped):

1. before: draw each knob's value and write it to EVERY copy TRL keeps (``trainer.<knob>``, ``generation_config``
   and ``generation_kwargs``, ``vllm_generation``, and the temperature frozen in the fused LM head of the policy
   and the reference model, so that old, reference and loss log-probs are computed at T);
2. TRL generates, scores and computes advantages as usual (no extra generation);
3. after: the meta-update from that batch (likelihoods captured during generate, or one no-grad forward of the
   non-zero-advantage rows), gathered across ranks so that all make the same update and the same next draw.
   Metrics go to TRL's metrics buffer; the state is saved as ``metahp_state.json`` in every checkpoint.

``per="completion"``: one temperature per completion. Every copy stays at 1; generate gets a per-row logits
processor (vLLM colocate: one SamplingParams per prompt); the batch carries each row's temperature to the loss,
whose log-prob forwards scale row b's hidden states by 1 / t[b] ahead of the fused head (checked at attach).
``per="prompt"`` with ``context=metahp.knobset.prompt_context(...)``: the same rows, one value per group, drawn from
the meta-policy of its prompt's label (the prompts gathered across ranks). Evaluation uses the user's values (or
``eval_value=``).
Every TRL-private name is reached through ``trl_1_16``; the machinery any adapter needs is ``kit``'s.

>>> adapter = metahp.adapt(trainer, "temperature", "tampo")      # doctest: +SKIP
>>> trainer.train(); adapter.policy.probs                        # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import time
import warnings
from typing import Any

import torch

from metahp.errors import ConfigError
from metahp.knobs import KNOBS, Knob, hyperparameter_names, sampling_names, truncation_names
from metahp.knobset import KnobSet, context_reads

from . import kit
from . import trl_1_16 as trl_compat
from . import trl_hyperparameters as trl_hyper
from .capture import capturing, sequence_logprobs

SUPPORTED_TRL = trl_compat.SUPPORTED_TRL
STATE_FILE = kit.STATE_FILE
# The adapter options (metahp.config) this adapter honours, and what it measures for the fitted rewards.
ADAPTER_OPTIONS, MEASURES = ("likelihoods", "eval_value", "context"), trl_hyper.MEASURES
# Values per completion: the batch key carrying each row's temperature from generation to the loss's micro-batch.
ROW_TEMPERATURE = "metahp_temperature"


def supports(trainer) -> bool:
    """True for ``trl.GRPOTrainer`` and its subclasses (without importing trl)."""
    return any(cls.__name__ == "GRPOTrainer" and cls.__module__.startswith("trl.") for cls in type(trainer).__mro__)


def attach(trainer, *, knob="temperature", updater="exp3", values=None, seed=None, eval_value=None,
           likelihoods="auto", combine="factored", per="batch", **options) -> TRLAdapter:
    """Attach meta-policies over ``knob`` to a ``trl.GRPOTrainer``; the fields, ``likelihoods`` and ``eval_value``
    (TRL's adapter options) included, are metahp.config.AdaptConfig's, documented there."""
    return TRLAdapter(trainer, knob=knob, updater=updater, values=values, seed=seed, eval_value=eval_value,
                      likelihoods=likelihoods, combine=combine, per=per, **options)


class TRLAdapter(trl_hyper.HyperparameterCopies, kit.KitAdapter):
    """The meta-policies wired into one GRPOTrainer (values, copies, history and state: ``kit.KitAdapter``)."""

    who = "TRL adapter"

    def __init__(self, trainer, *, knob="temperature", updater="exp3", values=None, seed=None, eval_value=None,
                 likelihoods="auto", combine="factored", per="batch", **options):
        trl_compat.check_version()
        if per == "prompt" and context_reads(options.get("context")) != "prompt":
            raise ConfigError("per='prompt' on TRL reads each prompt's text: pass context=metahp.knobset."
                              "prompt_context(classify, labels=...). The default context, each prompt's past pass "
                              "rate, is kept by the reference trainer (metahp.lab.grpo), not by TRL's GRPOTrainer.")
        if per != "batch":
            _check_per_completion(trainer)
        knobs = (knob,) if isinstance(knob, str | Knob) else tuple(knob)
        names = [k.name if isinstance(k, Knob) else k for k in knobs]
        args = trainer.args
        try:
            knobset = KnobSet(
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
        if knobset.per != "batch" and knobset.needs_likelihoods:
            raise ConfigError(f"values per {knobset.per} in TRL learn from advantages alone (reward='informativeness' "
                              f"or 'within_group_advantage', or updater='uniform'), not "
                              f"{knobset.policy.reward.name!r}, which needs likelihoods per candidate (the reference "
                              f"trainer, metahp.lab.grpo, has).")
        for name in names:
            (trl_hyper.check_hyperparameter if name in hyperparameter_names() else _check_trainer)(trainer, name)
        _check_settings(trainer, [n for n in names if n in sampling_names()], knobset.needs_likelihoods)
        if getattr(trainer, "_metahp_adapter", None) is not None:
            raise ConfigError("this trainer already has a metahp adapter; call adapter.detach() before attaching "
                              "another one.")
        super().__init__(knobset, {name: _config_value(trainer, name) for name in names}, eval_value)
        self.trainer = trainer
        # likelihoods can be captured inside generate only when TRL samples with transformers' plain generate
        plain = not any(getattr(trainer, x, 0) for x in ("use_vllm", "tools", "use_transformers_continuous_batching"))
        self.likelihoods = kit.likelihood_source(likelihoods, plain, "TRL's plain transformers generation (no vLLM, "
                                                                    "no continuous batching, no tools)")
        self.likelihood_source: str | None = None  # where the last meta-update's likelihoods came from
        self.processes = kit.Processes.of_accelerator(trainer.accelerator)
        # The log-prob temperature lives in closures of TRL's fused LM head: found once, written per batch.
        cells = trl_compat.fused_temperature_cells(trainer) if "temperature" in names else []
        self._init_hyperparameters(trainer, [n for n in names if n in hyperparameter_names()])
        for name in (n for n in names if n in sampling_names()):
            self.copies.attribute(name, f"trainer.{name}", trainer)  # for user code; TRL 1.16 ignores it at run time
            for attr in ("generation_config", "vllm_generation"):  # transformers generate; vLLM's SamplingParams
                if getattr(trainer, attr, None) is not None:
                    self.copies.attribute(name, f"{attr}.{name}", getattr(trainer, attr))
            if isinstance(getattr(trainer, "generation_kwargs", None), dict):  # overrides generation_config
                self.copies.key(name, f"generation_kwargs.{name}", trainer.generation_kwargs)
        for i, cell in enumerate(cells):  # the fused LM head of the policy and the reference model
            self.copies.add("temperature", f"fused_lm_head[{i}].temperature", lambda c=cell: c.cell_contents,
                            lambda v, c=cell: setattr(c, "cell_contents", v))
        self.update_seconds: list[float] = []  # each meta-update's wall time, likelihood capture included
        self._captured: torch.Tensor | None = None  # per-token likelihoods captured in generate
        self._row_values: torch.Tensor | None = None  # values per completion: the rows TRL is scoring now
        self.row_scaler: kit.RowScaler | None = None
        replacements = {"_generate_and_score_completions": self._generate_and_score_completions,
                        "evaluation_loop": self._evaluation_loop, "_save_checkpoint": self._save_checkpoint,
                        "_load_optimizer_and_scheduler": self._load_optimizer_and_scheduler}
        if self.per != "batch":  # values per completion or per prompt: one value per row
            backbones = trl_compat.fused_backbones(trainer)  # checks the heads first: nothing is wrapped on refusal
            replacements.update({"_compute_loss": self._compute_loss,
                                 "_get_per_token_logps_and_entropies": self._get_per_token_logps_and_entropies})
            self.row_scaler = kit.RowScaler([b for _, b in backbones], "TRL")
        self._wrapped = trl_compat.Wrapped(trainer, replacements)
        trainer._metahp_adapter = self
        self._warn(trainer, names)

    def _warn(self, trainer, names) -> None:
        if "temperature" in names and getattr(trainer.args, "use_adaptive_entropy", False):
            warnings.warn("metahp: TRL's adaptive entropy controller (use_adaptive_entropy=True) measures the "
                          "entropy at the temperature metahp draws for each batch (or each completion), so it "
                          "reacts to metahp's choice (a hot batch reads as high entropy and lowers the "
                          "coefficient); see docs/trl.md.", stacklevel=4)
        dropout = kit.dropout_warning(trainer.model, f"GRPOConfig(disable_dropout=True) (now "
                                                     f"{getattr(trainer.args, 'disable_dropout', None)})")
        if dropout:
            warnings.warn(dropout, stacklevel=4)
        adapted = [n for n in names if n in truncation_names()]
        if adapted and getattr(trainer, "use_vllm", False) and getattr(trainer, "vllm_importance_sampling_correction",
                                                                       False):
            warnings.warn(f"TRL computes its log-probs without the truncation ({adapted[0]}) but vLLM's with it, so "
                          f"its importance-sampling ratio is the kept probability mass (per token, or its product "
                          f"over the sequence), not a sampler/trainer mismatch: it down-weights the loss more the "
                          f"tighter the {adapted[0]} metahp draws (trl issue 6789; see docs/trl.md). Consider "
                          f"vllm_importance_sampling_correction=False.", stacklevel=4)

    def to_backend(self, name: str, value):
        """The knob's backend value, but a number where transformers takes None for "off" (min_p = 0): vLLM's
        SamplingParams, built from the same copy, needs a number."""
        out = kit.backend_value(name, value)
        return float(KNOBS[name].off_value) if out is None and value is not None else out

    def _used_values(self) -> dict[str, Any]:
        """The next generation's sampling settings: adapted knobs as applied, the others as configured."""
        return {**{name: _config_value(self.trainer, name) for name in _supported_knobs(self.trainer)},
                **self._current}

    def scoring_knobs(self) -> list[Knob]:
        """Each policy's knob as it scores the current batch: given the batch's other settings (knob layer)."""
        return self.knobset.scoring_knobs(self._used_values())

    def detach(self) -> None:
        """Undo ``attach``: TRL's own methods come back and every copy the user's value. Detach between
        generations: a batch already buffered was scored at its rows' values and would be trained without them."""
        self._wrapped.restore()
        self._detach_hyperparameters()
        if self.row_scaler is not None:
            self.row_scaler.remove()
            self.row_scaler = None
        super().detach()
        self.trainer._metahp_adapter = None

    # -- generation ---------------------------------------------------------------------------------------------
    def _generate_and_score_completions(self, inputs):
        trainer = self.trainer
        original = self._wrapped["_generate_and_score_completions"]
        if not trainer.model.training:  # evaluation: the user's settings, no meta-update
            self.apply(self._eval)
            return original(inputs)
        if self.per != "batch":
            return self._generate_per_completion(original, inputs)
        if "learning_rate" in self.knob_names:
            self._scale_learning_rate()
        self.draw_and_apply(trainer.state.global_step)
        self._captured, seconds = None, 0.0
        if self.likelihoods == "generate" and self.knobset.needs_likelihoods:
            model = self.trainer.accelerator.unwrap_model(self.trainer.model_wrapped)
            with capturing(model, self.scoring_knobs()) as captured:
                output = original(inputs)
            self._captured, seconds = captured.per_token, captured.seconds
        else:
            output = original(inputs)
        start = time.perf_counter()
        metrics = self._meta_update(output)
        self.update_seconds.append(time.perf_counter() - start + seconds)
        trl_compat.log_metrics(trainer, metrics)
        return output

    def _generate_per_completion(self, original, inputs):
        """One temperature per completion of the global generation batch (groups of num_generations consecutive
        rows), or per prompt (one per group, from its prompt's context); this process samples and scores its slice
        of rows."""
        local, processes = len(inputs), self.processes
        contexts = (kit.group_prompts([x["prompt"] for x in inputs], self.trainer.args.num_generations, processes)
                    if self.per == "prompt" else None)
        drawn = self.draw_and_apply(self.trainer.state.global_step, rows=local * processes.count, contexts=contexts)
        (values,) = drawn.values()
        start = processes.index * local
        rows = torch.tensor(values[start:start + local], dtype=torch.float32)
        self._row_values = rows
        try:
            with self._sampling_rows(rows):
                output = original(inputs)  # old and reference log-probs at the rows' values (row_scaler)
        finally:
            self._row_values = None
        # Travels with the rows through TRL's shuffle and split into micro-batches, to the loss (_compute_loss).
        output[ROW_TEMPERATURE] = rows.to(output["advantages"].device)
        start_time = time.perf_counter()
        advantages = processes.gather(output["advantages"].detach().float())  # the same update on every rank
        metrics = self.knobset.update(advantages=advantages.cpu(), used=self._current, contexts=contexts)
        self.update_seconds.append(time.perf_counter() - start_time)
        trl_compat.log_metrics(self.trainer, metrics)
        return output

    def _sampling_rows(self, rows: torch.Tensor) -> contextlib.AbstractContextManager:
        """Row b sampled at rows[b]: a per-row logits processor, or (vLLM colocate) one SamplingParams per prompt."""
        trainer = self.trainer
        vllm = getattr(trainer, "vllm_generation", None) if getattr(trainer, "use_vllm", False) else None
        if vllm is None:
            target = trainer.accelerator.unwrap_model(trainer.model_wrapped)  # what TRL generates with
            return kit.single_call(target, "generate", kit.per_row_generate(target.generate, rows, "TRL"),
                                   "TRL's model.generate")
        generate = vllm.llm.generate

        def per_request(prompts, sampling_params=None, **kwargs):
            values = rows.tolist()
            if (getattr(vllm, "tensor_parallel_size", 1) or 1) > 1:
                gathered = [None] * vllm.tensor_parallel_size
                torch.distributed.all_gather_object(gathered, values, group=vllm.tp_group)
                values = [v for part in gathered for v in part]
            params = kit.per_request_params(sampling_params, values, len(prompts), "TRL's vLLM colocate call")
            return generate(prompts, sampling_params=params, **kwargs)

        return kit.single_call(vllm.llm, "generate", per_request, "TRL's vLLM.generate")

    # -- scoring rows at their own values -----------------------------------------------------------------------
    def _compute_loss(self, model, inputs):
        """TRL's loss on a micro-batch, its log-probs at each row's own temperature (carried in the batch)."""
        self._row_values = inputs.get(ROW_TEMPERATURE) if isinstance(inputs, dict) else None  # None: evaluation
        try:
            return self._wrapped["_compute_loss"](model, inputs)
        finally:
            self._row_values = None

    def _get_per_token_logps_and_entropies(self, model, input_ids, *args, **kwargs):
        """TRL's chunked log-prob forward with row b's hidden states scaled by 1 / t_b ahead of the fused head, so
        the loss, old and reference log-probs of row b are log_softmax(z_b / t_b)."""
        original, rows = self._wrapped["_get_per_token_logps_and_entropies"], self._row_values
        if rows is None:
            return original(model, input_ids, *args, **kwargs)
        if len(rows) != input_ids.size(0):
            raise ConfigError(f"TRL scores {input_ids.size(0)} rows but the batch carries {len(rows)} temperatures "
                              f"per completion: this TRL splits batches in a way metahp does not follow; use "
                              f"per='batch'.")
        with self.row_scaler.rows(rows.to(input_ids.device)):
            return original(model, input_ids, *args, **kwargs)

    # -- evaluation and checkpoints -----------------------------------------------------------------------------
    def _evaluation_loop(self, *args, **kwargs):
        try:
            return self._wrapped["evaluation_loop"](*args, **kwargs)
        finally:  # a buffered training batch may still be in use: give it back its own values
            self.apply(self._current)

    def _save_checkpoint(self, model, trial, *args, **kwargs):
        out = self._wrapped["_save_checkpoint"](model, trial, *args, **kwargs)
        if self.trainer.args.should_save:
            self.save(trl_compat.checkpoint_folder(self.trainer, trial))
        return out

    def _load_optimizer_and_scheduler(self, checkpoint, *args, **kwargs):
        out = self._wrapped["_load_optimizer_and_scheduler"](checkpoint, *args, **kwargs)
        if checkpoint is not None:
            self.load(checkpoint)
        return out

    # -- the meta-update ----------------------------------------------------------------------------------------
    def _meta_update(self, output: dict) -> dict[str, float]:
        """The knob layer's update from this batch; the adapter only finds the likelihoods and gathers them."""
        advantages = output["advantages"].detach().float()
        logp = reward = None
        if self.knobset.needs_likelihoods:
            logp = self._captured_logprobs(output)
            self.likelihood_source = "forward" if logp is None else "generate"
            if logp is None:
                logp = self.candidate_logprobs(output)
            logp, advantages = self.processes.gather(logp), self.processes.gather(advantages)
        else:  # bandit feedback: the global mean reward TRL just logged
            reward = trl_compat.batch_mean_reward(self.trainer)
        return self.knobset.update(logp, advantages.cpu(), reward=reward, used=self._used_values(),
                                   measured=self.measured_since_last_update())

    def _captured_logprobs(self, output: dict) -> torch.Tensor | None:
        captured, self._captured = self._captured, None
        completion_ids = output["completion_ids"]
        if captured is None or captured.size(0) != completion_ids.size(0) or captured.size(1) < completion_ids.size(1):
            return None
        return sequence_logprobs(captured[:, :completion_ids.size(1)], _scored_mask(output).cpu())

    def candidate_logprobs(self, output: dict) -> torch.Tensor:
        """l[B, K]: each completion's length-normalised log-likelihood under every candidate of every knob
        (``kit.candidate_logprobs``: one no-grad forward of the informative rows, in eval mode, raw logits)."""
        trainer = self.trainer
        vocab = trainer.accelerator.unwrap_model(trainer.model).config.get_text_config().vocab_size
        with trl_compat.no_gradient_checkpointing(trainer), kit.eval_mode(trainer.model):
            return kit.candidate_logprobs(
                trainer.model, self.scoring_knobs(), prompt_ids=output["prompt_ids"],
                prompt_mask=output["prompt_mask"], completion_ids=output["completion_ids"],
                completion_mask=output["completion_mask"], scored_mask=_scored_mask(output),
                advantages=output["advantages"], vocab=vocab, max_rows=trainer.args.per_device_train_batch_size,
                processes=self.processes, autocast=trainer.accelerator.autocast)


def _scored_mask(output: dict) -> torch.Tensor:
    """The completion tokens the policy sampled (tool outputs excluded)."""
    mask = output["completion_mask"]
    return mask * output["tool_mask"] if "tool_mask" in output else mask


# -- what TRL configurations metahp accepts ---------------------------------------------------------------------
def _check_per_completion(trainer) -> None:
    """Values per completion need one generate call over the batch's rows, each row at its own temperature."""
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


def _supported_knobs(trainer) -> list[str]:
    """The registered sampling knobs TRL can sample with (those GRPOConfig has a field for, and so TRL a copy of),
    then the hyperparameters this adapter sets (learning_rate, beta, epsilon)."""
    return ([name for name in sampling_names() if hasattr(trainer.args, name)]
            + [name for name in ("learning_rate", *trl_compat.RUN_TIME_HYPERPARAMETERS) if name in KNOBS])


def _config_value(trainer, name: str):
    """The value TRL uses when metahp does not set it: for a sampling knob, generation_kwargs overrides the named
    field; a hyperparameter's is what the loss reads (the learning-rate multiplier: 1)."""
    if name in hyperparameter_names():
        return trl_hyper.configured_value(trainer, name)
    kwargs = trainer.args.generation_kwargs or {}
    value = kwargs[name] if name in kwargs else getattr(trainer, name, getattr(trainer.args, name, None))
    out = kit.backend_value(name, value)
    return float(KNOBS[name].off_value) if out is None and value is not None else out


def _check_settings(trainer, names: list[str], likelihoods: bool) -> None:
    """The sampling settings TRL configures, checked by the kit: one truncation at a time, nothing unmodelled."""
    configured = {n: _config_value(trainer, n) for n in _supported_knobs(trainer) if n in sampling_names()}
    extra = dict(trainer.args.generation_kwargs or {})
    if getattr(trainer.args, "repetition_penalty", 1.0) != 1.0:
        extra["repetition_penalty"] = trainer.args.repetition_penalty
    kit.check_sampling_settings(configured, extra, names, likelihoods, "GRPOConfig (and its generation_kwargs)")


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
