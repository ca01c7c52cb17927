"""The trial store: Optuna's RDB storage named by URL.

* ``sqlite:///relative/path.db`` (resolved against a base folder, the experiment file's
  folder) or ``sqlite:////absolute/path.db``: the embedded default, one machine; the folder is
  created when the store is first opened (never while an experiment file is validated).
* ``postgresql://user@host:port/db``: many workers on many machines (psycopg2 driver).

Stale trials: the store is opened with a heartbeat (``heartbeat_interval`` seconds); a RUNNING
trial whose heartbeat is older than the grace period (``2 * interval``, at least interval + 2 s)
belongs to a dead worker; ``fail_stale`` marks it FAIL and enqueues a WAITING copy with the
same parameters (``retry``), so the next ``ask`` retries exactly that point. Many processes
look for stale trials at once, so the failing is a claim: one ``UPDATE ... WHERE state =
'RUNNING'`` statement, atomic on both back ends (SQLite takes the write lock for it; PostgreSQL
re-checks the row after waiting on its lock), and only the process whose statement changed the
row enqueues the retry: exactly one retry per stale trial. A RUNNING trial that never beat (its worker died
right after ``ask``) is given one heartbeat when first seen, so it goes stale too. A worker
killed inside ``ask``, after the trial is created but before its sampled parameters are written,
leaves a trial with no parameters: its retry has none to repeat, and the sampler draws afresh.
"""

from __future__ import annotations

import contextlib
import os
import re
import sqlite3
import warnings
import weakref
from pathlib import Path
from typing import Any, Iterator

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
            raise ValueError(f"storage {url!r} is in memory: its trials would be lost with the process "
                             "(and each worker would see its own); give a file, sqlite:///PATH")
        if path.exists():
            if path.is_dir():
                raise ValueError(f"storage {url!r} is a folder, not a database file")
            if not path.is_file():
                raise ValueError(f"storage {url!r} is not a regular file (a device or a pipe)")
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


_LAST_OPENED: list[str] = []   # the URL of the store this process opened last (store_error's default)


def display_url(url: str) -> str:
    """``url`` as a message shows it: a SQLite store by its path, a server URL with its password
    masked."""
    path = sqlite_path(url)
    if path is not None:
        return str(path)
    return re.sub(r"(//[^:/@]+):[^@/]*@", r"\1:***@", url)


def last_opened_url() -> str | None:
    """The URL of the store this process opened last, or None."""
    return _LAST_OPENED[-1] if _LAST_OPENED else None


def open_storage(url: str, *, heartbeat_interval: int | None = None, read_only: bool = False) -> Any:
    """The ``optuna.storages.RDBStorage`` at ``url`` (creating a SQLite folder), cached per process.

    ``read_only``: for the commands that only read (status, fit, plan, review, report, export):
    the store must already exist and be a trial store (``check_store``); nothing is created or
    written, not even the SQLite journal mode. An in-memory SQLite store is refused: each
    connection would see its own empty database, and every result would be thrown away."""
    url = resolve_url(url, ".")
    if url.startswith(SQLITE_PREFIX) and url[len(SQLITE_PREFIX):] in ("", ":memory:"):
        raise ValueError(f"storage {url!r} is in memory: its trials would be lost with the process "
                         "(and each worker would see its own); give a file, sqlite:///PATH")
    _LAST_OPENED[:] = [url]
    if read_only:
        check_store(url)
    key = (url, heartbeat_interval, read_only)
    if key in _OPEN:
        return _OPEN[key]
    import optuna
    from optuna.storages import RDBStorage

    path = sqlite_path(url)
    engine_kwargs: dict[str, Any] = {}
    if path is not None and not read_only:
        _refuse_non_store(path)   # a damaged store would get its lost tables back, empty
        path.parent.mkdir(parents=True, exist_ok=True)
    if path is not None:
        # Several local workers share one file: wait for the lock instead of failing.
        engine_kwargs = {"connect_args": {"timeout": 60}}
    else:
        engine_kwargs = {"pool_pre_ping": True}
    kwargs: dict[str, Any] = {}
    if heartbeat_interval:
        # No stale-trial callback: fail_stale claims and retries stale trials itself, atomically.
        kwargs = {"heartbeat_interval": int(heartbeat_interval),
                  "grace_period": max(2 * int(heartbeat_interval), int(heartbeat_interval) + 2)}
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    if read_only:
        # check_store found every table: Optuna is told not to create any (nor its version row).
        kwargs["skip_table_creation"] = True
    with (contextlib.nullcontext() if read_only else _schema_lock(url, path)), warnings.catch_warnings():
        # The heartbeat arguments are marked experimental by Optuna; they are what we rely on.
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        try:
            storage = RDBStorage(url, engine_kwargs=engine_kwargs, **kwargs)
        except RuntimeError as exc:   # Optuna: the store's schema is newer (or older) than it knows
            raise ValueError(f"storage {url!r} cannot be used by this Optuna "
                             f"({optuna.__version__}): {str(exc).splitlines()[0]}") from exc
        if path is not None and not read_only:
            _fast_sqlite(storage, path)
    _OPEN[key] = storage
    return storage


