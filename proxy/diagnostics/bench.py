"""Training-step throughput of the ladder's rungs, measured side by side in one run.

Framework-free: it calls each backend's ``step_runner`` (``proxy.backends``) and the
framework's matrix-multiply timer (``proxy.backends.torch.bench`` / ``proxy.backends.jax.bench``), both imported
lazily by name, so ``import proxy.diagnostics.bench`` loads no framework.

What is measured, per rung and backend:

- tokens per second of a full training step (forward, backward, AdamW) with the fast expert
  dispatch and with the per-expert masked loop. Each (backend, dispatch) gets a ready-to-run
  step (``step_runner``: model, optimiser, warm-up); then single steps *alternate*, fast, loop,
  loop, fast, ..., for ``steps`` rounds, and that is repeated ``repeats`` times with fresh
  runners. Every reported time is a median over all rounds, and every ratio is the median of
  the per-round ratios: the two steps of a round are a fraction of a second apart, so a slow
  spell on a shared machine hits both. (Timing blocks of consecutive steps instead, one
  dispatch after the other, let such spells land on one side: at the w96 rung the same code
  gave fast/loop anywhere from 0.93x to 1.50x; paired single steps gave 1.13x to 1.25x over
  two days. The README's ``ladder bench`` section has the measured figures.)
- where the backend can time it (torch, ``moe_layer_runner``), one MoE layer's forward and
  backward alone in each dispatch, alternated in the same rounds: the gain of the dispatch
  itself. The rest of a step (attention, norms, embedding, readout, loss, AdamW) runs the same
  code in both dispatches, so the step's fast/loop is that gain diluted by the shared work
  (Amdahl's law: ``(S + R M) / (S + M)`` for shared time S, fast MoE time M and layer ratio R).
  The table prints both ratios and the share of the fast step spent in MoE layers;
- model-FLOPs utilisation: ``MFU = train_flops_per_token * tokens_per_s / peak`` with
  ``train_flops_per_token = 6 N_active_non_embedding + 6 n_layers seq_len d_attn`` (Kaplan et
  al. 2020; ``proxy.flops``) and ``peak`` the FLOP/s of a large float32 matrix product timed in
  the same framework, with the same threads, in the same run (the best of a timing before and
  one after the rungs).

With two backends, the fast step times of both are also put side by side (their ratio) with
JAX's compile time. With ``compile=True`` torch also times its fast step under ``torch.compile``
(dispatch ``"compiled"``: ``proxy.backends.torch.bench.step_runner``) in the same rounds, and
the table gives eager / compiled step time per round and the same over one trial of the rung
(its ``steps`` steps plus the compile, which a trial pays once).
"""

from __future__ import annotations

import dataclasses
import statistics
import time
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any, Callable, Sequence

from proxy.backends import FRAMEWORKS, framework_part, load_backend
from proxy.flops import param_counts, train_flops_per_token
from proxy.ladder import Rung

DISPATCHES = ("fast", "loop")
COMPILED = "compiled"     # torch only: the fast dispatch under torch.compile
CLOCKS = ("wall", "cpu")


def _peak_module(backend: str) -> ModuleType:
    if backend not in FRAMEWORKS:
        raise ValueError(f"backend must be one of {', '.join(FRAMEWORKS)} for benchmarks, got {backend!r}")
    return framework_part(backend, "bench")


def set_threads(backend: str, n: int) -> int:
    """Set the framework's intra-op thread count (0 leaves it); returns the count in effect."""
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise ValueError(f"threads must be an int >= 0, got {n!r}")
    return _peak_module(backend).set_threads(n)


def matmul_peak(backend: str, n: int = 2048, repeats: int = 5, dtype: str = "float32",
                clock: str = "wall") -> float:
    """FLOP/s of a large square matrix product in ``backend``'s framework (``clock`` as in
    ``bench_rungs``)."""
    return _peak_module(backend).matmul_peak(n=n, repeats=repeats, dtype=dtype, clock=clock)


@dataclass(frozen=True)
class DispatchTiming:
    """Medians over all rounds; ``samples`` are the step seconds of each round, in round order
    (the same order for every dispatch of a rung, so sample i of two dispatches are a pair);
    ``compile_s`` is the longest compile seen (the first, before a compile cache holds the step)."""

    dispatch: str
    step_s: float
    tokens_per_s: float
    mfu: float
    samples: tuple[float, ...]
    compile_s: float | None = None
    moe_layer_s: float | None = None   # one MoE layer, forward and backward (median); None: not timed
    moe_layer_samples: tuple[float, ...] = ()


