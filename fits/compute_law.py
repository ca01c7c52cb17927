"""The loss law in compute, L(C) = E + A C^-alpha, and the compute multiplier it gives a loss
gap: the unit in which ``fits.search_value`` prices the search (its module docstring, step 3),
with the checks on the rungs' optima that both share.

``fit_compute_law`` fits L(C) on the usable rungs' minima against their training FLOPs
(``fits.loss_law.fit_loss_law_n`` with C in place of N) or wraps a law already fitted;
``compute_multiplier`` is m = (1 + gap / (A C^-alpha))^(1/alpha): the factor of compute the
config that loses ``gap`` nats at compute C needs to match the other.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np

from fits.axes import SizePoint, check_axis
from fits.loss_law import LossLawFit, fit_loss_law_n
from fits.optimum import RungOptimum

M_MAX = 1e300            # the multiplier's cap (a runaway law draw must not give inf)
SIZE_RTOL = 1e-6         # optima whose active sizes agree to this count as one size


def _finite(name: str, value: Any, *, positive: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.floating, np.integer)) \
            or not math.isfinite(float(value)) or (positive and not float(value) > 0):
        raise ValueError(f"{name} must be a finite{' positive' if positive else ''} number, got {value!r}")
    return float(value)


def _check_optima(optima: Sequence[RungOptimum]) -> list[RungOptimum]:
    opts = list(optima)
    if not opts:
        raise ValueError("optima must not be empty")
    for i, o in enumerate(opts):
        if not isinstance(o, RungOptimum):
            raise ValueError(f"optima[{i}] must be a RungOptimum, got {type(o).__name__}")
    for i in range(1, len(opts)):
        if opts[i].params_active < opts[i - 1].params_active * (1 - SIZE_RTOL):
            raise ValueError(f"optima must ascend in params_active: optima[{i}] ({opts[i].params_active:g}) is "
                             f"below optima[{i - 1}] ({opts[i - 1].params_active:g})")
    return opts


def _rung_sizes(opts: Sequence[RungOptimum], rung_flops: Mapping[str, float] | Sequence[float] | None,
                axis: str) -> list[SizePoint]:
    if rung_flops is None:
        flops = [None] * len(opts)
    elif isinstance(rung_flops, Mapping):
        missing = [o.rung for o in opts if o.rung not in rung_flops]
        if missing:
            raise ValueError(f"rung_flops has no entry for rung(s) {', '.join(map(repr, missing))}")
        flops = [rung_flops[o.rung] for o in opts]
    else:
        flops = list(rung_flops)
        if len(flops) != len(opts):
            raise ValueError(f"rung_flops must have one entry per optimum ({len(opts)}), got {len(flops)}")
    points = []
    for o, c in zip(opts, flops):
        if c is not None:
            _finite(f"rung_flops[{o.rung!r}]", c, positive=True)
        points.append(SizePoint(params_total=o.params_total, params_active=o.params_active, tokens=o.tokens,
                                flops=None if c is None else float(c)))
    check_axis(axis)
    return points


def compute_multiplier(gap: Any, A: Any, alpha: Any, flops: float) -> np.ndarray | float:
    """m = (1 + gap / (A C^-alpha))^(1/alpha) (module docstring, step 3), elementwise; 0 where
    1 + gap / (A C^-alpha) <= 0, capped at ``M_MAX``. A and alpha must be positive."""
    c = _finite("flops", flops, positive=True)
    g, a, al = (np.asarray(v, dtype=float) for v in (gap, A, alpha))
    if not np.all(np.isfinite(g)):
        raise ValueError("gap must be finite")
    if not (np.all(np.isfinite(a)) and np.all(a > 0)):
        bad = a.ravel()[~(np.isfinite(a.ravel()) & (a.ravel() > 0))][0]
        raise ValueError(f"A must be finite and positive, got {bad!r}")
    if not (np.all(np.isfinite(al)) and np.all(al > 0)):
        raise ValueError("alpha must be finite and positive: a law that does not fall with compute has no multiplier")
    with np.errstate(over="ignore", under="ignore", divide="ignore", invalid="ignore"):
        reducible = np.exp(np.log(a) - al * math.log(c))
        x = g / reducible
        ok = 1.0 + x > 0
        log_m = np.where(ok, np.log1p(np.where(ok, x, 0.0)) / al, -np.inf)
        m = np.where(ok, np.exp(np.minimum(log_m, math.log(M_MAX))), 0.0)
    return float(m) if m.ndim == 0 else m


@dataclass(frozen=True)
class ComputeLaw:
    """L(C) = E + A C^-alpha on the rungs' minima (C in FLOPs): the parameters, the rungs' points,
    the bootstrap rows used (``n_rows``) and dropped (``n_dropped``: a non-finite parameter or
    alpha <= 0), and ``problems`` (``LossLawFit.problems``: why it must not be extrapolated)."""

    E: float
    A: float
    alpha: float
    flops: tuple[float, ...]
    losses: tuple[float, ...]
    n_rows: int
    n_dropped: int
    problems: tuple[str, ...] = ()
    fit: LossLawFit | None = field(default=None, compare=False, repr=False)

    def to_dict(self) -> dict:
        return {"E": self.E, "A": self.A, "alpha": self.alpha, "flops": list(self.flops), "losses": list(self.losses),
                "n_rows": self.n_rows, "n_dropped": self.n_dropped, "problems": list(self.problems)}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "ComputeLaw":
        return cls(E=float(d["E"]), A=float(d["A"]), alpha=float(d["alpha"]),
                   flops=tuple(float(v) for v in d["flops"]), losses=tuple(float(v) for v in d["losses"]),
                   n_rows=int(d["n_rows"]), n_dropped=int(d["n_dropped"]), problems=tuple(d.get("problems", ())))


def fit_compute_law(optima: Sequence[RungOptimum], rung_flops: Mapping[str, float] | Sequence[float] | None = None, *,
                    n_bootstrap: int = 200, boot_starts: int = 1, n_starts: int = 16, seed: int = 0,
                    law: LossLawFit | None = None, rung_losses: Mapping[str, float] | None = None
                    ) -> tuple[ComputeLaw, tuple[str, ...]]:
    """Fit L(C) on the usable rungs' minima (``rung_losses[rung]`` where given, as the plan's
    replicated levels; else the fitted minimum when positive, else the best loss) against
    their FLOPs with ``fits.loss_law.fit_loss_law_n`` (one worker); or wrap ``law`` (already
    fitted on compute). Warnings of the fit become notes. Fewer than 4 rungs: ValueError."""
    opts = [o for o in _check_optima(optima) if o.usable]
    points = _rung_sizes(opts, rung_flops, "flops")
    c = [p.value("flops") for p in points]
    levels = rung_losses or {}
    loss = [levels[o.rung] if o.rung in levels else
            o.fitted_min_loss if o.fitted_min_loss is not None and o.fitted_min_loss > 0 else o.best_loss
            for o in opts]
    notes: list[str] = []
    if law is None:
        if len(opts) < 4:
            raise ValueError(f"{len(opts)} usable rung(s); the compute law L(C) = E + A C^-alpha needs at least 4")
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            with np.errstate(over="ignore", invalid="ignore", divide="ignore", under="ignore"):
                law = fit_loss_law_n(c, loss, n_bootstrap=n_bootstrap, boot_starts=boot_starts, n_starts=n_starts,
                                     seed=seed, workers=1)
        notes += [f"compute law: {w.message}" for w in caught]
    elif not isinstance(law, LossLawFit) or law.form != "N":
        raise ValueError("law must be a LossLawFit of the form L(C) = E + A C^-alpha (fit_loss_law_n on FLOPs)")
    p = law.params
    if not (math.isfinite(p["A"]) and p["A"] > 0 and math.isfinite(p["alpha"]) and p["alpha"] > 0):
        raise ValueError(f"the compute law's A = {p['A']!r}, alpha = {p['alpha']!r}: the loss does not fall with "
                         "compute, so there is no compute multiplier")
    rows = np.asarray(law.boot, dtype=float).reshape(-1, 3) if law.boot.size else np.zeros((0, 3))
    good = np.all(np.isfinite(rows), axis=1) & (rows[:, 1] > 0) & (rows[:, 2] > 0) if rows.size else np.zeros(0, bool)
    n_drop = int(rows.shape[0] - good.sum())
    if n_drop:
        notes.append(f"compute law: {n_drop} of {rows.shape[0]} bootstrap rows dropped (a non-finite parameter or "
                     "alpha <= 0)")
    if not good.any():
        notes.append("compute law: no usable bootstrap rows; the multiplier's interval carries the gap's "
                     "uncertainty only")
    with np.errstate(over="ignore", invalid="ignore"):
        problems = law.problems(loss)
    return ComputeLaw(E=float(p["E"]), A=float(p["A"]), alpha=float(p["alpha"]), flops=tuple(c),
                      losses=tuple(float(v) for v in loss), n_rows=int(good.sum()), n_dropped=n_drop,
                      problems=tuple(problems), fit=law), tuple(notes)


def _law_rows(law: ComputeLaw) -> np.ndarray:
    if law.fit is None or not law.fit.boot.size:
        return np.zeros((0, 3))
    rows = np.asarray(law.fit.boot, dtype=float).reshape(-1, 3)
    good = np.all(np.isfinite(rows), axis=1) & (rows[:, 1] > 0) & (rows[:, 2] > 0)
    return rows[good]
