"""``ladder lr-transfer``: does the best learning rate stay put as the model widens?

Sweeps a log grid of learning rates on three (or more) widths of the ``cpu`` ladder under SP and
muP (``proxy.diagnostics.lr_transfer``), each run at the rung's default token budget (or ``--tokens``) on
the built-in data, averaged over seeds, and writes ``lr_transfer_<backend>.{png,pdf,json}``.

How to read the figure: one panel per parametrization, final eval loss against the base learning
rate (log x), one line per width, a dotted line at each width's best learning rate (the vertex
of a parabola through the grid minimum and its neighbours). Under muP (Yang et al. 2022,
"Tensor Programs V", Figure 1) the vertices should line up; under SP they move left as the
model widens. The title gives max/min of the best learning rate over the widths, and the
printout the same figure for each seed alone, which shows how much of it is seed noise.

Exit status 1 when muP's best learning rate moves by 2x or more (the check fails), else 0.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import numpy as np

from proxy.diagnostics.lr_transfer import LrTransferResult, sweep

MUP_MAX_SHIFT = 2.0   # muP passes when its best lr moves by less than this factor across widths


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "lr-transfer", help="learning-rate transfer: sweep the lr on several widths under SP and muP",
        description="Sweep a log grid of learning rates on widths of the cpu ladder under SP and "
                    "muP, find each width's best learning rate and report how far it moves.")
    p.add_argument("--widths", type=int, nargs="+", default=[32, 64, 128],
                   help="cpu-ladder widths (default: 32 64 128)")
    p.add_argument("--lr-min", type=float, default=1e-3, help="smallest learning rate (default: 1e-3)")
    p.add_argument("--lr-max", type=float, default=6.4e-2, help="largest learning rate (default: 6.4e-2)")
    p.add_argument("--points", type=int, default=7, help="log-spaced grid points (default: 7)")
    p.add_argument("--tokens", type=int, default=0,
                   help="training tokens per run; 0 = each rung's default budget (default: 0)")
    p.add_argument("--seeds", type=int, default=2, help="seeds averaged per point (default: 2)")
    p.add_argument("--parametrization", choices=("sp", "mup", "both"), default="both",
                   help="parametrizations to sweep (default: both)")
    p.add_argument("--backend", choices=("torch", "jax"), default="torch", help="framework (default: torch)")
    p.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1),
                   help="runs trained at once, one process each (default: min(2, CPUs))")
    p.add_argument("--threads", type=int, default=1, help="framework threads per run; 0 keeps the framework's default (default: 1)")
    p.add_argument("--out", default="runs/lr_transfer", help="output folder (default: runs/lr_transfer)")
    p.set_defaults(func=run)


def plot(result: LrTransferResult, png: Path, pdf: Path) -> None:
    """One panel per parametrization: loss against lr, a line per width, its best lr dotted."""
    from matplotlib import colormaps

    from reports.figures import close, new_figure, save_png_and_pdf

    params = result.parametrizations
    fig = new_figure((5.2 * len(params), 4.2))
    axes = fig.subplots(1, len(params), squeeze=False, sharey=True)
    cmap = colormaps["viridis"]
    finite = [v for p in params for w in result.widths for v in result.losses[p][w] if np.isfinite(v)]
    low = min(finite) if finite else 0.0
    for ax, p in zip(axes.flat, params):
        for i, w in enumerate(result.widths):
            color = cmap(i / max(len(result.widths) - 1, 1))
            ax.plot(result.lrs, result.losses[p][w], marker="o", ms=4, color=color, label=f"width {w}")
            ax.axvline(result.best_lr(p, w), color=color, ls=":", lw=1.2)
        ax.set_xscale("log")
        ax.set_xlabel("base learning rate")
        ax.set_title(f"{p.upper()}: best lr moves {result.shift(p):.1f}x over widths "
                     f"{result.widths[0]}..{result.widths[-1]}", fontsize=9)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    axes.flat[0].set_ylabel("final eval loss (nats/byte), seed mean")
    if finite:   # diverged runs score their threshold; keep the basins readable
        axes.flat[0].set_ylim(low - 0.05, low + 1.0)
    fig.suptitle(f"Learning-rate transfer ({result.backend}, {len(result.seeds)} seed(s), "
                 f"{'default budget' if not result.tokens else f'{result.tokens:,} tokens'} per run)",
                 fontsize=10)
    save_png_and_pdf(fig, png, pdf)
    close(fig)


def run(args: argparse.Namespace) -> int:
    for name in ("points", "seeds", "workers"):
        if getattr(args, name) < 1:
            raise ValueError(f"--{name} must be >= 1, got {getattr(args, name)}")
    if not 0 < args.lr_min < args.lr_max:
        raise ValueError(f"need 0 < --lr-min < --lr-max, got {args.lr_min} and {args.lr_max}")
    lrs = tuple(float(x) for x in np.geomspace(args.lr_min, args.lr_max, args.points))
    params = ("sp", "mup") if args.parametrization == "both" else (args.parametrization,)
    if args.workers == 1 and args.threads > 0:   # runs train in this process
        from proxy.diagnostics.bench import set_threads
        set_threads(args.backend, args.threads)
    result = sweep(None, lrs, tuple(args.widths), parametrizations=params, tokens=args.tokens,
                   seeds=tuple(range(args.seeds)), backend=args.backend, workers=args.workers,
                   threads=args.threads, progress=lambda s: print(s, file=sys.stderr, flush=True))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stem = out / f"lr_transfer_{args.backend}"
    stem.with_suffix(".json").write_text(json.dumps(result.to_dict(), indent=2) + "\n")
    plot(result, stem.with_suffix(".png"), stem.with_suffix(".pdf"))
    for line in result.summary_lines():
        print(line)
    failed = False
    if "mup" in params:
        shift = result.shift("mup")
        failed = shift >= MUP_MAX_SHIFT
        print(f"muP: best lr moves {shift:.2f}x across widths {list(result.widths)} "
              f"({'PASS' if not failed else 'FAIL'}: the check wants < {MUP_MAX_SHIFT:g}x)")
    print(f"wrote {stem}.png, .pdf, .json")
    return 1 if failed else 0
