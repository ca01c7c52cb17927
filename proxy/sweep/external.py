"""Runs made elsewhere, in and out of the trial store as CSV.

``import_csv`` brings rows of a CSV (a team's own training runs, a published sweep) into the
store as COMPLETE trials with the same attributes as the sweep's own trials, one study per
rung (``"<experiment>/<rung>"``), so fits, plans and reports read them the same way.
``export_csv`` writes them back with the original columns, in the original order and
formatting (each trial keeps its raw row as the attribute ``raw_row``).

Columns map to fields with ``column=field`` pairs (``--map bs=batch_size``); a column whose
name is already a field maps to it by default. A field may also be computed from columns,
written ``field=expression``: ``batch_size=bs*2048`` (a column times or divided by a number:
units) and ``rung=moe_name+D`` (columns joined by "-": a rung named by several columns).
Fields: ``loss`` (required, nats),
``params_total`` (required), ``params_active`` (default: params_total, a dense model),
``tokens`` (required, training tokens), ``config`` (a model's name: two configs that share their
counts stay apart), ``rung`` (default: one rung per distinct (config, params_total,
params_active, tokens), named ``[<config>-]N<total>[-A<active>]-D<tokens>``; every row of a
named rung must share its sizes), ``seed``, ``diverged``
(true/false/1/0; a diverged row may have a NaN loss), ``flops`` (default ``6 * params_active *
tokens``, Kaplan et al. 2020), and every knob (``lr``, ``batch_size``, ...). Knob distributions
are inferred from the data: integer knobs -> IntDistribution, others -> FloatDistribution,
on a log scale when every value is positive and max/min >= 10.

The file is read by the ``csv`` module from the raw stream (RFC 4180: a quoted cell may hold
a newline, a form feed or U+2028), twice: once to check every row before the store is opened,
once to write. Nothing but a few numbers per rung and a 16-byte digest per row is held in
memory, so a file of any length imports in bounded memory, and so does the export. A header
naming a column twice, a missing mapped column, a non-numeric value, a NaN loss, a
non-positive quantity (loss, lr, batch size, FLOPs, parameters, tokens), a negative
coefficient, a row repeating another row, or a cell over the csv module's limit raises
ValueError naming the row (1 = first data row) and column; the store is left untouched. The
same data imported twice into one experiment (whatever its blank lines, line endings, quoting
or row order) is refused: the study keeps a digest of the parsed rows, not of the bytes.
"""

from __future__ import annotations

import csv
import hashlib
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

from proxy import __version__
from proxy.sweep import knobs as K
from proxy.sweep.store import check_reachable, open_storage, rdb_storage, study_name
from proxy.sweep.snapshot import loads

FIELDS = ("loss", "params_total", "params_active", "tokens", "rung", "config", "seed", "diverged",
          "flops") + tuple(k for k in K.KNOBS if k != K.MIX_KNOB)
TEXT_FIELDS = ("rung", "config", "diverged")
KNOB_RANGES_ATTR = "knob_ranges"
REQUIRED = ("loss", "params_total", "tokens")
# Quantities that are positive by their nature: a zero or negative one is a broken row (a
# negative FLOPs count would shrink the ledger; a zero lr sends the fits' log axes to NaN).
POSITIVE = ("loss", "params_total", "params_active", "tokens", "flops", "lr", "init_scale",
            "batch_size", "n_experts", "top_k")
NON_NEGATIVE = ("seed", "aux_loss_coef", "z_loss_coef", "warmup_frac", "weight_decay")
DIVERGED_MARGIN = 0.1  # as in the runner: a diverged row is told worst finite loss + margin
BATCH_ROWS = 2000      # rows written per statement batch (one transaction for the whole file)
SOURCE_DIGEST_ATTR = "source_digest"


@dataclass(frozen=True)
class ExternalRow:
    index: int                      # 0-based data row
    rung: str
    fields: Mapping[str, Any]
    raw: Mapping[str, str]


@dataclass(frozen=True)
class RungSummary:
    """What the write pass needs of a rung before its first row: its rows and worst loss."""

    rows: int = 0
    worst_finite_loss: float = -math.inf
    sizes: tuple[float, float, float] | None = None   # (params_total, params_active, tokens)
    first_row: int = 0


