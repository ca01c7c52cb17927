"""Learning-rate transfer across width: sweep the lr on a few widths under SP and muP.

muP's promise (Yang et al. 2022, "Tensor Programs V", Figure 1) is that the best learning rate
stays put as the model widens, while under SP it moves (for Adam, roughly as 1/width for the
hidden weights). This module sweeps a log grid of learning rates on widths of the CPU ladder
(``proxy.ladder``: depth 4, head_dim 16, 8 experts top-2, base width 32), finds the best lr per
width by a parabola in log lr through the grid minimum and its two neighbours, and reports how
far it moves. Training goes through a backend's ``train`` (``proxy.backends``) on the built-in
data; a diverged run scores its divergence threshold, so it never looks best. Every seed's
losses are kept, so the shift can be read per seed too: at CPU scale the seed-to-seed spread
of the best lr is as large as the effect (README, "Learning-rate transfer").

Framework-free: the backend is passed in, or loaded by name in each worker process
(``workers`` > 1 trains runs in parallel; ``ladder lr-transfer`` is the command line).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from proxy.hparams import TrainHParams, divergence_threshold
from proxy.ladder import get_ladder


def best_log_lr(lrs: Sequence[float], losses: Sequence[float]) -> float:
    """log of the best lr: the vertex of a parabola in log lr through the grid minimum and its
    two neighbours (the grid point itself when it sits on an edge or the parabola is not convex).
    """
    x = np.log(np.asarray(lrs, dtype=np.float64))
    y = np.asarray(losses, dtype=np.float64)
    if x.size != y.size or x.size < 1:
        raise ValueError(f"best_log_lr needs matching lrs and losses, got {x.size} and {y.size}")
    order = np.argsort(x)
    x, y = x[order], np.where(np.isfinite(y[order]), y[order], np.inf)
    i = int(np.argmin(y))
    if i == 0 or i == x.size - 1 or not np.all(np.isfinite(y[i - 1:i + 2])):
        return float(x[i])
    a, b, _ = np.polyfit(x[i - 1:i + 2], y[i - 1:i + 2], 2)
    if a <= 0:
        return float(x[i])
    return float(np.clip(-b / (2 * a), x[i - 1], x[i + 1]))


@dataclass(frozen=True)
class LrTransferResult:
    """Losses of an lr sweep: ``losses[param][width]`` (seed mean) aligned with ``lrs``, and
    ``per_seed[param][width][i]`` the losses of the i-th seed; best lr per width."""

    lrs: tuple[float, ...]
    widths: tuple[int, ...]
    losses: Mapping[str, Mapping[int, tuple[float, ...]]]
    tokens: int
    seeds: tuple[int, ...]
    backend: str
    settings: Mapping[str, Any] = field(default_factory=dict)
    per_seed: Mapping[str, Mapping[int, tuple[tuple[float, ...], ...]]] = field(default_factory=dict)

    @property
    def parametrizations(self) -> tuple[str, ...]:
        return tuple(self.losses)

    def best_lr(self, parametrization: str, width: int) -> float:
        return math.exp(best_log_lr(self.lrs, self.losses[parametrization][width]))

    def shift(self, parametrization: str) -> float:
        """max / min of the best lr over the widths (1 = no movement)."""
        best = [self.best_lr(parametrization, w) for w in self.widths]
        return max(best) / min(best)

    def seed_shifts(self, parametrization: str) -> tuple[float, ...]:
        """The shift measured on each seed alone: how much of the movement is seed noise."""
        runs = self.per_seed.get(parametrization, {})
        if not runs:
            return ()
        out = []
        for i in range(len(self.seeds)):
            best = [math.exp(best_log_lr(self.lrs, runs[w][i])) for w in self.widths]
            out.append(max(best) / min(best))
        return tuple(out)

    def summary_lines(self) -> list[str]:
        lines = []
        for p in self.losses:
            best = ", ".join(f"w{w}: {self.best_lr(p, w):.3g}" for w in self.widths)
            per_seed = self.seed_shifts(p)
            seeds = (f" (single seeds: {', '.join(f'{x:.2f}' for x in per_seed)})"
                     if len(per_seed) > 1 else "")
            lines.append(f"{p:>4}: best lr {best}; max/min = {self.shift(p):.2f}{seeds}")
        return lines

    def to_dict(self) -> dict[str, Any]:
        def clean(v: float) -> float | None:
            return v if math.isfinite(v) else None

        return {"lrs": list(self.lrs), "widths": list(self.widths), "tokens": self.tokens,
                "seeds": list(self.seeds), "backend": self.backend, "settings": dict(self.settings),
                "losses": {p: {str(w): [clean(v) for v in ls] for w, ls in d.items()}
                           for p, d in self.losses.items()},
                "per_seed": {p: {str(w): [[clean(v) for v in row] for row in rows] for w, rows in d.items()}
                             for p, d in self.per_seed.items()},
                "best_lr": {p: {str(w): self.best_lr(p, w) for w in self.widths} for p in self.losses},
                "shift": {p: self.shift(p) for p in self.losses},
                "seed_shifts": {p: list(self.seed_shifts(p)) for p in self.losses}}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "LrTransferResult":
        def num(v: Any) -> float:
            return math.inf if v is None else float(v)

        return cls(tuple(float(x) for x in d["lrs"]), tuple(int(w) for w in d["widths"]),
                   {p: {int(w): tuple(num(v) for v in ls) for w, ls in dd.items()} for p, dd in d["losses"].items()},
                   int(d["tokens"]), tuple(int(s) for s in d["seeds"]), str(d["backend"]), dict(d.get("settings", {})),
                   {p: {int(w): tuple(tuple(num(v) for v in row) for row in rows) for w, rows in dd.items()}
                    for p, dd in d.get("per_seed", {}).items()})


@dataclass(frozen=True)
class _Job:
    """One training run of the sweep (picklable, for worker processes)."""

    parametrization: str
    width: int
    lr: float
    seed: int
    tokens: int
    batch_size: int
    backend: str
    threads: int


_WORKER_DATA: dict[str, Any] = {}


def _run_job(job: _Job) -> float:
    """Train one run; its score is the final eval loss, or the divergence threshold if it diverged."""
    from proxy.backends import load_backend

    if "data" not in _WORKER_DATA:   # loaded once per worker process
        from proxy.data import load_data
        _WORKER_DATA["data"] = load_data()
        if job.threads > 0 and job.backend != "simulated":
            from proxy.diagnostics.bench import set_threads
            set_threads(job.backend, job.threads)
    return _score(load_backend(job.backend).train, job, _WORKER_DATA["data"])


def _cpu_rungs() -> dict[int, Any]:
    """The cpu ladder's rungs by width."""
    return {r.config.d_model: r for r in get_ladder("cpu").rungs}


