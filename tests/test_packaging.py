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
