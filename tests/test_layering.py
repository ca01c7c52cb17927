"""The layer rules of DESIGN.md and docs/layout.md, checked by parsing every module's imports.

The folder rule: a file's path says which framework it may import.

- ``proxy/backends/torch/`` may import torch (and no other framework);
- ``proxy/backends/jax/`` may import jax, jaxlib and optax (and no other framework);
- every other module of the package imports no framework at all, not even inside a function:
  it reaches one through ``proxy.backends.load_backend``.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

import proxy

PACKAGE_ROOT = Path(proxy.__file__).resolve().parents[1]
PACKAGES = ("proxy", "fits", "transfer", "reports")
FRAMEWORKS = {"torch", "jax", "jaxlib", "optax", "flax"}
# Folder (relative to the install root) -> the frameworks its files may import.
FRAMEWORK_FOLDERS = {
    "proxy/backends/torch": {"torch"},
    "proxy/backends/jax": {"jax", "jaxlib", "optax"},
}


def _modules(root: Path = PACKAGE_ROOT):
    for package in PACKAGES:
        for path in sorted((root / package).rglob("*.py")):
            rel = path.relative_to(root).with_suffix("")
            name = ".".join(p for p in rel.parts if p != "__init__")
            yield name, path


def _all_imports(path: Path) -> set[str]:
    """Every absolute import of a module, at import time or inside a function."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def allowed_frameworks(path: Path, root: Path = PACKAGE_ROOT) -> set[str]:
    """The frameworks a file may import, from the folder it sits in."""
    rel = path.relative_to(root).as_posix()
    for folder, frameworks in FRAMEWORK_FOLDERS.items():
        if rel.startswith(folder + "/"):
            return frameworks
    return set()


def framework_violations(root: Path = PACKAGE_ROOT) -> list[str]:
    """One line per framework import outside the folder that may make it."""
    found = []
    for name, path in _modules(root):
        used = {m.split(".")[0] for m in _all_imports(path)} & FRAMEWORKS
        for framework in sorted(used - allowed_frameworks(path, root)):
            found.append(f"{path.relative_to(root).as_posix()} imports {framework}")
    return found


def test_frameworks_only_in_their_backend_folder():
    bad = framework_violations()
    assert not bad, ("framework imports outside their backend folder (reach a framework through "
                     "proxy.backends.load_backend):\n" + "\n".join(bad))


def test_each_backend_folder_holds_its_framework():
    # The rule is not vacuous: each framework folder exists and imports its framework.
    for folder, frameworks in FRAMEWORK_FOLDERS.items():
        files = sorted((PACKAGE_ROOT / folder).glob("*.py"))
        assert files, f"{folder} is missing"
        used = set().union(*({m.split(".")[0] for m in _all_imports(f)} for f in files))
        assert frameworks & used, f"no file in {folder} imports {sorted(frameworks)}"


@pytest.mark.parametrize("where, framework, flagged", [
    ("proxy/sweep/runner.py", "torch", True),          # the framework-free core
    ("proxy/backends/simulated.py", "jax", True),      # a backend, but not a framework's folder
    ("reports/commands/train.py", "torch", True),
    ("proxy/backends/jax/model.py", "torch", True),    # the other framework's folder
    ("proxy/backends/torch/model.py", "torch", False),
    ("proxy/backends/jax/trainer.py", "optax", False),
])
def test_the_rule_flags_an_import_added_outside_its_folder(tmp_path, where, framework, flagged):
    for package in PACKAGES:
        (tmp_path / package).mkdir()
    target = tmp_path / where
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(f"def later():\n    import {framework}\n    return {framework}\n")
    assert bool(framework_violations(tmp_path)) == flagged


def test_fits_import_only_numeric_libraries():
    allowed = {"numpy", "scipy", "statsmodels", "fits", "__future__", "concurrent", "dataclasses",
               "math", "typing", "collections", "functools", "itertools", "os", "warnings",
               "json", "textwrap", "multiprocessing", "abc", "enum", "time"}
    for name, path in _modules():
        if name.startswith("fits"):
            bad = {m for m in _all_imports(path) if m.split(".")[0] not in allowed}
            assert not bad, f"{name} imports {sorted(bad)}; fits may use numpy, scipy, statsmodels only"


def _layer(module: str) -> int:
    """Layer of a module (DESIGN.md): fits and proxy L0-L3, transfer L4, reports L5."""
    top = module.split(".")[0]
    return {"fits": 0, "proxy": 0, "transfer": 4, "reports": 5}[top]


def test_lower_layers_do_not_import_higher_ones():
    ours = set(PACKAGES)
    for name, path in _modules():
        for imported in _all_imports(path):
            if imported.split(".")[0] not in ours:
                continue
            assert _layer(imported) <= _layer(name), f"{name} imports {imported}, a higher layer"
            if name.startswith("fits"):
                assert imported.startswith("fits"), f"{name} imports {imported}; fits is pure maths"


def test_the_core_and_data_import_no_backend():
    # The framework-free core (config, naming, init, flops, ...) and the data package sit below
    # the backends: a reader of them never needs a trainer.
    for name, path in _modules():
        below = name.startswith("proxy.data") or name.count(".") == 1 and not name.startswith(
            ("proxy.backends", "proxy.diagnostics", "proxy.sweep"))
        if name.startswith("proxy") and below:
            bad = {m for m in _all_imports(path) if m.startswith(("proxy.backends", "proxy.diagnostics",
                                                                  "proxy.sweep"))}
            assert not bad, f"{name} imports {sorted(bad)}; the core sits below the backends"


def test_importing_the_packages_loads_no_framework():
    code = ("import sys, proxy, proxy.backends, proxy.data, proxy.diagnostics.bench, "
            "proxy.diagnostics.coordcheck, proxy.diagnostics.lr_transfer, fits, transfer, reports, "
            "reports.cli; reports.cli.build_parser(); "
            "print(sorted(m for m in ('torch', 'jax', 'optax') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout


def test_tests_run_against_the_installed_package():
    # `make test` installs the package (not editable); the working tree must not shadow it.
    assert "site-packages" in proxy.__file__, proxy.__file__
