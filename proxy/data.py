"""Byte-level training data: a corpus split by document, and a weighted mixture of domains.

Tokens are bytes (ids 0..255, ``vocab_size`` 256). A *domain* is a list of documents (``uint8``
arrays); every domain is split into train and validation *by document*, never inside one.

Built-in domains (present on every Python installation, no download):

- ``code``: the standard library's ``.py`` sources (``sysconfig.get_paths()["stdlib"]``), one file
  one document. Skipped: ``site-packages``, the test suites (``test``, ``tests``, ``idle_test``:
  large, repetitive, and version-specific), ``encodings`` (generated codec tables) and
  ``pydoc_data`` (it *is* the ``prose`` domain's text). About 10 MB on CPython 3.11.
- ``prose``: English text. The documentation topics of ``pydoc_data.topics`` (one topic one
  document, about 0.5 MB) are too small alone, so each stdlib module also contributes one document
  made of its docstrings (module, classes, functions), extracted from the source text by a small
  string/comment scanner, without importing the module (``ast.parse`` of the whole stdlib takes
  seconds; the scanner a fraction of one). A module's docstring document is split together with
  that module's source in ``code`` (same split key), so text seen in ``code`` train never
  reappears in ``prose`` validation.
- ``notes``: a synthetic lab notebook from a fixed generator (dated entries, measurements with
  units, tables, and arithmetic whose results are exact; see ``notes_document``). Document ``i``
  depends only on ``i``: the text is the same on every machine and Python version, because it
  uses only ``random.Random(int).random()``, whose sequence Python guarantees.
The built-in texts of ``code`` and ``prose`` follow the installed Python version.

User domains (``user_domains={"name": path}``):

- a folder: every regular, non-hidden file below it (recursively, sorted by relative path) is one
  document, read as UTF-8 with ``errors="replace"`` and re-encoded, so any text file works;
- a ``.bin`` file: raw ``uint8`` bytes; documents are separated by a ``0`` byte;
- a ``.npy`` file: a 1-D ``uint8`` array, documents separated by ``0`` as in ``.bin``.
Empty documents and exact duplicates within a domain are dropped.

``max_bytes_per_domain`` keeps a domain's documents in a fixed pseudo-random order (a salted
SHA-256 of their identity) until the budget is reached, truncating the document that crosses it.

Sampling (``MixtureData.batches``): each domain's train documents are concatenated, each followed
by a ``0`` byte, into one circular buffer. A row picks a domain by ``train_mix`` and then a start
position uniformly over that buffer, so a document is chosen with probability proportional to its
length (plus one); a window may run across a ``0`` separator into the next document (the model
learns ``0`` as end-of-document), but never into the other split, whose buffer is separate.
"""

from __future__ import annotations

import datetime
import functools
import hashlib
import math
import numbers
import os
import random
import re
import sysconfig
import textwrap
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

BUILTIN_DOMAINS = ("code", "prose", "notes")
NOTES_MAX_DOCUMENTS = 4000          # documents of ``notes`` when uncapped (~1.6 kB each)
_SEPARATOR = 0                      # byte between concatenated documents
_STDLIB_SKIP = frozenset({"site-packages", "dist-packages", "test", "tests", "idle_test",
                          "encodings", "pydoc_data", "__pycache__"})

__all__ = ["BUILTIN_DOMAINS", "Corpus", "MixtureData", "load_corpus", "load_data",
           "notes_document", "clear_cache"]


class _FrozenMap(Mapping):
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


# ----------------------------------------------------------------------------- corpus


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
                sep = np.full(1, _SEPARATOR, np.uint8)
                buf = np.concatenate([part for d in docs for part in (d, sep)])
                buf.setflags(write=False)
                bufs[domain] = buf
            splits[split], buffers[split] = docs_by_domain, bufs
        object.__setattr__(self, "train", _FrozenMap(splits["train"]))
        object.__setattr__(self, "val", _FrozenMap(splits["val"]))
        object.__setattr__(self, "_buffers", _FrozenMap({k: _FrozenMap(v) for k, v in buffers.items()}))

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


