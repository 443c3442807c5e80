"""The baseline every metahp-on-verl test compares with: plain verl GRPO at a fixed temperature of 0.7.

Two steps of ``verl.trainer.main_ppo`` (legacy fit loop, FSDP2, the ``hf`` rollout of cpu_platform.py) with
``actor_rollout_ref.rollout.temperature=0.7``. The rollout must sample every request at 0.7, and verl's own
rollout-vs-trainer gap (``training/rollout_probs_diff_*``: |p_rollout - p_trainer| over the sampled tokens, where
the trainer scores at ``meta_info["temperature"]``) must stay at float noise: ~1e-6 max, ~1e-7 mean in float32.

With the KL loss on (harness.base_overrides), the reference pass scores the same batch: ``actor/kl_loss`` at step
1, where actor and reference weights are still equal, is ~0 only if both passes used the same temperature.

The negative control shows the bounds mean something: a rollout that samples at 1.0 while the trainer scores at
0.7 (cpu_platform's METAHP_VERL_FORCE_TEMPERATURE) gives a gap four orders of magnitude above them.
"""

from __future__ import annotations

import math

from harness import run_verl

TEMPERATURE = 0.7
STEPS = 2
REQUESTS_PER_STEP = 4 * 4  # data.train_batch_size prompts x rollout.n completions, one generate call each
GAP_MAX = 1e-2
GAP_MEAN = 1e-3
GAP_NAMES = ("training/rollout_probs_diff_max", "training/rollout_probs_diff_mean")
KL_NAME = "actor/kl_loss"
KL_STEP1 = 1e-5
OVERRIDES = [f"actor_rollout_ref.rollout.temperature={TEMPERATURE}"]


def gaps(run) -> dict[str, list[float]]:
    values = {name: run.metric(name) for name in GAP_NAMES}
    for name, per_step in values.items():
        print(f"{name}: {per_step}")
        assert all(v is not None and math.isfinite(v) for v in per_step), (name, per_step, run.tail())
    return values


def test_fixed_temperature_baseline(tmp_path, verl_assets):
    run = run_verl(tmp_path, OVERRIDES, steps=STEPS, assets=verl_assets)
    assert run.rc == 0

    assert len(run.requests) == STEPS * REQUESTS_PER_STEP, run.requests
    assert {r["temperature"] for r in run.requests} == {TEMPERATURE}
    assert {r["sampled_temperature"] for r in run.requests} == {TEMPERATURE}
    assert run.log.count("[cpu_platform] weights synced") >= STEPS, run.tail()

    assert [m["step"] for m in run.metrics] == list(range(1, STEPS + 1)), run.tail()
    # GRPO groups mix rewards, so the advantages carry signal (what a learned temperature feeds on)
    assert all(m["critic/advantages/max"] > 0 for m in run.metrics), run.metric("critic/advantages/max")

    values = gaps(run)
    assert max(values[GAP_NAMES[0]]) < GAP_MAX
    assert max(values[GAP_NAMES[1]]) < GAP_MEAN

    # the reference pass: at step 1 the actor still equals the reference (one optimizer step per training step),
    # so their KL is float noise when both scored at the same temperature
    kl = run.metric(KL_NAME)
    print(f"{KL_NAME}: {kl}")
    assert kl[0] is not None and abs(kl[0]) < KL_STEP1, kl


def test_gap_metrics_catch_a_temperature_mismatch(tmp_path, verl_assets):
    run = run_verl(tmp_path, OVERRIDES, steps=1, assets=verl_assets, env={"METAHP_VERL_FORCE_TEMPERATURE": "1.0"})

    assert {r["temperature"] for r in run.requests} == {TEMPERATURE}
    assert {r["sampled_temperature"] for r in run.requests} == {1.0}
    values = gaps(run)
    assert min(values[GAP_NAMES[0]]) > GAP_MAX
    assert min(values[GAP_NAMES[1]]) > GAP_MEAN
