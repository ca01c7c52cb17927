"""The ``jax`` backend: the MoE proxy in JAX, numerically the torch one. Only this folder imports
jax, jaxlib and optax.

- ``model``: the model, one file top to bottom (x64 only for a float64 model);
- ``trainer``: the trainer (``train``), its jitted step, optax optimiser and evaluation;
- ``bench``: the step runner ``proxy.diagnostics.bench`` times, and the matmul peak;
- ``coordcheck``: the coordinate check's activation recorder (the forward's ``collect``);
- ``convert``: weights between the frameworks, through NumPy.

This package's namespace is the backend contract of ``proxy.backends``.
"""

from proxy.backends.jax.bench import matmul_peak, set_threads, step_runner
from proxy.backends.jax.trainer import train

__all__ = ["train", "step_runner", "set_threads", "matmul_peak"]
