"""``ladder status EXPERIMENT.toml``: where the sweep of an experiment stands."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "status", help="table of rungs: trials complete/diverged/failed, best loss, FLOPs",
        description="Print the state of an experiment's sweep from its trial store.")
    p.add_argument("experiment", help="experiment file (TOML)")
    p.add_argument("--storage", default=None, help="store URL overriding experiment.storage")
    p.set_defaults(func=run)


def _fmt(value: float | None, spec: str = ".4f") -> str:
    return "-" if value is None else format(value, spec)


def run(args: argparse.Namespace) -> int:
    from proxy.sweep.experiment import load_experiment
    from proxy.sweep.ledger import ledger
    from proxy.sweep.runner import rung_progress
    from proxy.sweep.store import open_storage, storage_exists

    from reports.commands.sweep import storage_override

    exp = load_experiment(args.experiment, storage=storage_override(args.storage))
    if not storage_exists(exp.storage):
        print(f"{exp.name}: no trials yet (store {exp.storage} does not exist)")
        return 0
    storage = open_storage(exp.storage, read_only=True)
    book = ledger(storage, exp)
    header = f"{'rung':<12} {'complete':>9} {'diverged':>8} {'failed':>6} {'best loss':>10} " \
             f"{'FLOPs':>10} {'of target':>9}  best params"
    print(f"experiment {exp.name}  (store {exp.storage})")
    print(header)
    print("-" * len(header))
    for rung in exp.rungs:
        p = rung_progress(exp, rung, storage)
        frac = book.rung_fraction(rung.name)
        params = ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                           for k, v in p.best_params.items())
        print(f"{rung.name:<12} {p.complete:>4}/{p.requested:<4} {p.diverged:>8} {p.failed:>6} "
              f"{_fmt(p.best_loss):>10} {p.spent_flops:>10.3e} "
              f"{_fmt(None if frac is None else 100 * frac, '.3f') + '%':>9}  {params}")
    line = f"total FLOPs {book.total_flops:.3e}"
    if book.fraction_of_target is not None:
        line += f" = {100 * book.fraction_of_target:.3f}% of the target run ({book.target_flops:.3e})"
    if book.budget_flops is not None:
        line += f"; budget {book.budget_flops:.3e} ({100 * (book.fraction_of_budget or 0):.1f}% spent)"
    print(line)
    return 0
