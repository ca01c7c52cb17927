"""``ladder status EXPERIMENT.toml``: where the sweep of an experiment stands."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "status", help="table of rungs: trials complete/diverged/failed, best loss, FLOPs",
        description="Print the state of an experiment's sweep from its trial store.")
    p.add_argument("experiment", nargs="?", metavar="EXPERIMENT.toml",
                   help="experiment file (TOML); or --experiment NAME for imported runs")
    p.add_argument("--experiment", dest="experiment_name", default=None, metavar="NAME",
                   help="an imported experiment in --storage, read without an experiment file")
    p.add_argument("--storage", default=None, help="store URL overriding experiment.storage")
    p.set_defaults(func=run)


def _fmt(value: float | None, spec: str = ".4f") -> str:
    return "-" if value is None else format(value, spec)


def run(args: argparse.Namespace) -> int:
    from proxy.sweep.experiment import load_experiment
    from proxy.sweep.identity import compare_identity
    from proxy.sweep.ledger import ledger
    from proxy.sweep.runner import rung_progress
    from proxy.sweep.store import open_storage, storage_exists

    from reports.commands.sweep import storage_override

    if args.experiment_name is not None or args.experiment is None:
        from reports.commands.fit import load

        args.axes, args.size, args.at = [], None, []
        exp = load(args)
    else:
        exp = load_experiment(args.experiment, storage=storage_override(args.storage))
    if not storage_exists(exp.storage):
        print(f"{exp.name}: no trials yet (store {exp.storage} does not exist)")
        return 0
    storage = open_storage(exp.storage, read_only=True)
    compare_identity(exp, storage, exp.rungs)
    book = ledger(storage, exp)
    header = f"{'rung':<12} {'complete':>9} {'diverged':>8} {'failed':>6} {'best loss':>10} " \
             f"{'FLOPs':>10} {'of target':>9}  best params"
    print(f"experiment {exp.name}  (store {exp.storage})")
    if exp.rungs:
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
    imported_rungs(exp, storage)
    line = f"total FLOPs {book.total_flops:.3e}"
    if book.fraction_of_target is not None:
        line += f" = {100 * book.fraction_of_target:.3f}% of the target run ({book.target_flops:.3e})"
    if book.budget_flops is not None:
        line += f"; budget {book.budget_flops:.3e} ({100 * (book.fraction_of_budget or 0):.1f}% spent)"
    print(line)
    return 0


def imported_rungs(exp, storage) -> None:
    """The store's rungs that are not in the experiment's ladder (imported runs), with their sizes."""
    from proxy.sweep.snapshot import read_experiment

    ladder = {r.name for r in exp.rungs}
    rows = []
    for sname, snap in read_experiment(storage, exp.name).items():
        rung = sname[len(exp.name) + 1:]
        done = snap.complete()
        if rung in ladder or not done:
            continue
        a = done[0].user_attrs
        div = sum(1 for t in done if t.user_attrs.get("diverged"))
        best = min((t.value for t in done if not t.user_attrs.get("diverged") and t.value is not None), default=None)
        rows.append((float(a.get("params_active", 0)), rung, len(done), div, best, a))
    if not rows:
        return
    header = f"{'imported rung':<34} {'runs':>5} {'diverged':>8} {'best loss':>10} {'N_total':>10} {'N_active':>10} " \
             f"{'tokens':>10}"
    print(("\n" if ladder else "") + header)
    print("-" * len(header))
    for _, rung, n, div, best, a in sorted(rows):
        print(f"{rung:<34} {n:>5} {div:>8} {_fmt(best):>10} {float(a.get('params_total', 0)):>10.4g} "
              f"{float(a.get('params_active', 0)):>10.4g} {float(a.get('tokens', 0)):>10.4g}")
