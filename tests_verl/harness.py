"""Run verl's GRPO trainer on this CPU as a subprocess and read back what it did.

``run_verl(workdir, overrides)`` launches ``python -m verl.trainer.main_ppo`` (or any launcher that takes the same
Hydra overrides, such as metahp's own ``metahp.integrations.verl``) on the tiny assets of ``assets.py``, with the
CPU platform and the ``hf`` rollout of ``cpu_platform.py``, and returns a ``VerlRun``: the exit status, the log,
the metrics of every step (verl's ``file`` logger, one JSON line per step), every generate request the rollout
served (``cpu_platform``'s record), and the checkpoint folder.

    run = run_verl(tmp_path, ["actor_rollout_ref.rollout.temperature=0.7"])
    assert {r["temperature"] for r in run.requests} == {0.7}
    print(run.metrics[-1]["training/rollout_probs_diff_max"])

One run of two steps takes about 3 minutes on 2 cores, most of it Ray and worker start-up.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from assets import MODEL_DIR, build_assets

HERE = Path(__file__).resolve().parent
PYTHON = sys.executable  # the verl environment's interpreter (make verl-test runs .venv-verl/bin/pytest)
LOG_TAIL_LINES = 80


def base_overrides(assets: Path, workdir: Path, steps: int) -> list[str]:
    """The Hydra overrides that make verl 0.9.1's GRPO trainer run on this CPU with the tiny assets.

    - ``trainer.use_v1=False``: the legacy fit loop (``ray_trainer.RayPPOTrainer``). A v1 run overrides it with
      ``trainer.use_v1=True`` and ``ray_kwargs.ray_init.num_cpus=16`` (TransferQueue's controller and 8 storage
      units take one logical CPU each; with 8 the placement group never fills).
    - ``trainer.device=cpu`` with one fake GPU (``+ray_kwargs.ray_init.num_gpus=1``) for Ray's placement groups;
      the ``cpu`` platform of ``cpu_platform.py`` answers verl's device calls.
    - fsdp2, eager attention, no remove-padding (flash-attn's varlen kernels), no torch.compile, float32 compute
      (no bfloat16 autocast), so the trainer's log-probs match the float32 rollout to float noise.
    - the KL loss on (verl's GRPO default coefficient 0.001, low_var_kl), so the reference log-prob pass runs: at
      step 1 the actor equals the reference, and ``actor/kl_loss`` is ~0 only if both score at the same temperature;
    - learning rate 1e-3 (not 1e-6), so the policy moves at every step and a rollout that missed the weight sync
      would show in the next step's gap metrics;
    - rollout ``hf`` (``cpu_platform.HFServer``), tp 1, n=4 completions per prompt so a GRPO group can mix values,
      4 prompts per step, 12 response tokens, one agent-loop worker, one reward worker.
    - loggers ``console`` and ``file`` (``VERL_FILE_LOGGER_PATH``, set by ``run_verl``); no checkpoints
      (``save_freq=-1``) unless an override asks for them.
    """
    fp32 = "{param_dtype:fp32,reduce_dtype:fp32,buffer_dtype:fp32}"
    return [
        "algorithm.adv_estimator=grpo",
        "trainer.use_v1=False",
        f"data.train_files={assets / 'train.parquet'}",
        f"data.val_files={assets / 'val.parquet'}",
        "data.train_batch_size=4",
        "data.max_prompt_length=32",
        "data.max_response_length=12",
        "data.dataloader_num_workers=0",
        f"actor_rollout_ref.model.path={assets / MODEL_DIR}",
        "actor_rollout_ref.model.use_remove_padding=False",
        "+actor_rollout_ref.model.override_config.attn_implementation=eager",
        "actor_rollout_ref.actor.strategy=fsdp2",
        "actor_rollout_ref.actor.use_torch_compile=False",
        f"+actor_rollout_ref.actor.fsdp_config.mixed_precision={fp32}",
        f"+actor_rollout_ref.ref.fsdp_config.mixed_precision={fp32}",
        "actor_rollout_ref.actor.ppo_mini_batch_size=4",
        "actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu=4",
        "actor_rollout_ref.actor.use_kl_loss=True",
        "actor_rollout_ref.actor.optim.lr=1e-3",
        "actor_rollout_ref.rollout.name=hf",
        "actor_rollout_ref.rollout.tensor_model_parallel_size=1",
        "actor_rollout_ref.rollout.n=4",
        "actor_rollout_ref.rollout.agent.num_workers=1",
        "actor_rollout_ref.rollout.log_prob_micro_batch_size_per_gpu=4",
        "actor_rollout_ref.ref.log_prob_micro_batch_size_per_gpu=4",
        f"reward.custom_reward_function.path={assets / 'reward.py'}",
        "reward.custom_reward_function.name=compute_score",
        "reward.num_workers=1",
        "trainer.n_gpus_per_node=1",
        "trainer.nnodes=1",
        "trainer.device=cpu",
        "trainer.logger=[console,file]",
        "trainer.project_name=metahp_verl_test",
        "trainer.experiment_name=cpu",
        f"trainer.total_training_steps={steps}",
        "trainer.val_before_train=False",
        "trainer.test_freq=-1",
        "trainer.save_freq=-1",
        f"trainer.default_local_dir={workdir / 'ckpt'}",
        "ray_kwargs.ray_init.num_cpus=8",
        "+ray_kwargs.ray_init.num_gpus=1",
        "+ray_kwargs.ray_init.include_dashboard=False",
    ]


def run_env(workdir: Path, extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment of a run: the CPU platform module on the path, offline hubs, the record and metric files."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(HERE), env.get("PYTHONPATH", "")) if p)
    env.update({
        "VERL_USE_EXTERNAL_MODULES": "cpu_platform",
        "VERL_PLATFORM": "cpu",
        "VERL_ENGINE_DEVICE": "cuda",  # verl registers its FSDP engine for cuda/npu only; it runs on CPU tensors
        "VERL_FILE_LOGGER_PATH": str(workdir / "metrics.jsonl"),
        "METAHP_VERL_RECORD": str(workdir / "requests.jsonl"),
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "WANDB_MODE": "disabled",
        "TOKENIZERS_PARALLELISM": "false",
        "RAY_DEDUP_LOGS": "0",
        "RAY_USAGE_STATS_ENABLED": "0",
        "OMP_NUM_THREADS": "1",
        "HYDRA_FULL_ERROR": "1",
    })
    env.update(extra or {})
    return env


@dataclass
class VerlRun:
    """What one verl run did."""

    rc: int
    log: str
    metrics: list[dict] = field(default_factory=list)  # one dict per training step, with "step"
    requests: list[dict] = field(default_factory=list)  # one dict per generate request (cpu_platform.record)
    checkpoint_dir: Path | None = None  # trainer.default_local_dir (global_step_N folders when save_freq > 0)
    workdir: Path | None = None

    def tail(self, lines: int = LOG_TAIL_LINES) -> str:
        return "\n".join(self.log.splitlines()[-lines:])

    def metric(self, name: str) -> list:
        """``name``'s value at every step (None where a step did not log it)."""
        return [step.get(name) for step in self.metrics]


def read_jsonl(path: Path) -> list[dict]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def read_metrics(path: Path) -> list[dict]:
    """verl's file logger writes {"step": s, "data": {...}} per log call; merge them into one dict per step."""
    steps: dict[int, dict] = {}
    for entry in read_jsonl(path):
        steps.setdefault(entry["step"], {"step": entry["step"]}).update(entry["data"])
    return [steps[s] for s in sorted(steps)]


def run_verl(workdir: str | Path, overrides: Sequence[str] = (), *, steps: int = 2,
             module: str = "verl.trainer.main_ppo", timeout: float = 600, env: Mapping[str, str] | None = None,
             assets: str | Path | None = None) -> VerlRun:
    """Run ``python -m module`` with the base overrides, then ``overrides`` (later ones win); return a VerlRun.

    ``assets`` is a folder built by ``assets.build_assets`` (default: ``workdir/assets``, built on first use).
    The record and metric files of ``workdir`` are emptied first; the checkpoint folder is kept, so a second run
    in the same ``workdir`` can resume. Raises AssertionError with the log's last lines if the run fails or times
    out.
    """
    workdir = Path(workdir).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    assets = build_assets(Path(assets).resolve() if assets is not None else workdir / "assets")
    for name in ("metrics.jsonl", "requests.jsonl"):
        (workdir / name).unlink(missing_ok=True)
    command = [PYTHON, "-m", module, *base_overrides(assets, workdir, steps), *overrides]
    log_path = workdir / "run.log"
    with open(log_path, "w") as log:
        log.write(" ".join(command) + "\n")
        log.flush()
        # its own session, so a timeout can end the launcher together with the Ray processes it started
        process = subprocess.Popen(command, cwd=workdir, env=run_env(workdir, env), stdout=log,
                                   stderr=subprocess.STDOUT, start_new_session=True)
        try:
            rc = process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
            rc = None
    run = VerlRun(rc=-1 if rc is None else rc, log=log_path.read_text(errors="replace"),
                  metrics=read_metrics(workdir / "metrics.jsonl"), requests=read_jsonl(workdir / "requests.jsonl"),
                  checkpoint_dir=workdir / "ckpt", workdir=workdir)
    if rc is None:
        raise AssertionError(f"verl run timed out after {timeout} s ({log_path}); last lines:\n{run.tail()}")
    if rc != 0:
        raise AssertionError(f"verl run failed with rc {rc} ({log_path}); last lines:\n{run.tail()}")
    return run
