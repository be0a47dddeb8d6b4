"""The package metadata: version ranges (not pins), the tested set in constraints.txt, shipped data,
one version, entry points, and a wheel that carries the models."""
import fnmatch
import importlib.metadata
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest
from packaging.requirements import Requirement

ROOT = next(p for p in Path(__file__).resolve().parents if (p / "pyproject.toml").exists())  # the checkout
DIST = "openmm_smoothflow"
ABI_SET = {"torch", "openmm", "openmmtorch", "openmm-torch", "acellera-openmmtorch-cpu"}
TESTED = {"torch": "2.12.1", "openmm": "8.6.1", "acellera-openmmtorch-cpu": "1.10", "openmmml": "1.8"}


def _canonical(name: str) -> str:
    return name.lower().replace("_", "-").replace(".", "-")


@pytest.fixture(scope="module")
def project():
    with open(ROOT / "pyproject.toml", "rb") as f:
        return tomllib.load(f)


def _all_requirements(project):
    reqs = list(project["project"]["dependencies"])
    for extra in project["project"].get("optional-dependencies", {}).values():
        reqs += extra
    return [Requirement(r) for r in reqs]


def test_metadata_has_ranges_not_pins_of_the_abi_set(project):
    reqs = _all_requirements(project)
    names = {_canonical(r.name) for r in reqs}
    assert {"torch", "openmm", "acellera-openmmtorch-cpu"} <= names
    for r in reqs:
        if _canonical(r.name) in ABI_SET:
            assert all(s.operator not in ("==", "===") for s in r.specifier), f"exact pin in metadata: {r}"
    # the PyPI plugin is optional (conda-forge's openmm-torch is the other way): not a base dependency
    base = {_canonical(Requirement(r).name) for r in project["project"]["dependencies"]}
    assert not base & {"acellera-openmmtorch-cpu", "openmmtorch", "openmm-torch"}
    assert "acellera-openmmtorch-cpu" in {
        _canonical(Requirement(r).name) for r in project["project"]["optional-dependencies"]["cpu"]
    }


def _constraints():
    pins = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            r = Requirement(line)
            (spec,) = r.specifier
            assert spec.operator == "==", f"constraints.txt pins exact versions: {line}"
            pins[_canonical(r.name)] = spec.version
    return pins


def test_constraints_pin_the_tested_set_and_make_uses_them():
    pins = _constraints()
    for name, version in TESTED.items():
        assert pins.get(name) == version, f"{name}: {pins.get(name)} != {version}"
    makefile = (ROOT / "Makefile").read_text()
    stamp = next(line for line in makefile.splitlines() if line.startswith("$(VENV)/.installed:"))
    assert "pyproject.toml" in stamp and "constraints.txt" in stamp
    assert '-c constraints.txt -e ".[cpu,test]"' in makefile


def test_package_data_covers_every_shipped_file(project):
    globs = project["tool"]["setuptools"]["package-data"]["openmm_smoothflow"]
    shipped = [p for p in (ROOT / "openmm_smoothflow" / "data").iterdir() if p.is_file()]
    assert any(p.suffix == ".pt" for p in shipped)
    for path in shipped:
        rel = f"data/{path.name}"
        assert any(fnmatch.fnmatch(rel, g) for g in globs), f"{rel} is not in the package data {globs}"


def test_version_is_single_sourced_and_matches_the_installed_distribution(project):
    import openmm_smoothflow

    assert project["project"]["dynamic"] == ["version"]
    assert project["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "openmm_smoothflow.__version__"}
    assert openmm_smoothflow.__version__ == importlib.metadata.version(DIST)


def test_import_is_light():
    code = "import sys, openmm_smoothflow; print(sorted(m for m in ('torch', 'openmm') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_installed_entry_points_match_pyproject_and_load(project):
    declared = {("console_scripts", k, v) for k, v in project["project"]["scripts"].items()}
    for group, eps in project["project"]["entry-points"].items():
        declared |= {(group, k, v) for k, v in eps.items()}
    installed = {(ep.group, ep.name, ep.value) for ep in importlib.metadata.distribution(DIST).entry_points}
    assert declared == installed, "the installed metadata is stale: reinstall with `make .venv/.installed`"
    import openmmml  # noqa: F401  (openmm-ml loads its potentials' entry points on import, as here)

    for group, name, _ in declared:
        (ep,) = importlib.metadata.entry_points(group=group, name=name)
        assert callable(ep.load())


def test_smoothflow_version_prints_the_version():
    import openmm_smoothflow

    script = Path(sys.executable).with_name("smoothflow")
    out = subprocess.run([str(script), "--version"], capture_output=True, text=True, check=True).stdout
    assert out.strip() == f"smoothflow {openmm_smoothflow.__version__}"


def test_missing_plugin_error_names_both_builds(monkeypatch):
    from openmm_smoothflow.potential.torchforce import import_openmmtorch

    assert import_openmmtorch().TorchForce  # the installed plugin loads
    monkeypatch.setitem(sys.modules, "openmmtorch", None)  # makes `import openmmtorch` fail as when absent
    with pytest.raises(ImportError, match="openmm-torch") as info:
        import_openmmtorch()
    assert "acellera-openmmtorch-cpu" in str(info.value) and "conda-forge" in str(info.value)


@pytest.mark.slow
def test_wheel_carries_the_models_and_has_no_pins(tmp_path, project):
    """Builds a wheel from a copy of the checkout (pip fetches the build backend)."""
    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy(ROOT / name, src / name)
    shutil.copytree(ROOT / "openmm_smoothflow", src / "openmm_smoothflow",
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    out = tmp_path / "wheel"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(out), str(src)],
                   check=True, cwd=tmp_path)
    (wheel,) = out.glob("*.whl")
    with zipfile.ZipFile(wheel) as z:
        names = set(z.namelist())
        metadata = z.read(next(n for n in names if n.endswith(".dist-info/METADATA"))).decode()
        entry_points = z.read(next(n for n in names if n.endswith(".dist-info/entry_points.txt"))).decode()
    for path in (ROOT / "openmm_smoothflow" / "data").iterdir():
        if path.is_file():
            assert f"openmm_smoothflow/data/{path.name}" in names
    assert any(n.endswith(".dist-info/licenses/LICENSE") for n in names)
    requires = [Requirement(line.split(":", 1)[1]) for line in metadata.splitlines()
                if line.startswith("Requires-Dist:")]
    assert {"torch", "openmm"} <= {_canonical(r.name) for r in requires}
    for r in requires:
        if _canonical(r.name) in ABI_SET:
            assert all(s.operator not in ("==", "===") for s in r.specifier), r
    import openmm_smoothflow

    assert f"\nVersion: {openmm_smoothflow.__version__}\n" in metadata
    assert "[openmmml.potentials]" in entry_points and "smoothflow =" in entry_points
