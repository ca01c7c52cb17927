"""``ladder export --experiment NAME --out FILE.csv``: write an experiment's trials to CSV."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "export", help="export an experiment's trials to CSV (imported runs keep their columns)",
        description="Write the completed trials of an experiment to CSV.")
    p.add_argument("--experiment", required=True, help="experiment name")
    p.add_argument("--storage", default=None,
                   help="store URL (default: sqlite:///runs/<experiment>/trials.db here)")
    p.add_argument("--out", required=True, help="output CSV file")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from proxy.sweep.external import export_csv
    from proxy.sweep.store import storage_exists

    from reports.commands.import_runs import default_storage
    from reports.commands.sweep import storage_override

    url = storage_override(args.storage) or default_storage(args.experiment)
    if not storage_exists(url):
        raise ValueError(f"no store at {url}")
    n = export_csv(url, args.experiment, args.out)
    print(f"wrote {n} rows to {args.out}")
    return 0
