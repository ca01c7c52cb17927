"""``ladder bench``: training-step throughput of the fast expert dispatch against the
per-expert loop on each rung, and model-FLOPs utilisation against a matmul peak measured in
the same run (the measurement lives in ``proxy.diagnostics.bench``; this command parses and prints)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from proxy.ladder import get_ladder, ladder_names


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "bench", help="benchmark training-step throughput: fast dispatch vs per-expert loop, MFU",
        description="For each rung, time full training steps with the fast expert dispatch and "
                    "with the per-expert loop, single steps alternating between the two (so a "
                    "slow spell on a shared machine hits both), and report tokens/s (medians), "
                    "their ratio (the median of the per-round ratios) and model-FLOPs "
                    "utilisation against a large matmul timed in the same framework and run.")
    p.add_argument("--backend", choices=("torch", "jax", "both"), default="torch",
                   help="framework to time; 'both' also compares JAX with torch (default: torch)")
    p.add_argument("--ladder", default="cpu", choices=ladder_names(),
                   help="preset ladder whose rungs are timed (default: cpu)")
    p.add_argument("--rungs", nargs="+", metavar="NAME",
                   help="rung names to time (default: every rung of the ladder)")
    p.add_argument("--steps", type=int, default=10,
                   help="rounds per repetition; in each round every dispatch runs one timed "
                        "training step, and on torch one timed MoE layer (default: 10)")
    p.add_argument("--batch-size", type=int, default=0,
                   help="sequences per step; 0 (default) uses each rung's batch size")
    p.add_argument("--repeats", type=int, default=3,
                   help="repetitions, each with freshly built and warmed-up models; medians "
                        "and ratios pool the rounds of all of them (default: 3)")
    p.add_argument("--threads", type=int, default=0,
                   help="intra-op CPU threads for torch; 0 (default) keeps its default")
    p.add_argument("--clock", choices=("wall", "cpu"), default="wall",
                   help="wall (default): wall-clock step times; cpu: process CPU time of each "
                        "step, for a shared loaded machine (use with --threads 1)")
    p.add_argument("--compile", action="store_true",
                   help="torch: also time the fast step under torch.compile (inductor; the MoE layers stay "
                        "eager) in the same rounds, with its compile time charged to a trial of the rung")
    p.add_argument("--json", metavar="PATH", help="also write the table as JSON here")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from proxy.diagnostics.bench import bench_rungs

    ladder = get_ladder(args.ladder)
    rungs = [ladder.rung(n) for n in args.rungs] if args.rungs else list(ladder.rungs)
    backends = ("torch", "jax") if args.backend == "both" else (args.backend,)
    if args.batch_size < 0:
        raise ValueError(f"--batch-size must be >= 0, got {args.batch_size}")
    report = bench_rungs(rungs, backends, steps=args.steps, repeats=args.repeats,
                         batch_size=args.batch_size or None, threads=args.threads, clock=args.clock,
                         compile=args.compile,
                         log=lambda msg: print(f"  timing {msg}", file=sys.stderr, flush=True))
    print(report.table())
    if args.json:
        path = Path(args.json)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(report.to_dict(), indent=2) + "\n")
        print(f"wrote {path}", file=sys.stderr)
    return 0
