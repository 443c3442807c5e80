"""The docs say only what holds: the per-updater metrics table in docs/trl.md is what each updater logs."""

import re
from pathlib import Path

import numpy as np
import pytest

import metahp

ROOT = Path(__file__).resolve().parents[1]


def documented_metrics() -> dict[str, dict]:
    """docs/trl.md's Logging table: updater -> {"feedback": ..., "metrics": {family, ...}}."""
    text = (ROOT / "docs" / "trl.md").read_text()
    section = text[text.index("## Logging"):]
    section = section[:section.index("\n## ", 1)]
    table = {}
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) != 3 or not cells[0].startswith("`"):
            continue
        name = re.match(r"`([a-z_0-9]+)`", cells[0]).group(1)
        table[name] = {"feedback": cells[1], "metrics": set(re.findall(r"`([^`]+)`", cells[2]))}
    return table


def logged_families(knob: str, updater: str) -> set[str]:
    """The metric families one sample() + update() of ``updater`` over ``knob`` returns."""
    policy = metahp.meta_policy(knob, updater, seed=0)
    policy.sample()
    rng = np.random.default_rng(0)
    if policy.needs_likelihoods:
        metrics = policy.update(-rng.exponential(size=(6, len(policy.values))), rng.normal(size=6))
    else:
        metrics = policy.update(reward=0.5)
    families = set()
    for key in metrics:
        if key.startswith(("metahp/prob/", "metahp/advantage/")):
            families.add(key.rsplit("/", 1)[0] + "/<v>")
        else:
            families.add(key.replace(f"metahp/{knob}", "metahp/<knob>"))
    return families


def test_the_metrics_table_lists_every_updater():
    assert set(documented_metrics()) == set(metahp.UPDATERS)


@pytest.mark.parametrize("knob", ["temperature", "top_p"])
@pytest.mark.parametrize("updater", sorted(metahp.UPDATERS))
def test_each_updater_logs_exactly_the_documented_metrics(updater, knob):
    doc = documented_metrics()[updater]
    assert logged_families(knob, updater) == doc["metrics"]
    feedback = {"per_candidate": "per candidate", "chosen": "chosen value"}[metahp.UPDATERS[updater]().feedback]
    assert doc["feedback"] == feedback
