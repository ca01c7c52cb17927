"""User domains (``user_domains={"name": path}``): a user's own text as documents.

- a folder: every regular, non-hidden file below it (recursively, sorted by relative path) is one
  document, read as UTF-8 with ``errors="replace"`` and re-encoded, so any text file works;
- a ``.bin`` file: raw ``uint8`` bytes; documents are separated by a ``0`` byte;
- a ``.npy`` file: a 1-D ``uint8`` array, documents separated by ``0`` as in ``.bin``.
Empty documents and exact duplicates within a domain are dropped (``documents.cap_documents``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from proxy.data.documents import SEPARATOR, Doc


def user_documents(name: str, path: Path) -> list[Doc]:
    if not path.exists():
        raise ValueError(f"user domain {name!r}: path {str(path)!r} does not exist")
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file()
                       and not any(part.startswith(".") for part in p.relative_to(path).parts))
        docs = [(name, p.relative_to(path).as_posix(),
                 p.read_bytes().decode("utf-8", errors="replace").encode("utf-8")) for p in files]
        if not any(d[2] for d in docs):
            raise ValueError(f"user domain {name!r}: folder {str(path)!r} has no non-empty files")
        return docs
    suffix = path.suffix.lower()
    if suffix == ".bin":
        raw = np.fromfile(path, dtype=np.uint8)
    elif suffix == ".npy":
        raw = np.load(path, allow_pickle=False)
        if raw.dtype != np.uint8 or raw.ndim != 1:
            raise ValueError(f"user domain {name!r}: {str(path)!r} must hold a 1-D uint8 array, "
                             f"got dtype {raw.dtype} shape {raw.shape}")
    else:
        raise ValueError(f"user domain {name!r}: {str(path)!r} must be a folder, a .bin or a .npy file")
    cuts = np.flatnonzero(raw == SEPARATOR)
    pieces = [p for p in np.split(raw, cuts) if p.size]     # each piece after the first starts at a 0
    docs = [(name, str(k), (p[1:] if p[0] == SEPARATOR else p).tobytes()) for k, p in enumerate(pieces)]
    docs = [d for d in docs if d[2]]
    if not docs:
        raise ValueError(f"user domain {name!r}: {str(path)!r} holds no non-empty documents")
    return docs


# ----------------------------------------------------------------------------- loading
