"""``ladder run EXPERIMENT.toml``: the whole pipeline, resumable at every step.

1. ladder-aware sweep (``transfer.ladder.run_ladder``; ``--plain`` for the per-rung search of
   the human's box): a rung with its trials is not swept again;
2. fits.json, 3. plan.json, 4. review.json: recomputed from the store each time (cheap);
5. the PDF report, when ``reports.pdf`` is available.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from typing import Any

from proxy.sweep.experiment import with_device
from reports.commands.fit import add_common, load, open_store, run_dir
from reports.commands.train import add_device_argument
from reports.commands.plan import plan_summary
from reports.commands.review import review_and_write
from reports.commands.sweep import add_identity_arguments, with_identity


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("run", help="ladder-aware sweep, fits, plan, review and report, resumable",
                              description="Run the whole pipeline of an experiment file: the ladder-aware sweep "
                                          "(re-centred boxes, extrapolated first trials, edge widening), fits.json, "
                                          "plan.json, review.json and the PDF report. Resumable at every step.")
    add_common(p, store_only=False)
    p.add_argument("--plain", action="store_true", help="plain per-rung search of the human's box (for comparison)")
    p.add_argument("--no-report", action="store_true", help="skip the PDF report")
    p.add_argument("--no-progress", action="store_true", help="no per-trial progress lines")
    p.add_argument("--workers", type=int, default=None,
                   help="local worker processes sharing the store (default: experiment.workers, whose 'auto' "
                        "is one per `threads` CPU cores; 1 for the simulated backend or a named accelerator)")
    add_device_argument(p, default=None)
    add_identity_arguments(p)
    p.set_defaults(func=run)


def _report(experiment: Any, storage: Any, out: str | None) -> str:
    try:
        pdf = importlib.import_module("reports.pdf")
    except ImportError:
        return "report: reports.pdf is not available; JSON artifacts only"
    write = getattr(pdf, "write_report", None)
    if not callable(write):
        return "report: reports.pdf has no write_report; JSON artifacts only"
    return f"wrote {write(run_dir(experiment, out), experiment, storage)}"


def run(args: argparse.Namespace) -> int:
    from proxy.sweep.runner import check_buildable
    from transfer.ladder import run_ladder

    exp = with_identity(with_device(load(args), args.device), args)
    if args.workers is not None and args.workers < 1:
        raise ValueError(f"--workers must be >= 1, got {args.workers}")
    check_buildable(exp, exp.rungs)   # before the store is opened (or created)
    storage = open_store(exp, read_only=False)
    progress = None
    if not args.no_progress:
        def progress(p: Any) -> None:
            best = "-" if p.best_loss is None else f"{p.best_loss:.4f}"
            print(f"  {exp.name}/{p.rung}: {p.complete}/{p.requested} trials, best {best}", file=sys.stderr)
    result = run_ladder(exp, mode="plain" if args.plain else "ladder", storage=storage, progress=progress,
                        workers=args.workers, force=args.force)
    for rec in result.records:
        for a in rec.adjustments:
            if a.reportable:
                print(f"{rec.rung}/{a.knob}: {a.action}: [{a.box.low:.4g}, {a.box.high:.4g}] - {a.reason}")
    if result.message:
        print(result.message)
    _, plan, verdict = review_and_write(exp, storage, args.out, "ladder run")
    print(plan_summary(plan))
    print(verdict.summary())
    if not args.no_report:
        print(_report(exp, storage, args.out))
    print(f"artifacts in {run_dir(exp, args.out)}")
    return 0
