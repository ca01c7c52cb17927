"""``ladder fit EXPERIMENT.toml``: per-rung optima and trends from the store; writes fits.json.

Works on a store filled by ``ladder sweep`` / ``ladder run`` or by ``ladder import``. The
helpers here (``run_dir``, ``write_json``, ``load``) are shared by ``plan``, ``review`` and
``run``.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any


def add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("experiment", help="experiment file (TOML)")
    p.add_argument("--storage", default=None, help="store URL overriding experiment.storage")
    p.add_argument("--out", default=None,
                   help="folder for the JSON artifacts (default: the store's folder for SQLite, "
                        "else runs/<name>/ beside the experiment file)")


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("fit", help="fit per-rung optima and trends; write fits.json",
                              description="Fit each rung's optimum and each knob's trend across rungs from "
                                          "the trial store, print them and write fits.json.")
    add_common(p)
    p.set_defaults(func=run)


def load(args: argparse.Namespace) -> Any:
    from proxy.sweep.experiment import load_experiment
    from reports.commands.sweep import storage_override

    return load_experiment(args.experiment, storage=storage_override(args.storage))


def open_store(experiment: Any, *, read_only: bool = True) -> Any:
    """The experiment's trial store, opened once per command and passed to every step that reads
    or writes it (one connection pool, one heartbeat setting). The reading commands (fit, plan,
    review, report) open it ``read_only``: a store that is not there is an error, never created."""
    from proxy.sweep.store import open_storage

    return open_storage(experiment.storage, heartbeat_interval=experiment.heartbeat_interval,
                        read_only=read_only)


def run_dir(experiment: Any, out: str | None = None) -> Path:
    """Where an experiment's artifacts live: ``out``, else the SQLite store's folder
    (``runs/<name>/`` by default), else ``runs/<name>/`` beside the experiment file."""
    from proxy.sweep.store import sqlite_path

    if out:
        path = Path(out)
    elif sqlite_path(experiment.storage) is not None:
        path = sqlite_path(experiment.storage).parent
    else:
        base = Path(experiment.path).parent if experiment.path else Path(os.getcwd())
        path = base / "runs" / experiment.name
    path.mkdir(parents=True, exist_ok=True)
    return path


def write_json(path: Path, doc: Any) -> Path:
    """Write ``doc`` atomically (a temporary file renamed), so a reader never sees half a file;
    non-finite numbers are written as null."""
    from transfer.plan import _jsonable

    doc = _jsonable(doc)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(doc, indent=2, sort_keys=False, allow_nan=False) + "\n")
    tmp.replace(path)
    return path


def fit_and_write(experiment: Any, storage: Any, out: str | None, command: str) -> Any:
    from transfer.extrapolate import fit_all, fits_json

    fits = fit_all(experiment, storage)
    write_json(run_dir(experiment, out) / "fits.json", fits_json(experiment, fits, command))
    return fits


def run(args: argparse.Namespace) -> int:
    exp = load(args)
    fits = fit_and_write(exp, open_store(exp), args.out, "ladder fit")
    for f in fits.rungs:
        print(f.optimum.summary() if f.optimum is not None else f"Rung {f.rung}: no optimum ({f.error})")
    for name, trend in fits.trends.items():
        print(f"\n[{name}] " + trend.summary())
    for name, err in fits.trend_errors.items():
        print(f"\n[{name}] no trend: {err}")
    print("\n" + (fits.loss_law.summary() if fits.loss_law is not None else f"loss law: {fits.loss_error}"))
    print(f"\nwrote {run_dir(exp, args.out) / 'fits.json'}")
    return 0