@dataclass(frozen=True)
class ImportPlan:
    """A checked CSV: its columns and mapping, its rungs in first-seen order, the range of
    each knob (for the distributions), and a digest of its parsed rows."""

    path: str
    digest: str
    columns: tuple[str, ...]
    mapping: Mapping[str, str]      # column -> field
    n_rows: int
    rung_summaries: Mapping[str, RungSummary] = field(default_factory=dict)
    knob_ranges: Mapping[str, tuple[float, float]] = field(default_factory=dict)

    @property
    def rungs(self) -> tuple[str, ...]:
        return tuple(self.rung_summaries)


def parse_mapping(pairs: Sequence[str]) -> dict[str, str]:
    """``["bs=batch_size", "batch_size=bs*2048", "rung=name+D"]`` -> ``{"bs": "batch_size",
    "bs*2048": "batch_size", "name+D": "rung"}`` (source -> field; a source is a column or an
    expression of columns, resolved against the header by ``_sources``); unknown fields raise."""
    mapping: dict[str, str] = {}
    for pair in pairs:
        if "=" not in pair:
            raise ValueError(f"--map {pair!r}: expected column=field or field=expression")
        column, field = (p.strip() for p in pair.split("=", 1))
        if column in FIELDS and field not in FIELDS:   # field=expression
            column, field = field, column
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


@dataclass(frozen=True)
class Source:
    """Where a field's value comes from: one column (times ``factor``), or several joined by "-"
    (a rung name)."""

    label: str
    columns: tuple[str, ...]
    factor: float = 1.0

    def text(self, raw: Mapping[str, str]) -> str:
        return "-".join(raw[c].strip() for c in self.columns)


def _source(path: Path, key: str, field: str, columns: Sequence[str]) -> Source:
    """Resolve a mapping's source (a column name, ``a+b`` for a rung, ``col*k`` or ``col/k``)."""
    if key in columns:
        return Source(key, (key,))
    if "+" in key:
        parts = tuple(p.strip() for p in key.split("+"))
        missing = [p for p in parts if p not in columns]
        if field not in ("rung", "config") or missing:
            raise ValueError(f"{path}: --map {field}={key}: " + (f"column {missing[0]!r} is not in the header "
                             f"{list(columns)}" if missing else "joined columns (a+b) name a rung or a config only"))
        return Source(key, parts)
    for op in ("*", "/"):
        if op in key:
            col, num = (p.strip() for p in key.rsplit(op, 1))
            try:
                k = float(num)
            except ValueError:
                k = math.nan
            if col not in columns:
                raise ValueError(f"{path}: --map {field}={key}: column {col!r} is not in the header {list(columns)}")
            if not (math.isfinite(k) and k > 0) or field in TEXT_FIELDS:
                raise ValueError(f"{path}: --map {field}={key}: a unit conversion multiplies or divides a numeric "
                                 "field by a finite positive number")
            return Source(key, (col,), k if op == "*" else 1.0 / k)
    raise ValueError(f"{path}: mapped column {key!r} is not in the header {list(columns)}")


def _sources(path: Path, full: Mapping[str, str], columns: Sequence[str]) -> dict[str, Source]:
    return {f: _source(path, key, f, columns) for key, f in full.items()}


def _clean_name(text: str) -> str:
    from proxy.sweep.fields import NAME_CHARS

    out = "".join(c if c in NAME_CHARS else "_" for c in text.strip()).lstrip(".")
    return out[:100]


def _cell_name(params: float, tokens: float, active: float | None = None, config: str = "") -> str:
    """A rung named by everything that defines it: [config-]N<total>[-A<active>]-D<tokens>."""
    name = f"N{params:.6g}" + ("" if active is None or math.isclose(active, params, rel_tol=1e-9)
                               else f"-A{active:.6g}") + f"-D{tokens:.6g}"
    return (_clean_name(config) + "-" + name) if config else name


def _records(path: Path) -> Iterator[list[str]]:
    """The CSV's records, header first, parsed from the raw stream; every failure one line."""
    if not path.is_file():
        raise ValueError(f"{path}: file not found" if not path.exists() else f"{path}: not a file")
    row_no = 0
    try:
        with path.open(newline="", encoding="utf-8-sig") as fh:
            for row_no, record in enumerate(csv.reader(fh, strict=True)):
                yield record
    except UnicodeDecodeError as exc:
        raise ValueError(f"{path}: not UTF-8 text (byte {exc.start} of a chunk near row "
                         f"{row_no + 1})") from None
    except csv.Error as exc:
        raise ValueError(f"{path}: row {row_no + 1}: {exc}") from None


