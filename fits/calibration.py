"""Simulated ladders with known truth, for checking that the fits' intervals cover it.

Truth: the optimal learning rate of a rung of size N is lr*(N) = c N^-gamma exp(d_N), with
d_N ~ N(0, rung_scatter^2) an independent rung-to-rung deviation from the law (real ladders
are not exactly on a power law). Each rung's loss is a basin in x = ln lr - ln lr*(N),

    L = L0(N) + excess(x) + eps,   eps ~ N(0, noise_sd^2) per trial,

with L0(N) = 1.7 + 400 N^-0.34 (a Chinchilla-like floor; only the basin's shape matters) and
``basin_excess``:

* ``basin="quadratic"`` (default): excess = curvature x^2, symmetric, no trial diverges.
* ``basin="asymmetric"``: what real learning-rate curves look like (a gentle rise below the
  optimum, a wall above it):

      excess = curvature x^2                                  for x < 0,
      excess = asymmetry curvature (x^2 + x^3 / ln w)          for x >= 0,

  w = ``wall_factor``; a trial with lr > w lr* diverges (``Observation(diverged=True,
  loss=nan)``). On the high side the curvature is ``asymmetry`` times the low side's and
  steepens further towards the wall (the cubic term equals the quadratic one at the wall). The
  default asymmetry 2.5 is what a split quadratic (``fits.quadratic.fit_form``) measures on the
  Step Law dense cells (tests/data: per-cell ratio of the high side's lr curvature to the low
  side's, median 2.4 on the best half of each cell's trials and 2.6 on the best 70%, range 0.5
  to 4.7).

  The true optimum is the argmin of the expected loss (E eps = 0), and that is exactly lr*:
  both branches are >= 0 and vanish only at x = 0 (for x > 0, x^2 and x^3 are > 0). So
  ``true_log_lr`` is ln lr* for either basin.

Trials are drawn log-uniformly in a box of half-width ``box_half_width`` (natural-log units)
whose centre is the true optimum shifted by a uniform offset of up to ``box_offset`` (the
human's guess is never exact).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from fits.observation import Observation
from fits.optimum import KnobSpec


@dataclass(frozen=True)
class SimulatedLadder:
    """One ladder: its observations per rung, the search box per rung, and the truth."""

    sizes: tuple[float, ...]
    observations: tuple[tuple[Observation, ...], ...]
    boxes: tuple[KnobSpec, ...]
    true_log_lr: tuple[float, ...]
    c: float
    gamma: float

    def law_log_lr(self, size: float) -> float:
        """ln of the power law c N^-gamma (without any rung deviation)."""
        return math.log(self.c) - self.gamma * math.log(size)


BASINS = ("quadratic", "asymmetric")


def check_basin(basin: str, asymmetry: float, wall_factor: float) -> None:
    """Raise ValueError unless ``basin`` is one of BASINS, asymmetry >= 1 and wall_factor > 1."""
    if basin not in BASINS:
        raise ValueError(f"basin must be one of {BASINS}, got {basin!r}")
    for name, value in (("asymmetry", asymmetry), ("wall_factor", wall_factor)):
        if isinstance(value, bool) or not (isinstance(value, (int, float)) and math.isfinite(value)):
            raise ValueError(f"{name} must be a finite number, got {value!r}")
    if asymmetry < 1:
        raise ValueError(f"asymmetry must be >= 1 (the high side the steeper), got {asymmetry!r}")
    if wall_factor <= 1:
        raise ValueError(f"wall_factor must be > 1, got {wall_factor!r}")


def basin_excess(x: float | np.ndarray, curvature: float, basin: str = "quadratic", asymmetry: float = 2.5,
                 wall_factor: float = 4.0) -> float | np.ndarray:
    """Loss above the floor (nats) at x = ln lr - ln lr* (module docstring); its argmin is x = 0."""
    x = np.asarray(x, dtype=float)
    if basin == "quadratic":
        out = curvature * x ** 2
    else:
        high = np.maximum(x, 0.0)
        out = np.where(x < 0, curvature * x ** 2, asymmetry * curvature * (high ** 2 + high ** 3 / math.log(wall_factor)))
    return float(out) if out.ndim == 0 else out


def simulate_ladder(rng: np.random.Generator, *, sizes: Sequence[float] = (2e6, 6e6, 2e7, 6e7, 2e8),
                    c: float = 3.0, gamma: float = 0.45, n_trials: int = 24, noise_sd: float = 0.004,
                    curvature: float = 0.03, box_half_width: float = 1.6, box_offset: float = 0.5,
                    rung_scatter: float = 0.05, tokens_per_param: float = 20.0, basin: str = "quadratic",
                    asymmetry: float = 2.5, wall_factor: float = 4.0) -> SimulatedLadder:
    """Draw one ladder (see the module docstring). ``noise_sd`` and ``curvature`` in nats;
    ``asymmetry`` and ``wall_factor`` shape the ``asymmetric`` basin only."""
    check_basin(basin, asymmetry, wall_factor)
    obs_all, boxes, truth = [], [], []
    for i, n in enumerate(sizes):
        log_opt = math.log(c) - gamma * math.log(n) + rng.normal(0.0, rung_scatter)
        centre = log_opt + rng.uniform(-box_offset, box_offset)
        box = KnobSpec("lr", math.exp(centre - box_half_width), math.exp(centre + box_half_width), log=True)
        log_lr = rng.uniform(centre - box_half_width, centre + box_half_width, n_trials)
        floor = 1.7 + 400.0 * n**-0.34
        x = log_lr - log_opt
        loss = floor + basin_excess(x, curvature, basin, asymmetry, wall_factor) + rng.normal(0.0, noise_sd, n_trials)
        # Past the wall (asymmetric basin only) the run diverges: no loss.
        diverged = x > math.log(wall_factor) if basin == "asymmetric" else np.zeros(n_trials, dtype=bool)
        obs_all.append(tuple(Observation(params_total=n, params_active=n, tokens=tokens_per_param * n,
                                         knobs={"lr": float(math.exp(a))}, loss=math.nan if dv else float(b),
                                         diverged=bool(dv), rung=f"r{i}", seed=j)
                             for j, (a, b, dv) in enumerate(zip(log_lr, loss, diverged))))
        boxes.append(box)
        truth.append(log_opt)
    return SimulatedLadder(sizes=tuple(float(s) for s in sizes), observations=tuple(obs_all), boxes=tuple(boxes),
                           true_log_lr=tuple(truth), c=c, gamma=gamma)


def target_truth(ladder: SimulatedLadder, size: float, rng: np.random.Generator, rung_scatter: float = 0.05) -> float:
    """ln of the true optimal learning rate at a target size: the law plus the target's own deviation."""
    return ladder.law_log_lr(size) + rng.normal(0.0, rung_scatter)
