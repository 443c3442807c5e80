"""integrations/ ships as metahp.integrations (never a top-level `integrations`), editable and as a wheel."""

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PROBE = "import metahp, metahp.integrations; print(metahp.__file__); print(metahp.integrations.__file__)"


def run_python(code, cwd, env=None):
    out = subprocess.run([sys.executable, "-c", code], cwd=cwd, env=env, capture_output=True, text=True, check=True)
    return out.stdout.split()


def test_editable_install_maps_integrations_into_metahp(tmp_path):
    package, integrations = run_python(PROBE, cwd=tmp_path)
    assert Path(integrations) == ROOT / "integrations" / "__init__.py"
    assert Path(package) == ROOT / "metahp" / "__init__.py"


@pytest.mark.slow
def test_built_wheel_contains_and_imports_metahp_integrations(tmp_path):
    src = tmp_path / "src"
    files = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                           capture_output=True, text=True, check=True).stdout.split()
    for name in files:
        if (ROOT / name).is_file():
            (src / name).parent.mkdir(parents=True, exist_ok=True)
            (src / name).write_bytes((ROOT / name).read_bytes())
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w",
                    str(tmp_path / "dist"), str(src)], check=True, capture_output=True)
    (wheel,) = (tmp_path / "dist").glob("metahp-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "metahp/integrations/__init__.py" in names
    assert not any(n.startswith("integrations/") for n in names)
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    env = {**os.environ, "PYTHONPATH": str(site)}
    package, integrations = run_python(PROBE, cwd=tmp_path, env=env)
    assert Path(package).is_relative_to(site) and Path(integrations).is_relative_to(site)


def test_the_core_imports_no_framework_and_never_the_lab(tmp_path):
    # The core is numpy + torch (+ scipy, pydantic): `import metahp` must not pull in a trainer's framework, the
    # plotting stack or the lab. tqdm is compared with what `import torch` alone loads (torch imports it itself).
    probe = ("import sys; import {}; print(' '.join(m for m in ('transformers', 'trl', 'gymnasium', 'matplotlib', "
             "'tqdm', 'datasets', 'accelerate', 'metahp.lab') if m in sys.modules))")
    torch_only = set(run_python(probe.format("torch"), cwd=tmp_path))
    core = set(run_python(probe.format("metahp"), cwd=tmp_path))
    assert core - torch_only == set(), f"import metahp loaded {sorted(core - torch_only)}"
    assert not {"transformers", "trl", "gymnasium", "matplotlib", "metahp.lab"} & core


def test_no_core_module_imports_the_lab():
    core = [p for p in (ROOT / "metahp").rglob("*.py") if "lab" not in p.relative_to(ROOT / "metahp").parts]
    offenders = [str(p.relative_to(ROOT)) for p in core if "metahp.lab" in p.read_text()]
    assert not offenders, f"core modules that import the lab: {offenders}"
