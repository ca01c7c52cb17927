"""The trial store: Optuna's RDB storage named by URL.

* ``sqlite:///relative/path.db`` (resolved against a base folder, the experiment file's
  folder) or ``sqlite:////absolute/path.db``: the embedded default, one machine; the folder is
  created when the store is first opened (never while an experiment file is validated).
* ``postgresql://user@host:port/db``: many workers on many machines (psycopg2 driver).

Stale trials: the store is opened with a heartbeat (``heartbeat_interval`` seconds); a RUNNING
trial whose heartbeat is older than the grace period (``2 * interval``, at least interval + 2 s)
belongs to a dead worker; ``fail_stale`` marks it FAIL and Optuna's
``RetryHeartbeatStaleTrialCallback`` enqueues a WAITING copy with the same parameters, so the
next ``ask`` retries exactly that point. A RUNNING trial that never beat (its worker died
right after ``ask``) is given one heartbeat when first seen, so it goes stale too. A worker
killed inside ``ask``, after the trial is created but before its sampled parameters are written,
leaves a trial with no parameters: its retry has none to repeat, and the sampler draws afresh.
"""

from __future__ import annotations

import os
import sqlite3
import warnings
import weakref
from pathlib import Path
from typing import Any

SQLITE_PREFIX = "sqlite:///"
POSTGRES_PREFIXES = ("postgresql://", "postgresql+psycopg2://", "postgres://")
_OPEN: dict[tuple[str, int | None], Any] = {}


def study_name(experiment: str, rung: str) -> str:
    """One Optuna study per rung: ``"<experiment>/<rung>"``."""
    return f"{experiment}/{rung}"


def resolve_url(url: str, base_dir: str | Path) -> str:
    """Make a relative SQLite path absolute against ``base_dir``; other URLs are unchanged."""
    if url.startswith(SQLITE_PREFIX):
        path = url[len(SQLITE_PREFIX):]
        if path and path != ":memory:" and not os.path.isabs(path):
            return SQLITE_PREFIX + str((Path(base_dir) / path).resolve())
    # SQLAlchemy 2.1 maps a bare postgresql:// to psycopg 3; the toolkit ships psycopg2.
    for bare in ("postgres://", "postgresql://"):
        if url.startswith(bare):
            return "postgresql+psycopg2://" + url[len(bare):]
    return url


def sqlite_path(url: str) -> Path | None:
    if url.startswith(SQLITE_PREFIX):
        path = url[len(SQLITE_PREFIX):]
        return None if path in ("", ":memory:") else Path(path)
    return None


def check_reachable(url: str) -> None:
    """Raise ValueError when the store at ``url`` cannot be used; create nothing.

    SQLite: an existing file must open as a database; otherwise the nearest existing parent
    folder must be writable (the folder and file are created later). PostgreSQL: a connection
    is opened and closed.
    """
    if url.startswith(SQLITE_PREFIX):
        path = sqlite_path(url)
        if path is None:
            return
        if path.exists():
            if path.is_dir():
                raise ValueError(f"storage {url!r} is a folder, not a database file")
            try:
                con = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
                try:
                    con.execute("select count(*) from sqlite_master").fetchone()
                finally:
                    con.close()
            except sqlite3.Error as exc:
                raise ValueError(f"storage {url!r} cannot be opened as SQLite: {exc}") from exc
            return
        parent = path.parent
        while not parent.exists():
            if parent == parent.parent:
                break
            parent = parent.parent
        if not parent.is_dir() or not os.access(parent, os.W_OK):
            raise ValueError(f"storage {url!r} cannot be created: {parent} is not a writable folder")
        return
    if url.startswith(POSTGRES_PREFIXES):
        import sqlalchemy

        url = resolve_url(url, ".")
        engine = sqlalchemy.create_engine(url, poolclass=sqlalchemy.pool.NullPool)
        try:
            with engine.connect() as con:
                con.execute(sqlalchemy.text("select 1"))
        except Exception as exc:  # any driver error means unreachable
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ValueError(f"storage {url!r} is unreachable: {first}") from exc
        finally:
            engine.dispose()
        return
    raise ValueError(f"storage {url!r} is not supported; use sqlite:///PATH or postgresql://...")