def paired_ratio(numerators: Sequence[float], denominators: Sequence[float]) -> float:
    """Median over rounds of numerator_i / denominator_i (pairs measured side by side)."""
    if len(numerators) != len(denominators) or not numerators:
        raise ValueError(f"need equally many paired samples, got {len(numerators)} and {len(denominators)}")
    return statistics.median(n / d for n, d in zip(numerators, denominators))


@dataclass(frozen=True)
class RungBench:
    rung: str
    backend: str
    params_total: int
    params_active: int
    flops_per_token: float
    batch_size: int
    timings: tuple[DispatchTiming, ...]
    n_moe_layers: int = 0
    trial_steps: int = 0    # optimiser steps of one trial at the rung's budget

    @property
    def eager_over_compiled(self) -> tuple[float, float] | None:
        """(per step, per trial): the eager fast step's time over the compiled one's, the median
        over rounds, and a whole trial's (``trial_steps`` steps; the compiled side also pays its
        compile once); > 1 means compiling wins. None when no compiled step was timed."""
        if COMPILED not in {t.dispatch for t in self.timings}:
            return None
        fast, comp = self.timing("fast"), self.timing(COMPILED)
        per_step = paired_ratio(fast.samples, comp.samples)
        n = max(self.trial_steps, 1)
        return per_step, n * fast.step_s / ((comp.compile_s or 0.0) + n * comp.step_s)

    def timing(self, dispatch: str) -> DispatchTiming:
        for t in self.timings:
            if t.dispatch == dispatch:
                return t
        raise KeyError(dispatch)

    @property
    def fast_over_loop(self) -> float | None:
        """Speed-up of the fast dispatch over the per-expert loop: the median over rounds of
        loop step time / fast step time; None when the backend has no loop dispatch."""
        dispatches = {t.dispatch for t in self.timings}
        if not {"fast", "loop"} <= dispatches:
            return None
        return paired_ratio(self.timing("loop").samples, self.timing("fast").samples)

    @property
    def moe_fast_over_loop(self) -> float | None:
        """The same ratio for one MoE layer alone: what the dispatch itself gains."""
        if self.fast_over_loop is None:
            return None
        fast, loop = self.timing("fast").moe_layer_samples, self.timing("loop").moe_layer_samples
        return paired_ratio(loop, fast) if fast and loop else None

    def moe_share(self, dispatch: str) -> float | None:
        """Fraction of a ``dispatch`` step spent in the rung's MoE layers (None: not timed)."""
        t = self.timing(dispatch)
        return None if t.moe_layer_s is None else self.n_moe_layers * t.moe_layer_s / t.step_s


