"""What ``proxy.diagnostics.bench`` times in PyTorch: a built, warmed-up training step
(``step_runner``), one MoE layer's forward and backward (``moe_layer_runner``), thread control
and the measured matrix-multiply peak."""

from __future__ import annotations

import time
from typing import Any, Callable

import torch

from proxy.backends.common import BENCH_HORIZON, bench_batches, check_bench_args, warmed_up
from proxy.backends.torch.model import TorchMoEModel
from proxy.backends.torch.trainer import build_optimizer, compiled_loss, torch_dtype, training_loss, update
from proxy.config import ModelConfig
from proxy.hparams import TrainHParams

_DTYPES = {"float32": torch.float32, "float64": torch.float64}


def set_threads(n: int) -> int:
    """Use ``n`` intra-op threads (0 leaves the default); returns the count in effect."""
    if n > 0:
        torch.set_num_threads(n)
    return torch.get_num_threads()


def matmul_peak(n: int = 2048, repeats: int = 5, dtype: str = "float32",
                clock: str = "wall") -> float:
    """Achieved FLOP/s of an (n, n) @ (n, n) product: 2 n^3 FLOPs over the best of ``repeats``.

    The best, not the median, because a peak is what the hardware does when nothing else runs.
    """
    gen = torch.Generator().manual_seed(0)
    a = torch.randn(n, n, generator=gen, dtype=_DTYPES[dtype])
    b = torch.randn(n, n, generator=gen, dtype=_DTYPES[dtype])
    a @ b  # warm-up: thread pool start, allocator
    timer = time.process_time if clock == "cpu" else time.perf_counter  # see proxy.diagnostics.bench
    times = []
    for _ in range(repeats):
        start = timer()
        a @ b
        times.append(timer() - start)
    return 2.0 * n ** 3 / min(times)


COMPILED = "compiled"   # the fast dispatch with torch.compile around everything but the MoE layers


def step_runner(config: ModelConfig, *, dispatch: str, batch_size: int, warmup: int = 2,
                dtype: str = "float32", seed: int = 0) -> tuple[Callable[[], None], dict[str, Any]]:
    """A ready-to-time training step: ``(step, info)``.

    ``step()`` runs one full training step (forward, backward, clip, AdamW, bias update) on the
    next of a few random byte batches and returns when it is done. ``warmup`` steps have run
    before this returns. ``info`` holds the requested and resolved dispatch, dtype, batch_size,
    seq_len, torch's thread count and ``compile_s`` (None for eager PyTorch).

    ``dispatch="compiled"`` is the fast dispatch with the loss's forward (and so its backward)
    under ``torch.compile`` (inductor), the MoE layers left eager: inductor's CPU backend cannot
    lower ``torch._grouped_mm`` (nor a data-dependent token permutation without graph breaks), so
    each MoE layer runs eagerly between compiled attention, norm, embedding and loss graphs.
    ``compile_s`` is then the first step's time less a warm step's: what a trial pays once
    (inductor's on-disk cache, ``TORCHINDUCTOR_CACHE_DIR``, shortens later processes).
    """
    compiled = dispatch == COMPILED
    data = [torch.as_tensor(b) for b in bench_batches(config, batch_size, warmup, seed)]
    hparams = TrainHParams(batch_size=batch_size)
    model = TorchMoEModel(config, dispatch="fast" if compiled else dispatch, dtype=torch_dtype(dtype),
                          init_seed=seed)
    optimizer = build_optimizer(model, hparams)
    forward = compiled_loss(model) if compiled else training_loss

    def step_at(i: int) -> None:
        loss, aux = forward(model, data[i % len(data)], hparams)
        update(model, optimizer, loss, aux, i, BENCH_HORIZON, hparams)

    compile_s = None
    if compiled:
        t0 = time.perf_counter()
        step_at(0)
        first = time.perf_counter() - t0
        t0 = time.perf_counter()
        step_at(1)
        compile_s = max(first - (time.perf_counter() - t0), 0.0)
    step = warmed_up(step_at, warmup)
    info = {"dispatch": dispatch, "resolved_dispatch": COMPILED if compiled else model.dispatch,
            "dtype": str(dtype), "batch_size": batch_size, "seq_len": config.seq_len,
            "compile_s": compile_s, "threads": torch.get_num_threads()}
    return step, info


def moe_layer_runner(config: ModelConfig, *, dispatch: str, batch_size: int, warmup: int = 2,
                     dtype: str = "float32", seed: int = 0) -> Callable[[], None]:
    """One MoE layer's forward and backward (routing, dispatch, experts, combine), ready to time.

    The part of a training step the dispatch choice changes; everything else in the step
    (attention, norms, embedding, readout, loss, AdamW) runs the same code in both dispatches,
    so the step's fast/loop ratio is this layer's diluted by that shared work. Input: unit-variance
    hidden states of the rung's shape, as the pre-FFN RMSNorm hands the layer.
    """
    check_bench_args(warmup, batch_size)
    if not config.moe_layers:
        raise ValueError(f"config {config.name!r} has no MoE layer to time")
    model = TorchMoEModel(config, dispatch=dispatch, dtype=torch_dtype(dtype), init_seed=seed)
    moe = model.blocks[config.moe_layers[0]].moe
    gen = torch.Generator().manual_seed(seed)
    h = torch.randn(batch_size, config.seq_len, config.d_model, generator=gen, dtype=torch_dtype(dtype),
                    requires_grad=True)
    upstream = torch.randn(h.shape, generator=gen, dtype=h.dtype)

    def once(_: int) -> None:
        out, routing = moe(h)
        # The upstream gradient reaches the experts and, through the gates, the router.
        torch.autograd.backward((out, routing.logits), (upstream, torch.ones_like(routing.logits)))

    return warmed_up(once, warmup)
