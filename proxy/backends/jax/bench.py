"""What ``proxy.diagnostics.bench`` times in JAX: a compiled, warmed-up training step
(``step_runner``) and the measured matrix-multiply peak (XLA CPU threads are fixed when JAX
starts; ``set_threads`` reports the device's core count and changes nothing)."""

from __future__ import annotations

import os
import time
from typing import Any, Callable

from proxy.backends.jax import model as model_jax  # noqa: F401

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from proxy.backends.common import BENCH_HORIZON, bench_batches, warmed_up  # noqa: E402
from proxy.backends.jax.trainer import compiled_step, hp_inputs, init_state, jax_dtype  # noqa: E402
from proxy.config import ModelConfig  # noqa: E402
from proxy.hparams import TrainHParams, lr_at  # noqa: E402


def set_threads(n: int) -> int:
    """JAX sizes its CPU thread pool at start-up; returns the cores it can use."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def matmul_peak(n: int = 2048, repeats: int = 5, dtype: str = "float32",
                clock: str = "wall") -> float:
    """Achieved FLOP/s of a jitted (n, n) @ (n, n) product: 2 n^3 FLOPs over the best timing."""
    if dtype == "float64":
        model_jax.enable_x64()
    rng = np.random.default_rng(0)
    a = jnp.asarray(rng.standard_normal((n, n)), dtype=dtype)
    b = jnp.asarray(rng.standard_normal((n, n)), dtype=dtype)
    product = jax.jit(jnp.matmul)
    product(a, b).block_until_ready()  # compile and warm up
    timer = time.process_time if clock == "cpu" else time.perf_counter  # see proxy.diagnostics.bench
    times = []
    for _ in range(repeats):
        start = timer()
        product(a, b).block_until_ready()
        times.append(timer() - start)
    return 2.0 * n ** 3 / min(times)


def step_runner(config: ModelConfig, *, dispatch: str, batch_size: int, warmup: int = 2,
                dtype: str = "float32", seed: int = 0) -> tuple[Callable[[], None], dict[str, Any]]:
    """A ready-to-time training step, as ``proxy.backends.torch.trainer.step_runner``: ``(step, info)``.

    The step is compiled ahead of time here (``info["compile_s"]``, the seconds to trace and
    compile it; the persistent cache shortens repeats); ``step()`` runs one step on the next of a
    few random batches and blocks until its results exist.
    """
    data = [b.astype(np.int32) for b in bench_batches(config, batch_size, warmup, seed)]
    if dispatch not in model_jax.DISPATCHES:
        raise ValueError(f"dispatch must be one of {model_jax.DISPATCHES}, got {dispatch!r}")
    hparams = TrainHParams(batch_size=batch_size)
    params, buffers, opt_state = init_state(config, hparams, seed, dtype)
    hp = hp_inputs(hparams, config, lr_at(0, BENCH_HORIZON, hparams))
    t0 = time.perf_counter()
    fn = compiled_step(config, dispatch).lower(params, buffers, opt_state, data[0], hp).compile()
    compile_s = time.perf_counter() - t0
    state = [params, buffers, opt_state]

    def step_at(i: int) -> None:
        *new_state, loss, _ = fn(*state, data[i % len(data)], hp)
        jax.block_until_ready((new_state, loss))
        state[:] = new_state

    step = warmed_up(step_at, warmup)
    info = {"dispatch": dispatch, "resolved_dispatch": dispatch, "dtype": str(jax_dtype(dtype)),
            "batch_size": batch_size, "seq_len": config.seq_len, "compile_s": compile_s,
            "threads": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()}
    return step, info
