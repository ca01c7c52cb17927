"""A user's own tokenised corpus: memory-mapped shards of token ids, one or more per domain.

The layout of nanoGPT-style pipelines: each shard is a flat array of token ids, documents
separated by an end-of-document id (``eod_id``), either a raw ``.bin`` file (``uint16`` or
``uint32``, read with ``np.memmap``) or a 1-D ``.npy`` of that dtype (``np.load(mmap_mode="r")``).
Shards are never loaded whole: a batch reads only its rows' windows, and opening a shard reads
only the stretch around its split point.

Split, by document: the last ``val_fraction`` of each shard's tokens, from the first document
boundary at or after ``(1 - val_fraction) * n``, is its validation part; the rest is training.
A window never crosses the split (it is drawn inside one part), so no document is in both;
within a part a window may run across an ``eod_id`` into the next document, as the byte corpus
does (``proxy.data.mixture``).

Sampling is ``MixtureData``'s: a row picks a domain by ``train_mix``, then a shard with
probability proportional to its training tokens, then a start uniformly; ``np.random.default_rng
(seed)``, so the same seed gives the same batches, and both frameworks read the same NumPy
arrays. Evaluation windows start at evenly spaced points of each domain's validation parts.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from proxy.data.mixture import _normalised_mix, _positive_int, weighted_eval_loss

SHARD_DTYPES = ("uint16", "uint32")
_SCAN = 1 << 20   # tokens read at a time when looking for the split's document boundary


@dataclass(frozen=True)
class ShardDomain:
    """One domain's shards: paths (``.bin`` or ``.npy``), their dtype and the end-of-document id."""

    name: str
    paths: tuple[str, ...]
    dtype: str = "uint16"
    eod_id: int = 0


@dataclass(frozen=True)
class Shard:
    """An opened shard: its tokens (memory-mapped) and the first validation token ``cut``."""

    domain: str
    path: str
    tokens: np.ndarray
    cut: int

    @property
    def train_tokens(self) -> int:
        return self.cut

    @property
    def val_tokens(self) -> int:
        return self.tokens.size - self.cut


def open_shard(path: str | Path, dtype: str) -> np.ndarray:
    """The shard's token ids, memory-mapped; a clear error for a wrong suffix, dtype or shape."""
    path = Path(path)
    if dtype not in SHARD_DTYPES:
        raise ValueError(f"shard dtype must be one of {SHARD_DTYPES}, got {dtype!r}")
    if not path.is_file():
        raise ValueError(f"shard {str(path)!r} does not exist")
    suffix = path.suffix.lower()
    if suffix == ".bin":
        size = path.stat().st_size
        if size % np.dtype(dtype).itemsize:
            raise ValueError(f"shard {str(path)!r}: {size} bytes is not a whole number of {dtype} tokens")
        if size == 0:
            raise ValueError(f"shard {str(path)!r} is empty")
        return np.memmap(path, dtype=dtype, mode="r")
    if suffix == ".npy":
        arr = np.load(path, mmap_mode="r", allow_pickle=False)
        if arr.dtype != np.dtype(dtype) or arr.ndim != 1 or arr.size == 0:
            raise ValueError(f"shard {str(path)!r} must hold a non-empty 1-D {dtype} array, "
                             f"got dtype {arr.dtype} shape {arr.shape}")
        return arr
    raise ValueError(f"shard {str(path)!r} must be a .bin or a .npy file")


def split_point(tokens: np.ndarray, eod_id: int, val_fraction: float) -> int:
    """The first token of the validation part: just after the first ``eod_id`` at or after
    ``(1 - val_fraction) * n`` (``n`` when there is none: the shard is all training)."""
    n = tokens.size
    start = min(n, max(0, math.floor((1.0 - val_fraction) * n) - 1))
    for lo in range(start, n, _SCAN):
        hits = np.flatnonzero(np.asarray(tokens[lo:lo + _SCAN]) == eod_id)
        if hits.size:
            return lo + int(hits[0]) + 1
    return n


