"""Proxy models: configs, the parameter table, data, ladders, and (lazily) the trainers.

Importing this package loads neither PyTorch nor JAX; see ``proxy.backends``.
"""

from proxy.config import ModelConfig
from proxy.hparams import TrainHParams
from proxy.result import ExpertLoad, TrainResult

__version__ = "0.1.0"

__all__ = ["ModelConfig", "TrainHParams", "TrainResult", "ExpertLoad", "__version__"]
