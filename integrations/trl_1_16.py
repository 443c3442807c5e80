"""Everything metahp touches that TRL 1.16 (and transformers' Trainer under it) keeps private, in one place.

The TRL adapter (integrations/trl.py) reaches TRL's internals only through this module: the trainer methods it
wraps, the buffer TRL logs metrics from, the closure cell where TRL's fused LM head keeps the temperature of its
log-probs, the checkpoint folder name, and the helper that turns gradient checkpointing off. A TRL upgrade means
auditing this file; ``missing_names`` lists what the installed TRL lacks, and tests/test_trl_compat.py fails on it.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable
from typing import Any

from metahp.errors import ConfigError

from . import kit

SUPPORTED_TRL = ((1, 16), (1, 17))  # [low, high) on (major, minor)
# The trainer methods the adapter wraps: generation + scoring (draw before, meta-update after), evaluation (the
# user's values), checkpoint save and load (the adapter's state file).
WRAPPED_METHODS = ("_generate_and_score_completions", "evaluation_loop", "_save_checkpoint",
                   "_load_optimizer_and_scheduler", "_compute_loss", "_get_per_token_logps_and_entropies")
# Values per completion wrap the last two as well: the loss's micro-batch carries each row's temperature, and every
# log-prob forward (old, reference, loss) scales its rows' hidden states by 1 / T before the fused LM head.
# The function whose closure holds the fused LM head's temperature, and its inner forward.
FUSED_HEAD = ("trl.trainer.utils", "add_fused_lm_head", "_fused_forward")
# What metahp reads or writes in that closure: the log-prob temperature (per batch), and for values per completion
# the backbone it projects and whether the logits are soft-capped.
CLOSURE_NAMES = ("temperature", "backbone_attr", "final_logit_softcapping")
# Where GRPOTrainer keeps the hyperparameters its loss reads at run time (copied from GRPOConfig in __init__:
# args.beta -> trainer.beta; args.epsilon -> trainer.epsilon_low, and -> trainer.epsilon_high unless
# args.epsilon_high is set). The learning rate lives in the optimizer's param groups, set by its scheduler.
RUN_TIME_HYPERPARAMETERS = {"beta": ("beta",), "epsilon": ("epsilon_low", "epsilon_high"),
                            "epsilon_high": ("epsilon_high",)}
# What _compute_loss logs in trainer._metrics["train"] once per micro-batch, by the measurement metahp reads from it
# (metahp.rewards.MEASUREMENTS): the mean per-token KL to the reference (only when beta != 0) and the share of tokens
# the clip binds (A < 0 below 1 - epsilon_low, A > 0 above 1 + epsilon_high; the clipped loss types only).
LOGGED_MEASUREMENTS = {"kl": "kl", "clip_fraction": "clip_ratio/region_mean"}
# The loss types whose loss clips the ratio to [1 - epsilon_low, 1 + epsilon_high] (cispo caps at epsilon_high
# itself; sapo and vespo do not clip).
# What decides whether _generate_and_score_completions computes old log-probs (computes_old_logprobs).
OLD_LOGPROBS_ATTRIBUTES = ("num_iterations", "use_vllm", "vllm_importance_sampling_correction")
CLIPPED_LOSSES = ("grpo", "bnpo", "dr_grpo", "dapo", "luspo")


def check_version() -> None:
    """Refuse a TRL outside SUPPORTED_TRL: where TRL keeps its copies of the knobs changes between versions."""
    try:
        import trl
    except ImportError as err:
        raise ConfigError("metahp's TRL adapter needs trl: pip install 'metahp[trl]'.") from err
    kit.check_framework_version(getattr(trl, "__version__", "unknown"), SUPPORTED_TRL, "metahp's TRL adapter", "trl")


def missing_names(trainer=None) -> list[str]:
    """The private names this module relies on that the installed TRL lacks (empty when all are there).
    With a built ``trainer``, its private attributes are checked too."""
    import importlib

    from trl import GRPOTrainer

    missing = [f"GRPOTrainer.{name}" for name in (*WRAPPED_METHODS, "_get_output_dir")
               if not callable(getattr(GRPOTrainer, name, None))]
    module_name, factory, inner = FUSED_HEAD
    fn = getattr(importlib.import_module(module_name), factory, None)
    codes = [c for c in getattr(getattr(fn, "__code__", None), "co_consts", ()) if getattr(c, "co_name", "") == inner]
    for name in CLOSURE_NAMES:
        if not codes or name not in codes[0].co_freevars:
            missing.append(f"{module_name}.{factory}.<locals>.{inner} closing over {name}")
    utils = importlib.import_module("trl.models.utils")
    if not callable(getattr(utils, "disable_gradient_checkpointing", None)):
        missing.append("trl.models.utils.disable_gradient_checkpointing")
    if trainer is not None:
        metrics = getattr(trainer, "_metrics", None)
        if not (isinstance(metrics, dict) and "train" in metrics):
            missing.append("GRPOTrainer()._metrics['train']")
        if not hasattr(trainer, "_is_vlm"):
            missing.append("GRPOTrainer()._is_vlm")
        missing += [f"GRPOTrainer().{attr}" for attr in OLD_LOGPROBS_ATTRIBUTES if not hasattr(trainer, attr)]
        missing += [f"GRPOTrainer().{attr}" for attrs in RUN_TIME_HYPERPARAMETERS.values() for attr in attrs
                    if not isinstance(getattr(trainer, attr, None), int | float)]
    return missing


# -- wrapping the trainer's methods -------------------------------------------------------------------------------
class Wrapped(kit.Wrapped):
    """The trainer's own methods, replaced by the adapter's until ``restore`` (only those listed here)."""

    def __init__(self, trainer, replacements: dict[str, Callable]):
        unknown = set(replacements) - set(WRAPPED_METHODS)
        if unknown:
            raise ValueError(f"not a method metahp wraps: {sorted(unknown)}")
        super().__init__(trainer, replacements)
        self.trainer = trainer


# -- metrics, checkpoints, model internals ------------------------------------------------------------------------
def log_metrics(trainer, metrics: dict[str, float]) -> None:
    """Append to TRL's training metrics buffer (what TRL averages and logs: TensorBoard, W&B, log_history)."""
    for key, value in metrics.items():
        trainer._metrics["train"][key].append(value)


