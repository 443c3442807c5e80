"""Every registered knob and updater passes the shared conformance checks (new plug-ins are picked up)."""

import pytest

from metahp.knobs import KNOBS
from metahp.testing import check_knob, check_updater
from metahp.updaters import UPDATERS


@pytest.mark.parametrize("name", sorted(UPDATERS))
def test_updater_conforms(name):
    check_updater(UPDATERS[name]())


@pytest.mark.parametrize("name", sorted(set(UPDATERS) - {"constant"}))
def test_updater_conforms_with_other_grids(name):
    check_updater(UPDATERS[name](), values=(0.5, 2.0, 3.0), seed=3)


@pytest.mark.parametrize("name", sorted(KNOBS))
def test_knob_conforms(name):
    check_knob(KNOBS[name]())


def test_checker_catches_a_broken_updater():
    import numpy as np

    from metahp.updaters import Updater

    def init(values):
        return {"h": np.zeros(len(values))}

    def update(state, feedback):
        state["h"] += feedback.advantages  # mutates its input
        return state

    broken = Updater("broken", "per_candidate", "sample", init, update, lambda s: np.exp(s["h"]) / np.exp(s["h"]).sum())
    with pytest.raises(AssertionError, match="mutated"):
        check_updater(broken)
