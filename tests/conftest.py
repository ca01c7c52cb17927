"""Shared test fixtures and helpers."""

from __future__ import annotations

import os
import uuid
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


@pytest.fixture
def pg_url():
    """A fresh database on the server of PROXY_TRANSFER_PG_URL, dropped afterwards."""
    base = os.environ.get("PROXY_TRANSFER_PG_URL")
    if not base:
        if os.environ.get("PROXY_TRANSFER_REQUIRE_PG") == "1":
            pytest.fail("PROXY_TRANSFER_REQUIRE_PG=1 but PROXY_TRANSFER_PG_URL is not set")
        pytest.skip("no PostgreSQL server: set PROXY_TRANSFER_PG_URL (CI's .ci/run starts one)")
    import psycopg2

    from proxy.sweep.store import close_all, resolve_url

    name = "sweep_" + uuid.uuid4().hex[:12]
    admin = psycopg2.connect(resolve_url(base, ".").replace("postgresql+psycopg2://", "postgresql://"))
    admin.autocommit = True
    try:
        with admin.cursor() as cur:
            cur.execute(f'create database "{name}"')
        root = base.rsplit("/", 1)[0]
        yield f"{root}/{name}"
        close_all()
        with admin.cursor() as cur:
            cur.execute(f'drop database if exists "{name}" with (force)')
    finally:
        admin.close()
