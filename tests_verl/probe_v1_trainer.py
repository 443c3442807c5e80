"""Probe (not a test): does verl 0.9.1's default v1 trainer run on this CPU? Plain verl, two GRPO steps at T 0.7.

    .venv-verl/bin/python tests_verl/probe_v1_trainer.py [workdir]

With ray_kwargs.ray_init.num_cpus=16 TransferQueue's controller and 8 storage units (one logical CPU each) get
placed, and the first step runs; with 8, as the legacy runs use, it waits forever for the placement group. It then
stops in _compute_metrics, because the hf test server reports no min/max_global_steps tags (docs/verl.md).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import run_verl  # noqa: E402

if __name__ == "__main__":
    workdir = Path(sys.argv[1] if len(sys.argv) > 1 else "/tmp/metahp_v1_probe")
    start = time.perf_counter()
    try:
        run = run_verl(workdir, ["trainer.use_v1=True", "actor_rollout_ref.rollout.temperature=0.7",
                                 "ray_kwargs.ray_init.num_cpus=16"], steps=2, timeout=300)
        print(f"v1 ran: rc {run.rc} in {time.perf_counter() - start:.0f} s; gap max "
              f"{run.metric('training/rollout_probs_diff_max')}")
    except AssertionError as failure:
        print(f"v1 failed after {time.perf_counter() - start:.0f} s:\n{str(failure)[-3000:]}")