@dataclass(frozen=True)
class BenchReport:
    rows: tuple[RungBench, ...]
    peak_flops: dict[str, float]             # backend -> FLOP/s of the large matmul
    threads: dict[str, int]
    steps: int
    repeats: int
    dtype: str
    notes: tuple[str, ...] = field(default_factory=tuple)
    clock: str = "wall"

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        for row, out in zip(self.rows, data["rows"]):
            out["fast_over_loop"] = row.fast_over_loop
            out["moe_fast_over_loop"] = row.moe_fast_over_loop
            out["moe_share_fast"] = row.moe_share("fast")
            out["eager_over_compiled"] = row.eager_over_compiled
        data["jax_over_torch"] = {rung: ratio for rung, ratio in self.jax_vs_torch().items()}
        return data

    def jax_vs_torch(self) -> dict[str, float]:
        """Rung -> torch fast step time / JAX fast step time (> 1: JAX is faster), paired by round."""
        out: dict[str, float] = {}
        by_key = {(r.rung, r.backend): r for r in self.rows}
        for (rung, backend), row in by_key.items():
            if backend == "torch" and (rung, "jax") in by_key:
                out[rung] = paired_ratio(row.timing("fast").samples, by_key[(rung, "jax")].timing("fast").samples)
        return out

    def table(self) -> str:
        """An aligned plain-text table, one line per rung and backend."""
        head = ("rung", "backend", "params", "active", "MFLOP/tok", "fast tok/s", "loop tok/s",
                "fast/loop", "MoE layer f/l", "MoE share", "MFU fast", "MFU loop",
                "compile s")  # compile: the longest seen; MoE share: of the fast step
        lines = [head]
        for r in self.rows:
            fast = r.timing("fast")
            loop = r.timing("loop") if r.fast_over_loop is not None else None
            lines.append((r.rung, r.backend, _si(r.params_total), _si(r.params_active),
                          f"{r.flops_per_token / 1e6:.2f}", f"{fast.tokens_per_s:,.0f}",
                          "-" if loop is None else f"{loop.tokens_per_s:,.0f}",
                          "-" if loop is None else f"{r.fast_over_loop:.2f}x",
                          "-" if r.moe_fast_over_loop is None else f"{r.moe_fast_over_loop:.2f}x",
                          "-" if r.moe_share("fast") is None else f"{100 * r.moe_share('fast'):.0f}%",
                          f"{100 * fast.mfu:.1f}%", "-" if loop is None else f"{100 * loop.mfu:.1f}%",
                          "-" if fast.compile_s is None else f"{fast.compile_s:.1f}"))
        widths = [max(len(line[i]) for line in lines) for i in range(len(head))]
        text = ["  ".join(c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in enumerate(zip(line, widths)))
                for line in lines]
        text.insert(1, "  ".join("-" * w for w in widths))
        peaks = ", ".join(f"{b} {p / 1e9:.0f} GFLOP/s ({self.threads.get(b, '?')} threads)"
                          for b, p in self.peak_flops.items())
        text.append("")
        text.append(f"matmul peak ({self.dtype}, 2048^3): {peaks}; {self.steps} rounds x {self.repeats} "
                    f"repetitions of single steps alternating between the dispatches; medians, and "
                    f"ratios as medians of the per-round ratios; {self.clock} clock")
        if any(r.moe_fast_over_loop is not None for r in self.rows):
            text.append("MoE layer f/l: one MoE layer's forward+backward alone, loop time / fast "
                        "time (the dispatch's own gain); the rest of a step is the same code in "
                        "both, so the step's fast/loop is that gain diluted. MoE share: the rung's "
                        "MoE layers' part of the fast step.")
        ratios = self.jax_vs_torch()
        if ratios:
            text.append("torch fast step time / JAX fast step time: " +
                        ", ".join(f"{k} {v:.2f}x" for k, v in ratios.items()))
        compiled = [r for r in self.rows if r.eager_over_compiled is not None]
        if compiled:
            text.append("torch eager fast step time / compiled step time (> 1: compiling wins): " + ", ".join(
                f"{r.rung} {r.eager_over_compiled[0]:.2f}x a step, {r.eager_over_compiled[1]:.2f}x over a "
                f"trial of {r.trial_steps} steps with its {r.timing(COMPILED).compile_s or 0:.0f} s compile"
                for r in compiled))
        text.extend(self.notes)
        return "\n".join(text)


def _si(n: float) -> str:
    for scale, suffix in ((1e9, "B"), (1e6, "M"), (1e3, "K")):
        if abs(n) >= scale:
            return f"{n / scale:.2f}{suffix}"
    return f"{n:.0f}"


