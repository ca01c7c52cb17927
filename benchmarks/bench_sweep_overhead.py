"""Orchestration overhead of the sweep (sampler + store) per trial, as a share of a trial.

Measured side by side in one run:

1. the wall time of one real trial at the smallest CPU rung (the "cpu" ladder's first rung,
   PyTorch backend, its preset tokens) through the runner's ``run_trial``; with ``--no-torch``
   (or when the torch backend is missing) the simulated backend's trial time is used instead,
   and the figure says so;
2. a sweep of ``--trials`` trials with the simulated backend (training takes ~1 ms) on a SQLite
   file and, when ``PROXY_TRANSFER_PG_URL`` is set, on a fresh PostgreSQL database: the
   overhead per trial is (sweep wall time - time spent inside training) / trials, i.e.
   ask (TPE), tell, heartbeats, attribute writes, stale-trial and budget checks.

Target: overhead < 5% of the smallest rung's trial wall time.

    PYTHONPATH=. python benchmarks/bench_sweep_overhead.py [--trials 30] [--no-torch]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
import uuid
from pathlib import Path

from proxy.ladder import get_ladder
from proxy.sweep.experiment import parse_experiment
from proxy.sweep.knobs import load_mixture, setup_trial
from proxy.sweep.runner import run_sweep, run_trial
from proxy.sweep.store import close_all, open_storage

DOC = {
    "experiment": {"name": "bench", "backend": "simulated", "heartbeat_interval": 10},
    "ladder": {"rungs": [{"name": "w32", "d_model": 32, "n_layers": 4, "n_heads": 2, "head_dim": 16,
                          "n_experts": 8, "top_k": 2, "d_expert": 32, "tokens": 131072,
                          "batch_size": 8}]},
    "search": {"sampler": "tpe", "startup_trials": 8,
               "box": {"lr": {"low": 1e-4, "high": 1e-1, "log": True},
                       "aux_loss_coef": {"low": 1e-4, "high": 1e-1, "log": True}}},
    "data": {"domains": ["code", "prose", "notes"]},
}


def sweep_overhead(url: str, trials: int) -> tuple[float, float]:
    """(overhead seconds per trial, mean training seconds per trial) of a simulated sweep."""
    doc = {**DOC, "experiment": {**DOC["experiment"], "storage": url},
           "search": {**DOC["search"], "trials_per_rung": trials}}
    exp = parse_experiment(doc)
    open_storage(exp.storage, heartbeat_interval=exp.heartbeat_interval)  # connect outside the timing
    start = time.perf_counter()
    run_sweep(exp)
    wall = time.perf_counter() - start
    storage = open_storage(exp.storage, heartbeat_interval=exp.heartbeat_interval)
    study_id = storage.get_study_id_from_name("bench/w32")
    train = sum(t.user_attrs.get("wall_time_s", 0.0) for t in storage.get_all_trials(study_id))
    return (wall - train) / trials, train / trials


def smallest_rung_trial_s(use_torch: bool) -> tuple[float, str]:
    rung = get_ladder("cpu").rungs[0]
    doc = {**DOC, "experiment": {**DOC["experiment"], "backend": "torch" if use_torch else "simulated",
                                 "storage": "sqlite:///:memory:"},
           "ladder": {"rungs": [{**rung.config.to_dict(), "name": rung.name,
                                 "tokens": rung.tokens, "batch_size": rung.batch_size}]}}
    exp = parse_experiment(doc)
    if use_torch:  # load the corpus once, outside the timing (it is cached across trials)
        load_mixture(setup_trial(exp.rungs[0], {}, {}, exp.data), exp.data)
    start = time.perf_counter()
    run_trial(exp, exp.rungs[0], {"lr": 3e-3, "aux_loss_coef": 1e-2})
    return time.perf_counter() - start, "torch" if use_torch else "simulated"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=30)
    parser.add_argument("--no-torch", action="store_true")
    args = parser.parse_args()
    use_torch = not args.no_torch
    if use_torch:
        try:
            import proxy.backends.torch.trainer  # noqa: F401
        except ImportError:
            use_torch = False
    trial_s, backend = smallest_rung_trial_s(use_torch)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        rows.append(("sqlite", *sweep_overhead(f"sqlite:///{Path(tmp) / 'bench.db'}", args.trials)))
        pg = os.environ.get("PROXY_TRANSFER_PG_URL")
        if pg:
            import psycopg2

            name = "bench_" + uuid.uuid4().hex[:10]
            admin = psycopg2.connect(pg)
            admin.autocommit = True
            with admin.cursor() as cur:
                cur.execute(f'create database "{name}"')
            try:
                rows.append(("postgresql", *sweep_overhead(pg.rsplit("/", 1)[0] + "/" + name, args.trials)))
            finally:
                close_all()
                with admin.cursor() as cur:
                    cur.execute(f'drop database if exists "{name}" with (force)')
                admin.close()
    print(f"smallest CPU rung (cpu/w32) trial wall time: {trial_s:.2f} s ({backend} backend)")
    print(f"{'store':<11} {'overhead/trial':>15} {'% of trial':>11}  ({args.trials} simulated trials, TPE)")
    for store, overhead, _ in rows:
        print(f"{store:<11} {1000 * overhead:>12.1f} ms {100 * overhead / trial_s:>10.2f}%")
    if len(rows) == 1:
        print("postgresql: skipped (set PROXY_TRANSFER_PG_URL)")


if __name__ == "__main__":
    main()
