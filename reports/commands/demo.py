"""``ladder demo``: the toolkit's main job on the embedded defaults (CPU, built-in data).

For now it trains one rung of the CPU ladder (the middle one, w96, which finishes in well under
a minute on two cores) at a learning rate inside the good basin of the SP ladder, and prints
its result; the full sweep-fit-extrapolate-report pipeline grows from here.
"""

from __future__ import annotations

import argparse
import sys

from proxy import TrainHParams
from proxy.ladder import get_ladder

DEMO_LADDER = "cpu"
DEMO_LR = 3e-3   # Adam lr of the SP rungs; the sweep finds the optimum per rung


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "demo", help="run the main job on the built-in defaults (CPU, built-in data)",
        description="Train the middle rung of the CPU ladder on the built-in data with torch and "
                    "print its result.")
    p.add_argument("--backend", choices=("torch", "jax"), default="torch",
                   help="training framework (default: torch)")
    p.add_argument("--seed", type=int, default=0, help="seed of the initialisation and data order")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from proxy.backends import load_backend
    from proxy.data import load_data
    from reports.commands.train import _Progress, summary

    ladder = get_ladder(DEMO_LADDER)
    rung = ladder.middle
    hparams = TrainHParams(lr=DEMO_LR, batch_size=rung.batch_size, tokens=rung.tokens)
    print(f"demo: training {DEMO_LADDER}/{rung.name} with {args.backend}, lr {DEMO_LR:g}, "
          f"{rung.tokens:,} tokens", file=sys.stderr)
    bar = _Progress(rung.batch_size * rung.config.seq_len)
    try:
        result = load_backend(args.backend).train(rung.config, hparams, load_data(), args.seed,
                                                  progress=bar)
    finally:
        bar.close()
    print(summary(rung, DEMO_LADDER, result))
    return 1 if result.diverged else 0
