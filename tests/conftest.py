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
