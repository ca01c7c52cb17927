"""The three-point parabola of a coarse one-knob grid (``fits.optimum``, module docstring step
8): the vertex through the best distinct setting and its two neighbours, with the noise of one
trial from the measured seed noise, the repeated settings or a stated prior."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from fits.quadratic import SurfaceFit, design_matrix


@dataclass(frozen=True)
class _Coarse:
    """A three-point parabola on a coarse one-knob grid (scaled coordinates)."""

    edge_side: str | None               # "lowest" / "highest" value when the best point is at an end
    basis: str                          # "noise_sd", "replicates" or "prior"
    noise_note: str
    surface: SurfaceFit | None = None
    points: tuple[float, ...] = ()      # the three settings used (scaled)


def _coarse_parabola(z1: np.ndarray, y: np.ndarray, noise_sd: float | None, prior_fraction: float) -> _Coarse:
    """The parabola through the best distinct setting (lowest mean loss) and its two neighbours.

    Noise: the variance of one trial's loss is noise_sd^2 when given, the pooled within-setting
    variance of repeated settings (sum (y - mean_k)^2 / sum (n_k - 1)) when that is larger or
    noise_sd is absent, and else the stated prior (prior_fraction x the three means' range)^2.
    The three means are exact points of the parabola, so its coefficients are A^-1 ybar with A
    the 3x3 design and their covariance A^-1 diag(s^2 / n_k) A^-T; the vertex's variance is the
    delta method's (``fits.quadratic.vertex_jacobian``)."""
    keys = np.round(z1, 12)
    values = np.unique(keys)
    groups = [y[keys == v] for v in values]
    means = np.asarray([g.mean() for g in groups])
    counts = np.asarray([len(g) for g in groups], dtype=float)
    df = int(sum(len(g) - 1 for g in groups))
    within = float(sum(((g - g.mean()) ** 2).sum() for g in groups) / df) if df > 0 else None
    k = int(np.argmin(means))
    if k in (0, len(values) - 1):
        return _Coarse(edge_side="lowest value" if k == 0 else "highest value", basis="none",
                       noise_note="the best point is at the grid's end, so no parabola is fitted")
    sel = slice(k - 1, k + 2)
    if noise_sd is not None and (within is None or noise_sd ** 2 >= within):
        var, basis, note = noise_sd ** 2, "noise_sd", f"noise sd {noise_sd:.4g} (the measured seed noise, noise_sd)"
    elif within is not None:
        var, basis = within, "replicates"
        note = f"noise sd {math.sqrt(within):.4g} from the repeated settings ({df} degrees of freedom)"
    else:
        rng_y = float(means[sel].max() - means[sel].min())
        var, basis = (prior_fraction * rng_y) ** 2, "prior"
        note = (f"noise sd {prior_fraction * rng_y:.4g}: no measured seed noise and no repeated setting, so the "
                f"stated prior of {prior_fraction:g} x the three points' loss range (pass noise_sd to use a measured one)")
    a = design_matrix(values[sel][:, None])
    a_inv = np.linalg.inv(a)
    beta = a_inv @ means[sel]
    cov = a_inv @ np.diag(var / counts[sel]) @ a_inv.T
    surface = SurfaceFit(p=1, beta=beta, cov=cov, df_resid=float(df), n=int(counts[sel].sum()))
    return _Coarse(edge_side=None, basis=basis, noise_note=note, surface=surface, points=tuple(values[sel]))
