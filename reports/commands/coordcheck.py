"""``ladder coordcheck``: the coordinate check of a parametrization, with a figure and JSON.

Trains widths ``32 * 2^k`` (k = 0..4; depth 2, head_dim 16, 8 experts top-2, d_expert =
d_model) for a few Adam steps at a large learning rate over several seeds, records the mean
|output| of every module at every step, and fits the log-log slope against width
(``proxy.diagnostics.coordcheck``). Writes ``coordcheck_<param>_<backend>.{png,pdf,json}`` into ``--out``
and prints one PASS/FAIL line per module.

Recipe (``proxy.diagnostics.coordcheck``): the same batch at every step, the language-model loss alone and
a zero-initialised readout, in both parametrizations; ``--fresh-batches``, ``--aux-losses`` and
``--readout-init normal`` depart from it one at a time.

How to read the figure: one panel per module, x = width (log), y = mean |output| (log), one line
per training step (step 1 = initialisation). Flat lines mean the module's size does not depend
on width (the muP promise); lines rising to the right mean it grows with width (SP: slopes near
+1 for hidden outputs, +0.5..+1 for logits). The panel title carries the slope at each step.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from proxy.backends import FRAMEWORKS, framework_part
from proxy.diagnostics.bench import set_threads
from proxy.diagnostics.coordcheck import CoordCheckResult, CoordCheckSettings



def register(subparsers: argparse._SubParsersAction) -> None:
    defaults = CoordCheckSettings()
    p = subparsers.add_parser(
        "coordcheck", help="coordinate check: do activation sizes stay put as the model widens?",
        description="Train widths 32..512 for a few steps at a large learning rate, record each "
                    "module's mean |output|, fit its log-log slope against width and draw it.")
    p.add_argument("--parametrization", choices=("sp", "mup", "both"), default="both",
                   help="parametrization to check (default: both)")
    p.add_argument("--backend", choices=FRAMEWORKS, default="torch", help="framework (default: torch)")
    p.add_argument("--steps", type=int, default=defaults.steps,
                   help=f"forward passes per model, the first at initialisation (default: {defaults.steps})")
    p.add_argument("--seeds", type=int, default=len(defaults.seeds),
                   help=f"seeds averaged per width (default: {len(defaults.seeds)})")
    p.add_argument("--lr", type=float, default=defaults.lr, help=f"Adam learning rate (default: {defaults.lr})")
    p.add_argument("--readout-init", choices=("zero", "normal"), default="zero",
                   help="readout initialisation in both parametrizations: zero (default; Tensor "
                        "Programs V App. D.2) or normal (std init_std; under muP the logits then "
                        "start at Theta(width^-1/2) and fall with width for the first steps)")
    p.add_argument("--fresh-batches", action="store_true",
                   help="draw a new batch at every step (default: the same batch at every step, "
                        "as the mup package's coordinate check)")
    p.add_argument("--aux-losses", action="store_true",
                   help="train with the balancing and z-loss at the trainer's default coefficients "
                        "(default: the language-model loss alone, the loss of the muP derivation)")
    p.add_argument("--out", default="runs/coordcheck", help="output folder (default: runs/coordcheck)")
    p.add_argument("--threads", type=int, default=0, help="framework CPU threads; 0 keeps its default")
    p.set_defaults(func=run)


def plot(result: CoordCheckResult, png: Path, pdf: Path) -> None:
    """One panel per module: mean |output| against width (log-log), a line per step."""
    from matplotlib import colormaps

    from reports.figures import close, new_figure, save_png_and_pdf

    n = len(result.modules)
    cols = min(4, n)
    rows = -(-n // cols)
    fig = new_figure((3.4 * cols, 2.9 * rows + 0.6))
    axes = fig.subplots(rows, cols, squeeze=False)
    cmap = colormaps["viridis"]
    verdicts = result.verdicts()
    for ax, module in zip(axes.flat, result.modules):
        sizes = result.sizes[module]
        for t in range(result.steps):
            ax.plot(result.widths, [sizes[w][t] for w in range(len(result.widths))], marker="o", ms=3,
                    color=cmap(t / max(result.steps - 1, 1)), label=f"step {t + 1}")
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        slopes = " ".join(f"{s:+.2f}" for s in result.slopes[module])
        ax.set_title(f"{module} [{'pass' if verdicts[module] else 'FAIL'}]\nslopes {slopes}", fontsize=8)
        ax.set_xlabel("width (d_model)", fontsize=8)
        ax.set_ylabel("mean |output|", fontsize=8)
        ax.tick_params(labelsize=7)
    for ax in list(axes.flat)[n:]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=6)
    fig.suptitle(f"Coordinate check: {result.parametrization.upper()} ({result.backend}), widths "
                 f"{result.widths[0]}..{result.widths[-1]}, slope of log mean|out| vs log width per step",
                 fontsize=10)
    save_png_and_pdf(fig, png, pdf)
    close(fig)


def run(args: argparse.Namespace) -> int:
    if args.seeds <= 0:
        raise ValueError(f"--seeds must be positive, got {args.seeds}")
    params = ("sp", "mup") if args.parametrization == "both" else (args.parametrization,)
    recorder = framework_part(args.backend, "coordcheck")
    if args.threads > 0:
        set_threads(args.backend, args.threads)   # JAX fixes its threads at start-up: a no-op there
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    failed = False
    for p in params:
        settings = CoordCheckSettings(parametrization=p, steps=args.steps, seeds=tuple(range(args.seeds)),
                                      lr=args.lr, readout_zero_init=args.readout_init == "zero",
                                      fresh_batches=args.fresh_batches, aux_losses=args.aux_losses)
        result = recorder.run(settings, progress=lambda s: print(s, file=sys.stderr))
        stem = out / f"coordcheck_{p}_{args.backend}"
        result.write_json(stem.with_suffix(".json"))
        plot(result, stem.with_suffix(".png"), stem.with_suffix(".pdf"))
        print(f"{p.upper()} ({args.backend}, {result.wall_time_s:.0f} s): widths {list(result.widths)}")
        for line in result.summary_lines():
            print("  " + line)
        print(f"  wrote {stem}.png, .pdf, .json")
        failed |= not all(result.verdicts().values())
    return 1 if failed else 0
