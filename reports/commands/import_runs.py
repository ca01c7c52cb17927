"""``ladder import FILE.csv --experiment NAME``: bring runs made elsewhere into the store."""

from __future__ import annotations

import argparse
import os


def default_storage(experiment: str) -> str:
    """``sqlite:///runs/<experiment>/trials.db`` under the working folder."""
    from proxy.sweep.store import resolve_url

    return resolve_url(f"sqlite:///runs/{experiment}/trials.db", os.getcwd())


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "import", help="import runs made elsewhere (CSV) into an experiment's trial store",
        description=("Add the rows of a CSV as completed trials, one study per rung (a rung per "
                     "distinct params_total/tokens cell unless a column maps to 'rung'). The "
                     "whole file is checked first: a bad row leaves the store untouched."))
    p.add_argument("csv", help="CSV file with a header row")
    p.add_argument("--experiment", required=True, help="experiment name (studies '<name>/<rung>')")
    p.add_argument("--storage", default=None,
                   help="store URL (default: sqlite:///runs/<experiment>/trials.db here)")
    p.add_argument("--map", action="append", default=[], metavar="COLUMN=FIELD",
                   help="map a CSV column to a field (loss, params_total, params_active, tokens, "
                        "rung, seed, diverged, flops, lr, batch_size, ...); repeatable")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from proxy.sweep.external import import_csv, parse_mapping

    from reports.commands.sweep import storage_override

    url = storage_override(args.storage) or default_storage(args.experiment)
    plan = import_csv(args.csv, args.experiment, url, parse_mapping(args.map))
    print(f"imported {plan.n_rows} runs into {len(plan.rungs)} rungs of experiment "
          f"{args.experiment!r} ({url})")
    return 0