def logged_training_metrics(trainer) -> dict[str, list[float]]:
    """TRL's training metrics buffer (key -> values appended since the last log, which clears it)."""
    return trainer._metrics["train"]


def computes_old_logprobs(trainer) -> bool:
    """Whether _generate_and_score_completions computes old log-probs (else the loss's ratio is exactly 1 and nothing
    clips): when generation and optimizer steps are misaligned, or with vLLM's importance-sampling correction."""
    generate_every = trainer.args.steps_per_generation * trainer.num_iterations
    return bool(trainer.args.gradient_accumulation_steps % generate_every != 0
                or (trainer.use_vllm and trainer.vllm_importance_sampling_correction))


def batch_mean_reward(trainer) -> float:
    """The batch's mean reward across processes, as TRL logged it in _generate_and_score_completions."""
    return float(trainer._metrics["train"]["reward"][-1])


def checkpoint_folder(trainer, trial) -> str:
    """The checkpoint-N folder transformers' Trainer is saving to."""
    from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

    return os.path.join(trainer._get_output_dir(trial=trial), f"{PREFIX_CHECKPOINT_DIR}-{trainer.state.global_step}")


def is_vision_model(trainer) -> bool:
    return bool(getattr(trainer, "_is_vlm", False))


def no_gradient_checkpointing(trainer) -> contextlib.AbstractContextManager:
    """Gradient checkpointing off for a no-grad forward (TRL's own helper)."""
    from trl.models.utils import disable_gradient_checkpointing

    return disable_gradient_checkpointing(trainer.model, trainer.args.gradient_checkpointing_kwargs)


def fused_models(trainer) -> list[tuple[str, Any]]:
    """The models carrying TRL's fused LM head: the policy (its base model under PEFT) and the reference model."""
    policy = trainer.model.get_base_model() if hasattr(trainer.model, "get_base_model") else trainer.model
    models = [("policy", policy)]
    if getattr(trainer, "ref_model", None) is not None:
        models.append(("reference model", trainer.accelerator.unwrap_model(trainer.ref_model)))
    return models


def fused_temperature_cells(trainer) -> list:
    """The closure cells holding the temperature of TRL's fused LM head, on the policy and the reference model."""
    cells = []
    for what, model in fused_models(trainer):
        cell = _closure_cell(model, "temperature")
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


def fused_backbones(trainer) -> list[tuple[str, Any]]:
    """The module whose last hidden state each fused LM head projects (``getattr(model, backbone_attr)`` in TRL's
    closure), with what stands in its way of scaling rows there: scaling row b's hidden states by 1 / t[b] divides
    its logits by t[b] exactly when the head has no bias and no final soft-capping (Llama, Qwen, SmolLM2, Mistral;
    not Gemma 2's soft-capped logits)."""
    out = []
    for what, model in fused_models(trainer):
        attr = _closure_cell(model, "backbone_attr")
        softcap = _closure_cell(model, "final_logit_softcapping")
        if attr is None or softcap is None:
            raise ConfigError(f"TRL's fused LM head on the {what} keeps no backbone_attr / final_logit_softcapping: "
                              f"this TRL's head is not the one metahp's values per completion scale; use "
                              f"per='batch'.")
        head = model.get_output_embeddings()
        problems = []
        if softcap.cell_contents is not None:
            problems.append(f"final logit soft-capping ({softcap.cell_contents})")
        if getattr(head, "bias", None) is not None:
            problems.append("an LM-head bias")
        if problems:
            raise ConfigError(f"values per completion divide each row's logits by its temperature by scaling the "
                              f"row's hidden states before TRL's fused LM head, which is exact only for a head "
                              f"without bias or soft-capping; the {what} has {' and '.join(problems)}. Use "
                              f"per='batch' with this model.")
        backbone = getattr(model, attr.cell_contents)
        if all(b is not backbone for _, b in out):  # PEFT: the reference is the policy with adapters off
            out.append((what, backbone))
    return out


def _closure_cell(model, name: str) -> Any:
    """The cell of ``name`` in the closure of the fused forward on ``model`` (None if absent)."""
    # add_fused_lm_head sets model.forward to a bound `_fused_forward` closing over `temperature`. functools.wraps
    # copies the class forward's __qualname__, so match the code object; follow __wrapped__ through decorators
    # (accelerate's autocast / fp32 conversion) in case they were applied already.
    _, factory, inner = FUSED_HEAD
    fn = model.__dict__.get("forward")
    for _ in range(16):
        if fn is None:
            return None
        fn = getattr(fn, "__func__", fn)
        code = getattr(fn, "__code__", None)
        if code is not None and code.co_qualname.endswith(f"{factory}.<locals>.{inner}"):
            if name not in code.co_freevars:
                return None
            return fn.__closure__[code.co_freevars.index(name)]
        fn = getattr(fn, "__wrapped__", None)
    return None
