"""Adapter for verl's PPO trainer (GRPO; the legacy fit loop, ``trainer.use_v1=False``), and the launcher for both
trainers (the v1 trainer's adapter is ``verl_v1``).

Where verl keeps the temperature, and what the adapter does there (every verl-private name is in ``verl_0_9``):

- **Sampling.** Each rollout request: the adapter names metahp's agent loop on every training row, with the row's
  temperature and the loop it would have run as two more columns (``verl_agent_loop``: that loop puts the
  temperature into the request's sampling settings and runs the row's own loop). One value per batch gives every
  row the same temperature; one per completion gives each group of ``rollout.n`` the grid as the meta-policy says.
- **Scoring.** Every log-prob pass (old, reference, the loss): the batch carries each row's temperature as a tensor
  (``ROW_VALUE``), through verl's reordering, and each worker call gets it as the engine's temperature (a number
  per batch, verl's per-sample tensor per completion).
- **The driver's config** (``actor_rollout_ref.rollout.temperature``): the value applied, for anything else that
  reads it (the copy the kit keeps; per completion it holds 1, the off value).

The meta-policy lives on the driver, in the trainer's process: it draws before generation and learns in the
actor update from the batch's advantages and rewards (bandits from the mean reward; informativeness per completion
from each row's advantage). Likelihood rewards need the sampling logits, which stay in verl's rollout servers: they
are refused. Its metrics join the actor's (verl's logger), its state is ``metahp_state.json`` in each
``global_step_N`` checkpoint folder, written before verl marks the checkpoint complete.

Launch: ``python -m metahp.integrations.verl <main_ppo overrides> +metahp.per=completion ...`` (docs/verl.md), or
``metahp.adapt(trainer)`` after ``trainer.init_workers()`` in a script that holds the trainer.
"""

from __future__ import annotations

import importlib
import sys
import time
from typing import Any

import numpy as np
import torch

from metahp.errors import ConfigError
from metahp.knobset import KnobSet

from . import kit
from . import verl_0_9 as verl_compat

SUPPORTED_VERL = verl_compat.SUPPORTED_VERL
STATE_FILE = kit.STATE_FILE
ADAPTER_OPTIONS: tuple[str, ...] = ()  # evaluation keeps verl's val_kwargs
KNOBS_SUPPORTED = ("temperature",)  # verl's log-prob passes apply no truncation: top_p / top_k would be unscored
ROW_VALUE = "metahp_row_temperature"  # batch tensor: each row's temperature, from generation to every log-prob pass
ROW_INDEX = "metahp_row"  # batch tensor: each row's place in the drawn order (balance_batch reorders rows)
GROUP_ESTIMATORS = ("grpo", "rloo", "grpo_passk", "opo", "gpg")  # advantages relative to the prompt's group
LAUNCH_PREFIX = "+metahp."


def supports(trainer) -> bool:
    """True for verl's ``RayPPOTrainer`` and its subclasses (without importing verl)."""
    return any(cls.__name__ == "RayPPOTrainer" and cls.__module__.startswith("verl.") for cls in type(trainer).__mro__)


def attach(trainer, *, knob="temperature", updater="exp3", values=None, seed=None, combine="factored", per="batch",
           **options) -> VerlAdapter:
    """Attach a meta-policy over the temperature to a verl ``RayPPOTrainer`` after its ``init_workers()``."""
    return VerlAdapter(trainer, knob=knob, updater=updater, values=values, seed=seed, combine=combine, per=per,
                       **options)


# -- checks that need no verl ---------------------------------------------------------------------------------------
def _get(node, path: str, default=None):
    for part in path.split("."):
        if node is None:
            return default
        node = node.get(part, None) if hasattr(node, "get") else getattr(node, part, None)
    return default if node is None else node


