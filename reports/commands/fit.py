"""``ladder fit EXPERIMENT.toml``: per-rung optima and trends from the store; writes fits.json.

Works on a store filled by ``ladder sweep`` / ``ladder run`` or by ``ladder import``; imported
runs need no experiment file: ``ladder fit --experiment NAME --storage URL``
(``proxy.sweep.imported``), with ``--axes``, ``--size`` and (plan, review, report) ``--at`` for
what a file's ``[fit]`` and ``[target]`` tables would say. The
helpers here (``run_dir``, ``write_json``, ``load``) are shared by ``plan``, ``review`` and
``run``.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any


def add_common(p: argparse.ArgumentParser, *, store_only: bool = True) -> None:
    p.add_argument("experiment", nargs="?" if store_only else None, metavar="EXPERIMENT.toml",
                   help="experiment file (TOML)" + ("; or --experiment NAME for imported runs" if store_only else ""))
    if store_only:
        p.add_argument("--experiment", dest="experiment_name", default=None, metavar="NAME",
                       help="an imported experiment in --storage, read without an experiment file")
    p.add_argument("--storage", default=None, help="store URL overriding experiment.storage")
    p.add_argument("--out", default=None,
                   help="folder for the JSON artifacts (default: the store's folder for SQLite, "
                        "else runs/<name>/ beside the experiment file)")
    p.add_argument("--axes", action="append", default=[], metavar="KNOB=AXIS[+AXIS]",
                   help="size axes of a knob's trend: params_active, params_total, tokens, flops, or a "
                        "parameter axis with tokens (lr=params_total+tokens); repeatable; overrides [fit] axes")
    p.add_argument("--size", default=None, choices=("params_active", "params_total"),
                   help="the parameter axis of the default trends (overrides [fit] size)")
    p.add_argument("--at", action="append", default=[], metavar="AXIS=VALUE[,AXIS=VALUE]",
                   help="plan for a target given by sizes: params_total, tokens, and optionally params_active "
                        "and flops (--at params_total=7e9,tokens=1.4e12); overrides [target]")


def parse_axes(items: list[str]) -> dict[str, tuple[str, ...]]:
    """``["lr=params_total+tokens", "batch_size=tokens"]`` -> {knob: axes}, each checked."""
    from fits.axes import check_axes

    out: dict[str, tuple[str, ...]] = {}
    for item in items:
        if "=" not in item:
            raise ValueError(f"--axes {item!r}: expected KNOB=AXIS[+AXIS]")
        knob, axes = (x.strip() for x in item.split("=", 1))
        out[knob] = check_axes([a.strip() for a in axes.split("+")], f"--axes {item}")
    return out


def parse_at(items: list[str]) -> Any:
    """``["params_total=7e9,tokens=1.4e12"]`` -> a ``fits.axes.SizePoint`` (None when empty)."""
    from fits.axes import point_from_mapping

    if not items:
        return None
    values: dict[str, float] = {}
    for part in (p for item in items for p in item.split(",") if p.strip()):
        if "=" not in part:
            raise ValueError(f"--at {part!r}: expected AXIS=VALUE")
        key, text = (x.strip() for x in part.split("=", 1))
        if key not in ("params_total", "params_active", "tokens", "flops"):
            raise ValueError(f"--at {part!r}: unknown size {key!r}; give params_total, params_active, tokens, flops")
        try:
            values[key] = float(text)
        except ValueError:
            raise ValueError(f"--at {part!r}: {text!r} is not a number") from None
    return point_from_mapping(values)


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("fit", help="fit per-rung optima and trends; write fits.json",
                              description="Fit each rung's optimum and each knob's trend across rungs from "
                                          "the trial store, print them and write fits.json.")
    add_common(p)
    p.set_defaults(func=run)


def load(args: argparse.Namespace) -> Any:
    """The experiment of a command: its file, or (``--experiment NAME``) the imported runs in
    ``--storage``; then ``--axes``, ``--size`` and ``--at`` applied."""
    import dataclasses

    from proxy.sweep.experiment import load_experiment
    from reports.commands.sweep import storage_override

    name = getattr(args, "experiment_name", None)
    if name is not None and args.experiment is not None:
        raise ValueError("give an experiment file or --experiment NAME, not both")
    if name is not None:
        from proxy.sweep.imported import experiment_from_store

        if args.storage is None:
            from reports.commands.import_runs import default_storage

            url = default_storage(name)
        else:
            url = storage_override(args.storage)
        exp = experiment_from_store(name, url)
    elif args.experiment is None:
        raise ValueError("name an experiment file, or --experiment NAME --storage URL for imported runs")
    else:
        exp = load_experiment(args.experiment, storage=storage_override(args.storage))
    axes = parse_axes(getattr(args, "axes", []) or [])
    size = getattr(args, "size", None)
    if axes or size:
        exp = dataclasses.replace(exp, fit=dataclasses.replace(exp.fit, axes=dict(exp.fit.axes) | axes,
                                                                 size=size or exp.fit.size))
    at = parse_at(getattr(args, "at", []) or [])
    if at is not None:
        exp = exp.with_target_sizes(at)
    return exp


def open_store(experiment: Any, *, read_only: bool = True) -> Any:
    """The experiment's trial store, opened once per command and passed to every step that reads
    or writes it (one connection pool, one heartbeat setting). The reading commands (fit, plan,
    review, report) open it ``read_only``: a store that is not there is an error, never created."""
    from proxy.sweep.identity import compare_identity
    from proxy.sweep.store import open_storage

    storage = open_storage(experiment.storage, heartbeat_interval=experiment.heartbeat_interval,
                           read_only=read_only)
    if read_only:   # a rung swept with other settings than the file's: say so before fitting it
        compare_identity(experiment, storage, experiment.rungs)
    return storage


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
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")   # one a process: two runs on one folder
    tmp.write_text(json.dumps(doc, indent=2, sort_keys=False, allow_nan=False) + "\n")
    tmp.replace(path)
    return path


def fit_and_write(experiment: Any, storage: Any, out: str | None, command: str, *, reuse: bool = False) -> Any:
    """Fit the store and write fits.json; with ``reuse`` (plan, review), a fits.json fitted from
    the trials the store holds now is read instead (``transfer.fits_cache``)."""
    import sys

    from transfer.extrapolate import fit_all, fits_json
    from transfer.fits_cache import cached_fits

    folder = run_dir(experiment, out)
    if reuse:
        fits, reused = cached_fits(experiment, storage, folder)
        if reused:
            print(f"fits.json matches the store's trials: reused, not refitted ({folder / 'fits.json'})",
                  file=sys.stderr)
    else:
        fits = fit_all(experiment, storage)
    write_json(folder / "fits.json", fits_json(experiment, fits, command))
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
