"""Fast dispatch vs the per-expert loop as experts get finer, at equal parameter counts.

A cpu-ladder rung (default w96) is rebuilt with E experts top-k of width d_model * 8 / E
(k = E / 4), so total and active parameters stay (almost) those of the 8-expert top-2 rung, and
every variant is timed with ``proxy.diagnostics.bench.bench_rungs``: single training steps of the fast
dispatch and of the per-expert loop alternating in one run, medians and paired ratios. What it
shows: the loop pays per expert, so the ratio grows with the expert count; the fast path's own
speed falls a little.

    python benchmarks/bench_granularity.py --width 96 --steps 15
    python benchmarks/bench_granularity.py --width 96 --experts 8 16 32 --backend both
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--width", type=int, default=96, help="cpu-ladder width (default: 96)")
    ap.add_argument("--experts", type=int, nargs="+", default=[8, 16, 32], help="expert counts (multiples of 4)")
    ap.add_argument("--backend", choices=("torch", "both"), default="torch")
    ap.add_argument("--steps", type=int, default=10, help="alternating rounds per repetition")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=0, help="framework threads; 0 keeps the default")
    args = ap.parse_args(argv)

    from proxy.diagnostics.bench import bench_rungs
    from proxy.ladder import Rung, default_tokens, get_ladder

    base = {r.config.d_model: r for r in get_ladder("cpu").rungs}[args.width]
    rungs = []
    for e in args.experts:
        if e % 4 or (args.width * 8) % e:
            raise ValueError(f"expert count {e} must be a multiple of 4 that divides 8 x width")
        config = dataclasses.replace(base.config, n_experts=e, top_k=e // 4, d_expert=args.width * 8 // e,
                                     name=f"{base.config.name}-e{e}")
        rungs.append(Rung(f"w{args.width}-e{e}k{e // 4}", config, default_tokens(config), base.batch_size))
    backends = ("torch", "jax") if args.backend == "both" else ("torch",)
    report = bench_rungs(rungs, backends, steps=args.steps, repeats=args.repeats, threads=args.threads)
    print(report.table())
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    sys.exit(main())
