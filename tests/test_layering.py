"""The layer rules of DESIGN.md, checked by parsing every module's imports."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import proxy

PACKAGE_ROOT = Path(proxy.__file__).resolve().parents[1]
FRAMEWORKS = {"torch", "jax", "jaxlib", "optax", "flax"}
# Modules allowed to import a framework: the backends and their helpers (L2).
FRAMEWORK_MODULES = {
    "proxy.model_torch", "proxy.train_torch", "proxy.model_jax", "proxy.train_jax",
    "proxy.convert", "proxy.coordcheck_torch", "proxy.coordcheck_jax", "proxy.bench_torch",
    "proxy.bench_jax", "proxy.routing_torch", "proxy.routing_jax",
}


def _modules():
    for package in ("proxy", "fits", "transfer", "reports"):
        for path in sorted((PACKAGE_ROOT / package).rglob("*.py")):
            rel = path.relative_to(PACKAGE_ROOT).with_suffix("")
            name = ".".join(p for p in rel.parts if p != "__init__")
            yield name, path


def _top_level_imports(path: Path) -> set[str]:
    """Imports executed at module import time (not those inside functions)."""
    tree = ast.parse(path.read_text())
    names: set[str] = set()
    for node in tree.body:
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def _all_imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def test_fits_import_only_numeric_libraries():
    allowed = {"numpy", "scipy", "statsmodels", "fits", "__future__", "concurrent", "dataclasses",
               "math", "typing", "collections", "functools", "itertools", "os", "warnings",
               "json", "textwrap", "multiprocessing", "abc", "enum", "time"}
    for name, path in _modules():
        if name.startswith("fits"):
            bad = {m for m in _all_imports(path) if m.split(".")[0] not in allowed}
            assert not bad, f"{name} imports {sorted(bad)}; fits may use numpy, scipy, statsmodels only"


def test_frameworks_only_in_backend_modules():
    for name, path in _modules():
        if name in FRAMEWORK_MODULES:
            continue
        heavy = {m for m in _top_level_imports(path) if m.split(".")[0] in FRAMEWORKS}
        assert not heavy, f"{name} imports {sorted(heavy)} at import time; load it through proxy.backends"


def _layer(module: str) -> int:
    """Layer of a module (DESIGN.md): fits and proxy L0-L3, transfer L4, reports L5."""
    top = module.split(".")[0]
    return {"fits": 0, "proxy": 0, "transfer": 4, "reports": 5}[top]


def test_lower_layers_do_not_import_higher_ones():
    ours = {"fits", "proxy", "transfer", "reports"}
    for name, path in _modules():
        for imported in _all_imports(path):
            if imported.split(".")[0] not in ours:
                continue
            assert _layer(imported) <= _layer(name), f"{name} imports {imported}, a higher layer"
            if name.startswith("fits"):
                assert imported.startswith("fits"), f"{name} imports {imported}; fits is pure maths"


def test_importing_the_packages_loads_no_framework():
    code = ("import sys, proxy, fits, transfer, reports, reports.cli; "
            "reports.cli.build_parser(); "
            "print(sorted(m for m in ('torch', 'jax', 'optax') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout


def test_tests_run_against_the_installed_package():
    # `make test` installs the package (not editable); the working tree must not shadow it.
    assert "site-packages" in proxy.__file__, proxy.__file__
