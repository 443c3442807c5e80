"""metahp attached to verl's GRPO trainer through its launcher (``python -m metahp.integrations.verl``), end to end.

Real verl GRPO steps on this CPU (harness.py): Ray, the FSDP2 actor, the agent-loop workers and the ``hf`` rollout
server of cpu_platform.py, which records every generate request it serves. Nothing of verl is faked. Checked:

- one value per batch (exp3): every request of a step sampled at the value metahp drew for it, logged as
  ``metahp/temperature`` in verl's metrics;
- one value per completion (softmax-gradient on informativeness): each prompt's group of 4 mixes the grid, every
  request at its row's value; verl's own rollout-vs-trainer gap at the level of the fixed-temperature baseline
  (test_fixed_temperature.py), so every log-prob pass scored each row at the temperature that sampled it;
- metahp's state in each of verl's ``global_step_N`` folders; a resume from step 2 draws step 3 exactly as the
  uninterrupted run did; a state from another run (another grid) is refused, naming the file.
"""

from __future__ import annotations

import json
import math
from collections import Counter

import pytest
from harness import run_verl

LAUNCHER = "metahp.integrations.verl"
GRID = (0.6, 1.0, 1.4)
PER_COMPLETION = ["+metahp.per=completion", "+metahp.updater=softmax_gradient", "+metahp.reward=informativeness",
                  f"+metahp.values=[{','.join(str(v) for v in GRID)}]", "+metahp.lr=2.0", "+metahp.seed=3"]
REQUESTS_PER_STEP = 4 * 4  # data.train_batch_size x rollout.n (harness.base_overrides)
GAP_MAX = 1e-2  # test_fixed_temperature.py's bounds: scoring at 1.0 what was sampled at 0.7 gives max ~0.3
GAP_MEAN = 1e-3
GAP_NAMES = ("training/rollout_probs_diff_max", "training/rollout_probs_diff_mean")


def by_step(requests):
    """The recorded requests, one list per step (the record is in serving order; each step serves its batch)."""
    assert len(requests) % REQUESTS_PER_STEP == 0, len(requests)
    return [requests[i:i + REQUESTS_PER_STEP] for i in range(0, len(requests), REQUESTS_PER_STEP)]


def state(run, step):
    return json.loads((run.checkpoint_dir / f"global_step_{step}" / "metahp_state.json").read_text())


def assert_gap_at_baseline(run):
    for name, bound in zip(GAP_NAMES, (GAP_MAX, GAP_MEAN), strict=True):
        values = run.metric(name)
        print(f"{name}: {values}")
        assert all(v is not None and math.isfinite(v) for v in values), (name, values)
        assert max(values) < bound, (name, values)


@pytest.fixture(scope="module")
def per_batch(tmp_path_factory, verl_assets):
    return run_verl(tmp_path_factory.mktemp("per_batch"), ["+metahp.updater=exp3", "+metahp.seed=1"], steps=3,
                    module=LAUNCHER, assets=verl_assets)


@pytest.fixture(scope="module")
def per_completion(tmp_path_factory, verl_assets):
    workdir = tmp_path_factory.mktemp("per_completion")
    run = run_verl(workdir, [*PER_COMPLETION, "trainer.save_freq=1"], steps=3, module=LAUNCHER, assets=verl_assets)
    run.workdir = workdir
    run.states = {step: state(run, step) for step in (1, 2, 3)}  # read now: the resume below rewrites step 3
    return run


def test_per_batch_every_request_of_a_step_samples_at_the_drawn_value(per_batch):
    steps = by_step(per_batch.requests)
    assert len(steps) == 3
    logged = per_batch.metric("metahp/temperature")
    for requests, value in zip(steps, logged, strict=True):
        served = {r["temperature"] for r in requests}
        assert len(served) == 1 and abs(served.pop() - value) < 1e-9, (requests, value)
        assert value in (0.6, 0.7, 0.8, 0.9, 1.0, 1.1, 1.2, 1.3, 1.4, 1.5)  # the default grid
    assert all(isinstance(per_batch.metric(f"metahp/prob/{v:g}")[0], float) for v in (0.6, 1.0, 1.5))
    assert_gap_at_baseline(per_batch)


