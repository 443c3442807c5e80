"""The TRL-private names metahp relies on (integrations/trl_1_16.py) exist in the installed TRL.

When a TRL upgrade renames or removes one of them, this fails and names it: audit trl_1_16.py, not the adapter.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import trl  # noqa: F401  a dev dependency: a broken install fails here, it never skips
from metahp.integrations import trl_1_16

_spec = importlib.util.spec_from_file_location("trl_tiny", Path(__file__).with_name("trl_tiny.py"))
trl_tiny = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(trl_tiny)


def test_the_installed_trl_has_every_private_name_metahp_uses(tmp_path):
    trl_1_16.check_version()
    assert trl_1_16.missing_names(trl_tiny.grpo_trainer(tmp_path)) == []


@pytest.mark.parametrize("name", [*trl_1_16.WRAPPED_METHODS, "_get_output_dir"])
def test_a_missing_method_is_named(monkeypatch, name):
    from trl import GRPOTrainer

    for cls in GRPOTrainer.__mro__:  # the method may be inherited from transformers' Trainer
        if name in vars(cls):
            monkeypatch.delattr(cls, name)
    assert f"GRPOTrainer.{name}" in trl_1_16.missing_names()


def test_a_fused_head_without_its_temperature_cell_is_named(monkeypatch):
    import trl.trainer.utils as utils

    monkeypatch.setattr(utils, "add_fused_lm_head", lambda model, temperature: None)
    assert any("add_fused_lm_head" in m for m in trl_1_16.missing_names())


def test_a_trainer_without_its_metrics_buffer_is_named(tmp_path):
    trainer = trl_tiny.grpo_trainer(tmp_path)
    del trainer._metrics
    assert "GRPOTrainer()._metrics['train']" in trl_1_16.missing_names(trainer)


def test_the_adapter_reaches_trl_privates_only_through_the_compat_module():
    # Every underscore attribute of the trainer that the adapter touches goes through trl_1_16 (its own
    # attribute _metahp_adapter excepted).
    import re

    source = (Path(trl_1_16.__file__).with_name("trl.py")).read_text()
    private = set(re.findall(r"trainer\._[a-z]\w*", source)) - {"trainer._metahp_adapter"}
    assert private == set(), f"integrations/trl.py touches {sorted(private)} directly"
