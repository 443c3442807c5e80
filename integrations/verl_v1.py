"""Adapter for verl's v1 PPO trainer (verl 0.9's default, ``trainer.use_v1=True``), sync mode: one value per batch
or one per completion.

The v1 trainer keeps each step's batch in TransferQueue (``KVBatchMeta``: keys into a store) instead of a
``DataProto``, and reads the temperature of every log-prob pass from the driver's config at each call. Where the
adapter acts (every verl-private name is in ``verl_0_9``):

- **Sampling.** ``_submit_batch_to_rollout`` hands each step's prompts to the agent-loop workers. Before it does,
  the adapter draws the step's value(s) and names metahp's agent loop on every prompt, with the value and the loop
  it would have run as two more columns (``verl_agent_loop``, shared with the legacy adapter). The workers spawn the
  ``rollout.n`` completions of each prompt with those columns, so every request of the step samples at the value.
  Per completion the column holds the prompt's ``rollout.n`` values, and each completion's request takes the one of
  its ``session_id``.
- **Scoring.** The old, reference and actor passes read ``actor_rollout_ref.rollout.temperature`` from the driver's
  config when they are called. Per batch, the adapter writes the drawn value there (the kit's copy), so each pass
  of the step scores at it. Per completion, before each pass, it writes every row's value into TransferQueue as
  the row's ``temperature`` field and takes the call's one number out of its metadata; the workers then fetch each
  row's value with the row, so the engine gets its per-sample tensor on every data-parallel shard.
- **Learning.** ``_update_actor``: before verl trains on the batch, the adapter reads the rows' scores, advantages
  and temperatures back from TransferQueue, checks that every row was sampled at the drawn value, and updates the
  meta-policy. Its metrics join the step's (verl's logger).
- **State.** ``metahp_state.json`` in each ``global_step_N`` folder, written before verl marks the checkpoint
  complete. The v1 trainer loads its checkpoint inside ``init()``, before metahp can attach, so the adapter reads
  its state from the same folder when it attaches to a trainer that resumed.

Only ``trainer.v1.trainer_mode=sync``: the async modes generate batches steps ahead, so a batch could be drawn under
an older meta-policy than the one it trains.
"""

from __future__ import annotations

import dataclasses
import time

import numpy as np
import torch

from metahp.errors import ConfigError, InputError

from . import kit
from . import verl_0_9 as verl_compat
from .verl import ADAPTER_OPTIONS, KNOBS_SUPPORTED, VerlAdapterBase, _get, check_config, row_advantages, row_places

__all__ = ["ADAPTER_OPTIONS", "KNOBS_SUPPORTED", "VerlV1Adapter", "attach", "check_v1_config", "supports"]


def supports(trainer) -> bool:
    """True for verl's v1 ``PPOTrainer`` and its subclasses (sync, async), without importing verl."""
    return any(cls.__name__ == "PPOTrainer" and cls.__module__.startswith("verl.trainer.ppo.v1")
               for cls in type(trainer).__mro__)


def attach(trainer, *, knob="temperature", updater="exp3", values=None, seed=None, combine="factored", per="batch",
           **options) -> VerlV1Adapter:
    """Attach a meta-policy over the temperature to a verl v1 trainer after its ``init()``."""
    return VerlV1Adapter(trainer, knob=knob, updater=updater, values=values, seed=seed, combine=combine, per=per,
                         **options)


