"""``ladder demo`` (what ``make demo`` runs): the whole toolkit on a laptop's CPU.

It runs ``ladder run`` on the built-in experiment ``reports/demo.toml`` (a copy of
``examples/demo.toml``): four small rungs of the cpu ladder (w16, w24, w32, w64) trained at the ladder's budget
with PyTorch on the built-in multi-domain data, the learning rate searched by the ladder-aware
search, the SQLite store under ``./runs/demo/``, a target ~52x the largest rung. A progress bar counts trials; at
the end it prints the verdict, the plan and the path of the PDF report.

Run again, it resumes: finished trials are never redone, and when the store holds no trial the
JSON artifacts have not seen (and the built-in file is unchanged) the fits, plan, review and
report are reused, so a finished demo answers in seconds.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import time
from importlib import resources
from pathlib import Path
from typing import Any

from reports.commands.train import add_device_argument

DEMO_FILE = "demo.toml"
DEMO_STORAGE = "sqlite:///runs/demo/trials.db"   # relative to the working folder


def demo_experiment_path() -> Path:
    """The built-in demo experiment file shipped inside the package."""
    return Path(str(resources.files("reports").joinpath(DEMO_FILE)))


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "demo", help="run the whole pipeline on the built-in demo experiment (CPU, built-in data)",
        description="Sweep four small MoE rungs on the CPU with the ladder-aware search, fit the trends, plan a "
                    "target ~52x larger, review it and write the PDF report to runs/demo/report.pdf. About "
                    "12 minutes on two cores; run it again to resume.")
    p.add_argument("--storage", default=None, help=f"store URL (default: {DEMO_STORAGE} in the working folder)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--sampler-seed", type=int, default=None,
                   help="seed of the sampler (default: the demo file's); with a store of its own (--storage), "
                        "to see how the verdict and the plan depend on the search's luck")
    p.add_argument("--workers", type=int, default=None,
                   help="local worker processes sharing the store (default: experiment.workers, whose 'auto' "
                        "is one per `threads` CPU cores; 1 for the simulated backend or a named accelerator)")
    add_device_argument(p, default=None)
    p.set_defaults(func=run)


def _progress_bar(exp: Any, storage: Any) -> tuple[Any, Any]:
    """A tqdm bar over every trial of the ladder, and the callback the sweep calls per trial."""
    from tqdm import tqdm

    from proxy.sweep.runner import rung_progress

    done = {r.name: rung_progress(exp, r, storage).complete for r in exp.rungs}
    # Planned trials: the first two rungs search the human's box, the others are re-centred;
    # one more per rung for the replicate seeds. Edge widening adds trials as it goes.
    s = exp.search
    planned = {r.name: (s.trials_per_rung if i < 2 else s.upper_trials) + (1 if s.replicates else 0)
               for i, r in enumerate(exp.rungs)}
    bar = tqdm(total=max(sum(planned.values()), sum(done.values())), initial=sum(done.values()), unit="trial",
               file=sys.stderr, desc="demo sweep", dynamic_ncols=True)

    def callback(p: Any) -> None:
        done[p.rung] = p.complete
        planned[p.rung] = max(planned[p.rung], p.requested)
        n = sum(done.values())
        bar.total = max(sum(planned.values()), n)
        bar.n = n
        best = "-" if p.best_loss is None else f"{p.best_loss:.4f}"
        bar.set_postfix_str(f"rung {p.rung} {p.complete}/{p.requested}, best {best}")
        bar.refresh()

    return bar, callback


def _up_to_date(exp: Any, folder: Path, storage: Any) -> bool:
    """True when the JSON artifacts and the report were made from this store's trials and this
    experiment file (same finished-trial count and file hash)."""
    import json

    from transfer.extrapolate import ledger_summary

    names = ("fits.json", "plan.json", "review.json", "report.pdf")
    if not all((folder / n).is_file() for n in names):
        return False
    try:
        plan = json.loads((folder / "plan.json").read_text())
        same_file = plan["provenance"]["experiment_sha256"] == exp.sha256
        same_trials = int(plan["ledger"]["n_trials"]) == ledger_summary(exp, storage).n_trials
    except (ValueError, KeyError, TypeError):
        return False
    return same_file and same_trials


def run(args: argparse.Namespace) -> int:
    from proxy.sweep.experiment import load_experiment, with_device
    from proxy.sweep.store import open_storage, resolve_url
    from reports.commands.fit import run_dir
    from reports.commands.plan import plan_summary
    from reports.commands.review import review_and_write
    from reports.pdf import write_report
    from reports.review import Verdict
    from transfer.ladder import run_ladder
    from transfer.plan import Plan

    t0 = time.time()
    url = resolve_url(args.storage or DEMO_STORAGE, os.getcwd())
    exp = with_device(load_experiment(demo_experiment_path(), storage=url), args.device)
    if args.sampler_seed is not None:
        if args.sampler_seed < 0:
            raise ValueError(f"--sampler-seed must be >= 0, got {args.sampler_seed}")
        exp = dataclasses.replace(exp, search=dataclasses.replace(exp.search, sampler_seed=args.sampler_seed))
    storage = open_storage(exp.storage, heartbeat_interval=exp.heartbeat_interval)
    folder = run_dir(exp)
    from proxy.sweep.experiment import resolve_workers

    workers = resolve_workers(exp, args.workers)
    s = exp.search
    trials = (f"{s.trials_per_rung} trials" if s.upper_trials == s.trials_per_rung
              else f"{s.trials_per_rung} trials on the first two, {s.upper_trials} on the re-centred ones")
    print(f"demo: {len(exp.rungs)} rungs, {trials}, {s.replicates} replicate seed(s) at each incumbent, with "
          f"{exp.backend} on the built-in data; {workers} worker(s) of {max(1, exp.threads // workers)} thread(s); "
          f"store {exp.storage}", file=sys.stderr)
    bar, callback = (None, None) if args.no_progress else _progress_bar(exp, storage)
    try:
        result = run_ladder(exp, storage=storage, progress=callback, workers=workers)
    finally:
        if bar is not None:
            bar.close()
    if result.message:
        print(result.message)
    if _up_to_date(exp, folder, storage):
        import json

        plan = Plan.from_dict(json.loads((folder / "plan.json").read_text()))
        verdict = Verdict.from_dict(json.loads((folder / "review.json").read_text()))
        pdf = folder / "report.pdf"
        print("demo: nothing new in the store; the artifacts are up to date", file=sys.stderr)
    else:
        _, plan, verdict = review_and_write(exp, storage, None, "ladder demo")
        pdf = write_report(folder, exp, storage)
    print()
    print(f"VERDICT: {verdict.verdict}")
    for reason in verdict.reasons:
        print(f"  - {reason}")
    print()
    print(plan_summary(plan))
    print()
    print(f"report: {pdf}")
    print(f"artifacts in {folder} (fits.json, plan.json, review.json, report.pdf); {time.time() - t0:.0f} s")
    return 0
