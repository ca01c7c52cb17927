"""``ladder train``: train one rung of a ladder once and report how it went.

A progress bar (step, training loss, tokens/s) goes to stderr while it trains; a readable
summary goes to stdout when done; ``--json PATH`` writes the result with its provenance:

    {"provenance": {...}, "ladder": "cpu", "rung": "w32", "result": TrainResult.to_dict()}

``read_result_json(path)`` reads such a file back.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Mapping

from proxy import TrainHParams, TrainResult, __version__
from proxy.backends import load_backend
from proxy.flops import param_counts, train_flops
from proxy.backends.placement import PRECISIONS
from proxy.hparams import SCHEDULES
from proxy.ladder import Rung, get_ladder, ladder_names


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "train", help="train one rung of a ladder once and print its result",
        description="Train one rung of a preset ladder on the built-in data and report the "
                    "evaluation loss (overall and per domain), expert load, throughput and cost.")
    p.add_argument("--rung", required=True, help="rung name, e.g. w32 (see --ladder for the names)")
    p.add_argument("--lr", type=float, required=True, help="peak learning rate of AdamW")
    p.add_argument("--backend", choices=("torch", "jax"), default="torch",
                   help="training framework (default: torch)")
    p.add_argument("--ladder", default="cpu", choices=ladder_names(),
                   help="preset ladder the rung belongs to (default: cpu)")
    p.add_argument("--tokens", type=int, default=0,
                   help="training tokens; 0 (default) uses the rung's budget from the token rule")
    p.add_argument("--batch-size", type=int, default=0,
                   help="sequences per step; 0 (default) uses the rung's batch size")
    p.add_argument("--seed", type=int, default=0, help="seed of the initialisation and data order")
    p.add_argument("--json", metavar="PATH", help="write the result with its provenance as JSON here")
    p.add_argument("--dtype", choices=("float32", "float64"), default="float32",
                   help="master-weight dtype (default: float32)")
    add_device_argument(p)
    p.add_argument("--precision", choices=PRECISIONS, default="fp32",
                   help="fp32 (default; full float32 matmuls), tf32, or bf16 mixed precision "
                        "(bfloat16 matmuls and activations over float32 master weights)")
    p.add_argument("--micro-batches", default="1", metavar="K|auto",
                   help="gradient accumulation: K equal micro-batches per step (dividing the batch), or auto "
                        "(planned from the accelerator's memory; 1 on the CPU); default 1")
    p.add_argument("--checkpoint", choices=("auto", "on", "off"), default="off",
                   help="recompute each block's activations in the backward instead of keeping them "
                        "(auto: when the accelerator's memory needs it); default off")
    p.add_argument("--dispatch", choices=("fast", "loop", "dense"), default="fast",
                   help="expert dispatch: fast (default), the per-expert loop, or the dense oracle")
    defaults = TrainHParams()
    p.add_argument("--aux-loss-coef", type=float, default=defaults.aux_loss_coef,
                   help=f"coefficient of the load-balancing loss (default: {defaults.aux_loss_coef})")
    p.add_argument("--z-loss-coef", type=float, default=defaults.z_loss_coef,
                   help=f"coefficient of the router z-loss (default: {defaults.z_loss_coef})")
    p.add_argument("--schedule", choices=SCHEDULES, default=defaults.schedule,
                   help=f"learning-rate schedule after warmup (default: {defaults.schedule})")
    p.add_argument("--threads", type=int, default=0,
                   help="intra-op CPU threads for torch (JAX sizes its pool at start-up); "
                        "0 (default) keeps the framework's default")
    p.set_defaults(func=run)


def add_device_argument(p: argparse.ArgumentParser, default: str | None = "auto") -> None:
    """``--device`` of every command that trains (proxy.backends.placement); ``default=None``
    for the commands that read an experiment file, whose ``device`` it then overrides."""
    said = "auto" if default else "the experiment file's device, whose default is auto"
    p.add_argument("--device", default=default,
                   help=f"auto | cpu | cuda | cuda:N | tpu | tpu:N (default: {said}; auto is the "
                        "accelerator the framework sees, else the CPU; a named device that is not "
                        "there is an error)")


def _micro_batches(text: str) -> int | str:
    if text == "auto":
        return text
    try:
        k = int(text)
    except ValueError:
        k = 0
    if k < 1:
        raise ValueError(f"--micro-batches must be a positive integer or auto, got {text!r}")
    return k


def git_commit() -> str | None:
    """The commit of the source checkout (the package's folder, else the working directory)."""
    for where in (Path(__file__).resolve().parents[2], Path.cwd()):
        try:
            out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=where, capture_output=True,
                                 text=True, timeout=5, check=False)
        except (OSError, subprocess.SubprocessError):
            continue
        if out.returncode == 0 and out.stdout.strip():
            return out.stdout.strip()
    return None


def provenance(backend: str, seed: int, **extra: Any) -> dict[str, Any]:
    """Toolkit version, git commit (None when not in a checkout), backend and seed."""
    return {"toolkit_version": __version__, "git_commit": git_commit(), "backend": backend,
            "seed": seed, "created_unix_s": round(time.time(), 3), **extra}


