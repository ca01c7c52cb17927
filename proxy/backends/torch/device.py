"""Devices and precision for the torch backend (the policy is ``proxy.backends.placement``'s).

Determinism, stated per platform:

- CPU: deterministic kernels (``torch.use_deterministic_algorithms(True)``), bit-for-bit
  repeatable runs.
- CUDA: ``CUBLAS_WORKSPACE_CONFIG=:4096:8`` (set before the first CUDA call unless the user
  set it; cuBLAS is deterministic only with a fixed workspace) and deterministic algorithms in
  warn-only mode: the kernels that have a deterministic variant use it, and the few that have
  none on CUDA (the scatter-adds of ``index_add`` in the expert combine, atomics in some
  backward kernels) warn once and stay nondeterministic, so two runs of one seed agree to
  float rounding, not bit for bit.
"""

from __future__ import annotations

import contextlib
import os
from typing import Iterator

import torch

from proxy.backends.placement import DeviceRequest, DeviceUnavailable, parse_device

CUBLAS_WORKSPACE = ":4096:8"
COMPUTE_DTYPES = {"fp32": None, "tf32": None, "bf16": torch.bfloat16}


def resolve_device(device: str | DeviceRequest = "auto") -> torch.device:
    """The torch device of a request; ``auto`` is the first CUDA GPU when torch sees one, else
    the CPU. A named device torch does not see raises ``DeviceUnavailable`` naming it."""
    req = parse_device(device) if isinstance(device, str) else device
    if req.kind == "tpu":
        raise DeviceUnavailable(f"device {str(req)!r}: the torch backend does not train on TPUs "
                                "(set backend = \"jax\" for a TPU)")
    if req.kind == "cpu" or (req.kind == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise DeviceUnavailable(f"device {str(req)!r} was asked for, but torch sees no CUDA GPU "
                                "(torch.cuda.is_available() is False: a CPU build of torch, or no driver)")
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", CUBLAS_WORKSPACE)
    index = req.index or 0
    count = torch.cuda.device_count()
    if index >= count:
        raise DeviceUnavailable(f"device {str(req)!r} was asked for, but torch sees {count} CUDA GPU(s)")
    return torch.device("cuda", index)


def compute_dtype(precision: str, master: torch.dtype) -> torch.dtype:
    """The dtype of the matmuls and activations: bfloat16 under ``bf16``, else the master dtype."""
    return COMPUTE_DTYPES[precision] or master


@contextlib.contextmanager
def numerics(device: torch.device, precision: str) -> Iterator[None]:
    """Deterministic kernels (warn-only on CUDA, see the module docstring) and the float32
    matmul precision of ``precision`` (full float32 unless ``tf32``) for the duration of a
    run; the caller's settings are restored after."""
    enabled = torch.are_deterministic_algorithms_enabled()
    warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    matmul = torch.get_float32_matmul_precision()
    cudnn_tf32 = torch.backends.cudnn.allow_tf32
    torch.use_deterministic_algorithms(True, warn_only=device.type == "cuda")
    torch.set_float32_matmul_precision("high" if precision == "tf32" else "highest")
    torch.backends.cudnn.allow_tf32 = precision == "tf32"
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(enabled, warn_only=warn_only)
        torch.set_float32_matmul_precision(matmul)
        torch.backends.cudnn.allow_tf32 = cudnn_tf32
