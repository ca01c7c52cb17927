"""Fits made once: ``plan``, ``review`` and ``report`` read ``fits.json`` when it was fitted
from the trials the store holds now, and refit only when it was not.

``store_digest`` is a SHA-256 over everything a fit reads: every finished trial (rung, sizes,
settings, loss, seed, the attributes the fits use), the knobs and their boxes, the size axes
of the trends, the fit's seed, the toolkit version and ``FIT_METHOD``. ``fits.json`` carries it with every
rung's whole optimum (``fits.records``), every trend and the loss law with their bootstrap
draws, so the Fits rebuilt from it are the ones the fit made. The compute-optimal laws are
refitted from the rebuilt optima (a few small regressions, seeded as in ``fit_all``).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

if TYPE_CHECKING:
    from transfer.extrapolate import Fits

FIT_SEED = 0
# The fitting method's own version, in the digest: bumped whenever a fit computes something new
# from the same trials (2: per-rung specification spread, trends with a shared shift, loss laws
# on replicated levels), so a fits.json written by the older method is refitted, not reused.
FIT_METHOD = "2"


def _obs_key(o: Any) -> list:
    return [o.rung, repr(float(o.params_total)), repr(float(o.params_active)), repr(float(o.tokens)),
            sorted((k, repr(v)) for k, v in o.knobs.items()), repr(float(o.loss)), bool(o.diverged), int(o.seed),
            sorted((k, repr(float(v))) for k, v in o.extra.items())]


def store_digest(experiment: Any, observations: Mapping[str, Any], seed: int = FIT_SEED) -> str:
    """The content hash of what a fit of ``experiment`` reads (see the module docstring)."""
    from proxy import __version__
    from transfer.observations import fit_knobs

    h = hashlib.sha256()
    head = {"version": __version__, "fit_method": FIT_METHOD, "seed": seed, "knobs": [repr(k) for k in fit_knobs(experiment)],
            "fit": repr(getattr(experiment, "fit", None))}
    h.update(json.dumps(head, sort_keys=True).encode())
    for rung in sorted(observations):
        for o in observations[rung]:
            h.update(json.dumps(_obs_key(o)).encode())
    return h.hexdigest()


def fits_from_json(doc: Mapping[str, Any], observations: Mapping[str, Any], records: Mapping[str, Any]) -> "Fits":
    """The ``Fits`` a ``fits.json`` document holds, with the store's trials and box records."""
    from fits.loss_law import LossLawFit
    from fits.power_law import TrendFit
    from fits.records import optimum_from_record
    from transfer.extrapolate import Fits, fit_isoflop
    from transfer.observations import RungFit

    rungs = tuple(RungFit(d["rung"], optimum_from_record(d["record"]) if d.get("record") else None,
                          int(d["n_trials"]), d.get("error") or "") for d in doc["rungs"])
    usable = [f.optimum for f in rungs if f.optimum is not None and f.optimum.usable]
    co, co_error = fit_isoflop(usable, FIT_SEED)
    return Fits(rungs=rungs, trends={k: TrendFit.from_dict(v) for k, v in doc.get("trends", {}).items()},
                trend_errors=dict(doc.get("trend_errors", {})),
                loss_law=None if doc.get("loss_law") is None else LossLawFit.from_dict(doc["loss_law"]),
                loss_error=doc.get("loss_error", ""), observations=observations, records=records,
                notes=tuple(doc.get("notes", ())), axes={k: tuple(v) for k, v in doc.get("axes", {}).items()},
                compute_optimal=co, compute_error=co_error)


def cached_fits(experiment: Any, storage: Any, folder: Path) -> tuple["Fits", bool]:
    """(the Fits of the store, True when they came from ``folder/fits.json``): that file is used
    when its ``store_digest`` matches the store's trials now; otherwise everything is refitted."""
    from transfer.extrapolate import fit_all
    from transfer.ladder import read_records
    from transfer.observations import load_observations
    from transfer.plan import SCHEMA_VERSION

    obs = load_observations(experiment, storage)
    if not obs:
        raise ValueError(f"the store {experiment.storage} has no finished trial of experiment "
                         f"{experiment.name!r}; run `ladder sweep` or `ladder import` first")
    path = Path(folder) / "fits.json"
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError):
        doc = None
    if (isinstance(doc, dict) and str(doc.get("schema_version")) == SCHEMA_VERSION
            and doc.get("experiment") == experiment.name and doc.get("store_digest") == store_digest(experiment, obs)
            and all("record" in r or r.get("error") for r in doc.get("rungs", ()))):
        try:
            return fits_from_json(doc, obs, read_records(experiment, storage)), True
        except (KeyError, TypeError, ValueError):
            pass   # a file of another layout: refit
    return fit_all(experiment, storage, seed=FIT_SEED, observations=obs), False
