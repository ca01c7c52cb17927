"""Search-box maths of the ladder-aware search: re-centring, widening, extrapolating the next rung.

Pure functions over plain values; coordinates are the knob's *transformed* units ``u``
(natural log for a log knob, the value itself otherwise), where the search is uniform.

* ``outer_limits``: how far any box may reach. When the experiment's review policy forbids
  widening (``allow_widening = false``) it is the human's box itself; otherwise the human's box
  grown symmetrically (in u) to ``max_widen_factor`` times its width. A linear knob whose human
  box starts at or above zero is never widened below zero (rates, fractions).
* ``recentre``: the next rung's box, centred on the extrapolated optimum, half-width
  ``margin`` times the larger half of the prediction interval (so the truth, which lies in the
  interval with probability 1 - alpha, is not at the box's edge), never narrower than
  ``min_fraction`` of the human's half-width (a too-confident trend must not starve the search)
  and never wider than the human's box: a prediction interval wider than the human's box says
  the trend knows no more than the human did, and a ladder-aware rung must never search a wider
  range than the plain search would. A box that would cross the outer limits is *shifted* back
  inside them (keeping its width) and reported as ``clipped``.
* ``widen``: an optimum on an edge moves that edge outwards by ``step`` times the box's width,
  within the outer limits; None when the edge is already at the limit (the report says so).
* ``extrapolate_next``: the optimum at the next rung from the rungs so far: the power-law trend's
  widest interval (``fits.fit_trend``) with three or more rungs, the line through two rungs with
  the delta-method variance of the two vertices otherwise.

``factor`` (reported) is the width of the hull of the box and the human's box over the human's
width, in u: 1 for any box inside the human's, at most ``max_widen_factor``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

from scipy import stats

from fits.power_law import fit_trend

DEFAULT_MARGIN = 1.5          # box half-width / prediction-interval half-width
DEFAULT_MIN_FRACTION = 0.25   # box half-width >= this share of the human's half-width
DEFAULT_STEP = 0.5            # widening step: this share of the current width, per edge


@dataclass(frozen=True)
class Box:
    """A knob's range in natural units: ``[low, high]``, searched on a log scale if ``log``;
    ``integer`` boxes have whole-number bounds."""

    low: float
    high: float
    log: bool = False
    integer: bool = False

    def __post_init__(self) -> None:
        for name in ("low", "high"):
            v = getattr(self, name)
            if not (isinstance(v, (int, float)) and math.isfinite(v)):
                raise ValueError(f"Box.{name} must be a finite number, got {v!r}")
        if not self.low < self.high:
            raise ValueError(f"Box.low {self.low!r} must be below Box.high {self.high!r}")
        if self.log and self.low <= 0:
            raise ValueError(f"Box.low must be > 0 on a log scale, got {self.low!r}")

    def to_u(self, x: float) -> float:
        if self.log and x <= 0:
            raise ValueError(f"value {x!r} is not positive: it has no place on a log-scale box")
        return math.log(x) if self.log else float(x)

    def from_u(self, u: float) -> float:
        return math.exp(u) if self.log else float(u)

    @property
    def u_low(self) -> float:
        return self.to_u(self.low)

    @property
    def u_high(self) -> float:
        return self.to_u(self.high)

    @property
    def u_width(self) -> float:
        return self.u_high - self.u_low

    def contains(self, x: float, rel: float = 1e-9) -> bool:
        tol = rel * max(abs(self.low), abs(self.high), 1.0) if not self.log else 0.0
        if self.log:
            return self.low * (1 - rel) <= x <= self.high * (1 + rel)
        return self.low - tol <= x <= self.high + tol

    def clip(self, x: float) -> float:
        """``x`` moved into the box (integers rounded)."""
        v = min(max(float(x), self.low), self.high)
        return float(round(v)) if self.integer else v


@dataclass(frozen=True)
class BoxChoice:
    """A rung's box for one knob, where it is centred, and how it relates to the human's box."""

    box: Box
    centre: float | None
    clipped: bool
    factor: float
    reason: str


def _check_policy(allow_widening: bool, max_widen_factor: float) -> None:
    if not isinstance(allow_widening, bool):
        raise TypeError(f"allow_widening must be a bool, got {allow_widening!r}")
    if not (isinstance(max_widen_factor, (int, float)) and math.isfinite(max_widen_factor)
            and max_widen_factor >= 1.0):
        raise ValueError(f"max_widen_factor must be a finite number >= 1, got {max_widen_factor!r}")


def outer_limits(human: Box, *, allow_widening: bool, max_widen_factor: float) -> Box:
    """The widest box any rung may search (see the module docstring)."""
    _check_policy(allow_widening, max_widen_factor)
    if not allow_widening or max_widen_factor == 1.0:
        return human
    grow = (max_widen_factor - 1.0) / 2.0 * human.u_width
    u_lo, u_hi = human.u_low - grow, human.u_high + grow
    lo, hi = human.from_u(u_lo), human.from_u(u_hi)
    if not human.log and human.low >= 0:
        lo = max(lo, 0.0)
    return _make(human, lo, hi, inside=None)


def _make(like: Box, lo: float, hi: float, inside: Box | None) -> Box:
    """A box like ``like`` on [lo, hi]; integer bounds rounded outwards but kept ``inside``."""
    if like.integer:
        lo, hi = math.floor(lo + 1e-9), math.ceil(hi - 1e-9)
        if inside is not None:
            lo, hi = max(lo, inside.low), min(hi, inside.high)
        if hi <= lo:   # a one-integer box is no range: take the neighbour inside the limits
            hi = lo + 1 if inside is None or lo + 1 <= inside.high else hi
            lo = hi - 1 if hi <= lo else lo
    elif inside is not None:
        lo, hi = max(lo, inside.low), min(hi, inside.high)
    return Box(float(lo), float(hi), like.log, like.integer)


def hull_factor(box: Box, human: Box) -> float:
    """Width of the hull of ``box`` and ``human`` over the human's width (u units)."""
    lo = min(human.to_u(box.low), human.u_low)
    hi = max(human.to_u(box.high), human.u_high)
    return (hi - lo) / human.u_width