def assert_requests_served_the_drawn_mixture(run, steps: int) -> None:
    """Per step: the requests served are exactly the rows' values as metahp drew them (the state of that step's
    checkpoint), all on the grid, and every prompt's group of 4 mixes at least two values."""
    served = by_step(run.requests)
    assert len(served) == steps
    for step, requests in enumerate(served, start=1):
        temperatures = [r["temperature"] for r in requests]
        assert set(temperatures) <= set(GRID)
        drawn = run.states[step]["value"]
        assert Counter(temperatures) == Counter(drawn), (temperatures, drawn)
        groups = [drawn[i:i + 4] for i in range(0, len(drawn), 4)]
        assert all(len(set(g)) >= 2 for g in groups), groups  # every group mixes values


def test_per_completion_each_group_mixes_the_grid_and_each_row_samples_at_its_value(per_completion):
    assert_requests_served_the_drawn_mixture(per_completion, steps=3)
    assert_gap_at_baseline(per_completion)
    assert per_completion.metric("metahp/update_seconds")[0] > 0


def test_state_rides_in_every_checkpoint_and_a_resume_draws_exactly_as_the_uninterrupted_run(per_completion,
                                                                                            verl_assets):
    for step in (1, 2, 3):
        assert per_completion.states[step]["format"] == "metahp.adapter/1"
        assert len(per_completion.states[step]["history"]) == step
    resume = ["trainer.resume_mode=resume_path",
              f"trainer.resume_from_path={per_completion.checkpoint_dir / 'global_step_2'}"]
    resumed = run_verl(per_completion.workdir, [*PER_COMPLETION, "trainer.save_freq=1", *resume], steps=3,
                       module=LAUNCHER, assets=verl_assets)
    assert len(by_step(resumed.requests)) == 1  # only step 3 ran
    again = state(resumed, 3)
    assert again["value"] == per_completion.states[3]["value"]  # the same draw for every row
    assert again["history"][:2] == per_completion.states[3]["history"][:2]


def test_a_state_from_another_run_is_refused_naming_the_file(per_completion, verl_assets):
    other = [a for a in PER_COMPLETION if not a.startswith("+metahp.values")] + ["+metahp.values=[0.7,1.0,1.3]"]
    folder = per_completion.checkpoint_dir / "global_step_1"
    with pytest.raises(AssertionError) as failed:
        run_verl(per_completion.workdir, [*other, "trainer.resume_mode=resume_path",
                 f"trainer.resume_from_path={folder}"], steps=3, module=LAUNCHER, assets=verl_assets)
    assert "metahp_state.json" in str(failed.value) and "StateError" in str(failed.value), str(failed.value)[-3000:]


def test_the_gap_catches_rows_sampled_at_other_values_than_they_are_scored_at(tmp_path, verl_assets):
    # negative control for values per completion: the rollout samples every row at 1.0 whatever it was asked, the
    # trainer scores each row at metahp's value for it (0.6 / 1.0 / 1.4): the gap must leave the baseline's level
    run = run_verl(tmp_path, PER_COMPLETION, steps=1, module=LAUNCHER, assets=verl_assets,
                   env={"METAHP_VERL_FORCE_TEMPERATURE": "1.0"})
    assert {r["sampled_temperature"] for r in run.requests} == {1.0}
    assert len({r["temperature"] for r in run.requests}) >= 2  # metahp asked for several values
    max_gap, mean_gap = (run.metric(name)[0] for name in GAP_NAMES)
    print(f"forced rollout: {GAP_NAMES[0]} {max_gap}, {GAP_NAMES[1]} {mean_gap}")
    assert max_gap > GAP_MAX and mean_gap > GAP_MEAN
