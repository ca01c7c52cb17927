"""An experiment's trials read from the store in one statement: one consistent snapshot.

Optuna reads a study's trials in several statements (the trials, then their parameters,
values and attributes), and a command that reads several studies does so one after another.
While another process writes (a sweep finishing a trial), the statements can see different
moments: PostgreSQL gives each statement of a READ COMMITTED transaction its own snapshot, and
SQLite without an explicit transaction does the same. A trial finishing between two reads then
arrives COMPLETE without its value, or with another moment's attributes.

So the read-only paths (the fits, plan, review, report, ledger, status) read every study of the
experiment, with its attributes and its trials' parameters, values and user attributes, in a
single ``UNION ALL`` statement, which both back ends answer from one snapshot, and join the rows
by trial id here. Only Optuna's public tables are read (``studies``, ``study_user_attributes``,
``trials``, ``trial_params``, ``trial_values``, ``trial_user_attributes``); the trials come back
as ``optuna.trial.FrozenTrial`` objects, as Optuna's own reads give them.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any, Mapping

# Columns of every row: kind, study id, trial id, a text key, a number, a text value.
_SQL = """
SELECT 0 AS kind, s.study_id AS sid, CAST(NULL AS INTEGER) AS tid, s.study_name AS k,
       CAST(NULL AS FLOAT) AS num, CAST(NULL AS TEXT) AS txt
  FROM studies s WHERE substr(s.study_name, 1, :n) = :prefix
UNION ALL
SELECT 1, a.study_id, NULL, a.key, NULL, a.value_json
  FROM study_user_attributes a JOIN studies s ON s.study_id = a.study_id
 WHERE substr(s.study_name, 1, :n) = :prefix
UNION ALL
SELECT 2, t.study_id, t.trial_id, CAST(t.state AS TEXT), CAST(t.number AS FLOAT), NULL
  FROM trials t JOIN studies s ON s.study_id = t.study_id
 WHERE substr(s.study_name, 1, :n) = :prefix
UNION ALL
SELECT 3, t.study_id, p.trial_id, p.param_name, p.param_value, p.distribution_json
  FROM trial_params p JOIN trials t ON t.trial_id = p.trial_id JOIN studies s ON s.study_id = t.study_id
 WHERE substr(s.study_name, 1, :n) = :prefix
UNION ALL
SELECT 4, t.study_id, v.trial_id, CAST(v.value_type AS TEXT), v.value, CAST(v.objective AS TEXT)
  FROM trial_values v JOIN trials t ON t.trial_id = v.trial_id JOIN studies s ON s.study_id = t.study_id
 WHERE substr(s.study_name, 1, :n) = :prefix
UNION ALL
SELECT 5, t.study_id, u.trial_id, u.key, NULL, u.value_json
  FROM trial_user_attributes u JOIN trials t ON t.trial_id = u.trial_id JOIN studies s ON s.study_id = t.study_id
 WHERE substr(s.study_name, 1, :n) = :prefix
