"""Time a 1,000-resample bootstrap of the Chinchilla L(N, D) fit (Epoch's 240 rows).

Usage: python benchmarks/bench_loss_law.py [--resamples 1000] [--workers 2] [--data tests/data]
Prints the wall time of the full fit and of the bootstrap, and the bootstrap sd of alpha
(about 0.014 when refits converge; about 0.001 when they stop early).
"""

from __future__ import annotations

import argparse
import csv
import os
import time
from pathlib import Path

import numpy as np

from fits import fit_loss_law_nd


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--resamples", type=int, default=1000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[1] / "tests" / "data")
    args = parser.parse_args()
    with open(args.data / "chinchilla_epoch_svg.csv") as f:
        rows = [(float(r["Model Size"]), float(r["Training FLOP"]), float(r["loss"])) for r in csv.DictReader(f)]
    rows = sorted(rows, key=lambda r: r[2])[:-5]
    n, c, loss = (np.asarray(a) for a in zip(*rows))
    d = c / (6 * n)
    t0 = time.perf_counter()
    fit = fit_loss_law_nd(n, d, loss)
    t1 = time.perf_counter()
    cpu0 = os.times()
    boot = fit_loss_law_nd(n, d, loss, n_bootstrap=args.resamples, workers=args.workers, seed=0)
    t2 = time.perf_counter()
    cpu1 = os.times()
    cpu = sum(b - a for a, b in zip(cpu0[:4], cpu1[:4]))   # own + worker processes' user/system time
    sd = np.std(boot.boot_table()["alpha"], ddof=1)
    print(f"full fit: {t1 - t0:.2f} s; bootstrap of {args.resamples} resamples on {args.workers} workers: "
          f"{t2 - t1:.1f} s wall, {cpu:.1f} s CPU (includes one full fit); sd(alpha) = {sd:.4f}; unconverged refits: "
          f"{boot.n_boot_unconverged}")
    print(fit.summary())


if __name__ == "__main__":
    main()
