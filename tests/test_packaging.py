"""integrations/ ships as metahp.integrations (never a top-level `integrations`), editable and as a wheel; every
package ships; the wheel works on its own in a fresh virtual environment; the layers import only what they may."""

import ast
import json
import os
import re
import subprocess
import sys
import sysconfig
import tomllib
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PROBE = "import metahp, metahp.integrations; print(metahp.__file__); print(metahp.integrations.__file__)"
# The folders that ship, as (source folder, dotted name): integrations/ is the subpackage metahp.integrations.
SOURCES = (("metahp", "metahp"), ("integrations", "metahp.integrations"))
# Modules the docs name by path rather than by dotted name (docs/architecture.md, docs/trl.md); the dotted names
# in docs/ and README.md are read from the text (docs_named_modules).
NAMED_BY_PATH = ("metahp.testing.strategies", "metahp.integrations.trl", "metahp.integrations.reference")


def run_python(code, cwd, env=None):
    out = subprocess.run([sys.executable, "-c", code], cwd=cwd, env=env, capture_output=True, text=True, check=True)
    return out.stdout.split()


def source_modules():
    """{dotted module name: source file} for every .py file in a shipped package (a folder with an __init__.py)."""
    modules = {}
    for folder, dotted in SOURCES:
        for init in sorted((ROOT / folder).rglob("__init__.py")):
            package = init.parent
            parts = package.relative_to(ROOT / folder).parts
            if "__pycache__" in parts or not all((ROOT / folder / Path(*parts[:i]) / "__init__.py").is_file()
                                                 for i in range(len(parts))):
                continue  # a folder without an __init__.py, or inside one, is not a package
            name = ".".join((dotted, *parts))
            for path in sorted(package.glob("*.py")):
                modules[name if path.name == "__init__.py" else f"{name}.{path.stem}"] = path
    return modules


def source_packages():
    return {name for name, path in source_modules().items() if path.name == "__init__.py"}


def wheel_path(name, path):
    """Where the module `name` (source file `path`) lies inside the wheel."""
    return "/".join(name.split(".")) + ("/__init__.py" if path.name == "__init__.py" else ".py")


def docs_named_modules():
    """The modules docs/ and README.md name (`metahp.knobs.base`, `metahp.testing.check_adapter` -> metahp.testing)."""
    modules = source_modules()
    named = set()
    for doc in [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]:
        for dotted in re.findall(r"\bmetahp(?:\.[A-Za-z_]\w*)+", doc.read_text()):
            parts = dotted.split(".")
            named.add(next(".".join(parts[:i]) for i in range(len(parts), 0, -1) if ".".join(parts[:i]) in modules))
    return named


def test_pyproject_lists_every_package():
    # [tool.setuptools] packages is explicit (find cannot map integrations/ to metahp.integrations): a new folder
    # with an __init__.py must be added there, or it is missing from the wheel.
    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    packages = source_packages()
    assert packages - listed == set(), f"packages missing from pyproject.toml: {sorted(packages - listed)}"
    assert listed - packages == set(), f"pyproject.toml lists no such package: {sorted(listed - packages)}"


def test_editable_install_maps_integrations_into_metahp(tmp_path):
    package, integrations = run_python(PROBE, cwd=tmp_path)
    assert Path(integrations) == ROOT / "integrations" / "__init__.py"
    assert Path(package) == ROOT / "metahp" / "__init__.py"


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    """The wheel built from a copy of the tracked (and untracked, not ignored) files, once per module."""
    tmp = tmp_path_factory.mktemp("wheel")
    src = tmp / "src"
    files = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                           capture_output=True, text=True, check=True).stdout.split()
    for name in files:
        if (ROOT / name).is_file():
            (src / name).parent.mkdir(parents=True, exist_ok=True)
            (src / name).write_bytes((ROOT / name).read_bytes())
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w",
                    str(tmp / "dist"), str(src)], check=True, capture_output=True)
    (wheel,) = (tmp / "dist").glob("metahp-*.whl")
    return wheel


@pytest.mark.slow
def test_built_wheel_contains_and_imports_metahp_integrations(tmp_path, wheel):
    names = zipfile.ZipFile(wheel).namelist()
    assert "metahp/integrations/__init__.py" in names
    assert not any(n.startswith("integrations/") for n in names)
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    env = {**os.environ, "PYTHONPATH": str(site)}
    package, integrations = run_python(PROBE, cwd=tmp_path, env=env)
    assert Path(package).is_relative_to(site) and Path(integrations).is_relative_to(site)


