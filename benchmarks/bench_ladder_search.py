"""Does the ladder-aware search pay? Trials and FLOPs to come within 0.5% of each rung's best loss.

Side by side in one run, on the same ladder, box and seeds: the plain per-rung search of the
human's box (``transfer.ladder.run_ladder(mode="plain")``) and the ladder-aware search
(``mode="ladder"``: re-centred boxes, the extrapolated optimum as first trial, edge widening).
For every rung and seed: the number of trials (in trial order) until one comes within
``--tol`` (0.5%) of the rung's best achievable loss, and the training FLOPs spent on that rung
up to and including it.

* ``simulated``: the best achievable loss is the known truth (``SimulatedTruth.floor``) and
  each trial is scored by its noise-free loss, so "reached" means the setting is truly good.
* ``cpu``: real training (torch); the best achievable loss is the best trial of either search
  with that seed (same training seed for both), scored by the measured loss.

A rung that never comes within the tolerance counts all its trials (a lower bound, marked ">").
Ratios are plain / ladder (higher: the ladder-aware search is cheaper).

    python benchmarks/bench_ladder_search.py simulated --seeds 3
    python benchmarks/bench_ladder_search.py cpu --seeds 2
    python benchmarks/bench_ladder_search.py cpu --experiment examples/demo.toml --seeds 1
    python benchmarks/bench_ladder_search.py cpu --experiment examples/cpu_ladder_wide_box.toml --seeds 1 --first-seed 1
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = {"simulated": ROOT / "examples" / "simulated_go.toml", "cpu": ROOT / "examples" / "cpu_ladder.toml"}


def _clean_loss(exp, rung, obs) -> float:
    from proxy.sweep import knobs as K

    params = {k.name: obs.knobs[k.name] for k in exp.search.box if k.name != K.MIX_KNOB}
    setup = K.setup_trial(rung, params, exp.search.fixed, exp.data)
    return exp.simulated.loss(setup.config, setup.hparams, setup.train_mix)


def run_one(exp_path: Path, mode: str, seed: int, trials: int | None, workdir: Path):
    """Run one search; returns {rung: [(score, flops), ...] in trial order} and the experiment."""
    from proxy.sweep.experiment import load_experiment
    from proxy.sweep.spec import BudgetSpec
    from proxy.sweep.store import open_storage
    from transfer.ladder import run_ladder
    from transfer.observations import load_observations

    exp = load_experiment(exp_path, storage=f"sqlite:///{workdir}/{mode}-{seed}.db")
    search = exp.search if trials is None else dataclasses.replace(exp.search, trials_per_rung=trials,
                                                                    startup_trials=min(exp.search.startup_trials, trials))
    # No budget cap: both searches run every trial, and the ledger scan per trial is skipped.
    exp = dataclasses.replace(exp, seeds=(seed,), search=search, budget=BudgetSpec())
    storage = open_storage(exp.storage)
    run_ladder(exp, mode=mode, storage=storage, seed=seed)
    obs = load_observations(exp, storage)
    out = {}
    for rung in exp.rungs:
        rows = sorted(obs.get(rung.name, []), key=lambda o: o.extra["trial_number"])
        score = [(_clean_loss(exp, rung, o) if exp.backend == "simulated" else (o.loss if o.usable else math.inf),
                  o.extra.get("flops", 0.0)) for o in rows]
        out[rung.name] = score
    return out, exp


def to_reach(rows, best: float, tol: float) -> tuple[int, float, bool]:
    """(trials, FLOPs, reached) until a trial's loss <= best * (1 + tol)."""
    flops = 0.0
    for i, (loss, f) in enumerate(rows):
        flops += f
        if loss <= best * (1 + tol):
            return i + 1, flops, True
    return len(rows), flops, False


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("ladder", choices=sorted(EXAMPLES))
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--first-seed", type=int, default=0,
                    help="seeds are first-seed .. first-seed + seeds - 1 (run seeds in separate processes)")
    ap.add_argument("--trials", type=int, default=None, help="trials per rung (default: the example file's)")
    ap.add_argument("--plain-trials", type=int, default=None,
                    help="trials per rung of the plain search only (default: --trials): a plain search "
                         "that never gets within the tolerance can be run on to see how many it needs")
    ap.add_argument("--tol", type=float, default=0.005, help="relative loss tolerance (0.005 = 0.5%%)")
    ap.add_argument("--experiment", type=Path, default=None,
                    help="experiment file to compare on instead of the ladder's example (same kind of backend)")
    ap.add_argument("--save", type=Path, default=None, help="write every trial's (loss, FLOPs) to this JSON")
    ap.add_argument("--load", type=Path, nargs="+", default=None,
                    help="print the table of runs saved with --save (seeds of one experiment) instead of running")
    args = ap.parse_args(argv)
    exp_path = args.experiment or EXAMPLES[args.ladder]
    start = time.perf_counter()
    if args.load:
        saved = [json.loads(p.read_text()) for p in args.load]
        exp_path = Path(saved[0]["experiment"])
        seeds = [s for d in saved for s in d["seeds"]]
        results = {m: [{r: [tuple(x) for x in rows] for r, rows in run.items()} for d in saved for run in d["rows"][m]]
                   for m in ("plain", "ladder")}
        from proxy.sweep.experiment import load_experiment
        exp = load_experiment(exp_path)
    else:
        seeds = list(range(args.first_seed, args.first_seed + args.seeds))
        results = {"plain": [], "ladder": []}
        with tempfile.TemporaryDirectory() as tmp:
            for seed in seeds:
                for mode in ("plain", "ladder"):
                    trials = args.plain_trials if mode == "plain" and args.plain_trials else args.trials
                    rows, exp = run_one(exp_path, mode, seed, trials, Path(tmp))
                    results[mode].append(rows)
        if args.save:
            args.save.write_text(json.dumps({"experiment": str(exp_path), "seeds": seeds,
                                             "rows": results}, indent=1) + "\n")
    print_table(exp, exp_path, seeds, results, args.tol, time.perf_counter() - start)
    return 0