def _unit_hash(*parts: str) -> float:
    """A stable number in [0, 1) from strings (SHA-256; Python's hash() is salted per process)."""
    digest = hashlib.sha256("\x1f".join(parts).encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64


# A document before splitting: (split group, identity, bytes). Documents with the same
# (group, identity) always fall in the same split.
_Doc = tuple[str, str, bytes]


def _cap(docs: list[_Doc], max_bytes: int | None) -> list[_Doc]:
    """Drop empty and duplicate documents; keep a fixed pseudo-random order up to max_bytes."""
    seen, unique = set(), []
    for doc in docs:
        digest = hashlib.sha256(doc[2]).digest()
        if doc[2] and digest not in seen:
            seen.add(digest)
            unique.append(doc)
    if max_bytes is None:
        return unique
    unique.sort(key=lambda d: _unit_hash("order", d[0], d[1]))
    kept, total = [], 0
    for group, ident, data in unique:
        if total >= max_bytes:
            break
        data = data[: max_bytes - total]
        kept.append((group, ident, data))
        total += len(data)
    return kept


def _stdlib_sources() -> list[tuple[str, bytes]]:
    """(path relative to the stdlib folder, source bytes) of the stdlib's .py files, sorted."""
    root = sysconfig.get_paths()["stdlib"]
    out = []
    for folder, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if d not in _STDLIB_SKIP)
        for name in sorted(files):
            if name.endswith(".py"):
                path = os.path.join(folder, name)
                with open(path, "rb") as fh:
                    out.append((os.path.relpath(path, root).replace(os.sep, "/"), fh.read()))
    return out


_STDLIB_SOURCES = functools.lru_cache(maxsize=1)(_stdlib_sources)

# Comments, triple-quoted strings and one-line strings, matched in order, so that quotes inside
# a comment or another string never open a docstring (a tokenizer in one regular expression).
_TOKENS = re.compile(r"""#[^\n]*|(?P<q>\"\"\"|''')(?P<body>.*?)(?P=q)|"(?:\\.|[^"\\\n])*"|'(?:\\.|[^'\\\n])*'""",
                     re.S)
_DEF_NAME = re.compile(r"(?:def|class)\s+(\w+)")


def _docstrings(module: str, source: str) -> str:
    """A module's docstrings as one text: the leading string, and each string right after a ':'."""
    parts, first = [module], True
    for m in _TOKENS.finditer(source):
        body = m.group("body")
        if body is not None:
            before = source[max(0, m.start() - 300): m.start()].rstrip("rRuU").rstrip()
            if first or before.endswith(":"):
                text = textwrap.dedent(body.partition("\n")[2]) if "\n" in body else ""
                text = (body.partition("\n")[0].strip() + "\n" + text).strip()
                names = _DEF_NAME.findall(before[-300:])
                if text:
                    parts.append(f"{names[-1]}: {text}" if names and not first else text)
        if not m.group(0).startswith("#"):
            first = False
    return "\n\n".join(parts) + "\n" if len(parts) > 1 else ""


def _builtin_code() -> list[_Doc]:
    return [("stdlib-source", rel, data) for rel, data in _STDLIB_SOURCES()]


def _builtin_prose() -> list[_Doc]:
    try:
        from pydoc_data.topics import topics  # plain data module shipped with CPython
    except ImportError:                        # some distributions strip it; docstrings remain
        topics = {}
    docs: list[_Doc] = [("prose", f"topic:{k}", topics[k].encode("utf-8")) for k in sorted(topics)]
    for rel, data in _STDLIB_SOURCES():
        module = rel[:-3].replace("/", ".").removesuffix(".__init__")
        text = _docstrings(module, data.decode("utf-8", errors="replace"))
        docs.append(("stdlib-source", rel, text.encode("utf-8")))
    return docs


# ----------------------------------------------------------------------------- notes generator

_QUANTITIES = (("mass", "g"), ("volume", "mL"), ("length", "mm"), ("voltage", "V"),
               ("current", "mA"), ("pressure", "kPa"), ("duration", "s"), ("volume", "µL"))
