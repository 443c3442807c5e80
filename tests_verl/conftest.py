"""The verl suite: real verl GRPO runs on a CPU, in their own environment (``make verl-test``).

Skipped, with the reason, unless METAHP_VERL_TEST=1 (``make verl-test`` sets it and uses .venv-verl, where
verl[verl-core] 0.9.1 is installed beside the pinned CPU torch). The main suite never collects this folder.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
# pyproject's --import-mode=importlib does not put a test's folder on sys.path; the tests import harness/assets
sys.path.insert(0, str(HERE))

SKIP_REASON = ("the verl suite runs real verl GRPO steps in its own environment (.venv-verl, ~2 GB): "
               "run `make verl-test` (it sets METAHP_VERL_TEST=1)")


def pytest_collection_modifyitems(config, items):
    if os.environ.get("METAHP_VERL_TEST") == "1":
        return
    skip = pytest.mark.skip(reason=SKIP_REASON)
    for item in items:
        if HERE in Path(str(item.path)).resolve().parents:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def verl_assets(tmp_path_factory) -> Path:
    """The tiny model, tokenizer, data and reward of assets.py, built once per session."""
    from assets import build_assets

    return build_assets(tmp_path_factory.mktemp("verl_assets"))
