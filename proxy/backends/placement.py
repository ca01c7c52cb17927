"""Where a proxy trains and at what precision: the framework-free half (each backend resolves
the request against what its framework sees: ``proxy.backends.torch.device``,
``proxy.backends.jax.device``).

Devices (``experiment.device``, ``--device``):

- ``"auto"`` (default): the framework's accelerator when it has one (torch: CUDA; JAX: its
  default backend, a GPU or TPU where one is installed), else the CPU;
- ``"cpu"``; ``"cuda"`` / ``"cuda:N"`` (a CUDA GPU, the first or the N-th); ``"tpu"`` /
  ``"tpu:N"`` (JAX only; torch has no TPU backend here).

A named device that is not there is an error naming it, never a silent fall-back to the CPU.

Precision (``experiment.precision``, ``--precision``), the same policy in both frameworks:

- ``"fp32"`` (default): the model dtype throughout (float32, or float64 for the parity tests),
  float32 matmuls pinned to full float32 (no TF32 on GPUs that have it: JAX's default on an
  H100 would otherwise be TF32 and torch's full float32);
- ``"tf32"``: float32 with TF32 matmuls where the GPU has them (10-bit mantissa products,
  float32 accumulation);
- ``"bf16"``: mixed precision. Master weights, gradients and the optimiser state stay float32;
  each step casts the weights to bfloat16, and the matmuls and activations run in bfloat16,
  except what rounding hurts most: the router's logits, softmax and top-k (Fedus et al. 2021,
  section 2.4), the attention softmax, the RMSNorm statistics, the cross-entropy and the
  balancing and z losses, all in float32.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

DEVICE_KINDS = ("auto", "cpu", "cuda", "tpu")
PRECISIONS = ("fp32", "tf32", "bf16")
_DEVICE = re.compile(r"^(auto|cpu|cuda|tpu)(?::(\d+))?$")


@dataclass(frozen=True)
class DeviceRequest:
    """A parsed device string: ``kind`` in ``DEVICE_KINDS`` and an optional index."""

    kind: str
    index: int | None = None

    def __str__(self) -> str:
        return self.kind if self.index is None else f"{self.kind}:{self.index}"


def parse_device(text: str) -> DeviceRequest:
    """``"auto" | "cpu" | "cuda" | "cuda:N" | "tpu" | "tpu:N"`` -> DeviceRequest, or a
    ValueError that names the string and the accepted forms."""
    m = _DEVICE.match(text.strip().lower()) if isinstance(text, str) else None
    if m is None or (m.group(2) is not None and m.group(1) in ("auto", "cpu")):
        raise ValueError(f"device {text!r} is not one of: auto, cpu, cuda, cuda:N, tpu, tpu:N")
    return DeviceRequest(m.group(1), None if m.group(2) is None else int(m.group(2)))


def check_precision(precision: str, dtype: str) -> str:
    """The precision, checked against the model dtype: tf32 and bf16 keep float32 master
    weights, so they need ``dtype = "float32"``."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision {precision!r} is not one of: {', '.join(PRECISIONS)}")
    if precision != "fp32" and dtype != "float32":
        raise ValueError(f"precision {precision!r} needs float32 master weights, got dtype {dtype!r}")
    return precision


class DeviceUnavailable(ValueError):
    """A named device that the framework does not see."""
