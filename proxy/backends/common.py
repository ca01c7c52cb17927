"""Framework-free pieces shared by every trainer (``proxy.backends.torch.trainer``, ``proxy.backends.jax.trainer``).

Keeping these in one place is what makes the two backends report identically: the step count,
the data stream, the divergence rule, the routing statistics and the ``TrainResult`` assembly.
"""

from __future__ import annotations

import itertools
import math
from typing import Any, Callable, Iterable, Iterator, Mapping

import numpy as np

from proxy.config import ModelConfig
from proxy.flops import param_counts, train_flops
from proxy.hparams import TrainHParams
from proxy.ladder import default_tokens
from proxy.result import ExpertLoad, TrainResult


def total_steps(config: ModelConfig, hparams: TrainHParams) -> int:
    """max(1, tokens // (batch_size * seq_len)), tokens = hparams.tokens or the rung default."""
    tokens = hparams.tokens or default_tokens(config)
    return max(1, tokens // (hparams.batch_size * config.seq_len))


def check_micro_batches(batch_size: int, micro_batches: int) -> None:
    """Gradient accumulation splits a batch into equal micro-batches: k must divide it."""
    if isinstance(micro_batches, bool) or not isinstance(micro_batches, int) or micro_batches < 1:
        raise ValueError(f"micro_batches must be a positive integer, got {micro_batches!r}")
    if batch_size % micro_batches:
        raise ValueError(f"micro_batches {micro_batches} does not divide the batch size {batch_size}")


def batch_stream(data: Any, batches: Iterable[np.ndarray] | None, seed: int, batch_size: int,
                 seq_len: int) -> Iterator[np.ndarray]:
    """The training batches: ``batches`` when given (parity tests), else ``data.batches(seed, ...)``."""
    if batches is not None:
        return iter(batches)
    if data is None:
        raise ValueError("train needs data (a MixtureData) or batches")
    return iter(data.batches(seed, batch_size, seq_len))


def next_batch(stream: Iterator[np.ndarray], step: int, n_steps: int, shape: tuple[int, int],
               dtype: Any) -> np.ndarray:
    """The next batch as an integer array of ``shape``, with a clear error when the stream is short or wrong."""
    try:
        batch = np.asarray(next(stream), dtype=dtype)
    except StopIteration:
        raise ValueError(f"batches ended after {step} of {n_steps} steps") from None
    if batch.shape != shape:
        raise ValueError(f"batch {step} has shape {batch.shape}, expected {shape}")
    return batch


def divergence_reason(value: float, threshold: float, step: int) -> str:
    """Why a training loss counts as diverged ('' when it does not): non-finite, or above the threshold."""
    if not math.isfinite(value):
        return f"non-finite training loss ({value}) at step {step}"
    if value > threshold:
        return f"training loss {value:.4g} above the divergence threshold {threshold:.4g} at step {step}"
    return ""


def final_evaluation(data: Any, diverged: bool, seq_len: int, batch_size: int, eval_batches: int,
                     evaluate: Callable[[Mapping[str, np.ndarray]], tuple[dict[str, float], ExpertLoad]]
                     ) -> tuple[float, dict[str, float], ExpertLoad]:
    """(final loss, per-domain losses, routing statistics) of a finished run.

    A diverged run is not evaluated (final loss +inf); a run without data (parity tests) has a
    NaN final loss; otherwise ``evaluate`` runs on the fixed evaluation sets and the final loss
    is the evaluation mix's weighted mean (``MixtureData.overall_eval_loss``).
    """
    if diverged:
        return math.inf, {}, ExpertLoad()
    if data is None:
        return math.nan, {}, ExpertLoad()
    per_domain, load = evaluate(data.eval_sets(seq_len, batch_size, eval_batches))
    return float(data.overall_eval_loss(per_domain)), per_domain, load


def expert_load(fractions: list[np.ndarray], dropped: list[float], balance: list[float]) -> ExpertLoad:
    """Average routing statistics; max_over_mean = E * max f_e over layers (1 at perfect balance)."""
    if not fractions or fractions[0].size == 0:
        return ExpertLoad()
    f = np.mean(fractions, axis=0)
    return ExpertLoad(fractions=tuple(tuple(float(x) for x in row) for row in f),
                      max_over_mean=float(f.max() * f.shape[1]),
                      dropped_fraction=float(np.mean(dropped)), balance_loss=float(np.mean(balance)))


def downsample(losses: list[float], points: int) -> tuple[tuple[int, float], ...]:
    """At most ``points`` (step, loss) pairs evenly spaced over the run, first and last kept."""
    if not losses:
        return ()
    idx = np.unique(np.round(np.linspace(0, len(losses) - 1, min(points, len(losses)))).astype(int))
    return tuple((int(i), float(losses[i])) for i in idx)


def assemble_result(*, config: ModelConfig, hparams: TrainHParams, backend: str, seed: int,
                    losses: list[float], final_loss: float, per_domain: Mapping[str, float],
                    load: ExpertLoad, diverged_step: int | None, reason: str, wall_time_s: float,
                    train_time_s: float) -> TrainResult:
    """The ``TrainResult`` of a run; tokens and FLOPs count the steps actually taken."""
    steps_run = len(losses)
    tokens = steps_run * hparams.batch_size * config.seq_len
    counts = param_counts(config)
    return TrainResult(
        final_loss=final_loss, eval_loss_by_domain=dict(per_domain),
        final_train_loss=losses[-1] if losses else math.nan,
        loss_curve=downsample(losses, hparams.log_points), steps=steps_run, tokens=tokens,
        flops=train_flops(config, tokens), wall_time_s=wall_time_s,
        tokens_per_s=tokens / train_time_s if train_time_s > 0 else 0.0, expert_load=load, seed=seed,
        backend=backend, diverged=diverged_step is not None, diverged_step=diverged_step,
        divergence_reason=reason, params_total=counts.total, params_active=counts.active,
        config=config.to_dict(), hparams=hparams.to_dict())


# --------------------------------------------------------------------------------------
# Benchmark steps (each trainer's ``step_runner``, timed by ``proxy.diagnostics.bench``)
# --------------------------------------------------------------------------------------
# The learning-rate schedule's length in a benchmark: the lr sets an update's size, never its
# cost, so any long schedule will do.
BENCH_HORIZON = 1_000_000


def check_bench_args(warmup: int, batch_size: int) -> None:
    """A benchmark runner's ``warmup`` and ``batch_size``, or a ValueError naming both."""
    if warmup < 0 or batch_size <= 0:
        raise ValueError(f"need warmup >= 0, batch_size > 0; got {warmup}, {batch_size}")


def bench_batches(config: ModelConfig, batch_size: int, warmup: int, seed: int,
                  n: int = 4) -> list[np.ndarray]:
    """The ``n`` random byte batches (batch_size, seq_len + 1) a step runner cycles through;
    checks the runner's ``warmup`` and ``batch_size`` first."""
    check_bench_args(warmup, batch_size)
    rng = np.random.default_rng(seed)
    return [rng.integers(0, config.vocab_size, (batch_size, config.seq_len + 1)) for _ in range(n)]


def warmed_up(step_at: Callable[[int], None], warmup: int) -> Callable[[], None]:
    """A callable running ``step_at(0)``, ``step_at(1)``, ... one per call, the first ``warmup``
    of them already run."""
    counter = itertools.count()

    def step() -> None:
        step_at(next(counter))

    for _ in range(warmup):
        step()
    return step