def check_config(config, per: str, *, v1: bool = False) -> None:
    """Refuse verl settings under which the drawn temperature would not be what samples and scores each row (both
    trainers; ``verl_v1.check_v1_config`` adds the v1 trainer's own)."""
    if not v1 and _get(config, "trainer.use_v1", False):
        raise ConfigError("this is verl's legacy fit loop, but the config says trainer.use_v1=True: attach metahp to "
                          "the trainer that config runs (docs/verl.md).")
    estimator = str(_get(config, "algorithm.adv_estimator", "gae"))
    if estimator == "remax":
        raise ConfigError("algorithm.adv_estimator=remax adds greedy baseline rollouts to each generation batch, "
                          "which metahp would draw temperatures for: use grpo (or another group estimator).")
    rollout = str(_get(config, "actor_rollout_ref.rollout.name", "vllm"))
    if rollout not in verl_compat.PER_REQUEST_ROLLOUTS:
        raise ConfigError(f"actor_rollout_ref.rollout.name={rollout}: metahp sets each request's temperature, which "
                          f"it knows the {list(verl_compat.PER_REQUEST_ROLLOUTS)} servers honour.")
    n = int(_get(config, "actor_rollout_ref.rollout.n", 1))
    if per == "completion":
        if estimator not in GROUP_ESTIMATORS:
            raise ConfigError(f"values per completion learn from advantages within each prompt's group: use a group "
                              f"estimator {list(GROUP_ESTIMATORS)}, not algorithm.adv_estimator={estimator}.")
        if n < 2:
            raise ConfigError(f"values per completion mix the grid within each prompt's group: "
                              f"actor_rollout_ref.rollout.n={n} must be at least 2.")
        if _get(config, "actor_rollout_ref.model.use_fused_kernels", False):
            raise ConfigError("values per completion score each row at its own temperature, which verl's fused "
                              "kernels refuse (one temperature per batch only): set "
                              "actor_rollout_ref.model.use_fused_kernels=False, or use per='batch'.")


def row_advantages(advantages: torch.Tensor, response_mask: torch.Tensor) -> torch.Tensor:
    """Each row's advantage from verl's token-level advantages [B, T] (GRPO's is one value spread over the row's
    response tokens): the mean over its response mask; 0 for a row with no response token."""
    mask = response_mask.to(advantages.dtype)
    return (advantages * mask).sum(-1) / mask.sum(-1).clamp(min=1)


def row_value(column, session_id=None) -> float:
    """This request's temperature: the row's value, or, where a prompt carries one value per completion (verl's v1
    trainer: each agent-loop worker spawns a prompt's ``rollout.n`` completions itself), the one for its session."""
    if isinstance(column, int | float):
        return float(column)
    values = column.tolist() if hasattr(column, "tolist") else list(column)
    if isinstance(values, int | float):  # a 0-d tensor or array
        return float(values)
    if session_id is None:
        raise RuntimeError(f"metahp: this prompt carries one temperature per completion, but verl passed no "
                           f"{verl_compat.V1_SESSION_KWARG} to pick this completion's (a verl change?).")
    return float(values[int(session_id)])


def row_places(keys, tags, grids, prompts: dict[str, int], group_size: int) -> tuple[list[float], list[int | None]]:
    """Each v1 row's temperature and its place in the drawn order, per completion.

    A row's key is ``{uid}_{session}_{output}``; completion ``s`` of the step's prompt ``i`` was drawn at place
    ``i * group_size + s``, and sampled at ``grids[row][s]`` (the prompt's ``group_size`` values). A padding row (tag
    ``is_padding``: verl's data-parallel padding, a copy of a real row's fields under a new uid, its loss zeroed) gets
    its copied prompt's first value, which any log-prob pass can score, and no place: metahp does not learn from it.
    A real row from a prompt this step did not draw, or past the group, is an error, never a misattribution.
    """
    values: list[float] = []
    places: list[int | None] = []
    for key, tag, grid in zip(keys, tags, grids, strict=True):
        if tag.get("is_padding", False):
            values.append(float(grid[0]))
            places.append(None)
            continue
        uid, session, _output = str(key).rsplit("_", 2)
        session = int(session)
        if uid not in prompts or not 0 <= session < group_size:
            raise RuntimeError(f"metahp: row {key!r} is not one of the {group_size} completions of this step's "
                               f"prompts (a batch from another step: is the trainer generating ahead?); see "
                               f"docs/verl.md.")
        values.append(float(grid[session]))
        places.append(prompts[uid] * group_size + session)
    return values, places


def launch_fields(argv) -> tuple[dict[str, Any], list[str]]:
    """Split ``+metahp.<field>=<value>`` overrides (metahp.config.AdaptConfig's fields, values as hydra writes
    them) from the rest, which go to verl's main_ppo unchanged."""
    import yaml

    fields, rest = {}, []
    for arg in argv:
        if not arg.startswith(LAUNCH_PREFIX):
            rest.append(arg)
            continue
        key, sep, value = arg[len(LAUNCH_PREFIX):].partition("=")
        if not sep or not key:
            raise ConfigError(f"{arg!r}: write metahp's settings as {LAUNCH_PREFIX}<field>=<value>, e.g. "
                              f"{LAUNCH_PREFIX}per=completion.")
        fields[key] = yaml.safe_load(value)
    return fields, rest


