"""The ``ladder`` command line.

Each subcommand lives in its own module under ``reports.commands`` and exposes
``register(subparsers)``, which adds its parser and sets ``func(args) -> int``. Modules are
imported only when the command line is built, and the heavy ones import their framework only
inside ``func``, so ``ladder --help`` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import multiprocessing
import signal
import sys
import threading
from typing import Any, Sequence

from proxy import __version__

# Order is the order shown in ``ladder --help``.
COMMAND_MODULES: tuple[str, ...] = (
    "train",
    "bench",
    "demo",
    "sweep",
    "status",
    "import_runs",
    "export_runs",
    "fit",
    "isoflop",
    "plan",
    "review",
    "run",
    "report",
    "coordcheck",
    "lr_transfer",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ladder",
        description=(
            "Tune a Mixture-of-Experts training run on a ladder of small proxy models, fit how "
            "the optimal settings move with size, and extrapolate one config for the full-size "
            "run with confidence intervals, a PDF report and a GO / NO-GO / INCONCLUSIVE verdict."),
    )
    parser.add_argument("--version", action="version", version=f"proxy-transfer {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name in COMMAND_MODULES:
        importlib.import_module(f"reports.commands.{name}").register(sub)
    return parser


class Terminated(BaseException):
    """The process was asked to stop (SIGTERM). A BaseException, as KeyboardInterrupt, so that no
    `except Exception` on the way (a trial's error handling) swallows it."""


def _stop_workers_and_raise(signum: int, frame: Any) -> None:
    """SIGTERM: stop this process's worker processes (sweep, lr-transfer, fits), then unwind.

    A terminal's Ctrl-C reaches the whole process group, workers included; a SIGTERM (a job
    scheduler, ``kill``) reaches only this process, and without this its workers would finish
    their current trials on their own. A sweep trial cut short this way is left RUNNING in the
    store, and the next sweep's heartbeat check marks it failed and retries it.
    """
    for child in multiprocessing.active_children():
        child.terminate()
    raise Terminated


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    in_main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _stop_workers_and_raise) if in_main_thread else None
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        for child in multiprocessing.active_children():   # workers ignore Ctrl-C: stop them here
            child.terminate()
        print(f"ladder {args.command}: interrupted; a trial cut short is retried by the next sweep",
              file=sys.stderr)
        return 130
    except Terminated:
        print(f"ladder {args.command}: terminated; worker processes stopped", file=sys.stderr)
        return 128 + signal.SIGTERM
    except (ValueError, FileNotFoundError) as exc:
        # Bad input: one clear line naming what is wrong, non-zero exit, no traceback.
        print(f"ladder {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:
        from proxy.sweep.store import store_error

        message = store_error(exc)   # a damaged or vanished store: one line too
        if message is None:
            raise
        print(f"ladder {args.command}: error: {message}", file=sys.stderr)
        return 2
    finally:
        if in_main_thread:
            signal.signal(signal.SIGTERM, previous)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