class TokenShardData:
    """Token shards as training data, with the interface of ``proxy.data.MixtureData``
    (``batches``, ``eval_sets``, ``overall_eval_loss``) and the ``vocab_size`` the model needs."""

    def __init__(self, domains: Sequence[ShardDomain], vocab_size: int, *,
                 train_mix: Mapping[str, float] | None = None, eval_mix: Mapping[str, float] | None = None,
                 val_fraction: float = 0.05):
        if not domains:
            raise ValueError("TokenShardData needs at least one domain")
        if not 0.0 < val_fraction < 1.0:
            raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction!r}")
        self.vocab_size = _positive_int("vocab_size", vocab_size)
        names = tuple(d.name for d in domains)
        if len(set(names)) != len(names):
            raise ValueError(f"domain names repeat: {list(names)}")
        self.domains = names
        self.shards: dict[str, list[Shard]] = {}
        for d in domains:
            if not d.paths:
                raise ValueError(f"domain {d.name!r} has no shards")
            if not 0 <= d.eod_id < self.vocab_size:
                raise ValueError(f"domain {d.name!r}: eod_id {d.eod_id} is not a token id below vocab_size "
                                 f"{self.vocab_size}")
            opened = []
            for p in d.paths:
                tokens = open_shard(p, d.dtype)
                opened.append(Shard(d.name, str(p), tokens, split_point(tokens, d.eod_id, val_fraction)))
            if not any(s.train_tokens for s in opened):
                raise ValueError(f"domain {d.name!r} has no training tokens")
            if not any(s.val_tokens for s in opened):
                raise ValueError(f"domain {d.name!r} has no validation document: its shards have no "
                                 f"{d.eod_id} (end-of-document) in their last {val_fraction:.0%}")
            self.shards[d.name] = opened
        uniform = {n: 1.0 for n in names}
        self.train_mix = _normalised_mix("train_mix", uniform if train_mix is None else train_mix, names)
        self.eval_mix = _normalised_mix("eval_mix", uniform if eval_mix is None else eval_mix, names)

    def _rows(self, shard: Shard, starts: np.ndarray, width: int) -> np.ndarray:
        rows = np.stack([np.asarray(shard.tokens[s:s + width]) for s in starts]).astype(np.int64)
        if rows.size and int(rows.max()) >= self.vocab_size:
            raise ValueError(f"shard {shard.path!r} holds token id {int(rows.max())}, not below vocab_size "
                             f"{self.vocab_size}")
        return rows

    def batches(self, seed: int, batch_size: int, seq_len: int) -> Iterator[np.ndarray]:
        """Endless stream of int64 arrays ``(batch_size, seq_len + 1)`` from the training parts."""
        if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
            raise ValueError(f"seed must be a non-negative int, got {seed!r}")
        batch_size = _positive_int("batch_size", batch_size)
        width = _positive_int("seq_len", seq_len) + 1
        pools = []
        for d in self.domains:
            usable = [s for s in self.shards[d] if s.train_tokens >= width]
            if self.train_mix[d] > 0 and not usable:
                raise ValueError(f"domain {d!r}: no shard has a training part of {width} tokens")
            if usable:
                weights = np.array([s.train_tokens - width + 1 for s in usable], dtype=np.float64)
                pools.append((d, usable, weights / weights.sum()))
        cdf = np.cumsum([self.train_mix[d] for d, _, _ in pools])
        cdf /= cdf[-1]
        return self._stream(np.random.default_rng(seed), batch_size, width, pools, cdf)

    def _stream(self, rng, batch_size, width, pools, cdf) -> Iterator[np.ndarray]:
        while True:
            which = np.minimum(np.searchsorted(cdf, rng.random(batch_size), side="right"), cdf.size - 1)
            out = np.empty((batch_size, width), dtype=np.int64)
            for row, w in enumerate(which):
                _, shards, p = pools[w]
                shard = shards[int(rng.choice(len(shards), p=p))]
                start = int(rng.integers(0, shard.train_tokens - width + 1))
                out[row] = self._rows(shard, np.array([start]), width)[0]
            yield out

    def eval_sets(self, seq_len: int, batch_size: int, n_batches: int) -> dict[str, np.ndarray]:
        """Domain -> int64 ``(n_batches * batch_size, seq_len + 1)`` windows of its validation
        parts, at evenly spaced starts over their concatenation (no seed involved)."""
        width = _positive_int("seq_len", seq_len) + 1
        rows = _positive_int("batch_size", batch_size) * _positive_int("n_batches", n_batches)
        out = {}
        for d in self.domains:
            parts = [s for s in self.shards[d] if s.val_tokens >= width]
            if not parts:
                raise ValueError(f"domain {d!r}: no validation part holds a window of {width} tokens")
            spans = np.array([s.val_tokens - width + 1 for s in parts], dtype=np.int64)
            ends = np.cumsum(spans)
            points = (np.arange(rows, dtype=np.int64) * int(ends[-1])) // rows
            which = np.searchsorted(ends, points, side="right")
            offsets = points - (ends - spans)[which]
            # points ascend, so ``which`` does too: the parts' rows concatenate in point order
            out[d] = np.concatenate([self._rows(parts[i], parts[i].cut + offsets[which == i], width)
                                     for i in range(len(parts)) if np.any(which == i)])
        return out

    def overall_eval_loss(self, per_domain: Mapping[str, float]) -> float:
        """The eval_mix-weighted mean of per-domain losses (nats per token)."""
        return weighted_eval_loss(self.eval_mix, per_domain)