SCHEMA_LOCK_KEY = 0x70726F78   # the PostgreSQL advisory lock taken while a schema may be created


@contextlib.contextmanager
def _schema_lock(url: str, path: Path | None) -> Iterator[None]:
    """Serialise the creation of a store's tables across processes: Optuna creates them on
    first open with check-then-create statements, so processes starting together on a new
    store collide (a duplicate ``alembic_version`` row, ``table trials already exists``,
    PostgreSQL's ``pg_type`` unique index). SQLite: an exclusive ``flock`` on ``<store>.lock``
    beside the file, taken only while the schema is not complete (a finished store is opened
    without writing anything). PostgreSQL: a session advisory lock held while Optuna opens it."""
    if path is not None:
        if _sqlite_schema_complete(path):
            yield
            return
        import fcntl

        with open(path.with_name(path.name + ".lock"), "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                _refuse_non_store(path)   # under the lock: no other process is creating it now
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)
        return
    if not url.startswith(POSTGRES_PREFIXES):
        yield
        return
    import sqlalchemy

    engine = sqlalchemy.create_engine(url, poolclass=sqlalchemy.pool.NullPool)
    try:
        with engine.connect() as con:
            con.execute(sqlalchemy.text("SELECT pg_advisory_lock(:k)"), {"k": SCHEMA_LOCK_KEY})
            con.commit()
            try:
                yield
            finally:
                con.execute(sqlalchemy.text("SELECT pg_advisory_unlock(:k)"), {"k": SCHEMA_LOCK_KEY})
                con.commit()
    finally:
        engine.dispose()


def _sqlite_tables(path: Path, *, quick_check: bool = False) -> tuple[set[str], str | None]:
    """The table names of an existing SQLite file, read-only, and with ``quick_check`` the first
    line of SQLite's ``pragma quick_check`` ("ok" when undamaged). An empty (0-byte) file, or
    one SQLite cannot read, is a one-line ValueError naming the file."""
    if path.stat().st_size == 0:
        raise ValueError(f"the trial store {path} is an empty file (0 bytes): not a store; remove it "
                         "to start afresh")
    try:
        con = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=60)
        try:
            tables = {r[0] for r in con.execute("select name from sqlite_master where type = 'table'")}
            check = con.execute("pragma quick_check").fetchone()[0] if quick_check else None
        finally:
            con.close()
    except sqlite3.DatabaseError as exc:
        raise ValueError(f"the trial store {path} cannot be read as SQLite: {exc}") from exc
    return tables, check


def _refuse_non_store(path: Path) -> None:
    """Before Optuna opens an existing file to write (and creates any table it lacks): refuse an
    empty (0-byte) file, which is a store that lost its contents rather than a new one, someone
    else's database, and a trial store missing some of its tables (Optuna would re-create them
    empty and the sweep would start over in silence)."""
    if not path.exists():
        return
    if not path.is_file():
        raise ValueError(f"the trial store {path} is a folder or a device, not a database file")
    tables, _ = _sqlite_tables(path)
    if tables and "studies" not in tables:
        raise ValueError(f"{path} is a SQLite database but not a trial store (it has no Optuna tables); "
                         "name another file")
    missing = [t for t in OPTUNA_TABLES if t not in tables]
    # Only a store whose creation finished (its version rows are written last) can be missing a
    # table: a store another process is creating right now is not damaged.
    if tables and missing and _sqlite_version_rows(path):
        raise ValueError(f"the trial store {path} is damaged: it lacks the table(s) {', '.join(missing)}; "
                         "restore it from a copy, or name another file")


