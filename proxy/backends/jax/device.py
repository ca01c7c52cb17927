"""Devices and precision for the JAX backend (the policy is ``proxy.backends.placement``'s).

Placement: ``resolve_device`` picks a ``jax.Device`` (``auto`` is JAX's default backend: a GPU
or TPU where jaxlib has one, else the CPU) and the trainer runs under ``jax.default_device``, so
the state and every batch live there. Determinism: XLA's CPU and TPU kernels are deterministic;
on GPUs, XLA's scatter-adds (the expert combine) use atomics unless
``--xla_gpu_deterministic_ops`` is set in ``XLA_FLAGS``, so two GPU runs of one seed agree to
float rounding, not bit for bit.
"""

from __future__ import annotations

import contextlib
from typing import Any, Iterator

import jax
import jax.numpy as jnp

from proxy.backends.placement import DeviceRequest, DeviceUnavailable, parse_device

_PLATFORM = {"cpu": "cpu", "cuda": "gpu", "tpu": "tpu"}
# jax.default_matmul_precision names: full float32 products unless TF32 is asked for.
MATMUL_PRECISION = {"fp32": "highest", "tf32": "tensorfloat32", "bf16": "highest"}


def resolve_device(device: str | DeviceRequest = "auto") -> Any:
    """The ``jax.Device`` of a request; a named device JAX does not see raises
    ``DeviceUnavailable`` naming it."""
    req = parse_device(device) if isinstance(device, str) else device
    if req.kind == "auto":
        return jax.devices()[0]
    try:
        found = jax.devices(_PLATFORM[req.kind])
    except RuntimeError:
        found = []
    if not found:
        raise DeviceUnavailable(f"device {str(req)!r} was asked for, but JAX has no {_PLATFORM[req.kind]} "
                                f"backend here (it sees: {', '.join(sorted({d.platform for d in jax.devices()}))})")
    index = req.index or 0
    if index >= len(found):
        raise DeviceUnavailable(f"device {str(req)!r} was asked for, but JAX sees {len(found)} "
                                f"{_PLATFORM[req.kind]} device(s)")
    return found[index]


def compute_dtype(precision: str, master: Any) -> Any:
    """The dtype of the matmuls and activations: bfloat16 under ``bf16``, else the master dtype."""
    return jnp.bfloat16 if precision == "bf16" else master


@contextlib.contextmanager
def placed(device: Any, precision: str) -> Iterator[None]:
    """Run on ``device`` with the float32 matmul precision of ``precision``."""
    with jax.default_device(device), jax.default_matmul_precision(MATMUL_PRECISION[precision]):
        yield