def check_v1_config(config) -> None:
    """Refuse v1 settings under which one drawn value would not be what samples and scores the batch it learns from
    (the settings both trainers share are ``verl.check_config``'s)."""
    mode = str(_get(config, "trainer.v1.trainer_mode", "sync"))
    if mode != "sync":
        raise ConfigError(f"trainer.v1.trainer_mode={mode}: the async modes generate batches steps ahead, so a batch "
                          f"would train a meta-policy that moved after drawing it. Use trainer.v1.trainer_mode=sync.")
    sync_steps = int(_get(config, "trainer.v1.sync.parameter_sync_step", 1))
    if sync_steps != 1:
        raise ConfigError(f"trainer.v1.sync.parameter_sync_step={sync_steps}: metahp draws one value per step's "
                          f"batch; leave it at 1.")
    for setting in verl_compat.V1_REFILL_SETTINGS:
        if _get(config, setting, False):
            raise ConfigError(f"{setting}=True submits more prompts within a step to replace the groups it drops, "
                              f"and metahp draws once per step (a batch would mix two draws): set it to False.")
    sampler = _get(config, verl_compat.V1_CUSTOM_SAMPLER, None) or {}
    if _get(sampler, "path", None) and _get(sampler, "name", None):
        raise ConfigError(f"{verl_compat.V1_CUSTOM_SAMPLER}: a sampler of your own decides when prompts are "
                          f"submitted, and metahp draws once per step for the step's one submission; remove it.")


