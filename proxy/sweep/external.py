"""Runs made elsewhere, in and out of the trial store as CSV.

``import_csv`` brings rows of a CSV (a team's own training runs, a published sweep) into the
store as COMPLETE trials with the same attributes as the sweep's own trials, one study per
rung (``"<experiment>/<rung>"``), so fits, plans and reports read them the same way.
``export_csv`` writes them back with the original columns, in the original order and
formatting (each trial keeps its raw row as the attribute ``raw_row``).

Columns map to fields with ``column=field`` pairs (``--map bs=batch_size``); a column whose
name is already a field maps to it by default. Fields: ``loss`` (required, nats),
``params_total`` (required), ``params_active`` (default: params_total, a dense model),
``tokens`` (required, training tokens), ``rung`` (default: one rung per distinct
(params_total, tokens) cell, named ``N<params>-D<tokens>``), ``seed``, ``diverged``
(true/false/1/0; a diverged row may have a NaN loss), ``flops`` (default ``6 * params_active *
tokens``, Kaplan et al. 2020), and every knob (``lr``, ``batch_size``, ...). Knob distributions
are inferred from the data: integer knobs -> IntDistribution, others -> FloatDistribution,
on a log scale when every value is positive and max/min >= 10.

The whole file is checked before the store is opened: a missing mapped column, a non-numeric
value or a NaN loss raises ValueError naming the row (1 = first data row) and column, and the
store is left untouched.
"""

from __future__ import annotations

import csv
import hashlib
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

from proxy import __version__
from proxy.sweep import knobs as K
from proxy.sweep.store import experiment_study_names, open_storage, study_name

FIELDS = ("loss", "params_total", "params_active", "tokens", "rung", "seed", "diverged",
          "flops") + tuple(k for k in K.KNOBS if k != K.MIX_KNOB)
REQUIRED = ("loss", "params_total", "tokens")
DIVERGED_MARGIN = 0.1  # as in the runner: a diverged row is told worst finite loss + margin


@dataclass(frozen=True)
class ExternalRow:
    index: int                      # 0-based data row
    rung: str
    fields: Mapping[str, Any]
    raw: Mapping[str, str]


@dataclass(frozen=True)
class ImportPlan:
    path: str
    sha256: str
    columns: tuple[str, ...]
    mapping: Mapping[str, str]      # column -> field
    rows: tuple[ExternalRow, ...]

    @property
    def rungs(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(r.rung for r in self.rows))


def parse_mapping(pairs: Sequence[str]) -> dict[str, str]:
    """``["bs=batch_size", ...]`` -> ``{"bs": "batch_size"}``; unknown fields raise ValueError."""
    mapping: dict[str, str] = {}
    for pair in pairs:
        if "=" not in pair:
            raise ValueError(f"--map {pair!r}: expected column=field")
        column, field = (p.strip() for p in pair.split("=", 1))
        if field not in FIELDS:
            raise ValueError(f"--map {pair!r}: unknown field {field!r}; fields: {', '.join(FIELDS)}")
        if field in mapping.values():
            raise ValueError(f"--map {pair!r}: field {field!r} is mapped twice")
        mapping[column] = field
    return mapping


