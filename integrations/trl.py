"""metahp on TRL's GRPOTrainer: ``adapter = metahp.adapt(trainer)`` learns the sampling temperature online.

What happens at every training generation (TRL's ``_generate_and_score_completions``, wrapped):

1. before: draw T from the meta-policy and write it to EVERY copy TRL keeps: ``trainer.generation_config``
   (transformers sampling), ``trainer.vllm_generation`` (vLLM sampling), and the temperature that TRL 1.16 froze in
   the fused LM head of the policy and of the reference model (so loss, old and reference log-probs of this batch
   are computed at T). T then stays fixed until the next generation: a buffered batch (steps_per_generation > 1,
   num_iterations > 1) is trained at the temperature it was sampled with.
2. TRL generates, scores and computes advantages as usual (no extra generation).
3. after: the meta-update from that batch. Rows with zero advantage are skipped; for the others one chunked
   ``torch.no_grad`` forward computes the raw logits at completion positions only, and
   ``knob.sequence_logprobs`` turns them into l_ik. The [B, K] likelihoods and advantages of every rank are
   gathered, so every rank makes the same update and draws the same next T. Metrics are appended to
   ``trainer._metrics["train"]`` (TensorBoard / W&B see them); the policy's state is saved as
   ``metahp_state.json`` in every checkpoint-N folder and restored by ``trainer.train(resume_from_checkpoint=...)``.

Evaluation generations use the user's own temperature (``args.temperature``, or ``eval_value=``), make no
meta-update, and the training temperature is restored when evaluation ends.

>>> adapter = metahp.adapt(trainer, "temperature", "tampo")      # doctest: +SKIP
>>> trainer.train(); adapter.policy.probs                        # doctest: +SKIP
"""

from __future__ import annotations

import json
import math
import os
import time
import warnings
from typing import Any

import torch

from metahp.errors import ConfigError, StateError
from metahp.knobs import Knob
from metahp.policy import MetaPolicy, meta_policy

from .trl_capture import GenerateCapture, sequence_logprobs

SUPPORTED_TRL = ((1, 16), (1, 17))  # [low, high) on (major, minor)
STATE_FILE = "metahp_state.json"
SUPPORTED_KNOBS = ("temperature",)
# Working memory of one chunk of candidate logits, in elements (64 MiB of float32).
CHUNK_ELEMENTS = 1 << 24


def supports(trainer) -> bool:
    """True for ``trl.GRPOTrainer`` and its subclasses (without importing trl)."""
    return any(cls.__name__ == "GRPOTrainer" and cls.__module__.startswith("trl.") for cls in type(trainer).__mro__)


def attach(trainer, *, knob="temperature", updater="tampo", values=None, seed=None, eval_value=None,
           likelihoods="auto", **options) -> TRLAdapter:
    """Attach a meta-policy over ``knob`` to a ``trl.GRPOTrainer``; see the module docstring.

    seed: the meta-policy's seed; None uses ``trainer.args.seed`` (the same on every rank, so all ranks agree).
    eval_value: the knob's value for evaluation generations; None keeps the user's configured value.
    likelihoods: where the candidates' likelihoods come from: "generate" (the logits transformers' generate
        sampled from, captured step by step: no extra forward; TRL's plain transformers path only), "forward" (one
        no-grad forward over the non-zero-advantage rows: any generation backend, vLLM included), or "auto"
        (generate where possible, else forward).
    options: passed to ``metahp.meta_policy`` (e.g. alpha=0.05, nucleus_p=0.7, reward=..., selection=...).
    """
    return TRLAdapter(trainer, knob=knob, updater=updater, values=values, seed=seed, eval_value=eval_value,
                      likelihoods=likelihoods, **options)


