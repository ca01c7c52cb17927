"""The backends: one folder per framework, and this registry, which names them.

Layout (``tests/test_layering.py`` holds the rule by folder):

- ``proxy/backends/torch/``: the only code that imports torch;
- ``proxy/backends/jax/``: the only code that imports jax, jaxlib and optax;
- ``proxy/backends/simulated.py``: a framework-free backend with a known truth, for tests;
- ``proxy/backends/common.py``: framework-free pieces every trainer shares.

``import proxy`` (or this registry) imports no framework; a backend package is imported
lazily, by name, when something asks to train with it. Every backend exposes

    train(config: ModelConfig, hparams: TrainHParams, data: MixtureData, seed: int,
          *, progress: Callable[[int, int, float], None] | None = None) -> TrainResult

where ``progress(step, total_steps, train_loss)`` is called as training goes. The framework
backends (torch, jax) also expose, for ``proxy.diagnostics.bench``,

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
    "torch": "proxy.backends.torch",
    "jax": "proxy.backends.jax",
    "simulated": "proxy.backends.simulated",
}


FRAMEWORKS = ("torch", "jax")    # the backends that train a real model in a framework


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


def framework_part(name: str, part: str) -> ModuleType:
    """Import one module of a framework backend's folder (``"coordcheck"``, ``"bench"``, ...)."""
    if name not in FRAMEWORKS:
        raise ValueError(f"backend {name!r} has no {part!r} module; choose one of {', '.join(FRAMEWORKS)}")
    load_backend(name)   # the clear error when the framework is not installed
    return importlib.import_module(f"{BACKENDS[name]}.{part}")
