"""The seed-to-seed noise of a ladder's losses, from the replicates of each rung's incumbent.

``search.replicates`` trains each rung's *incumbent* again with further seeds: the searched
trial nearest the rung's fitted optimum (``transfer.ladder``), or its best trial where the rung
has no usable surface.
The review's ``scaling_regime`` check compares the rungs' losses against this noise, and the
per-rung optima (``transfer.observations.fit_rungs``) use it as the floor of their surfaces'
residual scale: every searched trial of a ladder trains with the same seed, so the scatter of
a rung's trials about its quadratic misses the part of the noise a fresh seed would add.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from fits.observation import Observation


def incumbent(obs: Sequence[Observation]) -> Observation | None:
    """The rung's incumbent (None when it has no usable trial): the trial its replicates were
    trained from, when it has replicates (the ladder picks it, ``transfer.ladder``), else its
    best usable trial that is not itself a replicate."""
    ok = [o for o in obs if o.usable and "replicate_of" not in o.extra]
    replicated = {o.extra["replicate_of"] for o in obs if o.usable and "replicate_of" in o.extra}
    chosen = [o for o in ok if o.extra.get("trial_number") in replicated]
    return min(chosen or ok, key=lambda o: o.loss, default=None)


@dataclass(frozen=True)
class RungLevel:
    """A rung's loss as the regime check compares it: the single-seed losses of its incumbent
    (best trial) and of the incumbent's replicates, in seed order (``seed_ids``); the level is
    their mean."""

    rung: str
    params_active: float
    values: tuple[float, ...]
    seed_ids: tuple[float, ...] = ()

    @property
    def loss(self) -> float:
        return float(np.mean(self.values))

    @property
    def seeds(self) -> int:
        return len(self.values)

    @property
    def sample_var(self) -> float | None:
        """The incumbent's seed-to-seed variance (None for one seed)."""
        return float(np.var(self.values, ddof=1)) if len(self.values) > 1 else None


def rung_level(rung: str, obs: Sequence[Observation]) -> RungLevel | None:
    """The rung's level: its incumbent's and the incumbent's replicates' single-seed losses
    (None when the rung has no usable trial)."""
    best = incumbent(obs)
    if best is None:
        return None
    number = best.extra.get("trial_number")
    reps = [o for o in obs if o.usable and number is not None and o.extra.get("replicate_of") == number]
    values: dict[float, float] = {}
    for o in (best, *reps):
        values |= _seed_losses(o)
    seeds = tuple(sorted(values))
    return RungLevel(rung, best.params_active, tuple(values[s] for s in seeds), seeds)


def _seed_losses(o: Observation) -> dict[float, float]:
    """Seed -> loss of one trial: each training seed's own loss where the store kept them (a
    trial of several seeds reports their mean), else the trial's loss under its first seed."""
    per_seed = {float(k.split(".", 1)[1]): v for k, v in o.extra.items() if k.startswith("seed_loss.")}
    return per_seed or {float(o.seed): o.loss}


def seed_noise(levels: list[RungLevel]) -> tuple[float, int, str] | None:
    """(sd, degrees of freedom, model) of the noise in one rung's loss at one seed, as the
    gaps between rungs see it; None when no rung was replicated.

    Every trial of a ladder trains with the same seeds (common random numbers) and every rung's
    replicate with the same further seeds, so a seed that is harder than another for every rung
    (a data order, an init draw) moves all rungs together and cancels in the gaps. When at least
    three rungs were replicated alike, the noise is therefore estimated as a randomised block
    design (seeds as blocks): the rung x seed interaction, residuals
    x_rs - mean_r - mean_s + mean, with (R - 1)(S - 1) degrees of freedom (Montgomery, Design
    and Analysis of Experiments, ch. 4). Otherwise it is the within-rung variance pooled over
    the replicated rungs, which counts a seed's common effect as noise (conservative)."""
    replicated = [lv for lv in levels if lv.seeds >= 2]
    if not replicated:
        return None
    if len(replicated) == len(levels) >= 3 and len({(lv.seeds, lv.seed_ids) for lv in levels}) == 1:
        x = np.array([lv.values for lv in levels])
        resid = x - x.mean(axis=1, keepdims=True) - x.mean(axis=0, keepdims=True) + x.mean()
        dof = (x.shape[0] - 1) * (x.shape[1] - 1)
        return float(np.sqrt((resid ** 2).sum() / dof)), dof, "rung x seed interaction (seeds as blocks)"
    dof = sum(lv.seeds - 1 for lv in replicated)
    ss = sum((lv.seeds - 1) * lv.sample_var for lv in replicated)
    return math.sqrt(ss / dof), dof, "within-rung variance, pooled"
