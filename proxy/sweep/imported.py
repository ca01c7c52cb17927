"""An experiment read from its store alone: the fits, plan and review of imported runs with no
experiment file (``ladder fit/plan/review --experiment NAME --storage URL``).

A ``ladder import`` writes, with every rung's study, the knobs' ranges in the file
(``knob_ranges``); the search box the fits need is their union over rungs (log scale where the
import chose one), and the ladder is the store's rungs themselves. Nothing is trained, so the
backend is ``external``; a target comes from ``--at`` (``fits.axes.point_from_mapping``).
"""

from __future__ import annotations

import hashlib
import json
from typing import Any, Mapping

from proxy.sweep.external import KNOB_RANGES_ATTR, SOURCE_DIGEST_ATTR
from proxy.sweep.spec import FitSpec, KnobSpec


def _ranges_from_trials(storage: Any, experiment: str) -> dict[str, list]:
    """Knob ranges of a store written without them (a sweep, an older import): from the trials'
    own distributions."""
    from proxy.sweep.snapshot import read_experiment

    out: dict[str, list] = {}
    for snap in read_experiment(storage, experiment).values():
        for t in snap.complete():
            for k, d in t.distributions.items():
                lo, hi, log = float(d.low), float(d.high), bool(getattr(d, "log", False))
                if k in out:
                    lo, hi, log = min(lo, out[k][0]), max(hi, out[k][1]), log or out[k][2]
                out[k] = [lo, hi, log]
    return out


def knob_box(attrs_by_study: Mapping[str, Mapping[str, Any]]) -> tuple[KnobSpec, ...]:
    """The union of the studies' knob ranges as a search box (continuous knobs, in name order)."""
    merged: dict[str, list] = {}
    for attrs in attrs_by_study.values():
        for k, (lo, hi, log) in (attrs.get(KNOB_RANGES_ATTR) or {}).items():
            if k in merged:
                lo, hi, log = min(lo, merged[k][0]), max(hi, merged[k][1]), log or merged[k][2]
            merged[k] = [lo, hi, log]
    return _box(merged)


def _box(ranges: Mapping[str, list]) -> tuple[KnobSpec, ...]:
    from proxy.sweep import knobs as K

    out = []
    for k in sorted(ranges):
        lo, hi, log = ranges[k]
        if hi <= lo:   # one value in the whole file: not searched, so no optimum to fit
            continue
        out.append(KnobSpec(name=k, low=lo, high=hi, log=bool(log), integer=k in K.INT_KNOBS))
    return tuple(out)


def experiment_from_store(name: str, url: str, *, axes: Mapping[str, tuple[str, ...]] | None = None,
                          size: str = "params_active") -> Any:
    """The ``Experiment`` of the imported runs ``name`` in the store ``url`` (see module doc)."""
    from proxy.sweep.experiment import REVIEW_DEFAULTS, Experiment, SearchSpec
    from proxy.sweep.fields import _name
    from proxy.sweep.snapshot import read_study_attrs
    from proxy.sweep.spec import BudgetSpec, DataSpec
    from proxy.sweep.store import open_storage

    _name(name, "--experiment")
    storage = open_storage(url, read_only=True)
    attrs = read_study_attrs(storage, name)
    if not attrs:
        raise ValueError(f"the store {url} has no experiment {name!r} (import runs with `ladder import FILE.csv "
                         f"--experiment {name}`)")
    box = knob_box(attrs)
    if not box:
        box = _box(_ranges_from_trials(storage, name))
    if not box:
        raise ValueError(f"experiment {name!r} in {url}: no knob takes more than one value, so there is nothing "
                         "to fit")
    digests = sorted(str(a.get(SOURCE_DIGEST_ATTR, "")) for a in attrs.values())
    sha = hashlib.sha256(json.dumps([name, url, digests]).encode()).hexdigest()
    return Experiment(name=name, storage=url, backend="external", seeds=(0,), dtype="float32", threads=1,
                      heartbeat_interval=10, rungs=(), target=None, search=SearchSpec(box=box),
                      data=DataSpec(), budget=BudgetSpec(), review=dict(REVIEW_DEFAULTS), path="", sha256=sha,
                      fit=FitSpec(size=size, axes=dict(axes or {})))