def _row_digest(record: Sequence[str]) -> bytes:
    # Cells joined by the ASCII unit separator, which a CSV cell may hold but hardly does;
    # the length prefix keeps ("a\x1f", "b") and ("a", "\x1fb") apart.
    text = "".join(f"{len(c)}:{c}\x1f" for c in record)
    return hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=16).digest()


def _header(path: Path, records: Iterator[list[str]], mapping: Mapping[str, str] | None
            ) -> tuple[tuple[str, ...], dict[str, str]]:
    try:
        columns = tuple(next(records))
    except StopIteration:
        raise ValueError(f"{path}: empty file (no header row)") from None
    seen: dict[str, int] = {}
    for i, name in enumerate(columns):
        if name in seen:
            raise ValueError(f"{path}: the header names column {name!r} twice (columns "
                             f"{seen[name] + 1} and {i + 1})")
        seen[name] = i
    explicit = dict(mapping or {})
    for key, field in explicit.items():
        _source(path, key, field, columns)   # every mapped source must resolve against the header
    full = {c: c for c in columns if c in FIELDS and c not in explicit and c not in explicit.values()}
    full.update(explicit)
    fields_to_col = {f: c for c, f in full.items()}
    for name in REQUIRED:
        if name not in fields_to_col:
            raise ValueError(f"{path}: no column maps to the required field {name!r} "
                             f"(use --map COLUMN={name})")
    return columns, full


def _parse_row(path: Path, row_no: int, raw: Mapping[str, str], sources: Mapping[str, Source]
               ) -> tuple[str, dict[str, Any]]:
    """One data row's fields, checked (see module doc); ``row_no`` counts from 1."""
    from proxy.sweep.fields import NAME_CHARS

    def where(name: str) -> str:
        return f"{path}: row {row_no}, column {sources[name].label!r}"

    values: dict[str, Any] = {}
    for name, src in sources.items():
        cell = src.text(raw)
        if len(src.columns) > 1:   # a name joined from several columns: made safe, not refused
            cell = _clean_name(cell)
        if name == "config":
            if not cell:
                raise ValueError(f"{where(name)}: the config name is empty")
            values[name] = cell
        elif name == "rung":
            if not cell or set(cell) - NAME_CHARS or cell.startswith(".") or len(cell) > 100:
                raise ValueError(f"{where(name)}: rung name {cell!r} must be letters, digits and "
                                 ". _ - + (not starting with a dot, at most 100 characters)")
            values[name] = cell
        elif name == "diverged":
            low = cell.lower()
            if low not in ("true", "false", "1", "0", "yes", "no", ""):
                raise ValueError(f"{where(name)}: {cell!r} is not true/false")
            values[name] = low in ("true", "1", "yes")
        elif name == "loss" and not cell:
            values[name] = math.nan  # allowed only on a diverged row (checked below)
        else:
            values[name] = _number(cell, where(name)) * src.factor
    diverged = bool(values.get("diverged", False))
    loss = values["loss"]
    if not diverged and not math.isfinite(loss):
        raise ValueError(f"{where('loss')}: loss is {sources['loss'].text(raw)!r}; a finite loss "
                         "is needed unless diverged")
    for name, value in values.items():
        if name in TEXT_FIELDS or (name == "loss" and math.isnan(value)):
            continue
        cell = sources[name].text(raw)
        if not math.isfinite(value):
            raise ValueError(f"{where(name)}: {name} must be finite, got {cell!r}")
        if name in POSITIVE and value <= 0:
            raise ValueError(f"{where(name)}: {name} must be positive, got {cell!r}")
        if name in NON_NEGATIVE and value < 0:
            raise ValueError(f"{where(name)}: {name} must not be negative, got {cell!r}")
        if name in K.INT_KNOBS + ("seed",):
            if not math.isclose(value, round(value), rel_tol=0, abs_tol=1e-9 * max(1.0, abs(value))):
                raise ValueError(f"{where(name)}: {name} must be an integer, got {cell!r}"
                                 + ("" if sources[name].factor == 1.0 else f" (x {sources[name].factor:g})"))
            values[name] = int(round(value))
    values.setdefault("params_active", values["params_total"])
    if values["params_active"] > values["params_total"]:
        raise ValueError(f"{where('params_active')}: params_active {values['params_active']:g} "
                         f"exceeds params_total {values['params_total']:g}")
    rung = values.get("rung") or _cell_name(values["params_total"], values["tokens"], values["params_active"],
                                            values.get("config", ""))
    return rung, values


