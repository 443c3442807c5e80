"""End to end: values per completion (``metahp.adapt(trainer, per="completion")``) on TRL 1.16 with vLLM in
colocate mode (``make vllm-test``, its own environment; see test_trl_vllm_colocate.py for the set-up).

Each GRPO group mixes three temperatures; TRL's one ``LLM.generate`` call per step must get one SamplingParams per
prompt at that completion's temperature, and TRL's own check of vLLM's processed log-probs against the trainer's
(the loss's, scaled per row) must stay within vLLM's bfloat16 noise, as with one temperature per batch.
"""

from __future__ import annotations

import math
import os

import pytest

if os.environ.get("METAHP_VLLM_TEST") != "1":  # `make vllm-test` sets it: there a missing vLLM is an error
    pytest.importorskip("vllm", reason="the vLLM suite runs in its own environment: `make vllm-test`")

import importlib.util  # noqa: E402
from pathlib import Path  # noqa: E402

# the colocate module's helpers and tolerances (loaded by path: pytest's import mode keeps test modules apart)
_spec = importlib.util.spec_from_file_location("vllm_colocate", Path(__file__).with_name("test_trl_vllm_colocate.py"))
_colocate = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_colocate)
MAX_LOGP_TOLERANCE, MEAN_LOGP_TOLERANCE, STEPS = (_colocate.MAX_LOGP_TOLERANCE, _colocate.MEAN_LOGP_TOLERANCE,
                                                  _colocate.STEPS)
colocate_trainer, cpu_weight_sync, step_logs = _colocate.colocate_trainer, _colocate.cpu_weight_sync, \
    _colocate.step_logs

GRID = [0.5, 1.0, 2.0]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    import metahp

    trainer = colocate_trainer(tmp_path_factory.mktemp("vllm_per_completion"), per_device_train_batch_size=8,
                               num_generations=4)
    adapter = metahp.adapt(trainer, per="completion", updater="uniform", values=GRID)
    cpu_weight_sync(trainer.vllm_generation)
    calls = []
    llm = trainer.vllm_generation.llm
    generate = llm.generate

    def spy(prompts, sampling_params=None, **kwargs):
        calls.append({"params": sampling_params, "metahp": list(adapter.value), "n_prompts": len(prompts)})
        return generate(prompts, sampling_params=sampling_params, **kwargs)

    llm.generate = spy
    result = trainer.train()
    return {"trainer": trainer, "adapter": adapter, "calls": calls, "result": result}


def test_training_completes(run):
    assert run["trainer"].state.global_step == STEPS and math.isfinite(run["result"].training_loss)


def test_each_prompt_is_sampled_at_its_completions_temperature(run):
    calls = run["calls"]
    assert len(calls) == STEPS
    for call in calls:
        params = call["params"]
        assert isinstance(params, list) and len(params) == call["n_prompts"] == 8
        assert [p.temperature for p in params] == call["metahp"]
        assert sorted(set(call["metahp"])) == GRID  # every group of 4 mixes the three values
        assert all(p.n == 1 and p.max_tokens == 8 and p.top_p == 1.0 for p in params)


def test_vllm_log_probs_match_the_trainer_at_each_rows_temperature(run):
    for h in step_logs(run["trainer"]):
        print(f"step {h['step']}: sampling/sampling_logp_difference mean "
              f"{h['sampling/sampling_logp_difference/mean']:.4f} max {h['sampling/sampling_logp_difference/max']:.4f}")
        assert h["sampling/sampling_logp_difference/mean"] < MEAN_LOGP_TOLERANCE, h
        assert h["sampling/sampling_logp_difference/max"] < MAX_LOGP_TOLERANCE, h
        assert abs(sum(h[f"metahp/rows/{v:g}"] for v in GRID) - 1) < 1e-3