_SUBJECTS = ("buffer A", "buffer B", "stock solution", "sample", "control", "filtrate",
             "crystal batch", "reference cell", "culture", "alloy coupon")
_PEOPLE = ("A. Novak", "B. Okafor", "C. Lindqvist", "D. Ramos", "E. Tanaka", "F. Haddad")
_PROJECTS = ("electrolyte stability", "enzyme kinetics", "thin-film growth", "soil moisture",
             "catalyst screening", "battery cycling")
_REMARKS = ("Reading was stable after {n} min.", "Repeated the step; results agree.",
            "Slight drift observed, recalibrated the balance.", "Colour changed to {c} after {n} min.",
            "Bubbles formed near the electrode.", "No visible precipitate.",
            "Temperature held within 0.5 °C of the set point.", "Left to settle for {n} min.")
_COLOURS = ("pale yellow", "amber", "light blue", "cloudy white", "deep red")


def _cents(c: int) -> str:
    """An integer number of hundredths as a decimal string: 1234 -> '12.34', -5 -> '-0.05'."""
    return f"{'-' if c < 0 else ''}{abs(c) // 100}.{abs(c) % 100:02d}"


def notes_document(index: int) -> str:
    """Page ``index`` of the synthetic lab notebook (the same text everywhere).

    Lines with arithmetic have these exact forms (values are decimal, results exact except the
    mean, which is rounded half-even to 3 decimals)::

        Total <quantity>: a u + b u [+ ...] = s u
        Change in <quantity>: b u - a u = d u
        <n> x v u = p u
        Mean of <n> readings: (a + b [+ ...]) / <n> = m
        t °C = k K
    """
    if isinstance(index, bool) or not isinstance(index, int) or index < 0:
        raise ValueError(f"notes_document index must be a non-negative int, got {index!r}")
    seed = int.from_bytes(hashlib.sha256(f"notes:{index}".encode()).digest()[:8], "big")
    rand = random.Random(seed).random   # random() is the one stream Python keeps across versions

    def below(n: int) -> int:
        return int(rand() * n)

    def pick(seq):
        return seq[below(len(seq))]

    day = datetime.date(2015, 1, 5) + datetime.timedelta(days=index + below(3))
    lines = [f"# Lab notebook: {pick(_PROJECTS)}, page {index + 1}", f"Date: {day.isoformat()}",
             f"Operator: {pick(_PEOPLE)}", ""]
    minute = 8 * 60 + below(120)
    for _entry in range(6 + below(10)):
        minute += 5 + below(50)
        lines.append(f"## {minute // 60:02d}:{minute % 60:02d} {pick(_SUBJECTS)}")
        quantity, unit = pick(_QUANTITIES)
        kind = below(6)
        values = [100 + below(99_900) for _ in range(2 + below(4))]
        if kind == 0:
            lines.append(f"Total {quantity}: " + " + ".join(f"{_cents(v)} {unit}" for v in values)
                         + f" = {_cents(sum(values))} {unit}")
        elif kind == 1:
            a, b = values[0], values[1]
            lines.append(f"Change in {quantity}: {_cents(b)} {unit} - {_cents(a)} {unit} = {_cents(b - a)} {unit}")
        elif kind == 2:
            n = 2 + below(24)
            lines.append(f"{n} x {_cents(values[0])} {unit} = {_cents(n * values[0])} {unit}")
        elif kind == 3:
            mean = sum(values) / (100 * len(values))
            lines.append(f"Readings of {quantity} ({unit}): " + ", ".join(_cents(v) for v in values))
            lines.append(f"Mean of {len(values)} readings: (" + " + ".join(_cents(v) for v in values)
                         + f") / {len(values)} = {mean:.3f}")
        elif kind == 4:
            t = -2000 + below(12_000)
            lines.append(f"Bath temperature: {_cents(t)} °C = {_cents(t + 27_315)} K")
        else:
            lines.append(f"| time (min) | {quantity} ({unit}) | temperature (°C) |")
            lines.append("|---|---|---|")
            level, temp = values[0], 1800 + below(900)
            for step in range(3 + below(5)):
                lines.append(f"| {5 * step} | {_cents(level)} | {_cents(temp)} |")
                level += below(400) - 200
                temp += below(60) - 30
        lines.append(pick(_REMARKS).format(n=1 + below(30), c=pick(_COLOURS)))
        lines.append("")
    return "\n".join(lines)


