"""The ``torch`` backend: the MoE proxy in PyTorch. Only this folder imports torch.

- ``model``: the model, one file top to bottom (routing, the three expert dispatches);
- ``trainer``: the trainer (``train``), its loss, optimiser and evaluation;
- ``bench``: the step runners ``proxy.diagnostics.bench`` times, threads and the matmul peak;
- ``coordcheck``: the coordinate check's activation recorder (forward hooks).

This package's namespace is the backend contract of ``proxy.backends``.
"""

from proxy.backends.torch.bench import matmul_peak, moe_layer_runner, set_threads, step_runner
from proxy.backends.torch.trainer import train

__all__ = ["train", "step_runner", "moe_layer_runner", "set_threads", "matmul_peak"]
