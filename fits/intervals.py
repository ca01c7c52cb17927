"""Interval values and the few quantile helpers the fits share."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import stats


@dataclass(frozen=True)
class ConfidenceInterval:
    """A closed interval ``[low, high]`` in the units of the quantity it bounds."""

    low: float
    high: float

    def __post_init__(self) -> None:
        if math.isnan(self.low) or math.isnan(self.high):
            raise ValueError(f"ConfidenceInterval bounds must not be NaN, got ({self.low!r}, {self.high!r})")
        if self.low > self.high:
            raise ValueError(f"ConfidenceInterval.low {self.low!r} exceeds high {self.high!r}")

    @property
    def width(self) -> float:
        return self.high - self.low

    def contains(self, value: float) -> bool:
        return self.low <= value <= self.high

    def exp(self) -> "ConfidenceInterval":
        """The interval mapped through exp (log coordinates to natural units)."""
        return ConfidenceInterval(math.exp(self.low), math.exp(self.high))

    def to_dict(self) -> dict[str, float]:
        return {"low": float(self.low), "high": float(self.high)}


def check_alpha(alpha: float) -> float:
    """``alpha`` is the miss probability of a two-sided interval (0.05 for a 95% interval)."""
    if not (isinstance(alpha, (int, float)) and 0.0 < alpha < 1.0):
        raise ValueError(f"alpha must lie in (0, 1), got {alpha!r}")
    return float(alpha)


def normal_interval(center: float, se: float, alpha: float) -> ConfidenceInterval:
    z = stats.norm.ppf(1.0 - check_alpha(alpha) / 2.0)
    return ConfidenceInterval(center - z * se, center + z * se)


def t_interval(center: float, se: float, alpha: float, df: float) -> ConfidenceInterval:
    t = stats.t.ppf(1.0 - check_alpha(alpha) / 2.0, df)
    return ConfidenceInterval(center - t * se, center + t * se)


def percentile_interval(draws: np.ndarray, alpha: float) -> ConfidenceInterval:
    """Equal-tailed percentile interval of bootstrap draws (NaN draws are ignored)."""
    values = np.asarray(draws, dtype=float)
    values = values[np.isfinite(values)]
    if values.size < 2:
        raise ValueError(f"percentile_interval needs at least 2 finite draws, got {values.size}")
    alpha = check_alpha(alpha)
    low, high = np.quantile(values, [alpha / 2.0, 1.0 - alpha / 2.0])
    return ConfidenceInterval(float(low), float(high))