def config_fields(config) -> dict[str, Any]:
    """The metahp fields of a verl config (its ``metahp`` group, as the launcher's overrides put it)."""
    group = _get(config, "metahp", None)
    if group is None:
        return {}
    try:
        from omegaconf import OmegaConf

        return dict(OmegaConf.to_container(group, resolve=True))
    except (ImportError, ValueError):
        return dict(group)


def build_knobset(config, *, knob="temperature", updater="exp3", values=None, seed=None, combine="factored",
                  per="batch", **options) -> KnobSet:
    """The knob layer for a verl run (``config``: verl's, or the launcher's overrides): every check that needs no
    trainer, so the launcher refuses a bad combination before Ray starts."""
    if per == "prompt":
        raise ConfigError("per='prompt' learns from each prompt's past pass rate, which verl's trainer does not keep; "
                          "use per='completion' or 'batch'.")
    n = int(_get(config, "actor_rollout_ref.rollout.n", 1))
    batch = int(_get(config, "data.train_batch_size", 0)) * n or None
    seed = int(_get(config, "data.seed", 0) or 0) if seed is None else seed
    knobset = KnobSet(knob, updater, values, seed, combine=combine, supported=KNOBS_SUPPORTED,
                      who="metahp's verl adapter", batch_size=batch,
                      batch_what="a generation batch (data.train_batch_size x actor_rollout_ref.rollout.n)",
                      per=per, group_size=n, **options)
    if knobset.needs_likelihoods:
        raise ConfigError(f"reward {knobset.policy.reward.name!r} needs each candidate's likelihood of the sampled "
                          f"tokens, from the sampling logits, which stay in verl's rollout servers. With verl use a "
                          f"bandit per batch (updater='exp3', the default, or 'sliding_window_ucb', 'thompson') or, "
                          f"per completion, updater='softmax_gradient' with reward='informativeness' (or "
                          f"'within_group_advantage'), or updater='uniform'.")
    return knobset


# -- the adapters ---------------------------------------------------------------------------------------------------
class VerlAdapterBase(kit.KitAdapter):
    """What the adapters of verl's two trainers share: the knob layer built from verl's config, the driver's copy of
    the temperature, the state saved in each ``global_step_N`` folder, and detach."""

    def __init__(self, trainer, config, *, knob, updater, values, seed, combine, per, **options):
        knobset = build_knobset(config, knob=knob, updater=updater, values=values, seed=seed, combine=combine,
                                per=per, **options)
        if getattr(trainer, "_metahp_adapter", None) is not None:
            raise ConfigError("this trainer already has a metahp adapter; call adapter.detach() before attaching "
                              "another one.")
        rollout = verl_compat.rollout_config(config)
        super().__init__(knobset, {"temperature": float(rollout.temperature)})
        self.trainer = trainer
        self.copies.add("temperature", "config.actor_rollout_ref.rollout.temperature", lambda: rollout.temperature,
                        lambda v: verl_compat.set_config(rollout, "temperature", v))
        self.default_agent_loop = str(rollout.agent.default_agent_loop)
        self.group_size = int(_get(config, "actor_rollout_ref.rollout.n", 1))
        self.update_seconds: list[float] = []
        self._wrapped: list[kit.Wrapped] = []  # the subclass's wrapped methods, restored by detach()

    def detach(self) -> None:
        """verl's own methods come back and the config the user's temperature (between steps)."""
        for wrapped in self._wrapped:
            wrapped.restore()
        self._wrapped = []
        super().detach()
        self.trainer._metahp_adapter = None

    def _save_checkpoint(self, *args, **kwargs):
        self.save(verl_compat.checkpoint_folder(self.trainer))  # before verl's latest_checkpointed_iteration.txt
        return self._methods["_save_checkpoint"](*args, **kwargs)

    def _timed(self, start: float, metrics: dict[str, float]) -> dict[str, float]:
        """The meta-update's metrics with its wall time (``metahp/update_seconds``)."""
        self.update_seconds.append(time.perf_counter() - start)
        metrics["metahp/update_seconds"] = self.update_seconds[-1]
        return metrics