class TRLAdapter:
    """The meta-policy wired into one GRPOTrainer. ``.policy`` is the MetaPolicy; ``.history`` lists the
    training values applied, one dict {"step", "value"} per generation (``step`` = trainer.state.global_step)."""

    def __init__(self, trainer, *, knob="temperature", updater="tampo", values=None, seed=None, eval_value=None,
                 likelihoods="auto", **options):
        _check_trl_version()
        name = knob.name if isinstance(knob, Knob) else knob
        if name not in SUPPORTED_KNOBS:
            raise ConfigError(f"metahp's TRL adapter supports knob in {list(SUPPORTED_KNOBS)} for now, got "
                              f"{name!r}: TRL replays only the temperature when it recomputes log-probs (top_p, top_k "
                              f"and min_p change sampling alone, which would bias the loss).")
        _check_trainer(trainer, name)
        if getattr(trainer, "_metahp_adapter", None) is not None:
            raise ConfigError("this trainer already has a metahp adapter; call adapter.detach() before attaching "
                              "another one.")
        self.trainer = trainer
        self.policy: MetaPolicy = meta_policy(knob, updater, values, trainer.args.seed if seed is None else seed,
                                              **options)
        self.knob_name = name
        self.likelihoods = _check_likelihoods(trainer, likelihoods)
        self.likelihood_source: str | None = None  # where the last meta-update's likelihoods came from
        self._captured: torch.Tensor | None = None
        # The log-prob temperature lives in closures of TRL's fused LM head: find them once, write them per batch.
        self._cells = _fused_temperature_cells(trainer)
        self.eval_value = float(trainer.temperature if eval_value is None else self.policy.knob.check_value(eval_value))
        self.value = float(trainer.temperature)  # the training value now applied everywhere
        self.history: list[dict[str, float]] = []
        # wall time of each meta-update, likelihood capture during generate included (the adapter's overhead)
        self.update_seconds: list[float] = []
        self._capture_seconds = 0.0
        self._originals: dict[str, Any] = {}
        self._own: dict[str, Any] = {}
        self._wrap("_generate_and_score_completions", self._generate_and_score_completions)
        self._wrap("evaluation_loop", self._evaluation_loop)
        self._wrap("_save_checkpoint", self._save_checkpoint)
        self._wrap("_load_optimizer_and_scheduler", self._load_optimizer_and_scheduler)
        trainer._metahp_adapter = self

    def __repr__(self) -> str:
        return f"TRLAdapter(value={self.value}, policy={self.policy!r})"

    # -- the knob's copies --------------------------------------------------------------------------------
    def apply(self, value: float) -> None:
        """Write ``value`` to every copy of the temperature TRL uses (sampling and log-probs)."""
        value = float(value)
        trainer = self.trainer
        trainer.temperature = value  # kept in sync for user code; TRL 1.16 itself ignores it at run time
        if getattr(trainer, "generation_config", None) is not None:  # transformers generate
            trainer.generation_config.temperature = value
        if isinstance(getattr(trainer, "generation_kwargs", None), dict):
            trainer.generation_kwargs["temperature"] = value
        if getattr(trainer, "vllm_generation", None) is not None:  # builds SamplingParams from it per call
            trainer.vllm_generation.temperature = value
        for cell in self._cells:  # fused LM head of the policy and the reference model
            cell.cell_contents = value

    def applied_values(self) -> dict[str, float]:
        """Every copy's current value, for checks: all must be equal."""
        trainer = self.trainer
        out = {"trainer.temperature": trainer.temperature}
        if getattr(trainer, "generation_config", None) is not None:
            out["generation_config.temperature"] = trainer.generation_config.temperature
        if getattr(trainer, "vllm_generation", None) is not None:
            out["vllm_generation.temperature"] = trainer.vllm_generation.temperature
        for i, cell in enumerate(self._cells):
            out[f"fused_lm_head[{i}].temperature"] = cell.cell_contents
        return out

    # -- wrapped trainer methods --------------------------------------------------------------------------
    def _wrap(self, name: str, replacement) -> None:
        self._originals[name] = getattr(self.trainer, name)
        self._own[name] = self.trainer.__dict__.get(name)  # an instance attribute someone set before us
        setattr(self.trainer, name, replacement)

    def detach(self) -> None:
        """Undo ``attach``: the trainer's own methods come back; the knob keeps its current value."""
        for name in self._originals:
            if self._own[name] is None:
                self.trainer.__dict__.pop(name, None)
            else:
                setattr(self.trainer, name, self._own[name])
        self._originals.clear()
        self.trainer._metahp_adapter = None

    def _generate_and_score_completions(self, inputs):
        trainer = self.trainer
        original = self._originals["_generate_and_score_completions"]
        if not trainer.model.training:  # evaluation: the user's settings, no meta-update
            self.apply(self.eval_value)
            return original(inputs)
        self.value = self._draw()
        self.apply(self.value)
        self.history.append({"step": trainer.state.global_step, "value": self.value})
        self._capture_seconds = 0.0
        if self.likelihoods == "generate":
            output = self._capturing(original, inputs)
        else:
            output = original(inputs)
        start = time.perf_counter()
        metrics = self._meta_update(output)
        self.update_seconds.append(time.perf_counter() - start + self._capture_seconds)
        for key, val in metrics.items():
            trainer._metrics["train"][key].append(val)
        return output

    def _capturing(self, original, inputs):
        """Run TRL's generation with the knob's per-token likelihoods captured inside model.generate."""
        model = self.trainer.accelerator.unwrap_model(self.trainer.model_wrapped)
        own = model.__dict__.get("generate")
        generate = model.generate
        calls = []
        self._captured = None

        def capturing_generate(*args, **kwargs):
            capture = GenerateCapture(self.policy.knob)
            with capture.hooks(model):
                sequences = generate(*args, **kwargs)
            prompt = kwargs.get("input_ids", args[0] if args else None)
            calls.append(capture.finish(sequences, prompt.size(1)) if isinstance(sequences, torch.Tensor) else None)
            self._capture_seconds += capture.seconds
            return sequences

        model.generate = capturing_generate
        try:
            output = original(inputs)
        finally:
            if own is None:
                del model.generate
            else:
                model.generate = own
        self._captured = calls[0] if len(calls) == 1 else None  # several calls (e.g. tools): use a forward
        return output

    def _evaluation_loop(self, *args, **kwargs):
        try:
            return self._originals["evaluation_loop"](*args, **kwargs)
        finally:  # a buffered training batch may still be in use: give it back its own temperature
            self.apply(self.value)

    def _save_checkpoint(self, model, trial, *args, **kwargs):
        out = self._originals["_save_checkpoint"](model, trial, *args, **kwargs)
        trainer = self.trainer
        if trainer.args.should_save:
            from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

            folder = os.path.join(trainer._get_output_dir(trial=trial),
                                  f"{PREFIX_CHECKPOINT_DIR}-{trainer.state.global_step}")
            os.makedirs(folder, exist_ok=True)
            with open(os.path.join(folder, STATE_FILE), "w") as f:
                json.dump({"policy": self.policy.state_dict(), "value": self.value, "history": self.history}, f)
        return out

    def _load_optimizer_and_scheduler(self, checkpoint, *args, **kwargs):
        out = self._originals["_load_optimizer_and_scheduler"](checkpoint, *args, **kwargs)
        if checkpoint is not None:
            self.load(checkpoint)
        return out

    def load(self, checkpoint: str) -> None:
        """Restore the meta-policy from ``checkpoint/metahp_state.json`` (done for you on resume)."""
        path = os.path.join(checkpoint, STATE_FILE)
        if not os.path.exists(path):
            warnings.warn(f"{path} not found: the checkpoint was saved without metahp, so the meta-policy starts "
                          f"afresh instead of continuing.", stacklevel=2)
            return
        with open(path) as f:
            state = json.load(f)
        if not isinstance(state, dict) or "policy" not in state:
            raise StateError(f"{path} is not a metahp TRL adapter state; delete it or resume without it.")
        self.policy.load_state_dict(state["policy"])
        self.value = float(state["value"])
        self.history = list(state["history"])
        self.apply(self.value)

    # -- the meta-update ----------------------------------------------------------------------------------
    def _draw(self) -> float:
        value = self.policy.sample()
        accelerator = self.trainer.accelerator
        if accelerator.num_processes > 1:  # every rank draws from the same stream; check that they agree
            from accelerate.utils import broadcast_object_list

            box = [value]
            broadcast_object_list(box, from_process=0)
            if box[0] != value:
                raise StateError(f"rank {accelerator.process_index} drew {self.knob_name}={value} but rank 0 drew "
                                 f"{box[0]}: the meta-policies diverged across ranks (different seeds or a state "
                                 f"loaded on some ranks only).")
        return float(value)

    def _meta_update(self, output: dict) -> dict[str, float]:
        trainer = self.trainer
        accelerator = trainer.accelerator
        advantages = output["advantages"].detach().float()
        if not self.policy.needs_likelihoods:  # bandit feedback: the global mean reward TRL just logged
            return self.policy.update(reward=float(trainer._metrics["train"]["reward"][-1]))
        logp = self._captured_logprobs(output)
        self.likelihood_source = "forward" if logp is None else "generate"
        if logp is None:
            logp = self.candidate_logprobs(output)
        if accelerator.num_processes > 1:  # same [N, K] and [N] on every rank -> the same update everywhere
            logp = accelerator.gather(logp.to(accelerator.device))
            advantages = accelerator.gather(advantages)
        logp, advantages = logp.cpu(), advantages.cpu()
        informative = advantages != 0
        return self.policy.update(logp[informative], advantages[informative], batch_size=len(advantages))

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
        """l[B, K]: each completion's length-normalised log-likelihood under every candidate (rows with zero
        advantage are left at 0, never computed). One no-grad forward of the informative rows, in chunks, with
        raw logits at completion positions only: exactly the logits TRL's loss divides by T."""
        trainer = self.trainer
        advantages = output["advantages"]
        completion_ids, completion_mask = output["completion_ids"], output["completion_mask"]
        mask = completion_mask if "tool_mask" not in output else completion_mask * output["tool_mask"]
        ids = torch.cat([output["prompt_ids"], completion_ids], dim=1)
        attention_mask = torch.cat([output["prompt_mask"], completion_mask], dim=1)
        n_rows, n_keep = completion_ids.shape
        out = torch.zeros(n_rows, len(self.policy.values), dtype=torch.float32)
        rows = torch.nonzero(advantages != 0).flatten()
        accelerator = trainer.accelerator
        vocab = accelerator.unwrap_model(trainer.model).config.get_text_config().vocab_size
        per_chunk = max(1, min(trainer.args.per_device_train_batch_size, CHUNK_ELEMENTS // ((n_keep + 1) * vocab)))
        n_chunks = math.ceil(len(rows) / per_chunk)
        if accelerator.num_processes > 1:
            # Sharded models (FSDP, ZeRO-3) gather weights in every forward: all ranks must run as many.
            n_chunks = int(accelerator.gather(torch.tensor([n_chunks], device=accelerator.device)).max())
        from trl.models.utils import disable_gradient_checkpointing

        with disable_gradient_checkpointing(trainer.model, trainer.args.gradient_checkpointing_kwargs):
            for i in range(n_chunks):
                chunk = rows[i * per_chunk:(i + 1) * per_chunk]
                dummy = len(chunk) == 0  # this rank has no rows left but others do
                take = rows.new_zeros(1) if dummy else chunk
                with accelerator.autocast():
                    # logits_to_keep = C + 1: the logit at position t predicts token t + 1
                    logits = trainer.model(input_ids=ids[take], attention_mask=attention_mask[take],
                                           logits_to_keep=n_keep + 1, use_cache=False).logits[:, :-1]
                if not dummy:
                    out[chunk.cpu()] = self.policy.knob.sequence_logprobs(
                        logits, completion_ids[take], mask[take]).to(out.device)
        return out


def _check_trl_version() -> None:
    try:
        import trl
    except ImportError as err:
        raise ConfigError("metahp's TRL adapter needs trl: pip install 'metahp[trl]'.") from err
    version = getattr(trl, "__version__", "unknown")
    try:
        major, minor = (int(p) for p in version.split(".")[:2])
    except ValueError:
        major = minor = -1
    low, high = SUPPORTED_TRL
    if not low <= (major, minor) < high:
        raise ConfigError(f"metahp's TRL adapter supports trl {low[0]}.{low[1]}.x, found trl {version}: where TRL "
                          f"keeps its copies of the temperature changes between versions. Install "
                          f"'trl>={low[0]}.{low[1]},<{high[0]}.{high[1]}'.")


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
    if getattr(trainer, "_is_vlm", False):
        raise ConfigError("metahp's TRL adapter supports text-only models for now (its likelihood forward does not "
                          "pass images); use a text model.")


def _fused_temperature_cells(trainer) -> list:
    """The closure cells holding the temperature of TRL's fused LM head, on the policy and the reference model."""
    policy = trainer.model.get_base_model() if hasattr(trainer.model, "get_base_model") else trainer.model
    models = [("policy", policy)]
    if getattr(trainer, "ref_model", None) is not None:
        models.append(("reference model", trainer.accelerator.unwrap_model(trainer.ref_model)))
    cells = []
    for what, model in models:
        cell = _temperature_cell(model)
        if cell is None:
            raise ConfigError(f"TRL's fused LM head (trl.trainer.utils.add_fused_lm_head) was not found on the "
                              f"{what}'s forward, so metahp cannot change the temperature of its log-probs; attach "
                              f"metahp right after building the GRPOTrainer, before anything else replaces forward.")
        if cell.cell_contents != trainer.temperature:
            raise ConfigError(f"the {what}'s fused LM head divides by {cell.cell_contents}, but trainer.temperature "
                              f"is {trainer.temperature}: something changed one without the other; attach metahp "
                              f"to a freshly built trainer.")
        if all(c is not cell for c in cells):
            cells.append(cell)
    return cells


def _temperature_cell(model):
    # add_fused_lm_head sets model.forward to a bound `_fused_forward` closing over `temperature`. functools.wraps
    # copies the class forward's __qualname__, so match the code object; follow __wrapped__ through decorators
    # (accelerate's autocast / fp32 conversion) in case they were applied already.
    fn = model.__dict__.get("forward")
    for _ in range(16):
        if fn is None:
            return None
        fn = getattr(fn, "__func__", fn)
        code = getattr(fn, "__code__", None)
        if code is not None and code.co_qualname.endswith("add_fused_lm_head.<locals>._fused_forward"):
            if "temperature" not in code.co_freevars:
                return None
            return fn.__closure__[code.co_freevars.index("temperature")]
        fn = getattr(fn, "__wrapped__", None)
    return None