def _sqlite_version_rows(path: Path, tables: tuple[str, ...] = ("version_info",)) -> bool:
    """True when each of ``tables`` (Optuna's version tables) holds a row: they are written once
    the store's tables were created (a read-only look; False when the file cannot say)."""
    if not path.is_file() or path.stat().st_size == 0:
        return False
    try:
        con = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=60)
        try:
            return all(con.execute(f"select count(*) from {t}").fetchone()[0] > 0 for t in tables)
        finally:
            con.close()
    except sqlite3.Error:
        return False


def _sqlite_schema_complete(path: Path) -> bool:
    """True when the file holds Optuna's tables with their version rows (read-only look)."""
    return _sqlite_version_rows(path, ("version_info", "alembic_version"))


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
        # The driver's own transaction handling starts a transaction only at the first write, so
        # Optuna's read-then-update steps (taking a WAITING trial to RUNNING, above all) ran their
        # read outside it: two workers both read WAITING and both took the same enqueued trial,
        # and one trained it for nothing. Every transaction now begins IMMEDIATE (below): it holds
        # the write lock from its first statement, the second worker waits, then reads RUNNING and
        # takes another trial. Readers are not blocked (write-ahead log).
        dbapi_connection.isolation_level = None

    def on_begin(connection: Any) -> None:
        connection.exec_driver_sql("BEGIN IMMEDIATE")

    sqlalchemy.event.listen(storage.engine, "connect", on_connect)
    sqlalchemy.event.listen(storage.engine, "begin", on_begin)
    storage.engine.dispose()  # reconnect with the pragma


OPTUNA_TABLES = ("studies", "trials", "trial_params", "trial_values", "trial_user_attributes",
                 "study_user_attributes", "version_info", "alembic_version")


def check_store(url: str) -> None:
    """Raise ValueError, one line naming the store and what is wrong, unless ``url`` holds a
    trial store: a missing file, a folder, an empty (0-byte) file, a file that is not SQLite or is
    damaged, a SQLite database without Optuna's tables (someone else's), a PostgreSQL database
    without them. Reads only."""
    url = resolve_url(url, ".")
    path = sqlite_path(url)
    if path is not None:
        if not path.exists():
            raise ValueError(f"no trial store at {path} (run `ladder sweep` or `ladder import` first)")
        if not path.is_file():
            raise ValueError(f"storage {url!r} is a folder or a device, not a database file")
        tables, check = _sqlite_tables(path, quick_check=True)
        if not set(OPTUNA_TABLES) <= tables:
            raise ValueError(f"{path} is a SQLite database but not a trial store (it lacks "
                             f"{', '.join(t for t in OPTUNA_TABLES if t not in tables)})")
        if check != "ok":
            raise ValueError(f"the trial store {path} is damaged: {check}")
        return
    if url.startswith(POSTGRES_PREFIXES):
        import sqlalchemy

        engine = sqlalchemy.create_engine(url, poolclass=sqlalchemy.pool.NullPool)
        try:
            with engine.connect() as con:
                tables = set(sqlalchemy.inspect(con).get_table_names())
        except Exception as exc:   # any driver error means unreachable
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ValueError(f"storage {url!r} is unreachable: {first}") from exc
        finally:
            engine.dispose()
        if not set(OPTUNA_TABLES) <= tables:
            raise ValueError(f"storage {url!r} holds no trial store (run `ladder sweep` or `ladder import` first)")
        return
    raise ValueError(f"storage {url!r} is not supported; use sqlite:///PATH or postgresql://...")


