"""A document before the train/validation split, and the rules every domain's documents share.

A document is ``(split group, identity, bytes)``; documents with the same (group, identity) always
fall in the same split. Between concatenated documents sits one ``SEPARATOR`` byte (0), which the
model learns as end-of-document.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping

SEPARATOR = 0                      # byte between concatenated documents

# (split group, identity, bytes)
Doc = tuple[str, str, bytes]


class FrozenMap(Mapping):
    """A read-only, picklable mapping (``types.MappingProxyType`` cannot be pickled)."""

    def __init__(self, items: Mapping) -> None:
        self._d = dict(items)

    def __getitem__(self, key):
        return self._d[key]

    def __iter__(self):
        return iter(self._d)

    def __len__(self) -> int:
        return len(self._d)

    def __hash__(self) -> int:
        return hash(frozenset(self._d.items()))

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._d!r})"




def unit_hash(*parts: str) -> float:
    """A stable number in [0, 1) from strings (SHA-256; Python's hash() is salted per process)."""
    digest = hashlib.sha256("\x1f".join(parts).encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64


def cap_documents(docs: list[Doc], max_bytes: int | None) -> list[Doc]:
    """Drop empty and duplicate documents; keep a fixed pseudo-random order up to max_bytes."""
    seen, unique = set(), []
    for doc in docs:
        digest = hashlib.sha256(doc[2]).digest()
        if doc[2] and digest not in seen:
            seen.add(digest)
            unique.append(doc)
    if max_bytes is None:
        return unique
    unique.sort(key=lambda d: unit_hash("order", d[0], d[1]))
    kept, total = [], 0
    for group, ident, data in unique:
        if total >= max_bytes:
            break
        data = data[: max_bytes - total]
        kept.append((group, ident, data))
        total += len(data)
    return kept
