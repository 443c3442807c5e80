"""Everything metahp touches that verl 0.9 keeps private, in one place.

The verl adapter (integrations/verl.py) reaches verl's internals only through this module: the legacy PPO trainer's
methods it wraps, the worker-group calls whose batches carry the log-prob temperature, the agent-loop registry and
base class (each rollout request's sampling settings), the TaskRunner the launcher extends, and the checkpoint
layout. A verl upgrade means auditing this file; ``missing_names`` lists what the installed verl lacks, and
tests_verl/test_private_names.py fails on it. Nothing here imports verl at module level: the main suite imports
this module without verl installed.
"""

from __future__ import annotations

import importlib
import os
from typing import Any

from metahp.errors import ConfigError

from . import kit

SUPPORTED_VERL = ((0, 9), (0, 10))  # [low, high) on (major, minor)
# The legacy fit loop (trainer.use_v1=False; verl_v1 adapts the v1 trainer, verl 0.9's default).
TRAINER = ("verl.trainer.ppo.ray_trainer", "RayPPOTrainer")
TASK_RUNNER = ("verl.trainer.main_ppo_v0", "TaskRunner")  # a Ray actor class; the launcher extends its class
MAIN = ("verl.trainer.main_ppo", "main")  # the hydra entry point `python -m verl.trainer.main_ppo` runs
# Trainer methods the adapter wraps: the actor update (the batch with its advantages: the meta-update) and the
# checkpoint save and load (the adapter's state file beside verl's).
WRAPPED_METHODS = ("_update_actor", "_save_checkpoint", "_load_checkpoint")
# Attributes of a trainer after init_workers(): the rollout manager (generation) and the worker groups whose
# calls carry the log-prob temperature (old log-probs, reference log-probs, the loss).
ROLLOUT_MANAGER = ("async_rollout_manager", "generate_sequences")
WORKER_CALLS = (("actor_rollout_wg", "compute_log_prob"), ("actor_rollout_wg", "update_actor"),
                ("ref_policy_wg", "compute_ref_log_prob"))
# The tensordict key the FSDP / Megatron engines read the temperature from: a number, or one per sample ([bsz]).
TEMPERATURE_KEY = "temperature"
# The agent loops: each request's sampling settings reach AgentLoopBase.run(sampling_params, **row); a row's
# non-tensor columns arrive as its keyword arguments, "agent_name" picks the loop.
AGENT_LOOP = ("verl.experimental.agent_loop.agent_loop", "AgentLoopBase")
AGENT_LOOP_REGISTRY = ("verl.experimental.agent_loop.agent_loop", "_agent_loop_registry")
AGENT_NAME_COLUMN = "agent_name"
# The v1 trainer (verl 0.9's default, trainer.use_v1=True): its base class, the registry of its modes, the TaskRunner
# main() runs it in, the methods the v1 adapter wraps (the step's prompts on their way to the agent loops, the actor
# update, the checkpoint save), and TransferQueue, where its batches live.
TRAINER_V1 = ("verl.trainer.ppo.v1.trainer_base", "PPOTrainer")
TRAINER_V1_REGISTRY = ("verl.trainer.ppo.v1", "get_trainer_cls")
TASK_RUNNER_V1 = ("verl.trainer.main_ppo", "TaskRunnerV1")
V1_WRAPPED_METHODS = ("_submit_batch_to_rollout", "_update_actor", "_save_checkpoint", "init")
TRANSFER_QUEUE = "transfer_queue"
# The v1 worker-group calls of the log-prob passes (old and reference log-probs, the loss): each takes a KVBatchMeta
# whose extra_info carries one temperature; the workers fetch its rows' fields from TransferQueue.
# The v1 agent-loop worker spawns a prompt's rollout.n completions itself, passing each its index as this keyword.
V1_SESSION_KWARG = "session_id"
# Prompt columns v1's agent-loop manager reads per prompt (agent_loop_tq._run_prompt): its own number of completions,
# and greedy decoding (verl's own training path sets neither; a user's dataset or sampler can).
V1_ROLLOUT_N_COLUMN = "__rollout_n__"
V1_DO_SAMPLE_COLUMN = "__do_sample__"
# v1 settings that submit more prompts within one step (the replay buffer's refill_fn): DAPO's group filter, the
# refill of failed groups, and a user's own sampler class.
V1_REFILL_SETTINGS = ("algorithm.filter_groups.enable", "trainer.v1.sampler.sync_refill_failed_groups")
V1_CUSTOM_SAMPLER = "trainer.v1.sampler.custom_sampler"
V1_WORKER_CALLS = (("actor_rollout_wg", "compute_log_prob"), ("actor_rollout_wg", "update_actor"),
                   ("ref_policy_wg", "compute_ref_log_prob"))
# verl's own check that sampling and scoring agree: max / mean |p_rollout - p_trainer| over response tokens.
ROLLOUT_GAP_METRICS = ("training/rollout_probs_diff_max", "training/rollout_probs_diff_mean")
# Rollout backends whose servers take sampling settings per request (vLLM and SGLang do; "hf" is the CPU test's).
PER_REQUEST_ROLLOUTS = ("vllm", "sglang", "hf")


def version() -> str:
    import verl

    return getattr(verl, "__version__", "unknown")


def check_version(found: str | None = None) -> None:
    """Refuse a verl outside SUPPORTED_VERL: where verl keeps its copies of the temperature changes between
    versions (its own TODO: "make temperature single source of truth")."""
    if found is None:
        try:
            found = version()
        except ImportError as err:
            raise ConfigError("metahp's verl adapter needs verl: pip install 'verl[verl-core]==0.9.1' "
                              "(docs/verl.md).") from err
    kit.check_framework_version(found, SUPPORTED_VERL, "metahp's verl adapter", "verl")


