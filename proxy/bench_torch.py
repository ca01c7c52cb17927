"""PyTorch side of ``proxy.bench``: thread control and the measured matrix-multiply peak."""

from __future__ import annotations

import time

import torch

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
    timer = time.process_time if clock == "cpu" else time.perf_counter  # see proxy.bench
    times = []
    for _ in range(repeats):
        start = timer()
        a @ b
        times.append(timer() - start)
    return 2.0 * n ** 3 / min(times)