def _rows(path: Path, mapping: Mapping[str, str] | None,
          digests: dict[bytes, int] | None = None) -> Iterator[ExternalRow | tuple]:
    """Yield ``(columns, mapping)`` first, then each data row as an ExternalRow. With
    ``digests`` (row digest -> row number), a row repeating an earlier one raises."""
    records = _records(path)
    columns, full = _header(path, records, mapping)
    yield columns, full
    sources = _sources(path, full, columns)
    for i, record in enumerate(records):
        if not record or all(not c.strip() for c in record):
            continue  # a blank line (or one of empty cells) is not a run
        row_no = i + 1
        if len(record) != len(columns):
            raise ValueError(f"{path}: row {row_no} has {len(record)} values, the header {len(columns)}")
        if digests is not None:
            key = _row_digest(record)
            if key in digests:
                raise ValueError(f"{path}: row {row_no} repeats row {digests[key]} (every cell the "
                                 "same): remove one, or add a column (a seed) that tells them apart")
            digests[key] = row_no
        raw = dict(zip(columns, record))
        rung, values = _parse_row(path, row_no, raw, sources)
        yield ExternalRow(index=i, rung=rung, fields=values, raw=raw)


def read_runs(path: str | Path, mapping: Mapping[str, str] | None = None) -> ImportPlan:
    """Parse and check a whole CSV of runs (see module docstring); touches no store and keeps
    no row in memory."""
    path = Path(path)
    digests: dict[bytes, int] = {}
    rows = _rows(path, mapping, digests)
    columns, full = next(rows)
    summaries: dict[str, RungSummary] = {}
    ranges: dict[str, tuple[float, float]] = {}
    n = 0
    for r in rows:
        n += 1
        f = r.fields
        s = summaries.get(r.rung, RungSummary())
        loss = f["loss"]
        worst = max(s.worst_finite_loss, loss) if math.isfinite(loss) and not f.get("diverged") \
            else s.worst_finite_loss
        sizes = (f["params_total"], f["params_active"], f["tokens"])
        if s.sizes is not None and not all(math.isclose(a, b, rel_tol=1e-9) for a, b in zip(s.sizes, sizes)):
            raise ValueError(f"{path}: rung {r.rung!r} holds rows of different sizes (row {s.first_row}: "
                             f"params_total {s.sizes[0]:g}, params_active {s.sizes[1]:g}, tokens {s.sizes[2]:g}; "
                             f"row {r.index + 1}: {sizes[0]:g}, {sizes[1]:g}, {sizes[2]:g}): a rung is one model "
                             "and one token count; name rungs by more columns (--map rung=name+D) or leave the "
                             "rung column unmapped")
        summaries[r.rung] = RungSummary(rows=s.rows + 1, worst_finite_loss=worst, sizes=sizes,
                                        first_row=s.first_row or r.index + 1)
        for knob in K.KNOBS:
            if knob in f:
                lo, hi = ranges.get(knob, (f[knob], f[knob]))
                ranges[knob] = (min(lo, f[knob]), max(hi, f[knob]))
    if not n:
        raise ValueError(f"{path}: no data rows")
    digest = hashlib.sha256("\x1f".join(columns).encode("utf-8", "surrogatepass")
                            + b"".join(sorted(digests))).hexdigest()
    return ImportPlan(path=str(path), digest=digest, columns=columns, mapping=full, n_rows=n,
                      rung_summaries=summaries, knob_ranges=ranges)


def _distributions(ranges: Mapping[str, tuple[float, float]]) -> dict[str, Any]:
    from optuna.distributions import FloatDistribution, IntDistribution

    out: dict[str, Any] = {}
    for name in (k for k in K.KNOBS if k in ranges):
        lo, hi = ranges[name]
        log = lo > 0 and hi / lo >= 10
        if name in K.INT_KNOBS:
            out[name] = IntDistribution(int(lo), int(hi), log=log and lo >= 1)
        else:
            out[name] = FloatDistribution(float(lo), float(hi), log=log)
    return out


