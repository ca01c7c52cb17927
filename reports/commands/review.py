"""``ladder review EXPERIMENT.toml``: the go/no-go checks and verdict; writes review.json."""

from __future__ import annotations

import argparse
from typing import Any

from reports.commands.fit import add_common, load, open_store, run_dir, write_json
from reports.commands.plan import plan_and_write


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("review", help="check the evidence; GO / NO-GO / INCONCLUSIVE; write review.json",
                              description="Fit, plan and review: every check with its figure, threshold and "
                                          "reason, and the verdict; writes fits.json, plan.json and review.json.")
    add_common(p)
    p.set_defaults(func=run)


def review_and_write(experiment: Any, storage: Any, out: str | None, command: str) -> tuple[Any, Any, Any]:
    from reports.review import review

    fits, plan = plan_and_write(experiment, storage, out, command)
    verdict = review(plan, fits, experiment.review)
    write_json(run_dir(experiment, out) / "review.json", verdict.to_dict())
    return fits, plan, verdict


def run(args: argparse.Namespace) -> int:
    exp = load(args)
    _, _, verdict = review_and_write(exp, open_store(exp), args.out, "ladder review")
    print(verdict.summary())
    print(f"wrote {run_dir(exp, args.out) / 'review.json'}")
    return 0
