"""The adapter kit and the driven conformance check: both adapters pass check_adapter(make_trainer, run), and it
rejects deliberately broken adapters (one that samples at one value and scores at another, one that loses its
state on resume)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest
import torch
from metahp.integrations import kit
from metahp.integrations.reference import ReferenceAdapter

import metahp
from metahp.knobset import KnobSet
from metahp.testing import DRIVEN_CHECKS, check_adapter

_spec = importlib.util.spec_from_file_location("trl_tiny", Path(__file__).with_name("trl_tiny.py"))
trl_tiny = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(trl_tiny)


def reference_trainer():
    from metahp.lab.grpo import GRPOTrainer
    from metahp.lab.models import char_tokenizer, tiny_model
    from metahp.lab.tasks import make_task

    task = make_task("addition", difficulty=1)
    tok = char_tokenizer(task.alphabet)
    trainer = GRPOTrainer(tiny_model(tok, hidden=32, layers=1, heads=2, seed=0), tok, task, prompts_per_step=2,
                          num_generations=4, max_completion_tokens=4, seed=0)
    with torch.no_grad():  # a random init is near-uniform: make the temperatures matter
        trainer.model.lm_head.weight.mul_(4.0)
    return trainer


def run_reference(trainer, steps):
    trainer.train(steps, progress=False)


def test_the_reference_adapter_passes_the_driven_checks():
    check_adapter(reference_trainer, run_reference)


@pytest.mark.slow
def test_the_trl_adapter_passes_the_driven_checks(tmp_path):
    made = []

    def make():
        made.append(1)
        return trl_tiny.grpo_trainer(tmp_path / str(len(made)), per_device_train_batch_size=8, num_generations=4,
                                     temperature=0.9, max_steps=2)

    def run(trainer, steps):
        trainer.args.max_steps = steps
        trainer.train()

    check_adapter(make, run)


class SamplesElsewhere(ReferenceAdapter):
    """Samples every batch at T = 1 whatever it drew, but scores the batch as drawn."""

    def knobs_for_next_batch(self, context=None):
        drawn = super().knobs_for_next_batch(context)
        return {name: 1.0 for name in drawn}

    def after_batch(self, rollout):
        rollout.knobs = {**rollout.knobs, **self._current}
        return super().after_batch(rollout)


class LosesItsState(ReferenceAdapter):
    """Restores the values and the history but not the meta-policies."""

    def load_state_dict(self, state):
        self._current, self.history = self._check_state(state)


def attach_as(cls):
    def attach(trainer, *, knob, updater, values, seed, per="batch", **options):
        config = trainer.config
        knobset = KnobSet(knob, updater, values, seed, per=per, group_size=config.num_generations, **options)
        adapter = cls(trainer, knobset)
        trainer.attach(adapter)
        return adapter

    return attach


@pytest.mark.parametrize("broken, check", [(SamplesElsewhere, "check_adapter_sampled_as_scored"),
                                           (LosesItsState, "check_adapter_resumes")])
def test_the_driven_check_rejects_a_broken_adapter(broken, check):
    with pytest.raises(AssertionError, match=rf"^{check}\("):
        check_adapter(reference_trainer, run_reference, attach=attach_as(broken), modes=("batch",))
    assert check in {c.__name__ for c in DRIVEN_CHECKS}


def test_an_adapter_that_forwards_once_more_is_caught():
    class ExtraForward(ReferenceAdapter):
        def after_batch(self, rollout):
            self.trainer.model(input_ids=rollout.completion_ids[:1])
            return super().after_batch(rollout)

    with pytest.raises(AssertionError, match=r"^check_adapter_no_extra_forward\("):
        check_adapter(reference_trainer, run_reference, attach=attach_as(ExtraForward), modes=("batch",))


def test_copies_registry_applies_and_reads_every_copy():
    class Trainer:
        temperature = 1.0

    trainer, kwargs = Trainer(), {"temperature": 1.0}
    copies = kit.Copies()
    copies.attribute("temperature", "trainer.temperature", trainer)
    copies.key("temperature", "generation_kwargs.temperature", kwargs)
    copies.apply("temperature", 0.7)
    assert copies.read() == {"trainer.temperature": 0.7, "generation_kwargs.temperature": 0.7}


def test_the_state_envelope_is_versioned_and_refuses_another_version(tmp_path):
    trainer = reference_trainer()
    adapter = metahp.adapt(trainer, seed=0)
    trainer.train(1, progress=False)
    state = adapter.state_dict()
    assert state["format"] == kit.STATE_FORMAT and state["history"][0]["step"] == 0
    path = adapter.save(str(tmp_path))
    text = Path(path).read_text().replace(kit.STATE_FORMAT, "metahp.adapter/99")
    Path(path).write_text(text)
    with pytest.raises(metahp.StateError, match=r"metahp_state\.json.*metahp\.adapter/99"):
        adapter.load(str(tmp_path))
    assert adapter.state_dict() == state  # refused whole: nothing changed


def _example():
    path = Path(__file__).resolve().parents[1] / "examples" / "adapter_for_your_trainer.py"
    spec = importlib.util.spec_from_file_location("adapter_for_your_trainer", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclass looks its module up there
    spec.loader.exec_module(module)
    return module, path.read_text().splitlines()


def test_the_minimal_adapter_for_a_trainer_metahp_does_not_own_runs_and_passes_check_adapter(capsys):
    example, lines = _example()
    example.main(example.Args(steps=2))  # trains, then check_adapter(make_trainer, run, attach=...) must pass
    assert "check_adapter: " in capsys.readouterr().out
    start = next(i for i, line in enumerate(lines) if line.startswith("# -- the adapter"))
    end = next(i for i, line in enumerate(lines) if line.startswith("# -- end of the adapter"))
    assert end - start - 1 <= 45, f"the minimal adapter grew to {end - start - 1} lines (docs/extending.md says 40)"


def test_the_minimal_adapter_refuses_what_its_trainer_cannot_do():
    example, _ = _example()
    with pytest.raises(metahp.ConfigError, match="per='batch'"):
        example.attach(example.make_trainer(), per="completion", updater="softmax_gradient",
                       reward="informativeness", values=[0.5, 1.5])