def recentre(human: Box, centre: float, interval: tuple[float, float], *, allow_widening: bool,
             max_widen_factor: float, margin: float = DEFAULT_MARGIN,
             min_fraction: float = DEFAULT_MIN_FRACTION) -> BoxChoice:
    """The next rung's box around the extrapolated ``centre`` with prediction ``interval``
    (natural units); see the module docstring."""
    if not (isinstance(centre, (int, float)) and math.isfinite(centre)):
        raise ValueError(f"centre must be a finite number, got {centre!r}")
    lo_i, hi_i = interval
    if not (math.isfinite(lo_i) and math.isfinite(hi_i) and lo_i <= centre <= hi_i):
        raise ValueError(f"interval {interval!r} must be finite and contain the centre {centre!r}")
    if margin <= 0 or not 0 < min_fraction <= 1:
        raise ValueError(f"margin must be > 0 and min_fraction in (0, 1], got {margin!r}, {min_fraction!r}")
    outer = outer_limits(human, allow_widening=allow_widening, max_widen_factor=max_widen_factor)
    if human.log and lo_i <= 0:
        raise ValueError(f"interval {interval!r} must be positive for the log-scale box")
    u_c = human.to_u(centre)
    half_pi = max(u_c - human.to_u(lo_i), human.to_u(hi_i) - u_c)
    half = max(margin * half_pi, min_fraction * human.u_width / 2.0)
    half = min(half, human.u_width / 2.0)
    u_lo, u_hi = u_c - half, u_c + half
    clipped = False
    if u_lo < outer.u_low:
        u_hi += outer.u_low - u_lo
        u_lo = outer.u_low
        clipped = True
    if u_hi > outer.u_high:
        u_lo -= u_hi - outer.u_high
        u_hi = outer.u_high
        clipped = True
    u_lo = max(u_lo, outer.u_low)
    box = _make(human, human.from_u(u_lo), human.from_u(u_hi), inside=outer)
    where = "the human's box" if outer == human else f"{max_widen_factor:g}x the human's box"
    reason = (f"centred on the extrapolated optimum {centre:.4g} (prediction interval [{lo_i:.4g}, {hi_i:.4g}])"
              + (f"; shifted to stay within {where}" if clipped else ""))
    return BoxChoice(box=box, centre=float(outer.clip(centre)), clipped=clipped,
                     factor=hull_factor(box, human), reason=reason)