def store_error(exc: BaseException, url: str | None = None) -> str | None:
    """A one-line description of a store failure met while reading or writing (a damaged page,
    a dropped table, a lost connection), naming the store at ``url`` when given (a password in
    a PostgreSQL URL is masked), or None when ``exc`` is not one."""
    try:
        import sqlalchemy.exc
        from optuna.exceptions import StorageInternalError
    except ImportError:
        return None
    if isinstance(exc, (StorageInternalError, sqlalchemy.exc.DBAPIError, sqlite3.DatabaseError)):
        cause = exc.__cause__ or exc.__context__ or exc
        first = (str(getattr(cause, "orig", None) or cause).strip().splitlines() or [type(cause).__name__])[0]
        url = url or last_opened_url()
        where = f" {display_url(url)}" if url else ""
        return f"the trial store{where} failed: {first}"
    return None


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
    from optuna.trial import TrialState

    storage = study._storage
    if storage.get_heartbeat_interval() is None:
        return
    rdb = rdb_storage(storage)
    for trial_id in rdb._get_stale_trial_ids(study._study_id):
        if claim_failed(rdb, trial_id):
            retry(study, storage.get_trial(trial_id))
    given = _GIVEN_A_HEARTBEAT.setdefault(storage, set())
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        if trial._trial_id not in given:
            given.add(trial._trial_id)
            storage.record_heartbeat(trial._trial_id)


def rdb_storage(storage: Any) -> Any:
    """The ``RDBStorage`` under Optuna's cache wrapper (a study's ``_storage``), or ``storage``."""
    return getattr(storage, "_backend", storage)


def claim_failed(storage: Any, trial_id: int) -> bool:
    """Mark a RUNNING trial FAIL in one statement; True only for the caller whose statement
    changed it (the one that may enqueue its retry). The states are literals: PostgreSQL stores
    them as an enum type that a bound string parameter would not match."""
    import sqlalchemy

    with rdb_storage(storage).engine.begin() as con:
        changed = con.execute(sqlalchemy.text(
            "UPDATE trials SET state = 'FAIL', datetime_complete = CURRENT_TIMESTAMP "
            "WHERE trial_id = :id AND state = 'RUNNING'"), {"id": int(trial_id)}).rowcount
    return changed == 1


def claim_once(study: Any, what: str) -> bool:
    """True for exactly one caller, whatever the processes: an ``INSERT`` of the study attribute
    ``claim:<what>`` that the store's unique (study, key) index lets through once. For the points
    a process queues on a shared rung (its baseline, its replicates, the re-centred start):
    Optuna's ``skip_if_exists`` is a check-then-insert, and two ``ladder run``s on one store both
    passed it."""
    import sqlalchemy
    import sqlalchemy.exc

    try:
        with rdb_storage(study._storage).engine.begin() as con:
            con.execute(sqlalchemy.text(
                "INSERT INTO study_user_attributes (study_id, key, value_json) VALUES (:sid, :key, 'true')"),
                {"sid": int(study._study_id), "key": f"claim:{what}"})
    except sqlalchemy.exc.IntegrityError:
        return False
    return True


# What a retry keeps of the failed trial's user attributes: those that name the point (set when
# it was enqueued), not those its first run wrote (an error, a worker, partial results).
RETRY_KEEPS = ("replicate_of", "replicate_seeds", "baseline")


def retry(study: Any, failed: Any) -> None:
    """Enqueue a WAITING copy of the FAIL trial ``failed`` with the same parameters (Optuna's
    ``RetryHeartbeatStaleTrialCallback`` layout: ``failed_trial``, ``retry_history`` and
    ``fixed_params`` system attributes), starting from clean user attributes."""
    import optuna

    system_attrs = {k: v for k, v in failed.system_attrs.items() if k != "retry_history"}
    system_attrs.setdefault("failed_trial", failed.number)
    system_attrs["retry_history"] = list(failed.system_attrs.get("retry_history", [])) + [failed.number]
    system_attrs["fixed_params"] = dict(failed.params) or dict(system_attrs.get("fixed_params", {}))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        study.add_trial(optuna.trial.create_trial(
            state=optuna.trial.TrialState.WAITING, params=failed.params, distributions=failed.distributions,
            user_attrs={k: v for k, v in failed.user_attrs.items() if k in RETRY_KEEPS},
            system_attrs=system_attrs))


def close_all() -> None:
    """Dispose every cached engine (tests drop their databases afterwards)."""
    for storage in _OPEN.values():
        try:
            storage.engine.dispose()
        except Exception:
            pass
    _OPEN.clear()
