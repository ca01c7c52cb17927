"""Shared test fixtures and helpers."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
PUBLISHED_DATA = Path(__file__).resolve().parent / "data"   # sources and licences: data/README.md


@pytest.fixture(scope="session")
def published_data() -> Path:
    """tests/data: the published scaling-law data the fits are held to, part of every clone."""
    return PUBLISHED_DATA


def pytest_configure(config: pytest.Config) -> None:
    """The tests hold the frameworks to each other in float64, so this process asks JAX for x64
    up front (the package turns it on only for a float64 model: ``enable_x64``), before any test
    builds a float64 array; ``tests/test_model_jax.py`` checks a float32 step without it."""
    try:
        import jax
    except ImportError:
        return
    jax.config.update("jax_enable_x64", True)