def bench_rungs(rungs: Sequence[Rung], backends: Sequence[str] = ("torch",), *, steps: int = 10,
                repeats: int = 3, batch_size: int | None = None, warmup: int = 2, threads: int = 0,
                dtype: str = "float32", clock: str = "wall", compile: bool = False,
                log: Callable[[str], None] | None = None) -> BenchReport:
    """Benchmark every rung with every backend: ``repeats`` times, fresh step runners for every
    (backend, dispatch), then ``steps`` rounds of one step each, alternating.

    ``batch_size`` (sequences per step) defaults to each rung's own. Returns medians and paired
    ratios (module docstring). ``clock="wall"`` times steps with ``perf_counter``. ``clock="cpu"``
    is for a shared, loaded machine, where wall time measures the other tenants: each step is
    timed in process CPU time, and so is the peak. With one thread (``threads=1``) that is the
    time the step takes on one quiet core; with more, spin-waiting threads inflate it.
    """
    if clock not in CLOCKS:
        raise ValueError(f"clock must be one of {CLOCKS}, got {clock!r}")
    for name, value, low in (("steps", steps, 1), ("repeats", repeats, 1), ("warmup", warmup, 0)):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ValueError(f"{name} must be an int >= {low}, got {value!r}")
    if batch_size is not None and (isinstance(batch_size, bool) or not isinstance(batch_size, int)
                                   or batch_size <= 0):
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    if not rungs:
        raise ValueError("rungs must not be empty")
    modules = {b: load_backend(b) for b in backends}
    used = {b: set_threads(b, threads) for b in backends}
    peaks = {b: matmul_peak(b, dtype=dtype, clock=clock) for b in backends}
    timer = time.process_time if clock == "cpu" else time.perf_counter
    # A backend without a per-expert loop (JAX's dispatches are "fast" and "dense") refuses
    # dispatch="loop" with a ValueError on its first try; it is then timed on "fast" alone.
    supported = {b: list(DISPATCHES) + ([COMPILED] if compile and b == "torch" else []) for b in backends}
    rows = []
    for rung in rungs:
        bs = batch_size or rung.batch_size
        step_s: dict[tuple[str, str], list[float]] = {}
        layer_s: dict[tuple[str, str], list[float]] = {}
        compile_s: dict[tuple[str, str], list[float]] = {}
        for rep in range(repeats):
            if log:
                log(f"{rung.name}: setting up the runners (repetition {rep + 1}/{repeats})")
            runners = _runners(modules, supported, rung, bs, warmup, dtype, first=rep == 0)
            for key, (_, _, compiled) in runners.items():
                if compiled is not None:
                    compile_s.setdefault(key, []).append(compiled)
            keys = list(runners)
            if log:
                log(f"{rung.name}: {steps} rounds of {', '.join(f'{b} {d}' for b, d in keys)} "
                    f"(repetition {rep + 1}/{repeats})")
            for i in range(steps):
                order = keys if i % 2 == 0 else keys[::-1]  # neither side always goes first
                for key in order:
                    step_s.setdefault(key, []).append(_timed(runners[key][0], timer))
                for key in order:
                    layer = runners[key][1]
                    if layer is not None:
                        layer_s.setdefault(key, []).append(_timed(layer, timer))
            del runners  # the next repetition's models replace these
        counts = param_counts(rung.config)
        fpt = train_flops_per_token(rung.config)
        tokens = bs * rung.config.seq_len
        for b in backends:
            timings = []
            for d in supported[b]:
                samples, layers = step_s[(b, d)], layer_s.get((b, d), [])
                median_s = statistics.median(samples)
                compiles = compile_s.get((b, d))
                timings.append(DispatchTiming(
                    d, median_s, tokens / median_s, fpt * tokens / median_s / peaks[b], tuple(samples),
                    max(compiles) if compiles else None,
                    statistics.median(layers) if layers else None, tuple(layers)))
            rows.append(RungBench(rung.name, b, counts.total, counts.active, fpt, bs, tuple(timings),
                                  len(rung.config.moe_layers), max(1, rung.tokens // tokens)))
    # A second peak timing after the rungs: the peak is the best the machine did in this run.
    peaks = {b: max(p, matmul_peak(b, dtype=dtype, clock=clock)) for b, p in peaks.items()}
    rows = [dataclasses.replace(r, timings=tuple(
        dataclasses.replace(t, mfu=r.flops_per_token * t.tokens_per_s / peaks[r.backend])
        for t in r.timings)) for r in rows]
    notes = tuple(f"{b}: no per-expert loop dispatch, timed on the fast one only"
                  for b in backends if "loop" not in supported[b])
    return BenchReport(tuple(rows), peaks, used, steps, repeats, dtype, notes, clock)


Runner = Callable[[], None]


def _runners(modules: dict[str, ModuleType], supported: dict[str, list[str]], rung: Rung,
             batch_size: int, warmup: int, dtype: str, *, first: bool
             ) -> dict[tuple[str, str], tuple[Runner, Runner | None, float | None]]:
    """(backend, dispatch) -> (training step, MoE layer or None, compile seconds or None), built
    and warmed up. On the ``first`` repetition a backend that refuses a dispatch other than
    "fast" with a ValueError loses it from ``supported``; later, a refusal is an error."""
    runners: dict[tuple[str, str], tuple[Runner, Runner | None, float | None]] = {}
    for b, module in modules.items():
        for d in list(supported[b]):
            try:
                step, info = module.step_runner(rung.config, dispatch=d, batch_size=batch_size,
                                                warmup=warmup, dtype=dtype)
            except ValueError:
                if d == "fast" or not first:
                    raise
                supported[b].remove(d)
                continue
            make_layer = getattr(module, "moe_layer_runner", None)  # torch only; JAX fuses the step
            layer = None if make_layer is None or not rung.config.moe_layers or d == COMPILED else make_layer(
                rung.config, dispatch=d, batch_size=batch_size, warmup=warmup, dtype=dtype)
            compiled = info.get("compile_s")
            runners[(b, d)] = (step, layer, None if compiled is None else float(compiled))
    return runners


def _timed(run: Runner, timer: Callable[[], float]) -> float:
    t0 = timer()
    run()
    return timer() - t0
