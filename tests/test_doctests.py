"""Every ``>>>`` example in metahp (and metahp.integrations) runs, with ELLIPSIS and NORMALIZE_WHITESPACE.

Modules are found by their source text, so a new file with examples is picked up without importing everything.
Examples that need a trainer are marked ``# doctest: +SKIP`` where they stand. A module whose examples are known
to fail is listed in EXPECTED_FAILURES with the reason; its test asserts that it still fails, so fixing the
examples fails the test until the entry is removed: nothing is skipped silently.
"""

from __future__ import annotations

import doctest
import importlib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# Source folders and the package each one ships as (integrations/ is metahp.integrations).
PACKAGES = {ROOT / "metahp": "metahp", ROOT / "integrations": "metahp.integrations"}
FLAGS = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE

EXPECTED_FAILURES: dict[str, str] = {}


def _modules_with_examples() -> list[str]:
    names = []
    for folder, package in PACKAGES.items():
        for path in sorted(folder.rglob("*.py")):
            if ">>>" not in path.read_text(encoding="utf-8"):
                continue
            parts = path.relative_to(folder).with_suffix("").parts
            if parts[-1] == "__init__":
                parts = parts[:-1]
            names.append(".".join((package, *parts)))
    return names


MODULES = _modules_with_examples()


@pytest.mark.parametrize("name", MODULES)
def test_examples_run(name):
    module = importlib.import_module(name)
    tests = [t for t in doctest.DocTestFinder().find(module) if t.examples]
    assert tests, f"{name} has '>>>' in its source but doctest finds no example (inside a string literal?)"
    runner = doctest.DocTestRunner(optionflags=FLAGS)
    for test in tests:
        runner.run(test, out=lambda _: None if name in EXPECTED_FAILURES else print(_, end=""))
    result = runner.summarize(verbose=False)
    if name in EXPECTED_FAILURES:
        assert result.failed, f"{name}'s examples pass now: remove its EXPECTED_FAILURES entry"
    else:
        assert not result.failed, f"{result.failed} of {result.attempted} examples in {name} failed (printed above)"


def test_expected_failures_name_modules_with_examples():
    assert set(EXPECTED_FAILURES) <= set(MODULES)


def test_the_public_modules_are_covered():
    assert {"metahp.policy", "metahp.testing", "metahp.testing.adapters", "metahp.integrations.trl"} <= set(MODULES)