def _builtin_notes(max_bytes: int | None) -> list[_Doc]:
    docs, total = [], 0
    for i in range(NOTES_MAX_DOCUMENTS):
        if max_bytes is not None and total >= max_bytes:
            break
        data = notes_document(i).encode("utf-8")
        docs.append(("notes", str(i), data))
        total += len(data)
    return docs


# ----------------------------------------------------------------------------- user domains


def _user_docs(name: str, path: Path) -> list[_Doc]:
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
    cuts = np.flatnonzero(raw == _SEPARATOR)
    pieces = [p for p in np.split(raw, cuts) if p.size]     # each piece after the first starts at a 0
    docs = [(name, str(k), (p[1:] if p[0] == _SEPARATOR else p).tobytes()) for k, p in enumerate(pieces)]
    docs = [d for d in docs if d[2]]
    if not docs:
        raise ValueError(f"user domain {name!r}: {str(path)!r} holds no non-empty documents")
    return docs


# ----------------------------------------------------------------------------- loading


@functools.lru_cache(maxsize=16)
def _domain_docs(name: str, source: str, signature: tuple, max_bytes: int | None) -> tuple[_Doc, ...]:
    """Capped documents of one domain; ``source`` is 'builtin' or a user path (cached)."""
    del signature  # part of the cache key only: a changed user file reloads
    if source == "builtin":
        docs = {"code": _builtin_code, "prose": _builtin_prose}.get(name)
        docs = docs() if docs else _builtin_notes(max_bytes)
    else:
        docs = _user_docs(name, Path(source))
    return tuple(_cap(docs, max_bytes))


def _split(name: str, docs: Sequence[_Doc], val_fraction: float) -> tuple[list, list]:
    """Train/val by a stable hash of (group, identity); at least one document in each split."""
    if len(docs) < 2:
        raise ValueError(f"domain {name!r} has {len(docs)} document(s); the train/val split needs >= 2")
    u = np.array([_unit_hash(group, ident) for group, ident, _ in docs])
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
    _STDLIB_SOURCES.cache_clear()


# ----------------------------------------------------------------------------- mixture


def _normalised_mix(what: str, mix: Mapping[str, float], domains: tuple[str, ...]) -> _FrozenMap:
    if not isinstance(mix, Mapping):
        raise TypeError(f"{what} must be a mapping of domain -> weight, got {mix!r}")
    for key, weight in mix.items():
        if key not in domains:
            raise ValueError(f"{what} has unknown domain {key!r}; the corpus has {list(domains)}")
        if isinstance(weight, bool) or not isinstance(weight, numbers.Real):
            raise TypeError(f"{what}[{key!r}] must be a number, got {weight!r}")
        if not math.isfinite(weight) or weight < 0:
            raise ValueError(f"{what}[{key!r}] must be finite and >= 0, got {weight!r}")
    total = math.fsum(float(w) for w in mix.values())
    if total <= 0:
        raise ValueError(f"{what} weights are all zero: {dict(mix)!r}")
    return _FrozenMap({d: float(mix.get(d, 0.0)) / total for d in domains})


def _positive_int(name: str, value: int) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}")
    return int(value)