def import_csv(path: str | Path, experiment: str, storage_url: str,
               mapping: Mapping[str, str] | None = None) -> ImportPlan:
    """Check the whole CSV, then add every row to the store as a COMPLETE trial, all rows in
    one transaction (an import that fails half way leaves no trial behind)."""
    import optuna
    from optuna.trial import TrialState, create_trial

    from proxy.sweep.fields import _name
    from proxy.sweep.snapshot import read_study_attrs

    _name(experiment, "--experiment")
    check_reachable(storage_url)       # a store that cannot be used fails before a long read
    plan = read_runs(path, mapping)
    dists = _distributions(plan.knob_ranges)
    storage = open_storage(storage_url)
    for name, attrs in read_study_attrs(storage, experiment).items():
        if attrs.get(SOURCE_DIGEST_ATTR) == plan.digest:
            raise ValueError(f"{plan.path}: these rows are already imported into experiment "
                             f"{experiment!r} (study {name!r})")
    source = Path(plan.path).name
    studies: dict[str, Any] = {}
    for rung in plan.rungs:
        study = optuna.create_study(study_name=study_name(experiment, rung), storage=storage,
                                    direction="minimize", load_if_exists=True)
        ranges = {k: [float(lo), float(hi), bool(getattr(dists[k], "log", False))]
                  for k, (lo, hi) in plan.knob_ranges.items() if k in dists}
        for key, value in (("experiment", experiment), ("rung", rung), ("source", source),
                           ("columns", list(plan.columns)), ("mapping", dict(plan.mapping)),
                           (KNOB_RANGES_ATTR, ranges)):
            study.set_user_attr(key, value)
        studies[rung] = study

    def trials() -> Iterator[tuple[int, Any]]:
        rows = _rows(Path(plan.path), plan.mapping)
        next(rows)
        for r in rows:
            f = r.fields
            diverged = bool(f.get("diverged", False))
            params = {k: f[k] for k in dists if k in f}
            clipped = plan.rung_summaries[r.rung].worst_finite_loss
            clipped = (clipped if math.isfinite(clipped) else 0.0) + DIVERGED_MARGIN
            attrs = {
                "rung": r.rung, "knobs": dict(params),
                "params_total": f["params_total"], "params_active": f["params_active"],
                "tokens": f["tokens"], "flops": f.get("flops", 6.0 * f["params_active"] * f["tokens"]),
                "wall_time_s": None, "final_loss": f["loss"] if math.isfinite(f["loss"]) else None,
                "eval_loss_by_domain": {}, "diverged": diverged, "diverged_step": None,
                "expert_load": None, "seed": int(f.get("seed", 0)), "backend": "external",
                "toolkit_version": __version__, "source": source, "row_index": r.index,
                "raw_row": dict(r.raw),
            }
            yield studies[r.rung]._study_id, create_trial(
                state=TrialState.COMPLETE, value=clipped if diverged else f["loss"], params=params,
                distributions={k: dists[k] for k in params}, user_attrs=attrs)

    written = _bulk_add(storage, trials())
    if written != plan.n_rows:   # the file changed between the two reads
        raise ValueError(f"{plan.path} changed while it was imported ({plan.n_rows} rows checked, "
                         f"{written} read back); nothing was imported")
    # The digest last: an import cut short leaves no digest, so it can be run again.
    for study in studies.values():
        study.set_user_attr(SOURCE_DIGEST_ATTR, plan.digest)
    return plan