def open_storage(url: str, *, heartbeat_interval: int | None = None) -> Any:
    """The ``optuna.storages.RDBStorage`` at ``url`` (creating a SQLite folder), cached per process."""
    url = resolve_url(url, ".")
    key = (url, heartbeat_interval)
    if key in _OPEN:
        return _OPEN[key]
    import optuna
    from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback

    path = sqlite_path(url)
    engine_kwargs: dict[str, Any] = {}
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        # Several local workers share one file: wait for the lock instead of failing.
        engine_kwargs = {"connect_args": {"timeout": 60}}
    else:
        engine_kwargs = {"pool_pre_ping": True}
    kwargs: dict[str, Any] = {}
    if heartbeat_interval:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            callback = RetryHeartbeatStaleTrialCallback(max_retry=None)
        kwargs = {"heartbeat_interval": int(heartbeat_interval),
                  "grace_period": max(2 * int(heartbeat_interval), int(heartbeat_interval) + 2),
                  "heartbeat_stale_trial_callback": callback}
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    with warnings.catch_warnings():
        # The heartbeat arguments are marked experimental by Optuna; they are what we rely on.
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        storage = RDBStorage(url, engine_kwargs=engine_kwargs, **kwargs)
    if path is not None:
        _fast_sqlite(storage, path)
    _OPEN[key] = storage
    return storage


def _fast_sqlite(storage: Any, path: Path) -> None:
    """Write-ahead log and ``synchronous=NORMAL``: a commit no longer waits for an fsync (a
    killed process loses nothing; only a power cut can lose the last commits), which makes a
    trial's bookkeeping ~50x cheaper, and readers no longer block the writer (local workers)."""
    import sqlalchemy

    con = sqlite3.connect(str(path), timeout=60)
    try:
        con.execute("pragma journal_mode=wal")  # persistent in the file
    finally:
        con.close()

    def on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.execute("pragma synchronous=normal")

    sqlalchemy.event.listen(storage.engine, "connect", on_connect)
    storage.engine.dispose()  # reconnect with the pragma


def storage_exists(url: str) -> bool:
    """True when a store exists at ``url`` (a SQLite file; PostgreSQL is assumed to exist)."""
    path = sqlite_path(url)
    return path is None or path.exists()


def experiment_study_names(storage: Any, experiment: str) -> list[str]:
    """Names of the studies of ``experiment`` in the store (``"<experiment>/<rung>"``)."""
    prefix = experiment + "/"
    return sorted(s.study_name for s in storage.get_all_studies() if s.study_name.startswith(prefix))


# Trials this process has beaten on behalf of, per storage object. Weak keys: a storage's
# entry dies with it, so a later storage at the same address (Optuna wraps the store anew for
# each study it loads, and trial ids restart at 1 in each store) never inherits its trials.
_GIVEN_A_HEARTBEAT: weakref.WeakKeyDictionary[Any, set[int]] = weakref.WeakKeyDictionary()


def fail_stale(study: Any) -> None:
    """Fail the stale RUNNING trials of ``study`` and enqueue their retries (see module doc).

    A worker killed between ``ask`` and its trial's first heartbeat leaves a RUNNING trial
    with no heartbeat at all, which Optuna never counts as stale: a resumed sweep would wait
    for it forever. So, after failing the stale ones, the first time this process sees a
    RUNNING trial it records a heartbeat on the trial's behalf. A dead worker's trial then goes
    stale one grace period later; a live worker beats anyway, and an extra beat changes nothing.
    """
    import optuna
    from optuna.storages import fail_stale_trials
    from optuna.trial import TrialState

    storage = study._storage
    if storage.get_heartbeat_interval() is None:
        return
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        fail_stale_trials(study)
    given = _GIVEN_A_HEARTBEAT.setdefault(storage, set())
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        if trial._trial_id not in given:
            given.add(trial._trial_id)
            storage.record_heartbeat(trial._trial_id)


def close_all() -> None:
    """Dispose every cached engine (tests drop their databases afterwards)."""
    for storage in _OPEN.values():
        try:
            storage.engine.dispose()
        except Exception:
            pass
    _OPEN.clear()
