"""JAX side of ``proxy.bench``: the measured matrix-multiply peak (XLA CPU threads are fixed
when JAX starts; ``set_threads`` reports the device's core count and changes nothing)."""

from __future__ import annotations

import os
import time

import jax
import jax.numpy as jnp
import numpy as np


def set_threads(n: int) -> int:
    """JAX sizes its CPU thread pool at start-up; returns the cores it can use."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def matmul_peak(n: int = 2048, repeats: int = 5, dtype: str = "float32",
                clock: str = "wall") -> float:
    """Achieved FLOP/s of a jitted (n, n) @ (n, n) product: 2 n^3 FLOPs over the best timing."""
    if dtype == "float64" and not jax.config.jax_enable_x64:
        raise ValueError("dtype 'float64' needs jax_enable_x64")
    rng = np.random.default_rng(0)
    a = jnp.asarray(rng.standard_normal((n, n)), dtype=dtype)
    b = jnp.asarray(rng.standard_normal((n, n)), dtype=dtype)
    product = jax.jit(jnp.matmul)
    product(a, b).block_until_ready()  # compile and warm up
    timer = time.process_time if clock == "cpu" else time.perf_counter  # see proxy.bench
    times = []
    for _ in range(repeats):
        start = timer()
        product(a, b).block_until_ready()
        times.append(timer() - start)
    return 2.0 * n ** 3 / min(times)
