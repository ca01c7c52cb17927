"""Weights between the two frameworks, keyed by canonical name (``proxy.naming``).

Both models store matrices ``(in, out)`` and experts ``(E, in, out)`` under the same names, so
conversion copies every tensor as it is: no transposes, no renaming, dtype kept. NumPy arrays
are the currency between the frameworks: torch tensors come in through their ``.numpy()`` (read
by duck typing, so this module never imports torch) and leave as NumPy arrays, which
``torch.from_numpy`` or ``TorchMoEModel.load_params`` take as they are.
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from proxy.backends.jax.model import enable_x64, flatten_named, tree_from_flat

import jax.numpy as jnp


def torch_to_jax(state: Mapping[str, Any]) -> dict[str, Any]:
    """{canonical name: tensor or array} (e.g. ``dict(model.named_parameters())``) -> JAX params pytree.

    Values are copied exactly, in their own dtype (float64 stays float64: a float64 array
    turns x64 on, ``proxy.backends.jax.model.enable_x64``).
    """
    flat = {}
    for name, tensor in state.items():
        if not isinstance(name, str):
            raise TypeError(f"torch_to_jax: names must be strings, got {name!r}")
        array = tensor.detach().cpu().numpy() if hasattr(tensor, "detach") else np.asarray(tensor)
        if array.dtype == np.float64:
            enable_x64()
        flat[name] = jnp.asarray(array, dtype=array.dtype)
    return tree_from_flat(flat)


def jax_to_numpy(params: Any) -> dict[str, np.ndarray]:
    """JAX params pytree -> {canonical name: NumPy array}, values and dtypes exactly kept (copies)."""
    return {name: np.array(leaf, copy=True) for name, leaf in flatten_named(params).items()}
