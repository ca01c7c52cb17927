"""Simulated ladders with known truth, for checking that the fits' intervals cover it.

Truth: the optimal learning rate of a rung of size N is lr*(N) = c N^-gamma exp(d_N), with
d_N ~ N(0, rung_scatter^2) an independent rung-to-rung deviation from the law (real ladders
are not exactly on a power law). Each rung's loss is a quadratic basin in log lr,

    L = L0(N) + curvature (ln lr - ln lr*(N))^2 + eps,   eps ~ N(0, noise_sd^2) per trial,

with L0(N) = 1.7 + 400 N^-0.34 (a Chinchilla-like floor; only the basin's shape matters).
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


def simulate_ladder(rng: np.random.Generator, *, sizes: Sequence[float] = (2e6, 6e6, 2e7, 6e7, 2e8),
                    c: float = 3.0, gamma: float = 0.45, n_trials: int = 24, noise_sd: float = 0.004,
                    curvature: float = 0.03, box_half_width: float = 1.6, box_offset: float = 0.5,
                    rung_scatter: float = 0.05, tokens_per_param: float = 20.0) -> SimulatedLadder:
    """Draw one ladder (see the module docstring). ``noise_sd`` and ``curvature`` in nats."""
    obs_all, boxes, truth = [], [], []
    for i, n in enumerate(sizes):
        log_opt = math.log(c) - gamma * math.log(n) + rng.normal(0.0, rung_scatter)
        centre = log_opt + rng.uniform(-box_offset, box_offset)
        box = KnobSpec("lr", math.exp(centre - box_half_width), math.exp(centre + box_half_width), log=True)
        log_lr = rng.uniform(centre - box_half_width, centre + box_half_width, n_trials)
        floor = 1.7 + 400.0 * n**-0.34
        loss = floor + curvature * (log_lr - log_opt) ** 2 + rng.normal(0.0, noise_sd, n_trials)
        obs_all.append(tuple(Observation(params_total=n, params_active=n, tokens=tokens_per_param * n,
                                         knobs={"lr": float(math.exp(a))}, loss=float(b), rung=f"r{i}", seed=j)
                             for j, (a, b) in enumerate(zip(log_lr, loss))))
        boxes.append(box)
        truth.append(log_opt)
    return SimulatedLadder(sizes=tuple(float(s) for s in sizes), observations=tuple(obs_all), boxes=tuple(boxes),
                           true_log_lr=tuple(truth), c=c, gamma=gamma)


def target_truth(ladder: SimulatedLadder, size: float, rng: np.random.Generator, rung_scatter: float = 0.05) -> float:
    """ln of the true optimal learning rate at a target size: the law plus the target's own deviation."""
    return ladder.law_log_lr(size) + rng.normal(0.0, rung_scatter)