def print_table(exp, exp_path: Path, seeds: list[int], results, tol: float, wall_s: float) -> None:
    rungs = [r.name for r in exp.rungs]
    table = {m: {r: [] for r in rungs} for m in results}
    for s in range(len(seeds)):
        for r in rungs:
            if exp.backend == "simulated":
                from proxy.flops import param_counts

                rung = exp.rung(r)
                c = param_counts(rung.config)
                best = exp.simulated.floor(float(c.active), float(c.total), float(rung.tokens))
            else:
                best = min(x for m in results for x, _ in results[m][s][r])
            for m in results:
                table[m][r].append(to_reach(results[m][s][r], best, tol))
    n_trials = {m: max(len(results[m][s][r]) for s in range(len(seeds)) for r in rungs) for m in results}
    print(f"{exp_path.name} ({exp.backend}), seeds {seeds}, up to {n_trials['plain']} (plain) / "
          f"{n_trials['ladder']} (ladder) trials per rung, tolerance {tol:.1%} of the best achievable "
          f"loss; wall {wall_s:.0f} s")
    print(f"{'rung':<8} {'plain trials':>13} {'ladder trials':>14} {'ratio':>6} {'plain FLOPs':>12} "
          f"{'ladder FLOPs':>13} {'ratio':>6} {'reached p/l':>12}")
    agg = {m: [0.0, 0.0] for m in results}
    top = {m: [0.0, 0.0] for m in results}
    n = len(seeds)
    for i, r in enumerate(rungs):
        cells = {}
        for m in results:
            t = np.mean([x[0] for x in table[m][r]])
            f = np.mean([x[1] for x in table[m][r]])
            reached = sum(x[2] for x in table[m][r])
            cells[m] = (t, f, reached)
            if i >= 2:   # re-centring starts at the third rung
                agg[m][0] += t
                agg[m][1] += f
            if i >= len(rungs) - 2:   # "the larger rungs": the two largest
                top[m][0] += t
                top[m][1] += f
        mark = {m: "" if cells[m][2] == n else ">" for m in results}
        print(f"{r:<8} {mark['plain'] + format(cells['plain'][0], '.1f'):>13} "
              f"{mark['ladder'] + format(cells['ladder'][0], '.1f'):>14} {cells['plain'][0] / cells['ladder'][0]:>6.2f} "
              f"{cells['plain'][1]:>12.3g} {cells['ladder'][1]:>13.3g} {cells['plain'][1] / cells['ladder'][1]:>6.2f} "
              f"{cells['plain'][2]:>5}/{cells['ladder'][2]:<5}")
    print(f"rungs 3+ (re-centred): trials plain/ladder = {agg['plain'][0] / agg['ladder'][0]:.2f}x, "
          f"FLOPs plain/ladder = {agg['plain'][1] / agg['ladder'][1]:.2f}x")
    print(f"two largest rungs: trials plain/ladder = {top['plain'][0] / top['ladder'][0]:.2f}x, "
          f"FLOPs plain/ladder = {top['plain'][1] / top['ladder'][1]:.2f}x")
    print("(a '>' count never came within the tolerance in every seed: its mean counts all its "
          "trials, so a ratio over it is a lower bound)")


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    sys.exit(main())