def resolve(where: tuple[str, str]) -> Any:
    module, name = where
    return getattr(importlib.import_module(module), name)


def trainer_class() -> type:
    return resolve(TRAINER)


def task_runner_class() -> type:
    """The plain class under verl's ``@ray.remote`` TaskRunner (Ray keeps it, modified, in its metadata)."""
    actor = resolve(TASK_RUNNER)
    return actor.__ray_metadata__.modified_class.__bases__[0]


def task_runner_v1_class() -> type:
    """The plain class under verl's ``@ray.remote`` TaskRunnerV1."""
    return resolve(TASK_RUNNER_V1).__ray_metadata__.modified_class.__bases__[0]


def v1_trainer_class(mode: str) -> type:
    """The v1 trainer class verl runs for ``trainer.v1.trainer_mode`` (``sync``: PPOTrainerSync)."""
    return resolve(TRAINER_V1_REGISTRY)(mode)


def transfer_queue():
    """TransferQueue's client module (``kv_batch_get``), initialised in the trainer's process by verl."""
    return importlib.import_module(TRANSFER_QUEUE)


def missing_v1_names(trainer=None) -> list[str]:
    """The private names the v1 adapter and launcher rely on that the installed verl lacks (empty when all are
    there); with a trainer after init(), its attributes too."""
    missing = []
    for where in (TRAINER_V1, TRAINER_V1_REGISTRY, TASK_RUNNER_V1, AGENT_LOOP, AGENT_LOOP_REGISTRY):
        try:
            resolve(where)
        except (ImportError, AttributeError):
            missing.append(".".join(where))
    try:
        transfer_queue().kv_batch_get  # noqa: B018
    except (ImportError, AttributeError):
        missing.append(f"{TRANSFER_QUEUE}.kv_batch_get")
    if not missing:
        cls = resolve(TRAINER_V1)
        missing += [f"PPOTrainer.{m}" for m in V1_WRAPPED_METHODS if not callable(getattr(cls, m, None))]
        try:
            task_runner_v1_class()
        except (AttributeError, IndexError):
            missing.append("TaskRunnerV1.__ray_metadata__.modified_class")
    if trainer is not None:
        missing += [] if hasattr(trainer, "config") else ["trainer.config"]
        missing += [] if hasattr(trainer, "global_steps") else ["trainer.global_steps (set by init())"]
    return missing


def agent_loop_base() -> type:
    return resolve(AGENT_LOOP)


def agent_loop_registry() -> dict:
    return resolve(AGENT_LOOP_REGISTRY)


def missing_names(trainer=None) -> list[str]:
    """The private names this module relies on that the installed verl lacks (empty when all are there). With a
    trainer after init_workers(), its attributes are checked too."""
    missing = []
    for where in (TRAINER, TASK_RUNNER, MAIN, AGENT_LOOP, AGENT_LOOP_REGISTRY):
        try:
            resolve(where)
        except (ImportError, AttributeError):
            missing.append(".".join(where))
    if not missing:
        cls = trainer_class()
        missing += [f"RayPPOTrainer.{m}" for m in (*WRAPPED_METHODS, "fit", "init_workers")
                    if not callable(getattr(cls, m, None))]
        try:
            task_runner_class()
        except (AttributeError, IndexError):
            missing.append("TaskRunner.__ray_metadata__.modified_class")
        if not callable(getattr(agent_loop_base(), "run", None)):
            missing.append("AgentLoopBase.run")
    if trainer is not None:
        holder, method = ROLLOUT_MANAGER
        if not callable(getattr(getattr(trainer, holder, None), method, None)):
            missing.append(f"trainer.{holder}.{method}")
        for holder, method in WORKER_CALLS[:2]:
            if not callable(getattr(getattr(trainer, holder, None), method, None)):
                missing.append(f"trainer.{holder}.{method}")
        missing += [] if hasattr(trainer, "config") else ["trainer.config"]  # global_steps: set by fit()
    return missing


def rollout_config(config):
    return config.actor_rollout_ref.rollout


def set_config(node, key: str, value) -> None:
    """Write into an OmegaConf node that may be in struct mode (verl's configs are)."""
    from omegaconf import open_dict

    with open_dict(node):
        setattr(node, key, value)


def checkpoint_folder(trainer) -> str:
    """Where verl saves the checkpoint of the current step: default_local_dir/global_step_{n}."""
    return os.path.join(trainer.config.trainer.default_local_dir, f"global_step_{trainer.global_steps}")


def resumed_folder(trainer) -> str | None:
    """The checkpoint folder verl's _load_checkpoint resumed from (None when it started afresh)."""
    if trainer.global_steps <= 0:
        return None
    config = trainer.config.trainer
    if config.resume_mode == "resume_path" and config.get("resume_from_path"):
        folder = config.resume_from_path
        return folder if os.path.isabs(folder) else os.path.join(os.getcwd(), folder)
    return checkpoint_folder(trainer)


def set_tensordict_temperature(td, value) -> None:
    """Make ``td``'s temperature ``value`` (a number, or a [bsz] tensor of one value per sample) for the engine."""
    from verl.utils import tensordict_utils as tu

    if TEMPERATURE_KEY in td.keys():
        del td[TEMPERATURE_KEY]
    if isinstance(value, int | float):
        tu.assign_non_tensor(td, **{TEMPERATURE_KEY: float(value)})
    else:
        td[TEMPERATURE_KEY] = value
