"""The mixture sampler: a corpus with training and evaluation weights over its domains.

Sampling (``MixtureData.batches``): each domain's train documents are concatenated, each followed
by a ``0`` byte, into one circular buffer. A row picks a domain by ``train_mix`` and then a start
position uniformly over that buffer, so a document is chosen with probability proportional to its
length (plus one); a window may run across a ``0`` separator into the next document (the model
learns ``0`` as end-of-document), but never into the other split, whose buffer is separate.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from proxy.data.builtin import BUILTIN_DOMAINS
from proxy.data.corpus import Corpus, load_corpus
from proxy.data.documents import FrozenMap


def _normalised_mix(what: str, mix: Mapping[str, float], domains: tuple[str, ...]) -> FrozenMap:
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
    return FrozenMap({d: float(mix.get(d, 0.0)) / total for d in domains})


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
        return weighted_eval_loss(self.eval_mix, per_domain)


def weighted_eval_loss(eval_mix: Mapping[str, float], per_domain: Mapping[str, float]) -> float:
    """The ``eval_mix``-weighted mean of per-domain losses. Every domain with a nonzero weight
    must be present; a non-finite loss propagates (a diverged run)."""
    for key in per_domain:
        if key not in eval_mix:
            raise ValueError(f"per_domain has unknown domain {key!r}; the corpus has {list(eval_mix)}")
    total = 0.0
    for domain, weight in eval_mix.items():
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