"""


@dataclass(frozen=True)
class StudySnapshot:
    """One study as the snapshot saw it: its name, user attributes and trials (trial order)."""

    name: str
    user_attrs: Mapping[str, Any] = field(default_factory=dict)
    trials: tuple[Any, ...] = ()

    def complete(self) -> list[Any]:
        from optuna.trial import TrialState

        return [t for t in self.trials if t.state == TrialState.COMPLETE]


def read_experiment(storage: Any, experiment: str) -> dict[str, StudySnapshot]:
    """Every study of ``experiment`` (``"<experiment>/<rung>"``), by study name, from one
    statement (see the module doc). ``storage`` is the RDB storage (or Optuna's cache wrapper)."""
    import sqlalchemy

    from proxy.sweep.store import rdb_storage

    prefix = experiment + "/"
    with rdb_storage(storage).engine.connect() as con:
        rows = con.execute(sqlalchemy.text(_SQL), {"n": len(prefix), "prefix": prefix}).all()
    try:
        return _assemble(rows)
    except MALFORMED as exc:
        raise malformed(exc) from None


# What a null or a foreign value where Optuna writes its own raises (a damaged or hand-edited store).
MALFORMED = (TypeError, KeyError, ValueError, AttributeError)


def malformed(exc: BaseException) -> ValueError:
    """The one-line error for a malformed row of the store this process opened last."""
    from proxy.sweep.store import display_url, last_opened_url

    url = last_opened_url()
    return ValueError(f"the trial store{' ' + display_url(url) if url else ''} holds a malformed row "
                      f"({type(exc).__name__}: {exc}); restore it from a copy")


def loads(text: Any) -> Any:
    """``json.loads`` of a stored value; a malformed one (a null, not JSON) is ``malformed``."""
    try:
        return json.loads(text)
    except MALFORMED as exc:
        raise malformed(exc) from None


def _assemble(rows: Any) -> dict[str, StudySnapshot]:
    from optuna.distributions import json_to_distribution
    from optuna.trial import FrozenTrial, TrialState

    names: dict[int, str] = {}
    study_attrs: dict[int, dict[str, Any]] = {}
    trials: dict[int, dict[str, Any]] = {}
    for kind, sid, tid, key, num, txt in rows:
        if kind == 0:
            names[sid] = key
        elif kind == 1:
            study_attrs.setdefault(sid, {})[key] = json.loads(txt)
        elif kind == 2:
            trials.setdefault(tid, _blank(sid)).update(state=TrialState[key], number=int(num))
        elif kind == 3:
            dist = json_to_distribution(txt)
            t = trials.setdefault(tid, _blank(sid))
            t["params"][key] = dist.to_external_repr(num)
            t["distributions"][key] = dist
        elif kind == 4:
            value = {"INF_POS": math.inf, "INF_NEG": -math.inf}.get(key, num)
            trials.setdefault(tid, _blank(sid))["values"][int(txt)] = float(value)
        elif kind == 5:
            trials.setdefault(tid, _blank(sid))["user_attrs"][key] = json.loads(txt)
    by_study: dict[int, list[Any]] = {sid: [] for sid in names}
    for tid in sorted(trials):
        t = trials[tid]
        if "state" not in t or t["sid"] not in by_study:   # rows of one snapshot always match
            continue
        values = [t["values"][i] for i in sorted(t["values"])] or None
        if t["state"] == TrialState.COMPLETE and values is None:
            continue
        by_study[t["sid"]].append(FrozenTrial(
            number=t["number"], state=t["state"], value=None, values=values, datetime_start=None,
            datetime_complete=None, params=t["params"], distributions=t["distributions"],
            user_attrs=t["user_attrs"], system_attrs={}, intermediate_values={}, trial_id=tid))
    return {names[sid]: StudySnapshot(names[sid], study_attrs.get(sid, {}), tuple(by_study[sid]))
            for sid in sorted(names, key=names.__getitem__)}


def _blank(sid: int) -> dict[str, Any]:
    return {"sid": sid, "params": {}, "distributions": {}, "values": {}, "user_attrs": {}}


_STUDY_ATTRS_SQL = """
SELECT s.study_name, a.key, a.value_json
  FROM studies s LEFT JOIN study_user_attributes a ON a.study_id = s.study_id
 WHERE substr(s.study_name, 1, :n) = :prefix
"""


def read_study_attrs(storage: Any, experiment: str) -> dict[str, dict[str, Any]]:
    """The user attributes of every study of ``experiment``, by study name (sorted), in one
    statement: what the import and export need without reading a single trial."""
    import sqlalchemy

    from proxy.sweep.store import rdb_storage

    prefix = experiment + "/"
    out: dict[str, dict[str, Any]] = {}
    with rdb_storage(storage).engine.connect() as con:
        for name, key, value in con.execute(sqlalchemy.text(_STUDY_ATTRS_SQL),
                                            {"n": len(prefix), "prefix": prefix}):
            attrs = out.setdefault(name, {})
            if key is not None:
                attrs[key] = loads(value)
    return dict(sorted(out.items()))