def read_result_json(path: str | Path) -> tuple[TrainResult, dict[str, Any]]:
    """The ``TrainResult`` and the provenance stored by ``ladder train --json``."""
    data = json.loads(Path(path).read_text())
    if not isinstance(data, dict) or "result" not in data:
        raise ValueError(f"{path} is not a `ladder train` result file (no 'result' key)")
    return TrainResult.from_dict(data["result"]), dict(data.get("provenance", {}))


class _Progress:
    """tqdm bar on stderr: step, training loss, tokens/s."""

    def __init__(self, tokens_per_step: int) -> None:
        from tqdm import tqdm

        self._tqdm = tqdm
        self._bar = None
        self._tokens_per_step = tokens_per_step
        self._start = time.perf_counter()

    def __call__(self, step: int, total: int, loss: float) -> None:
        if self._bar is None:
            self._bar = self._tqdm(total=total, file=sys.stderr, unit="step", dynamic_ncols=True,
                                   disable=None)
            self._start = time.perf_counter()
        done = min(step + 1, total)
        self._bar.update(done - self._bar.n)
        elapsed = max(time.perf_counter() - self._start, 1e-9)
        self._bar.set_postfix(loss=f"{loss:.3f}", tok_s=f"{done * self._tokens_per_step / elapsed:,.0f}",
                              refresh=False)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()


def summary(rung: Rung, ladder: str, result: TrainResult) -> str:
    """The readable report printed when training ends."""
    counts = param_counts(rung.config)
    load = result.expert_load
    lines = [
        f"rung            {ladder}/{rung.name} ({rung.config.name})",
        f"backend         {result.backend}, seed {result.seed}",
        f"parameters      {counts.total:,} total, {counts.active:,} active "
        f"({counts.active_non_embedding:,} active non-embedding)",
        f"tokens          {result.tokens:,} in {result.steps:,} steps",
        f"training FLOPs  {result.flops:.3e}",
    ]
    if result.diverged:
        lines.append(f"diverged        yes, at step {result.diverged_step}: {result.divergence_reason}")
    else:
        lines.append(f"eval loss       {result.final_loss:.4f} nats/byte (train {result.final_train_loss:.4f})")
        for domain, loss in sorted(result.eval_loss_by_domain.items()):
            lines.append(f"  {domain:<13} {loss:.4f}")
        lines.append(f"expert load     max/mean {load.max_over_mean:.3f}, balance loss "
                     f"{load.balance_loss:.4f}, dropped {100 * load.dropped_fraction:.2f}%")
        lines.append("diverged        no")
    lines.append(f"throughput      {result.tokens_per_s:,.0f} tokens/s, wall time {result.wall_time_s:.1f} s")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    rung = get_ladder(args.ladder).rung(args.rung)
    if args.tokens < 0:
        raise ValueError(f"--tokens must be >= 0, got {args.tokens}")
    if args.batch_size < 0:
        raise ValueError(f"--batch-size must be >= 0, got {args.batch_size}")
    if args.threads < 0:
        raise ValueError(f"--threads must be >= 0, got {args.threads}")
    batch_size = args.batch_size or rung.batch_size
    tokens = args.tokens or rung.tokens
    hparams = TrainHParams(lr=args.lr, aux_loss_coef=args.aux_loss_coef, z_loss_coef=args.z_loss_coef,
                           schedule=args.schedule, batch_size=batch_size, tokens=tokens)
    backend = load_backend(args.backend)
    if args.threads:
        from proxy.diagnostics.bench import set_threads

        set_threads(args.backend, args.threads)
    from proxy.data import load_data

    data = load_data()
    counts = param_counts(rung.config)
    print(f"training {args.ladder}/{rung.name}: {counts.total:,} parameters ({counts.active:,} active), "
          f"{tokens:,} tokens ({train_flops(rung.config, tokens):.2e} FLOPs), batch {batch_size}, "
          f"lr {args.lr:g}, {args.backend}", file=sys.stderr)
    bar = _Progress(batch_size * rung.config.seq_len)
    try:
        result = backend.train(rung.config, hparams, data, args.seed, progress=bar,
                               dispatch=args.dispatch, dtype=args.dtype, device=args.device,
                               precision=args.precision, micro_batches=_micro_batches(args.micro_batches),
                               checkpoint={"on": True, "off": False}.get(args.checkpoint, "auto"))
    finally:
        bar.close()
    print(summary(rung, args.ladder, result))
    if args.json:
        write_result_json(args.json, result, provenance(args.backend, args.seed, dtype=args.dtype,
                                                        dispatch=args.dispatch, device=args.device,
                                                        precision=args.precision),
                          ladder=args.ladder, rung=rung.name)
        print(f"wrote {args.json}", file=sys.stderr)
    return 0


def write_result_json(path: str | Path, result: TrainResult, prov: Mapping[str, Any], *,
                      ladder: str, rung: str) -> None:
    path = Path(path)
    if path.parent and not path.parent.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
    payload = {"provenance": dict(prov), "ladder": ladder, "rung": rung, "result": result.to_dict()}
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    tmp.write_text(json.dumps(payload, indent=2, allow_nan=False) + "\n")
    tmp.replace(path)
