"""The backend registry: the only place a training framework is named.

``import proxy`` must not import torch or jax; a backend module is imported lazily, by name,
when something asks to train with it. Every backend module exposes

    train(config: ModelConfig, hparams: TrainHParams, data: MixtureData, seed: int,
          *, progress: Callable[[int, int, float], None] | None = None) -> TrainResult

where ``progress(step, total_steps, train_loss)`` is called as training goes. The framework
backends (torch, jax) also expose, for ``proxy.bench``,

    step_runner(config, *, dispatch, batch_size, warmup=2, dtype="float32", seed=0)
        -> (step: Callable[[], None], info: dict)

a built, warmed-up training step on random bytes that runs one step per call and returns when
it is done (``info`` holds the resolved dispatch and ``compile_s``), and torch also
``moe_layer_runner(...) -> Callable[[], None]``, one MoE layer's forward and backward.
"""

from __future__ import annotations

import importlib
from types import ModuleType

BACKENDS: dict[str, str] = {
    "torch": "proxy.train_torch",
    "jax": "proxy.train_jax",
    "simulated": "proxy.train_simulated",
}


def backend_names() -> tuple[str, ...]:
    return tuple(BACKENDS)


def load_backend(name: str) -> ModuleType:
    """Import and return the training module registered under ``name``."""
    if name not in BACKENDS:
        raise ValueError(f"unknown backend {name!r}; choose one of {', '.join(BACKENDS)}")
    try:
        return importlib.import_module(BACKENDS[name])
    except ModuleNotFoundError as exc:
        raise RuntimeError(
            f"backend {name!r} needs the module {exc.name!r}, which is not installed "
            f"(install the package with its dependencies: pip install proxy-transfer)") from exc
