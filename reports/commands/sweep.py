"""``ladder sweep EXPERIMENT.toml``: run (or resume) the sweep of an experiment file."""

from __future__ import annotations

import argparse
import os
import sys

from reports.commands.train import add_device_argument


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "sweep", help="run or resume the hyperparameter sweep of an experiment file",
        description=("Run the sweep described by an experiment file: one Optuna study per rung "
                     "in the trial store. A killed sweep resumes where it stopped (completed "
                     "trials are kept, the interrupted one is retried)."))
    p.add_argument("experiment", help="experiment file (TOML)")
    p.add_argument("--rung", action="append", default=None,
                   help="sweep only this rung (repeatable); default: every rung in order")
    p.add_argument("--workers", type=int, default=None,
                   help="local worker processes sharing the store (default: experiment.workers, whose 'auto' "
                        "is one per `threads` CPU cores; 1 for the simulated backend or a named accelerator)")
    p.add_argument("--storage", default=None,
                   help="store URL overriding experiment.storage (sqlite:///PATH or postgresql://...)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    add_device_argument(p, default=None)
    add_identity_arguments(p)
    p.set_defaults(func=run)


def add_identity_arguments(p: argparse.ArgumentParser) -> None:
    """--new-name and --force: what to do when the store holds rungs swept with other settings."""
    p.add_argument("--new-name", default=None, metavar="NAME",
                   help="sweep under this experiment name (a new experiment in the same store): for an "
                        "edited file whose rungs the store holds under other settings")
    p.add_argument("--force", action="store_true",
                   help="keep the trials of rungs swept with other settings and go on (the store records "
                        "the settings they replaced)")


def with_identity(exp, args: argparse.Namespace):  # type: ignore[no-untyped-def]
    """The experiment under ``--new-name`` (checked like experiment.name), or as it is."""
    if not getattr(args, "new_name", None):
        return exp
    import dataclasses

    from proxy.sweep.fields import _name

    return dataclasses.replace(exp, name=_name(args.new_name, "--new-name"))


def storage_override(url: str | None) -> str | None:
    """A relative SQLite path given on the command line is relative to the working folder."""
    if url is None:
        return None
    from proxy.sweep.store import resolve_url

    return resolve_url(url, os.getcwd())


def run(args: argparse.Namespace) -> int:
    from proxy.sweep.experiment import load_experiment, resolve_workers, with_device
    from proxy.sweep.runner import run_sweep

    if args.workers is not None and args.workers < 1:
        raise ValueError(f"--workers must be >= 1, got {args.workers}")
    exp = with_identity(with_device(load_experiment(args.experiment, storage=storage_override(args.storage)),
                                    args.device), args)
    workers = resolve_workers(exp, args.workers)
    if args.rung:
        for name in args.rung:
            exp.rung(name)  # ValueError naming an unknown rung, before anything is created
    bars: dict[str, object] = {}
    callback = None
    if not args.no_progress:
        from tqdm import tqdm

        def callback(p) -> None:  # type: ignore[no-untyped-def]
            bar = bars.get(p.rung)
            if bar is None:
                bar = bars[p.rung] = tqdm(total=p.requested, desc=f"{exp.name}/{p.rung}",
                                          unit="trial", file=sys.stderr, leave=True)
            bar.n = p.complete
            best = "-" if p.best_loss is None else f"{p.best_loss:.4f}"
            spent = (f"{p.spent_flops:.2e}" if p.budget_flops is None
                     else f"{100 * p.spent_flops / p.budget_flops:.1f}%")
            bar.set_postfix_str(f"best={best} diverged={p.diverged} flops={spent}")
            bar.refresh()

    try:
        summary = run_sweep(exp, rungs=tuple(args.rung) if args.rung else None,
                            workers=workers, progress=callback, force=args.force)
    finally:
        for bar in bars.values():
            bar.close()  # type: ignore[attr-defined]
    for p in summary.rungs:
        best = "-" if p.best_loss is None else f"{p.best_loss:.4f}"
        print(f"{exp.name}/{p.rung}: {p.complete}/{p.requested} complete, "
              f"{p.diverged} diverged, best loss {best}")
    if summary.message:
        print(summary.message)
    print(f"store: {exp.storage}")
    return 0