def widen(current: Box, human: Box, side: str, *, allow_widening: bool, max_widen_factor: float,
          step: float = DEFAULT_STEP) -> BoxChoice | None:
    """Move the ``side`` ("low" or "high") edge of ``current`` out by ``step`` x its width, within
    the outer limits; None when that edge already sits at the limit."""
    if side not in ("low", "high"):
        raise ValueError(f"side must be 'low' or 'high', got {side!r}")
    if not step > 0:
        raise ValueError(f"step must be > 0, got {step!r}")
    outer = outer_limits(human, allow_widening=allow_widening, max_widen_factor=max_widen_factor)
    u_lo, u_hi = current.u_low, current.u_high
    grow = step * (u_hi - u_lo)
    if side == "low":
        u_lo = max(u_lo - grow, outer.u_low)
    else:
        u_hi = min(u_hi + grow, outer.u_high)
    box = _make(current, current.from_u(u_lo), current.from_u(u_hi), inside=outer)
    if math.isclose(getattr(box, side), getattr(current, side), rel_tol=1e-12, abs_tol=1e-15):
        return None
    hit = (side == "low" and math.isclose(box.low, outer.low, rel_tol=1e-12, abs_tol=1e-15)) or \
          (side == "high" and math.isclose(box.high, outer.high, rel_tol=1e-12, abs_tol=1e-15))
    limit = "the human's box" if outer == human else f"{max_widen_factor:g}x the human's box"
    reason = (f"optimum on the {side} edge: {side} bound moved from "
              f"{getattr(current, side):.4g} to {getattr(box, side):.4g}"
              + (f" (stopped at the limit, {limit})" if hit else ""))
    return BoxChoice(box=box, centre=None, clipped=hit, factor=hull_factor(box, human), reason=reason)


@dataclass(frozen=True)
class Extrapolation:
    """The optimum of one knob at the next rung: ``centre`` and its ``interval`` (natural
    units, 1 - alpha) and how it was made (``trend`` or ``two_point``)."""

    centre: float
    interval: tuple[float, float]
    method: str


def extrapolate_next(sizes: Sequence[float], values: Sequence[float], log_se: Sequence[float],
                     next_size: float, *, alpha: float = 0.05, n_bootstrap: int = 200,
                     seed: int = 0) -> Extrapolation:
    """Extrapolate an optimum (a power law in size) to ``next_size`` from two or more rungs.

    ``sizes`` in parameters (active), ``values`` positive optima in natural units, ``log_se``
    their standard errors in natural-log units (the per-rung delta-method errors).
    """
    n = len(sizes)
    if n < 2 or len(values) != n or len(log_se) != n:
        raise ValueError(f"extrapolate_next needs >= 2 rungs with one value and se each, got {n}, "
                         f"{len(values)}, {len(log_se)}")
    if n >= 3:
        fit = fit_trend(sizes, values, value_se=[max(s, 1e-6) for s in log_se], n_bootstrap=n_bootstrap, seed=seed)
        iv = fit.interval(float(next_size), alpha, kind="widest")
        return Extrapolation(iv.estimate, (iv.interval.low, iv.interval.high), "trend")
    (x1, x2), (y1, y2) = [math.log(s) for s in sizes], [math.log(v) for v in values]
    if x1 == x2:
        raise ValueError(f"the two rungs have the same size {sizes[0]!r}: no trend")
    t = (math.log(next_size) - x1) / (x2 - x1)
    mu = y1 + t * (y2 - y1)
    # The line through two points: var = (1-t)^2 se1^2 + t^2 se2^2 (delta method, independent rungs).
    sd = math.sqrt((1 - t) ** 2 * log_se[0] ** 2 + t ** 2 * log_se[1] ** 2)
    z = float(stats.norm.ppf(1 - alpha / 2))
    return Extrapolation(math.exp(mu), (math.exp(mu - z * sd), math.exp(mu + z * sd)), "two_point")
