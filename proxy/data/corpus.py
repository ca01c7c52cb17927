"""A corpus: every domain's documents, split into train and validation *by document*.

Tokens are bytes (ids 0..255, ``vocab_size`` 256). A *domain* is a list of documents (``uint8``
arrays), built in (``proxy.data.builtin``) or the user's (``proxy.data.user``); every domain is
split into train and validation by document, never inside one, by a stable hash of the
document's identity.

``max_bytes_per_domain`` keeps a domain's documents in a fixed pseudo-random order (a salted
SHA-256 of their identity) until the budget is reached, truncating the document that crosses it.
"""

from __future__ import annotations

import functools
import numbers
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from proxy.data.builtin import BUILTIN_DOMAINS, builtin_documents, clear_builtin_cache
from proxy.data.documents import SEPARATOR, Doc, FrozenMap, cap_documents, unit_hash
from proxy.data.user import user_documents


@dataclass(frozen=True, eq=False)
class Corpus:
    """Documents per domain, split by document. ``train`` / ``val``: domain -> uint8 arrays.

    Every domain must have at least one non-empty document in each split. The concatenated
    buffers used for sampling are built once here (identity equality: ``eq=False``).
    """

    train: Mapping[str, tuple[np.ndarray, ...]]
    val: Mapping[str, tuple[np.ndarray, ...]]
    _buffers: Mapping[str, Mapping[str, np.ndarray]] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if not isinstance(self.train, Mapping) or not isinstance(self.val, Mapping):
            raise TypeError("Corpus.train and Corpus.val must be mappings of domain -> documents")
        if list(self.train) != list(self.val):
            raise ValueError(f"Corpus.train domains {list(self.train)} differ from Corpus.val "
                             f"domains {list(self.val)}")
        if not self.train:
            raise ValueError("Corpus has no domains")
        splits: dict[str, dict[str, tuple[np.ndarray, ...]]] = {}
        buffers: dict[str, dict[str, np.ndarray]] = {}
        for split, mapping in (("train", self.train), ("val", self.val)):
            docs_by_domain, bufs = {}, {}
            for domain, docs in mapping.items():
                if not isinstance(domain, str) or not domain:
                    raise ValueError(f"Corpus.{split} has a bad domain name {domain!r}")
                docs = tuple(np.asarray(d) for d in docs)
                if not docs:
                    raise ValueError(f"Corpus.{split}[{domain!r}] has no documents")
                for i, d in enumerate(docs):
                    if d.dtype != np.uint8 or d.ndim != 1 or d.size == 0:
                        raise ValueError(f"Corpus.{split}[{domain!r}][{i}] must be a non-empty 1-D "
                                         f"uint8 array, got dtype {d.dtype} shape {d.shape}")
                docs_by_domain[domain] = docs
                sep = np.full(1, SEPARATOR, np.uint8)
                buf = np.concatenate([part for d in docs for part in (d, sep)])
                buf.setflags(write=False)
                bufs[domain] = buf
            splits[split], buffers[split] = docs_by_domain, bufs
        object.__setattr__(self, "train", FrozenMap(splits["train"]))
        object.__setattr__(self, "val", FrozenMap(splits["val"]))
        object.__setattr__(self, "_buffers", FrozenMap({k: FrozenMap(v) for k, v in buffers.items()}))

    @property
    def domains(self) -> tuple[str, ...]:
        return tuple(self.train)

    def buffer(self, domain: str, split: str = "train") -> np.ndarray:
        """The read-only concatenation ``doc0 0 doc1 0 ...`` of one domain's split (uint8)."""
        if split not in ("train", "val"):
            raise ValueError(f"split must be 'train' or 'val', got {split!r}")
        if domain not in self.train:
            raise ValueError(f"unknown domain {domain!r}; the corpus has {list(self.domains)}")
        return self._buffers[split][domain]

    def stats(self) -> dict[str, dict[str, int]]:
        """Per domain: documents and bytes (separators excluded) of each split."""
        return {d: {"train_docs": len(self.train[d]), "train_bytes": sum(x.size for x in self.train[d]),
                    "val_docs": len(self.val[d]), "val_bytes": sum(x.size for x in self.val[d])}
                for d in self.domains}


