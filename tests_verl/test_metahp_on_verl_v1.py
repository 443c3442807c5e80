"""metahp attached to verl's v1 trainer (verl 0.9's default, ``trainer.use_v1=True``, sync mode) through the
launcher, end to end on this CPU: real verl GRPO steps with TransferQueue, the FSDP2 actor, the agent-loop workers
and the ``hf`` rollout server of cpu_platform.py (harness.py). Checked:

- one value per batch (exp3): every request of a step sampled at the value metahp drew for it, logged as
  ``metahp/temperature`` in verl's metrics; verl's rollout-vs-trainer gap at the fixed-temperature baseline's level,
  so the old-log-prob pass scored at the drawn value;
- one value per completion (softmax-gradient on informativeness): each prompt's group of 4 mixes the grid, every
  request at its completion's drawn value, and the gap at the baseline's level with the values mixed, so each row
  was scored at its own value (scored at one value for all, the mixed rows would leave it: the legacy suite's
  negative control);
- metahp's state in each ``global_step_N`` folder; a resume (verl's v1 trainer loads its checkpoint in ``init()``,
  before metahp attaches) draws the next step exactly as the uninterrupted run did, per batch and per completion;
- per completion on padded batches in bypass mode without a reference pass (the actor update the only pass that
  scores), and with a rollout that fails (metahp learns from the rows present).
"""

from __future__ import annotations

import json

import pytest
from harness import run_verl
from test_metahp_on_verl import (
    GAP_MAX,
    GAP_MEAN,
    GAP_NAMES,
    LAUNCHER,
    PER_COMPLETION,
    assert_gap_at_baseline,
    assert_requests_served_the_drawn_mixture,
    by_step,
)

ON_V1 = ["trainer.use_v1=True", "ray_kwargs.ray_init.num_cpus=16"]  # TransferQueue's 9 actors need logical CPUs
V1 = [*ON_V1, "+metahp.updater=exp3", "+metahp.seed=1", "trainer.save_freq=1"]


def state(run, step):
    return json.loads((run.checkpoint_dir / f"global_step_{step}" / "metahp_state.json").read_text())


@pytest.fixture(scope="module")
def v1_per_batch(tmp_path_factory, verl_assets):
    workdir = tmp_path_factory.mktemp("v1_per_batch")
    run = run_verl(workdir, V1, steps=3, module=LAUNCHER, assets=verl_assets)
    run.states = {step: state(run, step) for step in (1, 2, 3)}  # read now: the resume below rewrites step 3
    return run


def test_v1_every_request_of_a_step_samples_at_the_drawn_value(v1_per_batch):
    steps = by_step(v1_per_batch.requests)
    assert len(steps) == 3
    logged = v1_per_batch.metric("metahp/temperature")
    for step, (requests, value) in enumerate(zip(steps, logged, strict=True), start=1):
        served = {r["temperature"] for r in requests}
        assert len(served) == 1 and abs(served.pop() - value) < 1e-9, (requests, value)
        assert abs(v1_per_batch.states[step]["value"] - value) < 1e-9
    assert len(set(logged)) >= 2, logged  # the value moved between steps (seed 1 draws 1.1, 1.5, 0.7)
    assert all(isinstance(v1_per_batch.metric(f"metahp/prob/{v:g}")[0], float) for v in (0.6, 1.0, 1.5))
    assert v1_per_batch.metric("metahp/update_seconds")[0] > 0
    assert_gap_at_baseline(v1_per_batch)


def test_v1_state_rides_in_every_checkpoint_and_a_resume_draws_exactly_as_the_uninterrupted_run(v1_per_batch,
                                                                                                verl_assets):
    for step in (1, 2, 3):
        assert v1_per_batch.states[step]["format"] == "metahp.adapter/1"
        assert len(v1_per_batch.states[step]["history"]) == step
    resume = ["trainer.resume_mode=resume_path",
              f"trainer.resume_from_path={v1_per_batch.checkpoint_dir / 'global_step_2'}"]
    resumed = run_verl(v1_per_batch.workdir, [*V1, *resume], steps=3, module=LAUNCHER, assets=verl_assets)
    assert len(by_step(resumed.requests)) == 1  # only step 3 ran
    again = state(resumed, 3)
    assert again["value"] == v1_per_batch.states[3]["value"]
    assert again["history"] == v1_per_batch.states[3]["history"]


