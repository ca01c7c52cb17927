"""From the trial store to the fits: observations per rung, the knobs to fit, per-rung optima.

Reads the store written by ``proxy.sweep`` (a sweep or ``ladder import``) through
``proxy.sweep.runner.observations`` and adds what the review needs from the trial attributes
(expert load). A rung of the experiment's ladder is sized by its *base* config
(``proxy.flops.param_counts``), so a searched categorical knob that changes the size of a trial
(``n_experts`` changes total parameters) does not split the rung; the trial's own counts stay
in ``Observation.extra`` (``trial_params_total``, ``trial_params_active``). Imported rungs that
are not in the ladder keep their own counts.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Mapping, Sequence

from fits.observation import Observation
from fits.optimum import KnobSpec as FitKnob
from fits.optimum import RungOptimum, fit_optimum
from fits.seed_noise import rung_level, seed_noise
from proxy.flops import param_counts
from proxy.sweep import knobs as K

if TYPE_CHECKING:
    from optuna.storages import BaseStorage

    from proxy.sweep.experiment import Experiment


def fit_knobs(experiment: Experiment) -> tuple[FitKnob, ...]:
    """The searched knobs the fits treat: continuous ones (log where searched on a log scale)
    and categorical ones; the mixture logits are left to the report (their optimum is a point
    on a simplex, not a power law in size)."""
    out = []
    for k in experiment.search.box:
        if k.name == K.MIX_KNOB:
            continue
        if k.categorical:
            out.append(FitKnob(k.name, choices=tuple(k.choices)))
        else:
            out.append(FitKnob(k.name, float(k.low), float(k.high), log=bool(k.log)))
    return tuple(out)


def _expert_extras(t: Any) -> dict[str, float]:
    """A trial's number and its expert-load figures (finite ones), for ``Observation.extra``."""
    load = t.user_attrs.get("expert_load") or {}
    extra = {"trial_number": float(t.number)}
    for key in ("max_over_mean", "dropped_fraction", "balance_loss"):
        v = load.get(key)
        if isinstance(v, (int, float)) and math.isfinite(v):
            extra[f"expert_{key}"] = float(v)
    return extra


def load_observations(experiment: Experiment, storage: BaseStorage) -> dict[str, list[Observation]]:
    """Every COMPLETE trial of ``experiment`` grouped by rung, in trial order (rung name ->
    observations). Rungs of the experiment's ladder come first in ladder order, then any
    imported rungs by active size.

    The experiment's studies are read in one statement (``proxy.sweep.snapshot``), and every
    figure of a trial (its observation, its number and its expert load) comes from that one
    read, so a trial finishing meanwhile cannot pair one trial's figures with another's.
    """
    from proxy.sweep.runner import trial_observation
    from proxy.sweep.snapshot import read_experiment

    base = {r.name: param_counts(r.config) for r in experiment.rungs}
    by_rung: dict[str, list[Observation]] = {}
    for sname, snap in read_experiment(storage, experiment.name).items():
        rung = sname[len(experiment.name) + 1:]
        for t in snap.complete():
            o = trial_observation(rung, t)
            extra = dict(o.extra) | _expert_extras(t)
            extra |= {"trial_params_total": o.params_total, "trial_params_active": o.params_active}
            if o.rung in base:
                o = dataclasses.replace(o, params_total=float(base[o.rung].total),
                                        params_active=float(base[o.rung].active), extra=extra)
            else:
                o = dataclasses.replace(o, extra=extra)
            by_rung.setdefault(o.rung, []).append(o)
    order = [r.name for r in experiment.rungs if r.name in by_rung]
    rest = sorted((r for r in by_rung if r not in order), key=lambda r: by_rung[r][0].params_active)
    return {r: by_rung[r] for r in order + rest}


@dataclass(frozen=True)
class RungFit:
    """A rung's optimum, or why there is none (``error``), with its trial count."""

    rung: str
    optimum: RungOptimum | None
    n_trials: int
    error: str = ""


def fit_rungs(experiment: Experiment, obs_by_rung: Mapping[str, Sequence[Observation]], *,
              seed: int = 0) -> list[RungFit]:
    """``fits.fit_optimum`` on every rung with trials, in ascending active size.

    Replicates of a rung's incumbent (``replicate_of``, trained with other seeds) are left out of
    the surface: a second point at the incumbent would weight the fit toward it. They measure
    the seed-to-seed noise (``fits.seed_noise``), which floors every rung's surface scale, so an
    optimum is no surer than a fresh seed allows."""
    knobs = fit_knobs(experiment)
    if not knobs:
        raise ValueError(f"experiment {experiment.name!r} searches no knob the fits can use "
                         "(search.box is empty or holds only the mix)")
    size = {r: obs[0].params_active for r, obs in obs_by_rung.items()}
    levels = (rung_level(r, list(obs_by_rung[r])) for r in sorted(obs_by_rung, key=size.__getitem__))
    noise = seed_noise([lv for lv in levels if lv is not None])
    out = []
    for rung, obs in obs_by_rung.items():
        try:
            searched = [o for o in obs if "replicate_of" not in o.extra]
            opt = fit_optimum(searched, knobs, seed=seed, noise_sd=None if noise is None else noise[0])
            out.append(RungFit(rung, opt, len(obs)))
        except ValueError as exc:
            out.append(RungFit(rung, None, len(obs), str(exc)))
    return sorted(out, key=lambda f: size[f.rung])