# Runs in the fresh venv: imports the given modules (metahp.testing first, to see that it needs no hypothesis)
# and reports where every metahp module loaded came from.
FRESH_PROBE = """
import json, sys
modules = json.loads(sys.argv[1])
import metahp.testing
hypothesis_with_the_kit = "hypothesis" in sys.modules
for name in modules:
    __import__(name)
print(json.dumps({
    "files": {n: getattr(m, "__file__", None) for n, m in sys.modules.items()
              if n == "metahp" or n.startswith("metahp.")},
    "hypothesis_with_the_kit": hypothesis_with_the_kit,
    "check_knob_callable": callable(metahp.testing.check_knob),
    "editable_finder": [repr(f) for f in sys.meta_path if "editable" in repr(f).lower()],
}))
"""


@pytest.mark.slow
def test_wheel_alone_in_a_fresh_venv_imports_every_package_and_the_kit(tmp_path, wheel):
    # 1. The wheel holds every module of every package (read from the source tree, so new modules are covered)
    #    and nothing outside metahp/.
    names = set(zipfile.ZipFile(wheel).namelist())
    missing = sorted(wheel_path(n, p) for n, p in source_modules().items() if wheel_path(n, p) not in names)
    assert not missing, f"the wheel lacks {missing}"
    strays = sorted(n for n in names if not n.startswith(("metahp/", "metahp-")))
    assert not strays, f"the wheel ships files outside metahp/: {strays}"
    assert {"metahp/testing/__init__.py", "metahp/testing/strategies.py", "metahp/lab/tasks/__init__.py"} <= names
    metadata = next(zipfile.ZipFile(wheel).read(n).decode() for n in names if n.endswith(".dist-info/METADATA"))
    assert "Provides-Extra: testing" in metadata and 'hypothesis>=6.100; extra == "testing"' in metadata
    wheel_packages = sorted(n[: -len("/__init__.py")].replace("/", ".") for n in names if n.endswith("/__init__.py"))
    docs_named = docs_named_modules()
    assert {"metahp.testing", "metahp.integrations", "metahp.lab.tasks", "metahp.knobs"} <= docs_named

    # 2. A fresh venv: the wheel unzipped into its site-packages; .venv's site-packages appended to sys.path by a
    #    .pth (site does not run the .pth files of a directory a .pth names, so .venv's editable finder stays out,
    #    and the venv's own site-packages, holding the wheel's metahp, comes first).
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, capture_output=True)
    python = venv / "bin" / "python"
    site = Path(subprocess.run([python, "-I", "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                               capture_output=True, text=True, check=True).stdout.strip())
    assert site.is_relative_to(venv)
    zipfile.ZipFile(wheel).extractall(site)
    deps = dict.fromkeys(sysconfig.get_path(key) for key in ("purelib", "platlib"))
    (site / "zz_metahp_test_deps.pth").write_text("".join(f"{path}\n" for path in deps))

    # 3. Import every package of the wheel and every module the docs name, in the fresh venv, from the wheel.
    modules = sorted({*wheel_packages, *docs_named, *NAMED_BY_PATH})
    unshipped = sorted(m for m in {*docs_named, *NAMED_BY_PATH} if wheel_path(m, source_modules()[m]) not in names)
    assert not unshipped, f"modules the docs name that the wheel lacks: {unshipped}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    out = subprocess.run([python, "-I", "-c", FRESH_PROBE, json.dumps(modules)], cwd=tmp_path, env=env,
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout.splitlines()[-1])
    assert set(modules) <= set(report["files"]), sorted(set(modules) - set(report["files"]))
    elsewhere = {n: f for n, f in report["files"].items() if f is None or not Path(f).is_relative_to(site)}
    assert not elsewhere, f"metahp modules not imported from the fresh venv's wheel: {elsewhere}"
    assert report["editable_finder"] == []
    assert report["check_knob_callable"]
    assert not report["hypothesis_with_the_kit"], "import metahp.testing imported hypothesis"


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


FRAMEWORKS = ("trl", "transformers", "accelerate", "vllm", "verl")
FRAMEWORK_ADAPTER_PREFIXES = ("trl", "vllm", "verl")


def _is_type_checking(test):
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _top_level_statements(body):
    """The statements that run when the module is imported: the module body, into if / try / with / class blocks,
    not into functions, and not into `if TYPE_CHECKING:` (which never runs)."""
    for node in body:
        yield node
        if isinstance(node, ast.If):
            yield from _top_level_statements(node.orelse if _is_type_checking(node.test) else node.body + node.orelse)
        elif isinstance(node, ast.Try | ast.TryStar):
            blocks = node.body + node.orelse + node.finalbody + [s for h in node.handlers for s in h.body]
            yield from _top_level_statements(blocks)
        elif isinstance(node, ast.With | ast.ClassDef):
            yield from _top_level_statements(node.body)


def _imported(node, module, is_package):
    """The dotted names an import statement imports (`from metahp import lab` -> metahp, metahp.lab)."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    if not isinstance(node, ast.ImportFrom):
        return []
    base = node.module or ""
    if node.level:
        package = module.split(".") if is_package else module.split(".")[:-1]
        base = ".".join(package[: len(package) - node.level + 1] + ([node.module] if node.module else []))
    return [base] + [f"{base}.{alias.name}" for alias in node.names]


def _imports_of(path, module, top_level_only):
    tree = ast.parse(path.read_text(), filename=str(path))
    nodes = _top_level_statements(tree.body) if top_level_only else ast.walk(tree)
    return [(node.lineno, name) for node in nodes for name in _imported(node, module, path.name == "__init__.py")]


def _names(name, roots):
    return name in roots or name.startswith(tuple(f"{root}." for root in roots))


def test_the_layering_rules():
    """The layers and what may import what (docs/architecture.md), checked on the import statements (ast).

    - core: metahp/ except metahp/lab/ and metahp/testing/. A core module imports neither metahp.lab, nor
      metahp.testing, nor metahp.integrations, anywhere in the file (inside functions too). One exception:
      metahp/__init__.py imports metahp.integrations, to re-export `adapt`.
    - adapters: integrations/ (metahp.integrations). They import no metahp.lab at module top level (a function may:
      integrations/reference.py imports metahp.lab.grpo when it attaches to the reference trainer).
    - lab: metahp/lab/, may import the core and the adapters.
    - testing kit: metahp/testing/. It imports the core only at module top level (no metahp.lab, no
      metahp.integrations), and hypothesis is imported at top level only by metahp/testing/strategies.py.
    - frameworks: no module in metahp/ or integrations/ imports trl, transformers, accelerate, vllm or verl at
      module top level, except an adapter in integrations/ named after its framework (a file name starting with
      trl, vllm or verl, as integrations/trl_1_16.py). Everything else imports a framework inside the function
      that needs it, or under `if TYPE_CHECKING:`.
    """
    offenders = []
    for module, path in source_modules().items():
        where = str(path.relative_to(ROOT))
        layer = ("adapters" if module.startswith("metahp.integrations") else "lab" if _names(module, ["metahp.lab"])
                 else "testing" if _names(module, ["metahp.testing"]) else "core")
        everywhere = _imports_of(path, module, top_level_only=False)
        top_level = _imports_of(path, module, top_level_only=True)
        if layer == "core":
            forbidden = ["metahp.lab", "metahp.testing"] + ([] if module == "metahp" else ["metahp.integrations"])
            offenders += [f"{where}:{line} (core) imports {name}" for line, name in everywhere
                          if _names(name, forbidden)]
        if layer == "adapters":
            offenders += [f"{where}:{line} (adapter) imports {name} at top level" for line, name in top_level
                          if _names(name, ["metahp.lab"])]
        if layer == "testing":
            offenders += [f"{where}:{line} (testing kit) imports {name} at top level" for line, name in top_level
                          if _names(name, ["metahp.lab", "metahp.integrations"])]
        if module != "metahp.testing.strategies":
            offenders += [f"{where}:{line} imports {name} at top level (only metahp.testing.strategies may)"
                          for line, name in top_level if _names(name, ["hypothesis"])]
        if not (layer == "adapters" and path.name.startswith(FRAMEWORK_ADAPTER_PREFIXES)):
            offenders += [f"{where}:{line} imports the framework {name} at top level" for line, name in top_level
                          if _names(name, FRAMEWORKS)]
    assert not offenders, "imports that break the layering rules:\n" + "\n".join(sorted(set(offenders)))