class VerlV1Adapter(VerlAdapterBase):
    """The meta-policy wired into one verl v1 trainer (values, copies, history and state: ``kit.KitAdapter``)."""

    who = "verl v1 adapter"

    def __init__(self, trainer, *, knob="temperature", updater="exp3", values=None, seed=None, combine="factored",
                 per="batch", **options):
        verl_compat.check_version()
        missing = verl_compat.missing_v1_names(trainer)
        if missing:
            raise ConfigError(f"this verl ({verl_compat.version()}) lacks {missing}, which metahp's verl v1 adapter "
                              f"needs; install verl 0.9.x, and call metahp.adapt(trainer) after trainer.init().")
        check_v1_config(trainer.config)
        check_config(trainer.config, per, v1=True)
        super().__init__(trainer, trainer.config, knob=knob, updater=updater, values=values, seed=seed,
                         combine=combine, per=per, **options)
        self._prompts: dict[str, int] = {}  # per completion: the step's prompt uids, in drawn order
        self._rows: tuple[tuple, list[float], list[int | None]] | None = None  # the step's rows: keys, values, places
        self._put: tuple | None = None  # the keys whose values are in TransferQueue as their temperature field
        self._methods = kit.Wrapped(trainer, {"_submit_batch_to_rollout": self._submit,
                                              "_update_actor": self._update_actor,
                                              "_save_checkpoint": self._save_checkpoint})
        self._wrapped.append(self._methods)
        if self.per == "completion":  # every log-prob pass: each row at its own value
            for holder, method in verl_compat.V1_WORKER_CALLS:
                group = getattr(trainer, holder, None)
                if callable(getattr(group, method, None)):
                    self._wrapped.append(kit.Wrapped(group, {method: self._scored(getattr(group, method))}))
        trainer._metahp_adapter = self
        folder = verl_compat.resumed_folder(trainer)  # init() already loaded verl's checkpoint: load ours beside it
        if folder is not None:
            self.load(folder)

    # -- generation: the step's prompts at the drawn value --------------------------------------------------------
    def _submit(self, batch):
        from tensordict import NonTensorData, NonTensorStack

        from .verl_agent_loop import INNER_COLUMN, NAME, VALUE_COLUMN

        name_column = verl_compat.AGENT_NAME_COLUMN
        step = int(getattr(self.trainer, "global_steps", 0))
        prompts = len(batch)
        self._check_prompt_columns(batch)
        self._rows = self._put = None
        if self.per == "completion":  # the prompt's group of rollout.n: values drawn[i*n:(i+1)*n], as the knob layer
            drawn = self.draw_and_apply(step, rows=prompts * self.group_size)["temperature"]
            column = torch.tensor(drawn, dtype=torch.float64).view(prompts, self.group_size)
            self._prompts = {str(uid): i for i, uid in enumerate(_as_list(batch["uid"]))}
        else:
            column = NonTensorData(float(self.draw_and_apply(step)["temperature"]))
        inner = batch.get(name_column, None) if name_column in batch.keys() else None
        if inner is None:
            batch[INNER_COLUMN] = NonTensorData(self.default_agent_loop)
        else:  # the rows' own loops (a NonTensorStack per row, or one for all)
            batch[INNER_COLUMN] = inner
        batch[name_column] = NonTensorStack(*[NonTensorData(NAME) for _ in range(len(batch))])
        batch[VALUE_COLUMN] = column
        return self._methods["_submit_batch_to_rollout"](batch)

    def _check_prompt_columns(self, batch) -> None:
        """Refuse prompts that carry verl's per-prompt sampling columns, which metahp's draw cannot honour."""
        keys = set(batch.keys())
        if self.per == "completion" and verl_compat.V1_ROLLOUT_N_COLUMN in keys:
            raise InputError(f"metahp: the step's prompts carry {verl_compat.V1_ROLLOUT_N_COLUMN} (a number of "
                             f"completions per prompt), but values per completion draw rollout.n="
                             f"{self.group_size} values for each prompt: drop that column, or use per='batch'.")
        if verl_compat.V1_DO_SAMPLE_COLUMN in keys:
            column = batch[verl_compat.V1_DO_SAMPLE_COLUMN]
            flags = [column.data] if type(column).__name__ == "NonTensorData" else _as_list(column)  # one for all
            greedy = [flag for flag in flags if not bool(flag)]
            if greedy:
                raise InputError(f"metahp: {len(greedy)} of the step's prompts ask for greedy decoding "
                                 f"({verl_compat.V1_DO_SAMPLE_COLUMN}=False), which metahp's temperature would "
                                 f"override: drop that column from training prompts.")

    # -- scoring per completion: each row's value as a TransferQueue field, read with the row ------------------------
    def _scored(self, call):
        def scored(batch, *args, **kwargs):
            from tensordict import TensorDict

            values, _ = self._row_values(batch)
            if self._put != tuple(batch.keys):  # once per step's rows: the field stays for the step's later passes
                verl_compat.transfer_queue().kv_batch_put(
                    keys=batch.keys, partition_id=batch.partition_id,
                    fields=TensorDict({verl_compat.TEMPERATURE_KEY: torch.tensor(values, dtype=torch.float32)},
                                      batch_size=len(batch.keys)))
                self._put = tuple(batch.keys)
            batch.extra_info.pop(verl_compat.TEMPERATURE_KEY, None)  # else one number overwrites the rows' values
            named = [batch.fields] if isinstance(batch.fields, str) else batch.fields  # KVBatchMeta allows one name
            if named is not None and verl_compat.TEMPERATURE_KEY not in named:
                # a batch that names its fields hands the workers only those (bypass mode: no log-prob pass has
                # named ours before the update)
                batch = dataclasses.replace(batch, fields=[*named, verl_compat.TEMPERATURE_KEY])
            return call(batch, *args, **kwargs)

        return scored

    def _row_values(self, batch) -> tuple[list[float], list[int | None]]:
        """Each row's temperature and its place in the drawn order (``verl.row_places``), read once per step."""
        from .verl_agent_loop import VALUE_COLUMN

        keys = tuple(batch.keys)
        if self._rows is not None and self._rows[0] == keys:
            return self._rows[1], self._rows[2]
        data = verl_compat.transfer_queue().kv_batch_get(keys=batch.keys, partition_id=batch.partition_id,
                                                         select_fields=[VALUE_COLUMN])
        column = data[VALUE_COLUMN]  # per row, its prompt's rollout.n values; TransferQueue may give it back jagged
        grids = ([row.tolist() for row in column.unbind()] if getattr(column, "is_nested", False)
                 else torch.as_tensor(column).reshape(len(batch.keys), -1).tolist())
        values, places = row_places(batch.keys, batch.tags, grids, self._prompts, self.group_size)
        self._rows = (keys, values, places)
        return values, places

    # -- the meta-update, in the actor update ---------------------------------------------------------------------
    def _update_actor(self, batch, metrics):
        metrics.update(self.meta_update(batch))
        return self._methods["_update_actor"](batch, metrics)

    def meta_update(self, batch) -> dict[str, float]:
        """Learn from the batch verl is about to train on, read from TransferQueue (padding rows left out)."""
        from .verl_agent_loop import VALUE_COLUMN

        start = time.perf_counter()
        if self.per == "completion":
            return self._meta_update_rows(batch, start)
        fields = ["advantages", "response_mask", "rm_scores", VALUE_COLUMN]
        data = verl_compat.transfer_queue().kv_batch_get(keys=batch.keys, partition_id=batch.partition_id,
                                                         select_fields=fields)
        real = torch.tensor([not tag.get("is_padding", False) for tag in batch.tags], dtype=torch.bool)
        padded = data.select("advantages", "response_mask", "rm_scores").to_padded_tensor()
        advantages = row_advantages(padded["advantages"], padded["response_mask"])[real]
        rewards = (padded["rm_scores"] * padded["response_mask"]).sum(-1)[real]
        used = np.asarray([float(v) for v in _as_list(data[VALUE_COLUMN])], dtype=np.float64)[real.numpy()]
        drawn = float(self.value)
        if used.size == 0 or not np.allclose(used, drawn, rtol=0, atol=1e-9):
            raise RuntimeError(f"metahp: the batch verl trains on was sampled at {sorted(set(used.tolist()))[:4]}, "
                               f"not at this step's drawn {drawn:g} (a batch from another step: is the trainer "
                               f"generating ahead?); see docs/verl.md.")
        return self._timed(start, self.knobset.update(advantages=advantages, reward=float(rewards.float().mean()),
                                                      used={"temperature": drawn}))

    def _meta_update_rows(self, batch, start: float) -> dict[str, float]:
        """Per completion: the rows put back in drawn order (prompt by prompt, session by session), each with the
        value that sampled it. Padding rows are left out. A completion whose rollout failed has no row, and the
        meta-policy learns from the rows present (``metahp/rows_missing`` counts the others, ``metahp/rows_padding``
        the padding rows); a row twice is an error, never a silent misattribution."""
        values, places = self._row_values(batch)
        keep = [i for i, place in enumerate(places) if place is not None]
        order = [places[i] for i in keep]
        rows = len(self._prompts) * self.group_size
        if len(set(order)) != len(order):
            raise RuntimeError(f"metahp: the batch verl trains on holds {len(order) - len(set(order))} completions "
                               f"twice (several outputs per completion?); values per completion need one row per "
                               f"completion (docs/verl.md).")
        missing = {"metahp/rows_missing": float(rows - len(order)),
                   "metahp/rows_padding": float(len(places) - len(keep))}
        if not order:  # every rollout of the step failed: nothing to learn from
            return {**self._timed(start, {}), **missing}
        data = verl_compat.transfer_queue().kv_batch_get(keys=batch.keys, partition_id=batch.partition_id,
                                                         select_fields=["advantages", "response_mask", "rm_scores"])
        padded = data.to_padded_tensor()
        place = torch.argsort(torch.tensor(order))
        advantages = row_advantages(padded["advantages"], padded["response_mask"])[keep][place]
        rewards = (padded["rm_scores"] * padded["response_mask"]).sum(-1)[keep][place]
        used = [values[keep[i]] for i in place.tolist()]
        drawn = [self.value[order[i]] for i in place.tolist()]
        if not np.allclose(used, drawn, rtol=0, atol=1e-9):
            raise RuntimeError("metahp: the rows verl trains on carry other temperatures than metahp drew for them "
                               "(a verl change in how rows reach TransferQueue?); see docs/verl.md.")
        return {**self._timed(start, self.knobset.update(advantages=advantages, reward=float(rewards.float().mean()),
                                                         used={"temperature": used})), **missing}


def _as_list(column) -> list:
    """A TransferQueue column as one entry per row (a tensor, a NonTensorStack or a list)."""
    if isinstance(column, torch.Tensor):
        return column.reshape(-1).tolist()
    if hasattr(column, "tolist"):
        return list(column.tolist())
    return list(column)