def _bulk_add(storage: Any, trials: Iterator[tuple[int, Any]]) -> int:
    """Insert finished trials (``(study_id, FrozenTrial)`` pairs) in one transaction, a few
    multi-row statements per ``BATCH_ROWS`` trials; returns how many.

    ``Study.add_trials`` costs tens of ORM round trips per trial (~1.5 min for 2,000 rows on a
    busy CPU); this writes the same rows to Optuna's RDB schema (``trials``, ``trial_values``,
    ``trial_params``, ``trial_user_attributes``) with each study row locked, numbering the
    trials after the existing ones, exactly as ``RDBStorage._create_new_trial`` does. The
    export test reads them back through Optuna's public API.
    """
    import itertools
    import json

    import sqlalchemy
    from optuna.distributions import distribution_to_json
    from optuna.storages._rdb import models

    t_studies = models.StudyModel.__table__
    t_trials = models.TrialModel.__table__
    t_values = models.TrialValueModel.__table__
    t_params = models.TrialParamModel.__table__
    t_attrs = models.TrialUserAttributeModel.__table__
    next_number: dict[int, int] = {}
    written = 0
    with rdb_storage(storage).engine.begin() as con:
        while batch := list(itertools.islice(trials, BATCH_ROWS)):
            for study_id in {sid for sid, _ in batch} - set(next_number):
                con.execute(sqlalchemy.select(t_studies.c.study_id)
                            .where(t_studies.c.study_id == study_id).with_for_update())
                next_number[study_id] = con.execute(
                    sqlalchemy.select(sqlalchemy.func.count()).select_from(t_trials)
                    .where(t_trials.c.study_id == study_id)).scalar_one()
            keys = []
            for study_id, _ in batch:
                keys.append((study_id, next_number[study_id]))
                next_number[study_id] += 1
            con.execute(t_trials.insert(), [
                {"number": number, "study_id": study_id, "state": t.state,
                 "datetime_start": t.datetime_start, "datetime_complete": t.datetime_complete}
                for (study_id, number), (_, t) in zip(keys, batch)])
            ids = {}
            for study_id in {sid for sid, _ in keys}:
                numbers = [n for sid, n in keys if sid == study_id]
                ids.update({(study_id, n): tid for n, tid in con.execute(
                    sqlalchemy.select(t_trials.c.number, t_trials.c.trial_id)
                    .where(t_trials.c.study_id == study_id, t_trials.c.number >= min(numbers),
                           t_trials.c.number <= max(numbers))).all()})
            values, params, attrs = [], [], []
            for key, (_, t) in zip(keys, batch):
                trial_id = ids[key]
                stored, kind = models.TrialValueModel.value_to_stored_repr(t.value)
                values.append({"trial_id": trial_id, "objective": 0, "value": stored, "value_type": kind})
                for name, value in t.params.items():
                    dist = t.distributions[name]
                    params.append({"trial_id": trial_id, "param_name": name,
                                   "param_value": dist.to_internal_repr(value),
                                   "distribution_json": distribution_to_json(dist)})
                for name, value in t.user_attrs.items():
                    attrs.append({"trial_id": trial_id, "key": name, "value_json": json.dumps(value)})
            con.execute(t_values.insert(), values)
            if params:
                con.execute(t_params.insert(), params)
            con.execute(t_attrs.insert(), attrs)
            written += len(batch)
    return written


_PLAIN_FIELDS = ("final_loss", "diverged", "params_total", "params_active", "tokens", "flops",
                 "seed", "backend")

# The complete trials of an experiment with the user attributes named in :keys, one row per
# attribute, a trial's rows together and trials in (study, number) order; read as a stream.
_TRIAL_ATTRS_SQL = """
SELECT t.trial_id, t.number, s.study_name, v.value, CAST(v.value_type AS TEXT), u.key, u.value_json
  FROM trials t JOIN studies s ON s.study_id = t.study_id
  LEFT JOIN trial_values v ON v.trial_id = t.trial_id AND v.objective = 0
  JOIN trial_user_attributes u ON u.trial_id = t.trial_id
 WHERE substr(s.study_name, 1, :n) = :prefix AND CAST(t.state AS TEXT) = 'COMPLETE'
   AND u.key IN :keys
 ORDER BY s.study_name, t.number, u.key
"""

_NOT_IMPORTED_SQL = """
SELECT count(*) FROM trials t JOIN studies s ON s.study_id = t.study_id
 WHERE substr(s.study_name, 1, :n) = :prefix AND CAST(t.state AS TEXT) = 'COMPLETE'
   AND NOT EXISTS (SELECT 1 FROM trial_user_attributes u
                    WHERE u.trial_id = t.trial_id AND u.key = 'raw_row')
"""

_RAW_ROWS_SQL = "SELECT trial_id, value_json FROM trial_user_attributes WHERE key = 'raw_row' AND trial_id IN :ids"


