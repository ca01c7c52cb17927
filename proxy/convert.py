"""Weights between the two frameworks, keyed by canonical name (``proxy.naming``).

Both models store matrices ``(in, out)`` and experts ``(E, in, out)`` under the same names, so
conversion copies every tensor as it is: no transposes, no renaming, dtype kept. The frameworks
are imported inside the functions, so importing this module loads neither.
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np


def torch_to_jax(state: Mapping[str, Any]) -> dict[str, Any]:
    """{canonical name: torch.Tensor} (e.g. ``dict(model.named_parameters())``) -> JAX params pytree.

    Values are copied exactly, in their own dtype (float64 needs ``proxy.model_jax`` imported,
    which enables x64).
    """
    import jax.numpy as jnp

    from proxy.model_jax import tree_from_flat

    flat = {}
    for name, tensor in state.items():
        if not isinstance(name, str):
            raise TypeError(f"torch_to_jax: names must be strings, got {name!r}")
        array = tensor.detach().cpu().numpy() if hasattr(tensor, "detach") else np.asarray(tensor)
        flat[name] = jnp.asarray(array, dtype=array.dtype)
    return tree_from_flat(flat)


def jax_to_torch(params: Any) -> dict[str, Any]:
    """JAX params pytree -> {canonical name: torch.Tensor}, values and dtypes exactly kept."""
    import torch

    from proxy.model_jax import flatten_named

    return {name: torch.from_numpy(np.array(leaf, copy=True)) for name, leaf in flatten_named(params).items()}
