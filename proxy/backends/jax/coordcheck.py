"""Coordinate-check recording in JAX: module outputs returned by ``forward(..., collect=...)``.

``proxy.backends.jax.model.forward`` fills a ``collect`` dict with the outputs of ``embed``, each
block's attention (``a``), router logits (``z``) and FFN/expert output, and the logits. One
jitted function per model computes the loss *and* the mean |output| of each of them, takes the
gradient and applies the trainer's own optax AdamW (``proxy.backends.jax.trainer.build_optimizer``, labels
keyed by canonical name from ``proxy.parametrization``), so the check tests the parametrization
as training applies it. See ``proxy.diagnostics.coordcheck`` for the recipe and the criteria.
"""

from __future__ import annotations

import functools
from typing import Any, Callable

import numpy as np

from proxy.backends.jax import model as model_jax  # noqa: F401

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import optax  # noqa: E402

from proxy.config import ModelConfig  # noqa: E402
from proxy.diagnostics.coordcheck import CoordCheckResult, CoordCheckSettings, module_names, run_widths  # noqa: E402
from proxy.hparams import TrainHParams, lr_at  # noqa: E402
from proxy.backends.jax.trainer import build_optimizer, cross_entropy, hp_inputs, init_state  # noqa: E402

BACKEND = "jax"


@functools.lru_cache(maxsize=16)
def _recording_step(config: ModelConfig) -> Callable:
    """jit: (params, buffers, opt_state, batch, hp) -> (params, opt_state, {module: mean |out|}).

    The loss is the trainer's (CE + aux_loss_coef * balance + z_loss_coef * z-loss); no clipping
    (the coordinate check trains with plain Adam).
    """

    def loss_fn(params, buffers, batch, hp):
        collected: dict[str, jax.Array] = {}
        logits, aux = model_jax.forward(params, buffers, batch[:, :-1], config, collect=collected)
        ce = cross_entropy(logits, batch[:, 1:])
        loss = ce + hp["aux_loss_coef"].astype(ce.dtype) * aux["balance_loss"].astype(ce.dtype) \
            + hp["z_loss_coef"].astype(ce.dtype) * aux["z_loss"].astype(ce.dtype)
        sizes = {name: jnp.mean(jnp.abs(v.astype(jnp.float64))) for name, v in collected.items()}
        return loss, sizes

    def step(params, buffers, opt_state, batch, hp):
        dtype = jax.tree_util.tree_leaves(params)[0].dtype
        (_, sizes), grads = jax.value_and_grad(loss_fn, has_aux=True)(params, buffers, batch, hp)
        updates, opt_state = build_optimizer(config, hp, dtype).update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, sizes

    return jax.jit(step)


def _renamed(sizes: dict[str, Any], config: ModelConfig) -> dict[str, float]:
    """forward's collect names are the coordinate check's module names; check and convert."""
    names = module_names(config)
    missing = [n for n in names if n not in sizes]
    if missing:
        raise ValueError(f"proxy.backends.jax.model.forward did not collect {missing}")
    return {n: float(sizes[n]) for n in names}


def record_one(settings: CoordCheckSettings, width: int, seed: int, batches: list[np.ndarray],
               dtype: str = "float32") -> dict[str, list[float]]:
    """Mean |act| per module at steps 1..settings.steps of one model (step 1 at initialisation)."""
    config = settings.config(width)
    hparams: TrainHParams = settings.hparams()
    params, buffers, opt_state = init_state(config, hparams, seed, dtype)
    step_fn = _recording_step(config)
    out: dict[str, list[float]] = {m: [] for m in module_names(config)}
    for step in range(settings.steps):
        hp = hp_inputs(hparams, config, lr_at(step, settings.steps, hparams))
        batch = np.asarray(batches[step], dtype=np.int32)
        # The update of the last step is computed and dropped: one compiled function serves all.
        params, opt_state, sizes = step_fn(params, buffers, opt_state, batch, hp)
        for m, v in _renamed(sizes, config).items():
            out[m].append(v)
    return out


def run(settings: CoordCheckSettings, *, dtype: str = "float32",
        progress: Callable[[str], None] | None = None) -> CoordCheckResult:
    """Train every width for every seed and return the slopes (``proxy.diagnostics.coordcheck.run_widths``)."""
    return run_widths(settings, BACKEND, lambda st, width, seed, batches: record_one(st, width, seed, batches, dtype),
                      progress)
