"""Size axes of a trend: which measure of a rung's size an optimal setting is regressed on.

A rung is sized four ways: total parameters, active parameters (touched per token; equal to
the total in a dense model), training tokens, and training compute. An optimal setting may
follow any of them: the Step Law (Li et al. 2025) puts the learning rate on N and D, the batch
size on D alone; on MoE sweeps the learning rate has been seen to follow total rather than
active parameters. A trend takes one axis, or a parameter axis with tokens
(``log k* = a + b log N + c log D``). Compute is counted as ``6 * N_active * D`` (Kaplan et
al. 2020) unless a rung carries its own figure.

A regressor must vary enough to estimate its exponent: across the rungs of a trend its range
must span at least ``MIN_SPREAD`` (a factor of 1.5). A total count that moves by 0.26% across
MoE rungs that share a total gave an exponent of -9.9 +- 100; it is refused, by name.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np

AXES = ("params_active", "params_total", "tokens", "flops")
PARAM_AXES = ("params_active", "params_total")
AXIS_LABELS = {"params_active": "N_active", "params_total": "N_total", "tokens": "D", "flops": "C"}
MIN_SPREAD = 1.5
# Tokens "vary independently" of size when they span MIN_SPREAD and their log correlation with
# the parameter axis is below this: a ladder with D = 20 N has |corr| = 1, and a tokens term
# fitted on it only splits one slope between two collinear regressors.
MAX_ABS_CORR = 0.95


@dataclass(frozen=True)
class SizePoint:
    """A rung's (or the target's) size on every axis; ``flops`` defaults to 6 N_active D."""

    params_total: float
    params_active: float
    tokens: float
    flops: float | None = None

    def __post_init__(self) -> None:
        for name in ("params_total", "params_active", "tokens") + (("flops",) if self.flops is not None else ()):
            v = getattr(self, name)
            if isinstance(v, bool) or not (isinstance(v, (int, float)) and math.isfinite(v) and v > 0):
                raise ValueError(f"{name} must be a finite positive number, got {v!r}")
        if self.params_active > self.params_total * (1 + 1e-9):
            raise ValueError(f"params_active {self.params_active:g} exceeds params_total {self.params_total:g}")

    def value(self, axis: str) -> float:
        check_axis(axis)
        if axis == "flops":
            return float(self.flops) if self.flops is not None else 6.0 * self.params_active * self.tokens
        return float(getattr(self, axis))

    def values(self, axes: Sequence[str]) -> tuple[float, ...]:
        return tuple(self.value(a) for a in axes)

    def to_dict(self) -> dict[str, float]:
        return {a: self.value(a) for a in AXES}


def check_axis(axis: str) -> str:
    if axis not in AXES:
        raise ValueError(f"unknown size axis {axis!r}; axes are {', '.join(AXES)}")
    return axis


def check_axes(axes: Sequence[str], where: str = "axes") -> tuple[str, ...]:
    """One axis, or a parameter axis followed by tokens (the L(N, D)-style two-regressor trend)."""
    out = tuple(axes)
    if not out:
        raise ValueError(f"{where}: name at least one size axis ({', '.join(AXES)})")
    for a in out:
        if a not in AXES:
            raise ValueError(f"{where}: unknown size axis {a!r}; axes are {', '.join(AXES)}")
    if len(out) == 2 and not (out[0] in PARAM_AXES and out[1] == "tokens"):
        raise ValueError(f"{where}: two axes must be a parameter count and tokens, e.g. "
                         f"['params_active', 'tokens'], got {list(out)}")
    if len(out) > 2:
        raise ValueError(f"{where}: at most two axes (parameters and tokens), got {list(out)}")
    return out


def spread(values: Sequence[float]) -> float:
    """max / min of positive values."""
    arr = np.asarray(values, dtype=float)
    return float(arr.max() / arr.min())


def check_spread(axis: str, values: Sequence[float]) -> None:
    """Refuse a regressor that varies too little to estimate its exponent (see module doc)."""
    s = spread(values)
    if s < MIN_SPREAD:
        raise ValueError(f"{axis} varies only {100 * (s - 1):.3g}% across its {len(values)} rungs "
                         f"(max/min {s:.6g}, need at least {MIN_SPREAD:g}x): its exponent cannot be "
                         f"estimated; regress on another axis ([fit] axes)")


def tokens_vary_independently(params: Sequence[float], tokens: Sequence[float]) -> bool:
    """True when tokens span MIN_SPREAD and are not in step with size (|corr of logs| < MAX_ABS_CORR)."""
    n, d = np.log(np.asarray(params, dtype=float)), np.log(np.asarray(tokens, dtype=float))
    if len(d) < 3 or spread(tokens) < MIN_SPREAD:
        return False
    if float(np.ptp(n)) == 0.0:
        return True
    return abs(float(np.corrcoef(n, d)[0, 1])) < MAX_ABS_CORR


def default_axes(knob: str, points: Sequence[SizePoint], size: str = "params_active") -> tuple[str, ...]:
    """The documented defaults: with tokens that vary independently of size, the learning rate on
    (size, tokens) and the batch size on tokens (Li et al. 2025); otherwise every knob on
    ``size`` (active parameters unless the experiment says total)."""
    check_axis(size)
    if points and tokens_vary_independently([p.value(size) for p in points], [p.tokens for p in points]):
        if knob == "batch_size":
            return ("tokens",)
        if knob == "lr":
            return (size, "tokens")
    return (size,)


def axes_label(axes: Sequence[str]) -> str:
    return " and ".join(AXIS_LABELS[a] for a in axes)


def point_from_mapping(d: Mapping[str, float]) -> SizePoint:
    """A SizePoint from ``{"params_total": ..., "tokens": ..., ["params_active", "flops"]}``."""
    if "params_total" not in d and "params_active" in d:
        d = dict(d) | {"params_total": d["params_active"]}
    missing = [k for k in ("params_total", "tokens") if k not in d]
    if missing:
        raise ValueError(f"a target given by sizes needs {' and '.join(missing)} (have {sorted(d)})")
    return SizePoint(params_total=float(d["params_total"]), params_active=float(d.get("params_active", d["params_total"])),
                     tokens=float(d["tokens"]), flops=None if d.get("flops") is None else float(d["flops"]))
