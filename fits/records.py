"""A per-rung optimum as JSON and back: ``optimum_record`` / ``optimum_from_record``.

``fits.json`` carries every rung's whole ``RungOptimum`` (its knob specs, vertex and
covariance, flags, band, categorical gaps, bootstrap draws and fitted surface), so a plan,
a review or a report made from it needs no refit. The codec walks the dataclass's fields, so
a field added to ``RungOptimum`` travels without a change here: mappings and sequences become
JSON objects and arrays (a mapping keyed by a categorical level, which JSON would turn into a
string, as [level, value] pairs), numpy arrays lists, non-finite floats the strings "inf",
"-inf", "nan".
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Mapping

import numpy as np

from fits.intervals import ConfidenceInterval
from fits.optimum import CategoricalChoice, Flag, KnobSpec, RungOptimum
from fits.quadratic import SurfaceFit

NONFINITE = {"inf": math.inf, "-inf": -math.inf, "nan": math.nan}


def _num(x: float) -> Any:
    x = float(x)
    return x if math.isfinite(x) else ("nan" if math.isnan(x) else ("inf" if x > 0 else "-inf"))


def _enc(x: Any) -> Any:
    if isinstance(x, bool) or x is None or isinstance(x, str):
        return x
    if isinstance(x, (int, np.integer)):
        return int(x)
    if isinstance(x, (float, np.floating)):
        return _num(x)
    if isinstance(x, np.ndarray):
        return _enc(x.tolist())
    if isinstance(x, ConfidenceInterval):
        return {"low": _num(x.low), "high": _num(x.high)}
    if isinstance(x, (KnobSpec, Flag, SurfaceFit)):
        return {f.name: _enc(getattr(x, f.name)) for f in dataclasses.fields(x)}
    if isinstance(x, CategoricalChoice):
        return {"knob": x.knob, "best": x.best, "best_loss_by_level": _pairs(x.best_loss_by_level),
                "gap_by_level": _pairs(x.gap_by_level)}
    if isinstance(x, Mapping):
        return {str(k): _enc(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_enc(v) for v in x]
    raise TypeError(f"cannot record a {type(x).__name__}")


def _pairs(m: Mapping[Any, float]) -> list[list[Any]]:
    return [[k, _num(v)] for k, v in m.items()]


def _dec(x: Any) -> Any:
    """Arrays back as tuples (the dataclasses' own form), non-finite strings as floats."""
    if isinstance(x, str) and x in NONFINITE:
        return NONFINITE[x]
    if isinstance(x, list):
        return tuple(_dec(v) for v in x)
    if isinstance(x, dict):
        return {k: _dec(v) for k, v in x.items()}
    return x


def optimum_record(opt: RungOptimum) -> dict[str, Any]:
    """Every field of ``opt`` as JSON types (see the module docstring)."""
    return {f.name: _enc(getattr(opt, f.name)) for f in dataclasses.fields(opt)}


def optimum_from_record(d: Mapping[str, Any]) -> RungOptimum:
    """The inverse of ``optimum_record``."""
    special = {
        "knobs": lambda v: tuple(KnobSpec(**{k: (tuple(c) if k == "choices" and c is not None else c)
                                             for k, c in _dec(s).items()}) for s in v),
        "flags": lambda v: tuple(Flag(**f) for f in v),
        "band": lambda v: {k: ConfidenceInterval(_dec(c["low"]), _dec(c["high"])) for k, c in v.items()},
        "categorical": lambda v: {k: CategoricalChoice(knob=c["knob"], best=c["best"],
                                                       best_loss_by_level={lv: _dec(g) for lv, g in c["best_loss_by_level"]},
                                                       gap_by_level={lv: _dec(g) for lv, g in c["gap_by_level"]})
                                  for k, c in v.items()},
        "surface": lambda v: None if v is None else SurfaceFit(p=int(v["p"]), beta=np.asarray(_dec(v["beta"]), dtype=float),
                                                               cov=np.asarray(_dec(v["cov"]), dtype=float),
                                                               df_resid=float(_dec(v["df_resid"])), n=int(v["n"])),
        "best_setting": lambda v: dict(v),
    }
    names = {f.name for f in dataclasses.fields(RungOptimum)}
    kwargs = {k: (special[k](v) if k in special else _dec(v)) for k, v in d.items() if k in names}
    return RungOptimum(**kwargs)
