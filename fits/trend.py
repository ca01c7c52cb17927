"""A trend built from per-rung optima: unusable rungs are excluded, and the exclusion is recorded."""

from __future__ import annotations

from typing import Sequence

import numpy as np

from fits.optimum import RungOptimum
from fits.power_law import TrendFit, fit_trend

SIZE_FIELDS = ("params_active", "params_total")


def trend_from_optima(optima: Sequence[RungOptimum], knob: str, *, size: str = "params_active",
                      use_tokens: bool = False, n_bootstrap: int = 1000, seed: int = 0) -> TrendFit:
    """Fit the trend of ``knob``'s optimum across rungs (``fits.power_law.fit_trend``).

    Rungs whose optimum is not ``usable`` (edge, not convex, too few points) are left out and
    listed in ``TrendFit.excluded`` with their flags' messages, so a report can say why. Each
    included rung enters with its log optimum, the delta-method standard error as
    ``value_se``, and its seed-bootstrap draws (when any) as the first bootstrap level.
    ``size``: which parameter count is the trend's regressor (active by default, the count that
    sets per-token compute in an MoE).
    """
    if size not in SIZE_FIELDS:
        raise ValueError(f"size must be one of {SIZE_FIELDS}, got {size!r}")
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
    if len(kept) < 3 + int(use_tokens):
        raise ValueError(f"only {len(kept)} usable rungs for the {knob!r} trend; excluded: "
                         + ("; ".join(f"{a} ({b})" for a, b in excluded) or "none"))
    logs = [o.log_value(knob) for o in kept]
    samples = [o.log_samples(knob) for o in kept]
    return fit_trend([getattr(o, size) for o in kept], [float(np.exp(m)) for m, _ in logs],
                     value_se=[s for _, s in logs], tokens=[o.tokens for o in kept] if use_tokens else None,
                     rung_samples=samples if any(s.size for s in samples) else None, n_bootstrap=n_bootstrap,
                     seed=seed, labels=[o.rung or f"rung {i}" for i, o in enumerate(kept)], excluded=excluded)
