"""The typed fields of an experiment file: ``ExperimentError`` and the checks every table's
parser shares (a table, its allowed keys, a finite number, a non-empty string)."""

from __future__ import annotations

import math
from typing import Any, Mapping


class ExperimentError(ValueError):
    """A bad experiment file; ``key`` is the TOML key path, ``value`` the offending value."""

    def __init__(self, key: str, message: str, value: Any = None) -> None:
        self.key, self.value = key, value
        suffix = f" (got {value!r})" if value is not None else ""
        super().__init__(f"{key}: {message}{suffix}")


def _table(value: Any, key: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ExperimentError(key, "must be a table", value)
    return value


def _check_keys(table: Mapping[str, Any], key: str, allowed: tuple[str, ...] | set[str]) -> None:
    for name in table:
        if name not in allowed:
            where = f"{key}.{name}" if key else name
            raise ExperimentError(where, f"unknown key; allowed here: {', '.join(sorted(allowed))}",
                                  table[name])


def _number(value: Any, key: str, *, integer: bool = False, positive: bool = False,
            non_negative: bool = False, maximum: float | None = None) -> Any:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or (
            integer and not isinstance(value, int)):
        raise ExperimentError(key, "must be an integer" if integer else "must be a number", value)
    if not math.isfinite(value):
        raise ExperimentError(key, "must be finite", value)
    if positive and value <= 0:
        raise ExperimentError(key, "must be > 0", value)
    if non_negative and value < 0:
        raise ExperimentError(key, "must be >= 0", value)
    if maximum is not None and value > maximum:
        raise ExperimentError(key, f"must be <= {maximum:g}", value)
    return value


def _string(value: Any, key: str) -> str:
    if not isinstance(value, str) or not value:
        raise ExperimentError(key, "must be a non-empty string", value)
    return value


NAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-+")


def _name(value: Any, key: str) -> str:
    """A name that becomes a folder (``runs/<name>/``) and part of a study name: letters,
    digits and ``._-+``, not starting with a dot (so never ``.`` or ``..``), at most 100 long."""
    name = _string(value, key)
    bad = sorted(set(name) - NAME_CHARS)
    if bad or name.startswith(".") or len(name) > 100:
        raise ExperimentError(key, "must be letters, digits and . _ - + (not starting with a dot, "
                                   "at most 100 characters), so it cannot leave runs/", name)
    return name
