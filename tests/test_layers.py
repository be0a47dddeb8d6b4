"""The package's layers import only downwards: the imports of every module are parsed with ``ast``.

A module may import its own layer and the layers below it; an import of a higher layer (absolute or
relative, at module level or inside a function) fails this test.
"""
import ast
from pathlib import Path
from typing import Iterator, Tuple

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "openmm_smoothflow"
# Low to high; names of the package's top-level modules and subpackages. ``particles`` (flows of
# particle systems, with their own data, training and export) builds on ``potential``'s export format.
LAYERS = [("units", "io", "errors", "progress"), ("transforms",), ("flows",), ("potential",), ("particles",), ("md",), ("training",), ("bg",),
          ("analysis",), ("benchmarks",), ("commands", "cli")]
RANK = {name: rank for rank, names in enumerate(LAYERS) for name in names}


def imported_layers(path: Path, package_dir: Path = PACKAGE) -> Iterator[Tuple[int, str]]:
    """(line, top-level name inside the package) of every import of the package in ``path``."""
    parts = path.relative_to(package_dir).with_suffix("").parts
    here = list(parts[:-1])  # the package that contains the module (for relative imports)
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name.split(".") for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module == "openmm_smoothflow":
            targets = [["openmm_smoothflow", alias.name] for alias in node.names]  # modules or root attributes
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            targets = [node.module.split(".")]
        elif isinstance(node, ast.ImportFrom):
            if node.level - 1 > len(here):
                raise AssertionError(f"{path}:{node.lineno}: relative import beyond the package")
            base = ["openmm_smoothflow"] + here[:len(here) - (node.level - 1)]
            if node.module:
                targets = [base + node.module.split(".")]
            else:  # ``from . import x``, ``from .. import x``: each name is a module or attribute of base
                targets = [base + [alias.name] for alias in node.names]
        else:
            continue
        for target in targets:
            if target[0] == "openmm_smoothflow" and len(target) > 1 and _is_module(package_dir, target[1]):
                yield node.lineno, target[1]


def _is_module(package_dir: Path, name: str) -> bool:
    """A top-level module or subpackage of the package (not an attribute of its ``__init__``)."""
    return (package_dir / f"{name}.py").is_file() or (package_dir / name).is_dir()


def _top(path: Path) -> str:
    return path.relative_to(PACKAGE).with_suffix("").parts[0]


MODULES = sorted(p for p in PACKAGE.rglob("*.py") if p != PACKAGE / "__init__.py")


def test_every_module_belongs_to_a_layer():
    stray = sorted({_top(p) for p in MODULES} - set(RANK))
    assert not stray, f"top-level modules/packages in no layer (add them to LAYERS): {stray}"


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_imports_point_down(path):
    own = RANK[_top(path)]
    bad = [f"line {line}: imports {name} ({'layer %d' % RANK[name] if name in RANK else 'no layer'})"
           for line, name in imported_layers(path) if RANK.get(name, len(LAYERS)) > own]
    assert not bad, f"{path.relative_to(PACKAGE)} is in layer {own}: " + "; ".join(bad)


def test_an_upward_import_is_seen(tmp_path):
    """Relative (any depth, inside a function too) and absolute imports are all attributed to their layer."""
    package = tmp_path / "openmm_smoothflow"
    (package / "flows").mkdir(parents=True)
    module = package / "flows" / "bad.py"
    for name in ("analysis", "training"):
        (package / name).mkdir()
    (package / "units.py").write_text("")
    module.write_text("import torch\nfrom . import coupling\nimport openmm_smoothflow.analysis.plots\n"
                      "from openmm_smoothflow import __version__, training\n"
                      "def f():\n    from ..training.losses import LossWeights\n    from .. import units\n")
    found = sorted(name for _, name in imported_layers(module, package))
    assert found == ["analysis", "flows", "training", "training", "units"]
    upward = sorted(name for _, name in imported_layers(module, package) if RANK[name] > RANK["flows"])
    assert upward == ["analysis", "training", "training"]