class VerlAdapter(VerlAdapterBase):
    """The meta-policy wired into one verl RayPPOTrainer (values, copies, history and state: ``kit.KitAdapter``)."""

    who = "verl adapter"

    def __init__(self, trainer, *, knob="temperature", updater="exp3", values=None, seed=None, combine="factored",
                 per="batch", **options):
        verl_compat.check_version()
        missing = verl_compat.missing_names(trainer)
        if any(name.startswith("trainer.") for name in missing):
            raise ConfigError(f"call metahp.adapt(trainer) after trainer.init_workers(): the trainer has no "
                              f"{[n for n in missing if n.startswith('trainer.')]} yet.")
        if missing:
            raise ConfigError(f"this verl ({verl_compat.version()}) lacks {missing}, which metahp's verl adapter "
                              f"needs; install verl 0.9.x.")
        check_config(trainer.config, per)
        super().__init__(trainer, trainer.config, knob=knob, updater=updater, values=values, seed=seed,
                         combine=combine, per=per, **options)
        self._rows: list[float] | None = None  # the temperatures of the batch being trained on, in drawn order
        holder, method = verl_compat.ROLLOUT_MANAGER
        self._methods = kit.Wrapped(trainer, {"_update_actor": self._update_actor,
                                              "_save_checkpoint": self._save_checkpoint,
                                              "_load_checkpoint": self._load_checkpoint})
        self._rollout = kit.Wrapped(getattr(trainer, holder), {method: self._generate})
        self._wrapped = [self._methods, self._rollout]
        calls: dict[str, dict] = {}
        for holder, method in verl_compat.WORKER_CALLS:  # ref_policy_wg exists only with a separate reference
            if callable(getattr(getattr(trainer, holder, None), method, None)):
                calls.setdefault(holder, {})[method] = None
        for holder, methods in calls.items():
            group = getattr(trainer, holder)
            self._wrapped.append(kit.Wrapped(group, {m: self._scored(getattr(group, m)) for m in methods}))
        trainer._metahp_adapter = self

    # -- generation: every training request at its row's temperature ----------------------------------------------
    def _generate(self, batch):
        from .verl_agent_loop import INNER_COLUMN, NAME, VALUE_COLUMN

        original = self._rollout[verl_compat.ROLLOUT_MANAGER[1]]
        if batch.meta_info.get("validate", False):  # evaluation: verl's val_kwargs, no draw
            return original(batch)
        rows = len(batch)
        drawn = self.draw_and_apply(int(getattr(self.trainer, "global_steps", 0)), rows=rows)["temperature"]
        per_row = [float(v) for v in drawn] if self.per == "completion" else [float(drawn)] * rows
        columns = batch.non_tensor_batch
        name_column = verl_compat.AGENT_NAME_COLUMN
        inner = columns.get(name_column, np.array([self.default_agent_loop] * rows, dtype=object))
        columns[INNER_COLUMN] = np.asarray(inner, dtype=object)
        columns[name_column] = np.array([NAME] * rows, dtype=object)
        columns[VALUE_COLUMN] = np.array(per_row, dtype=np.float64)
        out = original(batch)
        if len(out) != rows:
            raise RuntimeError(f"metahp: verl's rollout returned {len(out)} rows for {rows} requests; each row's "
                               f"temperature could not be matched to it.")
        for key in (INNER_COLUMN, VALUE_COLUMN):
            out.non_tensor_batch.pop(key, None)
        if name_column in out.non_tensor_batch:
            out.non_tensor_batch[name_column] = np.asarray(inner, dtype=object)
        out.batch[ROW_VALUE] = torch.tensor(per_row, dtype=torch.float32)
        out.batch[ROW_INDEX] = torch.arange(rows)
        self._rows = per_row
        return out

    # -- scoring: every log-prob pass at the rows' temperatures ----------------------------------------------------
    def _scored(self, call):
        def scored(td, *args, **kwargs):
            if ROW_VALUE in td.keys():
                values = td[ROW_VALUE].float()
                del td[ROW_VALUE]
                del td[ROW_INDEX]
                verl_compat.set_tensordict_temperature(td, values if self.per == "completion" else float(values[0]))
            return call(td, *args, **kwargs)

        return scored

    # -- the meta-update, in the actor update ---------------------------------------------------------------------
    def _update_actor(self, batch):
        metrics = self.meta_update(batch)
        out = self._methods["_update_actor"](batch)
        out.meta_info.setdefault("metrics", {}).update(metrics)
        return out

    def meta_update(self, batch) -> dict[str, float]:
        """Learn from the batch verl is about to train on: its rows put back in drawn order."""
        start = time.perf_counter()
        tensors = batch.batch
        if ROW_INDEX not in tensors.keys():
            raise RuntimeError("metahp: the batch has lost the rows' temperatures between generation and the actor "
                               "update (a verl change between versions?); see docs/verl.md.")
        order = torch.argsort(tensors[ROW_INDEX])
        advantages = row_advantages(tensors["advantages"], tensors["response_mask"])[order]
        rewards = tensors["token_level_scores"].sum(-1)[order]
        used = tensors[ROW_VALUE][order].tolist()
        return self._timed(start, self.knobset.update(advantages=advantages, reward=float(rewards.float().mean()),
                                                      used={"temperature": used if self.per == "completion"
                                                            else used[0]}))

    # -- state in verl's checkpoint folder ------------------------------------------------------------------------
    def _load_checkpoint(self):
        out = self._methods["_load_checkpoint"]()
        folder = verl_compat.resumed_folder(self.trainer)
        if folder is not None:
            self.load(folder)
        return out