@dataclass(frozen=True)
class MixtureData:
    """A corpus with its training and evaluation mixture weights (normalised to sum 1 over all
    corpus domains; domains missing from a mix get weight 0)."""

    corpus: Corpus
    train_mix: Mapping[str, float]
    eval_mix: Mapping[str, float]

    def __post_init__(self) -> None:
        if not isinstance(self.corpus, Corpus):
            raise TypeError(f"MixtureData.corpus must be a Corpus, got {type(self.corpus).__name__}")
        domains = self.corpus.domains
        object.__setattr__(self, "train_mix", _normalised_mix("train_mix", self.train_mix, domains))
        object.__setattr__(self, "eval_mix", _normalised_mix("eval_mix", self.eval_mix, domains))

    def batches(self, seed: int, batch_size: int, seq_len: int) -> Iterator[np.ndarray]:
        """Endless stream of int64 token arrays ``(batch_size, seq_len + 1)`` (inputs and shifted
        targets), from the train split. Row r: domain ~ train_mix, start ~ uniform over that
        domain's circular train buffer. Same seed -> same stream (``np.random.default_rng``)."""
        if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or seed < 0:
            raise ValueError(f"seed must be a non-negative int, got {seed!r}")
        batch_size = _positive_int("batch_size", batch_size)
        width = _positive_int("seq_len", seq_len) + 1
        domains = [d for d in self.corpus.domains if self.train_mix[d] > 0]
        bufs = [self.corpus.buffer(d, "train") for d in domains]
        flat = np.concatenate(bufs) if len(bufs) > 1 else bufs[0]
        lengths = np.array([b.size for b in bufs], dtype=np.int64)
        starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
        cdf = np.cumsum([self.train_mix[d] for d in domains])
        cdf /= cdf[-1]
        cols = np.arange(width, dtype=np.int64)
        return self._stream(np.random.default_rng(int(seed)), batch_size, cdf, starts, lengths, flat, cols)

    @staticmethod
    def _stream(rng, batch_size, cdf, starts, lengths, flat, cols) -> Iterator[np.ndarray]:
        while True:
            which = np.minimum(np.searchsorted(cdf, rng.random(batch_size), side="right"), cdf.size - 1)
            n = lengths[which]
            offset = np.minimum((rng.random(batch_size) * n).astype(np.int64), n - 1)
            index = starts[which, None] + (offset[:, None] + cols) % n[:, None]
            yield flat[index].astype(np.int64)

    def eval_sets(self, seq_len: int, batch_size: int, n_batches: int) -> dict[str, np.ndarray]:
        """Domain -> int64 ``(n_batches * batch_size, seq_len + 1)`` windows of the validation split,
        for every corpus domain. Windows start at evenly spaced points of the circular val buffer
        (a stratified sample, non-overlapping when the buffer is long enough); no seed involved."""
        width = _positive_int("seq_len", seq_len) + 1
        rows = _positive_int("batch_size", batch_size) * _positive_int("n_batches", n_batches)
        cols = np.arange(width, dtype=np.int64)
        out = {}
        for domain in self.corpus.domains:
            buf = self.corpus.buffer(domain, "val")
            starts = (np.arange(rows, dtype=np.int64) * buf.size) // rows
            out[domain] = buf[(starts[:, None] + cols) % buf.size].astype(np.int64)
        return out

    def overall_eval_loss(self, per_domain: Mapping[str, float]) -> float:
        """The eval_mix-weighted mean of per-domain losses (nats per byte). Every domain with a
        nonzero weight must be present; a non-finite loss propagates (a diverged run)."""
        for key in per_domain:
            if key not in self.eval_mix:
                raise ValueError(f"per_domain has unknown domain {key!r}; the corpus has {list(self.eval_mix)}")
        total = 0.0
        for domain, weight in self.eval_mix.items():
            if weight > 0:
                if domain not in per_domain:
                    raise ValueError(f"per_domain lacks domain {domain!r} (eval weight {weight:.4g})")
                total += weight * float(per_domain[domain])
        return total


def load_data(domains: Sequence[str] = BUILTIN_DOMAINS, train_mix: Mapping[str, float] | None = None,
              eval_mix: Mapping[str, float] | None = None,
              user_domains: Mapping[str, str | Path] | None = None) -> MixtureData:
    """``load_corpus`` plus mixture weights (uniform over the corpus domains when None)."""
    corpus = load_corpus(domains, user_domains=user_domains)
    uniform = {d: 1.0 for d in corpus.domains}
    return MixtureData(corpus, uniform if train_mix is None else train_mix,
                       uniform if eval_mix is None else eval_mix)
