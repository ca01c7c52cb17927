"""``ladder report EXPERIMENT.toml``: write runs/<name>/report.pdf from the store and the JSON
beside it (plan.json, review.json, fits.json); nothing is trained."""

from __future__ import annotations

import argparse

from reports.commands.fit import add_common, load, open_store, run_dir


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "report", help="write the PDF report (verdict, plan, sweeps, trends, loss law, checks, trials)",
        description="Draw report.pdf for an experiment from its trial store and the fits.json, plan.json and "
                    "review.json beside it (run `ladder run` or `ladder review` first). Nothing is trained.")
    add_common(p)
    p.add_argument("--output", default=None, help="PDF path (default: report.pdf in the artifact folder)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from reports.pdf import write_report

    exp = load(args)
    store = open_store(exp)   # first: a store that is not there is an error, and no folder is made for it
    folder = run_dir(exp, args.out)
    path = write_report(folder, exp, store, args.output)
    print(f"wrote {path}")
    return 0