def _number(text: str, where: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise ValueError(f"{where}: {text!r} is not a number") from None


def _cell_name(params: float, tokens: float) -> str:
    return f"N{params:.4g}-D{tokens:.4g}"


def read_runs(path: str | Path, mapping: Mapping[str, str] | None = None) -> ImportPlan:
    """Parse and check a CSV of runs (see module docstring); touches no store."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path}: file not found")
    raw_bytes = path.read_bytes()
    text = raw_bytes.decode("utf-8-sig")
    reader = csv.reader(text.splitlines())
    try:
        columns = tuple(next(reader))
    except StopIteration:
        raise ValueError(f"{path}: empty file (no header row)") from None
    explicit = dict(mapping or {})
    for column in explicit:
        if column not in columns:
            raise ValueError(f"{path}: mapped column {column!r} is not in the header {list(columns)}")
    full = {c: c for c in columns if c in FIELDS and c not in explicit and c not in explicit.values()}
    full.update(explicit)
    fields_to_col = {f: c for c, f in full.items()}
    for field in REQUIRED:
        if field not in fields_to_col:
            raise ValueError(f"{path}: no column maps to the required field {field!r} "
                             f"(use --map COLUMN={field})")
    rows: list[ExternalRow] = []
    for i, record in enumerate(reader):
        if not record:
            continue
        row_no = i + 1
        if len(record) != len(columns):
            raise ValueError(f"{path}: row {row_no} has {len(record)} values, the header {len(columns)}")
        raw = dict(zip(columns, record))
        values: dict[str, Any] = {}
        for field, column in fields_to_col.items():
            where = f"{path}: row {row_no}, column {column!r}"
            cell = raw[column].strip()
            if field == "rung":
                if not cell or "/" in cell:
                    raise ValueError(f"{where}: rung name {cell!r} must be non-empty without '/'")
                values[field] = cell
            elif field == "diverged":
                low = cell.lower()
                if low not in ("true", "false", "1", "0", "yes", "no", ""):
                    raise ValueError(f"{where}: {cell!r} is not true/false")
                values[field] = low in ("true", "1", "yes")
            elif field == "loss" and not cell:
                values[field] = math.nan  # allowed only on a diverged row (checked below)
            else:
                values[field] = _number(cell, where)
        diverged = bool(values.get("diverged", False))
        loss = values["loss"]
        if not diverged and not math.isfinite(loss):
            raise ValueError(f"{path}: row {row_no}, column {fields_to_col['loss']!r}: loss is "
                             f"{raw[fields_to_col['loss']]!r}; a finite loss is needed unless diverged")
        for field in ("params_total", "params_active", "tokens"):
            if field in values and not (math.isfinite(values[field]) and values[field] > 0):
                raise ValueError(f"{path}: row {row_no}, column {fields_to_col[field]!r}: "
                                 f"{field} must be a finite positive number, got {raw[fields_to_col[field]]!r}")
        for field in K.INT_KNOBS + ("seed",):
            if field in values:
                if values[field] != int(values[field]):
                    raise ValueError(f"{path}: row {row_no}, column {fields_to_col[field]!r}: "
                                     f"{field} must be an integer, got {raw[fields_to_col[field]]!r}")
                values[field] = int(values[field])
        for field in K.KNOBS:
            if field in values and not math.isfinite(values[field]):
                raise ValueError(f"{path}: row {row_no}, column {fields_to_col[field]!r}: "
                                 f"{field} must be finite, got {raw[fields_to_col[field]]!r}")
        values.setdefault("params_active", values["params_total"])
        rung = values.get("rung") or _cell_name(values["params_total"], values["tokens"])
        rows.append(ExternalRow(index=i, rung=rung, fields=values, raw=raw))
    if not rows:
        raise ValueError(f"{path}: no data rows")
    return ImportPlan(path=str(path), sha256=hashlib.sha256(raw_bytes).hexdigest(), columns=columns,
                      mapping=full, rows=tuple(rows))


def _distributions(rows: Sequence[ExternalRow]) -> dict[str, Any]:
    from optuna.distributions import FloatDistribution, IntDistribution

    out: dict[str, Any] = {}
    knob_fields = [f for f in K.KNOBS if f != K.MIX_KNOB and any(f in r.fields for r in rows)]
    for field in knob_fields:
        vals = [r.fields[field] for r in rows if field in r.fields]
        lo, hi = min(vals), max(vals)
        log = lo > 0 and hi / lo >= 10
        if field in K.INT_KNOBS:
            out[field] = IntDistribution(int(lo), int(hi), log=log and lo >= 1)
        else:
            out[field] = FloatDistribution(float(lo), float(hi), log=log)
    return out


def import_csv(path: str | Path, experiment: str, storage_url: str,
               mapping: Mapping[str, str] | None = None) -> ImportPlan:
    """Check the whole CSV, then add every row to the store as a COMPLETE trial."""
    import optuna
    from optuna.trial import TrialState, create_trial

    if not experiment or "/" in experiment:
        raise ValueError(f"experiment name must be non-empty without '/', got {experiment!r}")
    plan = read_runs(path, mapping)
    dists = _distributions(plan.rows)
    storage = open_storage(storage_url)
    for name in experiment_study_names(storage, experiment):
        attrs = storage.get_study_user_attrs(storage.get_study_id_from_name(name))
        if attrs.get("source_sha256") == plan.sha256:
            raise ValueError(f"{plan.path} is already imported into experiment {experiment!r} "
                             f"(study {name!r})")
    source = Path(plan.path).name
    for rung in plan.rungs:
        rows = [r for r in plan.rows if r.rung == rung]
        finite = [r.fields["loss"] for r in rows if math.isfinite(r.fields["loss"])
                  and not r.fields.get("diverged")]
        clipped = (max(finite) if finite else 0.0) + DIVERGED_MARGIN
        study = optuna.create_study(study_name=study_name(experiment, rung), storage=storage,
                                    direction="minimize", load_if_exists=True)
        study.set_user_attr("experiment", experiment)
        study.set_user_attr("rung", rung)
        study.set_user_attr("source", source)
        study.set_user_attr("source_sha256", plan.sha256)
        study.set_user_attr("columns", list(plan.columns))
        study.set_user_attr("mapping", dict(plan.mapping))
        trials = []
        for r in rows:
            f = r.fields
            diverged = bool(f.get("diverged", False))
            params = {k: f[k] for k in dists if k in f}
            knob_values = dict(params)
            flops = f.get("flops", 6.0 * f["params_active"] * f["tokens"])
            attrs = {
                "rung": rung, "knobs": knob_values,
                "params_total": f["params_total"], "params_active": f["params_active"],
                "tokens": f["tokens"], "flops": flops, "wall_time_s": None,
                "final_loss": f["loss"] if math.isfinite(f["loss"]) else None,
                "eval_loss_by_domain": {}, "diverged": diverged, "diverged_step": None,
                "expert_load": None, "seed": int(f.get("seed", 0)), "backend": "external",
                "toolkit_version": __version__, "source": source, "row_index": r.index,
                "raw_row": dict(r.raw),
            }
            trials.append(create_trial(
                state=TrialState.COMPLETE, value=clipped if diverged else f["loss"], params=params,
                distributions={k: dists[k] for k in params}, user_attrs=attrs))
        _bulk_add(storage, study._study_id, trials)
    return plan


def _bulk_add(storage: Any, study_id: int, trials: Sequence[Any]) -> None:
    """Insert finished trials in one transaction (a few multi-row statements).

    ``Study.add_trials`` costs tens of ORM round trips per trial (~1.5 min for 2,000 rows on a
    busy CPU); this writes the same rows to Optuna's RDB schema (``trials``, ``trial_values``,
    ``trial_params``, ``trial_user_attributes``) with the study row locked, numbering the
    trials after the existing ones, exactly as ``RDBStorage._create_new_trial`` does. The
    export test reads them back through Optuna's public API.
    """
    import json

    import sqlalchemy
    from optuna.distributions import distribution_to_json
    from optuna.storages._rdb import models

    t_trials = models.TrialModel.__table__
    t_values = models.TrialValueModel.__table__
    t_params = models.TrialParamModel.__table__
    t_attrs = models.TrialUserAttributeModel.__table__
    with storage.engine.begin() as con:
        con.execute(sqlalchemy.select(models.StudyModel.__table__.c.study_id)
                    .where(models.StudyModel.__table__.c.study_id == study_id).with_for_update())
        base = con.execute(sqlalchemy.select(sqlalchemy.func.count()).select_from(t_trials)
                           .where(t_trials.c.study_id == study_id)).scalar_one()
        con.execute(t_trials.insert(), [
            {"number": base + i, "study_id": study_id, "state": t.state,
             "datetime_start": t.datetime_start, "datetime_complete": t.datetime_complete}
            for i, t in enumerate(trials)])
        ids = dict(con.execute(sqlalchemy.select(t_trials.c.number, t_trials.c.trial_id)
                               .where(t_trials.c.study_id == study_id, t_trials.c.number >= base)).all())
        values, params, attrs = [], [], []
        for i, t in enumerate(trials):
            trial_id = ids[base + i]
            stored, kind = models.TrialValueModel.value_to_stored_repr(t.value)
            values.append({"trial_id": trial_id, "objective": 0, "value": stored, "value_type": kind})
            for name, value in t.params.items():
                dist = t.distributions[name]
                params.append({"trial_id": trial_id, "param_name": name,
                               "param_value": dist.to_internal_repr(value),
                               "distribution_json": distribution_to_json(dist)})
            for key, value in t.user_attrs.items():
                attrs.append({"trial_id": trial_id, "key": key, "value_json": json.dumps(value)})
        con.execute(t_values.insert(), values)
        if params:
            con.execute(t_params.insert(), params)
        con.execute(t_attrs.insert(), attrs)


def export_csv(storage_url: str, experiment: str, out: str | Path) -> int:
    """Write the experiment's trials to CSV; returns the number of rows.

    Imported trials come out with their original columns and cells, in their original order;
    trials of a sweep come out with one column per attribute (rung, number, knobs, loss, ...).
    """
    from optuna.trial import TrialState

    storage = open_storage(storage_url, read_only=True)
    names = experiment_study_names(storage, experiment)
    if not names:
        raise ValueError(f"no studies of experiment {experiment!r} in {storage_url}")
    raw_rows: list[tuple[int, dict[str, str]]] = []
    columns: list[str] | None = None
    plain: list[dict[str, Any]] = []
    for name in names:
        study_id = storage.get_study_id_from_name(name)
        attrs = storage.get_study_user_attrs(study_id)
        for t in storage.get_all_trials(study_id, deepcopy=False, states=(TrialState.COMPLETE,)):
            a = t.user_attrs
            if "raw_row" in a and attrs.get("columns"):
                columns = columns or list(attrs["columns"])
                raw_rows.append((int(a.get("row_index", 0)), a["raw_row"]))
            else:
                row = {"rung": a.get("rung", name[len(experiment) + 1:]), "number": t.number}
                row.update(a.get("knobs") or t.params)
                row.update({k: a.get(k) for k in ("final_loss", "diverged", "params_total",
                                                   "params_active", "tokens", "flops", "seed",
                                                   "backend")})
                row["objective"] = t.value
                plain.append(row)
    out = Path(out)
    with out.open("w", newline="") as fh:
        if raw_rows and not plain:
            writer = csv.DictWriter(fh, fieldnames=columns, lineterminator="\n")
            writer.writeheader()
            for _, row in sorted(raw_rows, key=lambda x: x[0]):
                writer.writerow(row)
            return len(raw_rows)
        for _, row in raw_rows:  # mixed store: imported rows in the generic layout too
            plain.append(dict(row))
        header = list(dict.fromkeys(k for row in plain for k in row))
        writer = csv.DictWriter(fh, fieldnames=header, lineterminator="\n")
        writer.writeheader()
        writer.writerows(plain)
    return len(plain)
