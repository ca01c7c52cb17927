"""A trend built from per-rung optima: unusable rungs are excluded, and the exclusion is recorded."""

from __future__ import annotations

from typing import Sequence

import numpy as np

from fits.axes import SizePoint, check_axes
from fits.optimum import RungOptimum
from fits.power_law import TrendFit, fit_trend

SIZE_FIELDS = ("params_active", "params_total")


def rung_point(opt: RungOptimum) -> SizePoint:
    """A rung's sizes on every axis (compute as 6 N_active D)."""
    return SizePoint(params_total=opt.params_total, params_active=opt.params_active, tokens=opt.tokens)


def trend_from_optima(optima: Sequence[RungOptimum], knob: str, *, size: str = "params_active",
                      use_tokens: bool = False, axes: Sequence[str] | None = None, n_bootstrap: int = 1000,
                      seed: int = 0) -> TrendFit:
    """Fit the trend of ``knob``'s optimum across rungs (``fits.power_law.fit_trend``).

    Rungs whose optimum is not ``usable`` (edge, not convex, too few points) are left out and
    listed in ``TrendFit.excluded`` with their flags' messages, so a report can say why. Each
    included rung enters with its log optimum, the noise part of its standard error
    (``RungOptimum.noise_se``: the delta method of the specifications' average) as
    ``value_se``, and its seed-bootstrap draws (when any) as the first bootstrap level. The
    specification part (``spec_se``: how far the vertex moves with the fit's window and form)
    stays out of the weights: on basins that share one shape it is a bias the rungs share, which
    moves the intercept, cancels in the backtest, and counting it per rung would double the
    noise on correct quadratics (the target interval then covered in 200 of 200 simulated
    ladders). Measured (tests/test_fits_interval_calibration.py, docs/fits.md): the target's 95%
    and 80% intervals are near nominal on quadratic and on asymmetric basins alike.
    ``axes``: the size axes of the regressors (``fits.axes``: one of params_active,
    params_total, tokens, flops, or a parameter axis with tokens); the older spelling
    ``size`` [+ ``use_tokens``] gives (size[, tokens]).
    """
    if axes is None:
        if size not in SIZE_FIELDS:
            raise ValueError(f"size must be one of {SIZE_FIELDS}, got {size!r}")
        axes = (size,) + (("tokens",) if use_tokens else ())
    axes = check_axes(axes, f"the {knob!r} trend")
    kept: list[RungOptimum] = []
    excluded: list[tuple[str, str]] = []
    for i, opt in enumerate(optima):
        if not isinstance(opt, RungOptimum):
            raise TypeError(f"optima[{i}] must be a RungOptimum, got {type(opt).__name__}")
        label = opt.rung or f"rung {i}"
        if opt.usable:
            kept.append(opt)
        else:
            reasons = "; ".join(f"{f.code}: {f.message}" for f in opt.flags if f.code != "diverged_excluded")
            excluded.append((label, reasons))
    if len(kept) < 2 + len(axes):
        raise ValueError(f"only {len(kept)} usable rungs for the {knob!r} trend; excluded: "
                         + ("; ".join(f"{a} ({b})" for a, b in excluded) or "none"))
    logs = [o.log_value(knob, part="noise") for o in kept]
    samples = [o.log_samples(knob) for o in kept]
    points = [rung_point(o) for o in kept]
    sizes = [p.value(axes[0]) for p in points]
    tokens = [p.value(axes[1]) for p in points] if len(axes) > 1 else None
    try:
        return fit_trend(sizes, [float(np.exp(m)) for m, _ in logs], value_se=[s for _, s in logs], tokens=tokens,
                         rung_samples=samples if any(s.size for s in samples) else None, n_bootstrap=n_bootstrap,
                         seed=seed, labels=[o.rung or f"rung {i}" for i, o in enumerate(kept)], excluded=excluded,
                         axes=axes)
    except ValueError as exc:
        raise ValueError(f"the {knob!r} trend: {exc}") from None