@functools.lru_cache(maxsize=16)
def _domain_docs(name: str, source: str, signature: tuple, max_bytes: int | None) -> tuple[Doc, ...]:
    """Capped documents of one domain; ``source`` is 'builtin' or a user path (cached)."""
    del signature  # part of the cache key only: a changed user file reloads
    if source == "builtin":
        docs = builtin_documents(name, max_bytes)
    else:
        docs = user_documents(name, Path(source))
    return tuple(cap_documents(docs, max_bytes))


def _split(name: str, docs: Sequence[Doc], val_fraction: float) -> tuple[list, list]:
    """Train/val by a stable hash of (group, identity); at least one document in each split."""
    if len(docs) < 2:
        raise ValueError(f"domain {name!r} has {len(docs)} document(s); the train/val split needs >= 2")
    u = np.array([unit_hash(group, ident) for group, ident, _ in docs])
    is_val = u < val_fraction
    if not is_val.any():
        is_val[np.argmin(u)] = True
    if is_val.all():
        is_val[np.argmax(u)] = False
    arrays = [np.frombuffer(data, dtype=np.uint8) for _, _, data in docs]
    return ([a for a, v in zip(arrays, is_val) if not v], [a for a, v in zip(arrays, is_val) if v])


@functools.lru_cache(maxsize=8)
def _corpus(domains: tuple[tuple[str, str, tuple], ...], val_fraction: float,
            max_bytes: int | None) -> Corpus:
    train, val = {}, {}
    for name, source, signature in domains:
        train[name], val[name] = _split(name, _domain_docs(name, source, signature, max_bytes), val_fraction)
    return Corpus(train=train, val=val)


def load_corpus(domains: Sequence[str] = BUILTIN_DOMAINS, *,
                user_domains: Mapping[str, str | Path] | None = None,
                val_fraction: float = 0.1, max_bytes_per_domain: int | None = 4_000_000) -> Corpus:
    """Load and split the named domains (built-in names, plus every key of ``user_domains``).

    ``max_bytes_per_domain`` caps each domain's bytes before the split (None: no cap). Results
    are cached per process; a user path is reloaded when its modification time or size changes.
    """
    if isinstance(domains, str) or not isinstance(domains, Sequence):
        raise TypeError(f"domains must be a sequence of names, got {domains!r}")
    user = dict(user_domains or {})
    if not isinstance(val_fraction, numbers.Real) or not 0.0 < val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction!r}")
    if max_bytes_per_domain is not None and (isinstance(max_bytes_per_domain, bool) or not isinstance(
            max_bytes_per_domain, numbers.Integral) or max_bytes_per_domain <= 0):
        raise ValueError(f"max_bytes_per_domain must be a positive int or None, got {max_bytes_per_domain!r}")
    for name in user:
        if not isinstance(name, str) or not name:
            raise ValueError(f"user domain names must be non-empty strings, got {name!r}")
        if name in BUILTIN_DOMAINS:
            raise ValueError(f"user domain {name!r} has the name of a built-in domain; choose another")
    names = list(domains) + [n for n in user if n not in domains]
    if not names:
        raise ValueError("no domains to load")
    key = []
    for name in names:
        if names.count(name) > 1:
            raise ValueError(f"domain {name!r} is listed twice")
        if name in user:
            path = Path(user[name]).expanduser().resolve()
            stat = path.stat() if path.exists() else None
            key.append((name, str(path), (stat.st_mtime_ns, stat.st_size) if stat else ()))
        elif name in BUILTIN_DOMAINS:
            key.append((name, "builtin", ()))
        else:
            raise ValueError(f"unknown domain {name!r}; known: built-in {list(BUILTIN_DOMAINS)}, "
                             f"user {list(user)}")
    cap = None if max_bytes_per_domain is None else int(max_bytes_per_domain)
    return _corpus(tuple(key), float(val_fraction), cap)


def clear_cache() -> None:
    """Forget every loaded corpus (e.g. after editing files inside a user folder in place)."""
    _corpus.cache_clear()
    _domain_docs.cache_clear()
    clear_builtin_cache()


# ----------------------------------------------------------------------------- mixture
