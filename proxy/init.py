"""Initial weights, drawn once in NumPy so every framework starts from the same tensors.

Drawing in NumPy (float64, one generator, canonical order) and handing the arrays to the
framework makes "same seed, same weights" hold across PyTorch and JAX by construction.
"""

from __future__ import annotations

import numpy as np

from proxy.config import ModelConfig
from proxy.naming import buffer_specs, parameter_specs
from proxy.parametrization import param_rules


def init_params(config: ModelConfig, seed: int, init_scale: float = 1.0) -> dict[str, np.ndarray]:
    """Canonical name -> float64 array: gains 1, matrices N(0, init_std^2) per the parametrization."""
    rng = np.random.default_rng(np.random.SeedSequence([seed, 0x1A1D]))
    rules = param_rules(config, init_scale)
    params: dict[str, np.ndarray] = {}
    for spec in parameter_specs(config):
        rule = rules[spec.name]
        if spec.role == "norm":
            params[spec.name] = np.ones(spec.shape)
        else:
            params[spec.name] = rng.normal(0.0, rule.init_std, size=spec.shape)
    return params


def init_buffers(config: ModelConfig) -> dict[str, np.ndarray]:
    """Non-trainable state (aux-loss-free balancing biases), all zero at the start."""
    return {b.name: np.zeros(b.shape) for b in buffer_specs(config)}