# -- the launcher -----------------------------------------------------------------------------------------------------
def _task_runner():
    """verl's TaskRunner (a Ray actor) that attaches metahp to its trainer once the workers are up."""
    import ray

    base = verl_compat.task_runner_class()

    class MetahpTaskRunner(base):
        def run(self, config):
            import metahp

            fields = config_fields(config)
            cls = verl_compat.trainer_class()
            init_workers = cls.init_workers

            def init_then_adapt(trainer):
                init_workers(trainer)
                metahp.adapt(trainer, **fields)

            cls.init_workers = init_then_adapt  # this Ray actor runs this one training job
            try:
                return super().run(config)
            finally:
                cls.init_workers = init_workers

    return ray.remote(MetahpTaskRunner)


def _task_runner_v1():
    """verl's TaskRunnerV1 (a Ray actor) that attaches metahp to its v1 trainer once ``trainer.init()`` is done."""
    import ray

    base = verl_compat.task_runner_v1_class()

    class MetahpTaskRunnerV1(base):
        def run(self, config):
            import metahp

            fields = config_fields(config)
            cls = verl_compat.v1_trainer_class(str(config.trainer.v1.trainer_mode))

            def init_then_adapt(trainer):
                init(trainer)
                metahp.adapt(trainer, **fields)

            init = cls.init
            with kit.replaced(cls, "init", init_then_adapt):  # this Ray actor runs this one training job
                return super().run(config)

    return ray.remote(MetahpTaskRunnerV1)


def main(argv=None) -> None:
    """``python -m metahp.integrations.verl <verl main_ppo overrides> +metahp.<field>=<value> ...``: verl's own
    entry point with metahp attached. The metahp fields are checked here, before Ray starts."""
    from metahp.config import AdaptConfig

    argv = sys.argv[1:] if argv is None else list(argv)
    fields, _ = launch_fields(argv)
    config = AdaptConfig.from_keywords(**fields)  # a bad field fails now, not after Ray and the workers start
    overrides = _overrides_as_config(argv)
    v1 = _get(overrides, "trainer.use_v1", True) is not False  # verl 0.9's default is the v1 trainer
    if v1:
        from .verl_v1 import check_v1_config

        check_v1_config(overrides)
    check_config(overrides, config.per, v1=v1)
    build_knobset(overrides, **config.attach_options(ADAPTER_OPTIONS))  # the knob layer's checks and the refusals
    verl_compat.check_version()
    # Both runners: trainer.use_v1 can also come from a config file, which only verl's hydra reads; each attached
    # adapter checks the whole resolved config.
    module, name = verl_compat.TASK_RUNNER_V1
    setattr(importlib.import_module(module), name, _task_runner_v1())  # main() reads it at call time
    module, name = verl_compat.TASK_RUNNER
    setattr(importlib.import_module(module), name, _task_runner())  # main_ppo imports it at call time
    sys.argv = [sys.argv[0], *argv]
    verl_compat.resolve(verl_compat.MAIN)()


def _overrides_as_config(argv) -> dict:
    """The dotted overrides as a nested dict (only what check_config reads; verl's defaults fill the rest)."""
    import yaml

    root: dict = {}
    for arg in argv:
        key, sep, value = arg.lstrip("+").partition("=")
        if not sep:
            continue
        node = root
        *parents, leaf = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                break
        else:
            node[leaf] = yaml.safe_load(value)
    return root


if __name__ == "__main__":
    main()
