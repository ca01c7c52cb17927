"""Plain value types of an experiment: rungs, knob ranges, data sources and budgets."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping

from proxy.config import ModelConfig


@dataclass(frozen=True)
class RungSpec:
    """One rung of the ladder: a model, its training tokens and its default batch (sequences)."""

    name: str
    config: ModelConfig
    tokens: int
    batch_size: int


@dataclass(frozen=True)
class KnobSpec:
    """The search range of one knob: ``low``/``high`` (``log`` scale or not) or ``choices``."""

    name: str
    low: float | int | None = None
    high: float | int | None = None
    log: bool = False
    choices: tuple[float | int | str, ...] = ()
    integer: bool = False

    @property
    def categorical(self) -> bool:
        return bool(self.choices)


@dataclass(frozen=True)
class DataSpec:
    """Where the training data comes from and how domains are weighted (``proxy.data``)."""

    domains: tuple[str, ...] = ("code", "prose", "notes")
    user_domains: Mapping[str, str] = field(default_factory=dict)
    train_mix: Mapping[str, float] = field(default_factory=dict)   # empty: uniform
    eval_mix: Mapping[str, float] = field(default_factory=dict)    # empty: uniform
    # Token shards (proxy.data.shards): domain -> (shard paths, dtype, end-of-document id); with
    # them every domain is a shard domain and the models' vocabulary is ``vocab_size``.
    shards: Mapping[str, tuple[tuple[str, ...], str, int]] = field(default_factory=dict)
    vocab_size: int = 0
    val_fraction: float = 0.05


@dataclass(frozen=True)
class BudgetSpec:
    """Sweep compute caps: a fraction of the target run's FLOPs and/or absolute FLOPs."""

    max_fraction_of_target: float | None = None
    max_flops: float | None = None


@dataclass(frozen=True)
class FitSpec:
    """The ``[fit]`` table: the parameter axis trends use by default (``size``), and per knob
    the size axes of its trend (``fits.axes``; knobs not named get ``fits.axes.default_axes``)."""

    size: str = "params_active"
    axes: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