@pytest.fixture(scope="module")
def v1_per_completion(tmp_path_factory, verl_assets):
    workdir = tmp_path_factory.mktemp("v1_per_completion")
    run = run_verl(workdir, [*ON_V1, *PER_COMPLETION, "trainer.save_freq=1"], steps=2, module=LAUNCHER,
                   assets=verl_assets)
    run.states = {step: state(run, step) for step in (1, 2)}  # read now: the resume below rewrites step 2
    return run


def test_v1_per_completion_each_group_mixes_the_grid_and_each_row_samples_and_scores_at_its_value(
        v1_per_completion):
    assert_requests_served_the_drawn_mixture(v1_per_completion, steps=2)
    assert_gap_at_baseline(v1_per_completion)
    assert v1_per_completion.metric("metahp/update_seconds")[0] > 0


def test_v1_per_completion_resume_draws_every_rows_value_exactly_as_the_uninterrupted_run(v1_per_completion,
                                                                                           verl_assets):
    resume = ["trainer.resume_mode=resume_path",
              f"trainer.resume_from_path={v1_per_completion.checkpoint_dir / 'global_step_1'}"]
    resumed = run_verl(v1_per_completion.workdir, [*ON_V1, *PER_COMPLETION, "trainer.save_freq=1", *resume], steps=2,
                       module=LAUNCHER, assets=verl_assets)
    assert len(by_step(resumed.requests)) == 1  # only step 2 ran
    again = state(resumed, 2)
    assert again["value"] == v1_per_completion.states[2]["value"]  # the same 16 values, row by row
    assert again["history"][:1] == v1_per_completion.states[2]["history"][:1]  # step 2's own entry follows rollouts


def test_v1_the_gap_catches_rows_sampled_at_other_values_than_they_are_scored_at(tmp_path, verl_assets):
    # negative control: the rollout samples every row at 1.0 whatever it was asked, the v1 passes score each row
    # at metahp's value for it (0.6 / 1.0 / 1.4): the gap must leave the baseline's level
    run = run_verl(tmp_path, [*ON_V1, *PER_COMPLETION], steps=1, module=LAUNCHER, assets=verl_assets,
                   env={"METAHP_VERL_FORCE_TEMPERATURE": "1.0"})
    assert {r["sampled_temperature"] for r in run.requests} == {1.0}
    assert len({r["temperature"] for r in run.requests}) >= 2  # metahp asked for several values
    max_gap, mean_gap = (run.metric(name)[0] for name in GAP_NAMES)
    print(f"v1, forced rollout: max {max_gap}, mean {mean_gap}")
    assert max_gap > GAP_MAX and mean_gap > GAP_MEAN


def test_v1_per_completion_runs_on_padded_batches_in_bypass_mode_without_a_reference_pass(tmp_path, verl_assets):
    # a mini-batch of 3 prompts (12 rows) makes verl pad the step's 16 rows to 24 (padding rows under a new uid,
    # copies of a real row); bypass mode takes the old log-probs from the rollout and no KL loss means no reference
    # pass, so the actor update is the only pass that scores the rows: it must still get each row's value
    changes = ["actor_rollout_ref.actor.ppo_mini_batch_size=3", "algorithm.rollout_correction.bypass_mode=True",
               "actor_rollout_ref.actor.use_kl_loss=False", "trainer.save_freq=1"]
    run = run_verl(tmp_path, [*ON_V1, *PER_COMPLETION, *changes], steps=2, module=LAUNCHER, assets=verl_assets)
    run.states = {step: state(run, step) for step in (1, 2)}
    assert_requests_served_the_drawn_mixture(run, steps=2)
    assert run.metric("metahp/rows_missing") == [0.0, 0.0]  # padding rows are not counted as completions
    assert run.metric("metahp/rows_padding") == [8.0, 8.0]  # verl padded the 16 rows to 24


def test_v1_per_completion_learns_from_the_rows_present_when_a_rollout_fails(tmp_path, verl_assets):
    # the server's 3rd request raises: verl marks that prompt's group failed and trains on its other 3 rows (one
    # padding row makes 16 again); metahp learns from the 15 completions present and counts the one missing
    run = run_verl(tmp_path, [*ON_V1, *PER_COMPLETION, "trainer.save_freq=1"], steps=2, module=LAUNCHER,
                   assets=verl_assets, env={"METAHP_VERL_FAIL_REQUEST": "3"})
    assert [r.get("failed", False) for r in run.requests].count(True) == 1
    assert run.metric("metahp/rows_missing") == [1.0, 0.0]
    first = state(run, 1)
    assert len(first["history"]) == 1 and len(state(run, 2)["history"]) == 2  # both steps learned