def _score(train: Callable[..., Any], job: _Job, data: Any) -> float:
    rung = _cpu_rungs()[job.width]
    config = rung.config.replace(parametrization=job.parametrization)
    hp = TrainHParams(lr=job.lr, tokens=job.tokens, batch_size=job.batch_size or rung.batch_size)
    r = train(config, hp, data, job.seed)
    return divergence_threshold(hp, config.vocab_size) if r.diverged or not math.isfinite(r.final_loss) \
        else float(r.final_loss)


def sweep(train: Callable[..., Any] | None, lrs: Sequence[float], widths: Sequence[int] = (32, 64, 128), *,
          parametrizations: Sequence[str] = ("sp", "mup"), tokens: int = 0, seeds: Sequence[int] = (0,),
          data: Any = None, backend: str = "torch", batch_size: int = 0, workers: int = 1,
          threads: int = 1, progress: Callable[[str], None] | None = None) -> LrTransferResult:
    """Train every (parametrization, width, lr, seed) of the CPU ladder; the loss is the final
    eval loss, averaged over seeds (a diverged run counts as its divergence threshold).

    ``train`` is a backend's ``train(config, hparams, data, seed)`` (None: ``backend``'s);
    ``tokens`` 0 uses each rung's default budget; ``batch_size`` 0 the rung's batch size.
    ``workers`` > 1 trains that many runs at once in separate processes (each with ``threads``
    framework threads; the backend is then loaded by name, and ``train`` must be None). With one
    worker the runs train in this process, whose thread setting is the caller's.
    Results do not depend on ``workers``: every run is deterministic on the CPU.
    """
    by_width = _cpu_rungs()
    missing = [w for w in widths if w not in by_width]
    if missing:
        raise ValueError(f"widths {missing} are not rungs of the cpu ladder ({sorted(by_width)})")
    if not lrs or any(not (lr > 0 and math.isfinite(lr)) for lr in lrs):
        raise ValueError(f"learning rates must be positive and finite, got {list(lrs)}")
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    if workers > 1 and train is not None:
        raise ValueError("workers > 1 loads the backend by name in each worker; pass train=None")
    jobs = [_Job(p, w, float(lr), s, tokens, batch_size, backend, threads)
            for p in parametrizations for w in widths for lr in lrs for s in seeds]
    scores: dict[tuple[str, int, float, int], float] = {}

    def done(job: _Job, value: float) -> None:
        scores[(job.parametrization, job.width, job.lr, job.seed)] = value
        if progress is not None:
            progress(f"[{len(scores)}/{len(jobs)}] {job.parametrization} w{job.width} lr {job.lr:.3g} "
                     f"seed {job.seed}: {value:.4f}")

    if workers == 1:
        if train is None:
            from proxy.backends import load_backend
            train = load_backend(backend).train
        if data is None:
            from proxy.data import load_data
            data = load_data()
        for job in jobs:
            done(job, _score(train, job, data))
    else:
        import concurrent.futures as cf
        import multiprocessing as mp
        # spawn: a fresh interpreter per worker, so no framework state is inherited through fork.
        with cf.ProcessPoolExecutor(workers, mp_context=mp.get_context("spawn")) as pool:
            futures = {pool.submit(_run_job, job): job for job in jobs}
            for fut in cf.as_completed(futures):
                done(futures[fut], fut.result())
    per_seed = {p: {w: tuple(tuple(scores[(p, w, float(lr), s)] for lr in lrs) for s in seeds) for w in widths}
                for p in parametrizations}
    losses = {p: {w: tuple(float(np.mean(col)) for col in zip(*per_seed[p][w])) for w in widths}
              for p in parametrizations}
    return LrTransferResult(tuple(float(x) for x in lrs), tuple(widths), losses, tokens, tuple(seeds),
                            backend, {"batch_size": batch_size}, per_seed)