def _stream_trials(con: Any, experiment: str, keys: Sequence[str]
                   ) -> Iterator[tuple[int, str, int, float | None, dict[str, Any]]]:
    """``(trial id, study name, trial number, objective, {key: attribute})`` for each complete
    trial."""
    import itertools

    import sqlalchemy

    sql = sqlalchemy.text(_TRIAL_ATTRS_SQL).bindparams(sqlalchemy.bindparam("keys", expanding=True))
    prefix = experiment + "/"
    result = con.execution_options(stream_results=True, yield_per=1000).execute(
        sql, {"n": len(prefix), "prefix": prefix, "keys": list(keys)})
    for trial_id, rows in itertools.groupby(result, key=lambda row: row[0]):
        rows = list(rows)
        _, number, name, value, kind, _, _ = rows[0]
        objective = {"INF_POS": math.inf, "INF_NEG": -math.inf}.get(kind, value)
        yield trial_id, name, number, objective, {r[5]: loads(r[6]) for r in rows}


def _check_out(out: Path) -> None:
    if out.is_dir():
        raise ValueError(f"--out {out} is a folder; name the CSV file to write")
    if not out.parent.is_dir():
        raise ValueError(f"--out {out}: the folder {out.parent} does not exist")


def export_csv(storage_url: str, experiment: str, out: str | Path) -> int:
    """Write the experiment's complete trials to CSV; returns the number of rows.

    Imported trials come out with their original columns and cells, in their original order;
    trials of a sweep come out with one column per attribute (rung, number, knobs, loss, ...),
    and a store holding both writes every trial so, each imported row with its own cells. The
    trials stream from the store (the rows of an imported file in chunks, in file order), so
    memory stays bounded whatever the count; the file appears only once it is whole.
    """
    import os

    import sqlalchemy

    from proxy.sweep.snapshot import read_study_attrs

    out = Path(out)
    _check_out(out)
    storage = open_storage(storage_url, read_only=True)
    studies = read_study_attrs(storage, experiment)
    if not studies:
        raise ValueError(f"no studies of experiment {experiment!r} in {storage_url}")
    prefix = experiment + "/"
    part = out.with_name(out.name + ".part")
    n = 0
    try:
        with rdb_storage(storage).engine.connect() as con, part.open("w", newline="") as fh:
            column_sets = {tuple(a["columns"]) for a in studies.values() if a.get("columns")}
            plain = con.execute(sqlalchemy.text(_NOT_IMPORTED_SQL),
                                {"n": len(prefix), "prefix": prefix}).scalar_one()
            if not plain and len(column_sets) == 1:
                writer = csv.DictWriter(fh, fieldnames=list(column_sets.pop()), lineterminator="\n")
                writer.writeheader()
                # File order: (row index, trial id) pairs are small; the rows follow in chunks.
                order = sorted((int(attrs.get("row_index", 0)), tid) for tid, *_, attrs
                               in _stream_trials(con, experiment, ["row_index"]))
                sql = sqlalchemy.text(_RAW_ROWS_SQL).bindparams(sqlalchemy.bindparam("ids", expanding=True))
                for start in range(0, len(order), 500):
                    chunk = [tid for _, tid in order[start:start + 500]]
                    rows = dict(con.execute(sql, {"ids": chunk}).all())
                    writer.writerows(loads(rows[tid]) for tid in chunk)
                    n += len(chunk)
            else:
                knob_names = dict.fromkeys(k for *_, attrs in _stream_trials(con, experiment, ["knobs"])
                                           for k in (attrs.get("knobs") or {}))
                raw_columns = [c for cols in sorted(column_sets) for c in cols]
                header = list(dict.fromkeys(["rung", "number", *knob_names, *_PLAIN_FIELDS,
                                             "objective", *raw_columns]))
                writer = csv.DictWriter(fh, fieldnames=header, lineterminator="\n")
                writer.writeheader()
                keys = ["knobs", "rung", "raw_row", *_PLAIN_FIELDS]
                for _, name, number, objective, attrs in _stream_trials(con, experiment, keys):
                    if "raw_row" in attrs:
                        row = dict(attrs["raw_row"])
                    else:
                        row = {"rung": attrs.get("rung", name[len(prefix):]), "number": number,
                               **(attrs.get("knobs") or {}),
                               **{k: attrs.get(k) for k in _PLAIN_FIELDS}, "objective": objective}
                    writer.writerow(row)
                    n += 1
        os.replace(part, out)
    finally:
        part.unlink(missing_ok=True)
    return n

