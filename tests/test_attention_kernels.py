"""The fused attention kernels against the explicit form (the oracle): torch's
``scaled_dot_product_attention`` and ``jax.nn.dot_product_attention``, causal, with the model's
logit scale. float64 where the kernel computes in float64 (torch's); JAX's kernel computes its
softmax in float32, so it is held to float32 rounding of the float64 oracle."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("jax")

import jax.numpy as jnp  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from proxy.backends.jax import model as MJ  # noqa: E402


def _qkv(seed: int = 0, shape=(3, 24, 2, 8)):
    rng = np.random.default_rng(seed)
    return [rng.normal(0, 1.5, shape) for _ in range(3)]


def _rel(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.max(np.abs(a - b)) / np.max(np.abs(b)))


def test_torch_sdpa_equals_the_explicit_attention_in_float64():
    q, k, v = _qkv()
    oracle = np.asarray(MJ.attention_explicit(*(jnp.asarray(x) for x in (q, k, v)), 0.3))
    tq, tk, tv = (torch.as_tensor(x).transpose(1, 2) for x in (q, k, v))   # (B, H, T, hd)
    out = F.scaled_dot_product_attention(tq, tk, tv, is_causal=True, scale=0.3).transpose(1, 2)
    assert _rel(out.numpy(), oracle) <= 1e-12


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_jax_dot_product_attention_equals_the_explicit_attention(dtype):
    q, k, v = _qkv(1)
    oracle = np.asarray(MJ.attention_explicit(*(jnp.asarray(x) for x in (q, k, v)), 0.3))
    out = MJ.attention(*(jnp.asarray(x, dtype) for x in (q, k, v)), 0.3)
    assert out.dtype == dtype
    # float32: rounding of a float32 softmax; bf16: inputs and output rounded to 8 bits of mantissa
    tol = 1e-5 if dtype == jnp.float32 else 2e-2
    assert _rel(out, oracle) <= tol
    # the explicit form at the same precision agrees with the kernel to that precision
    same = MJ.attention_explicit(*(jnp.asarray(x, dtype) for x in (q, k, v)), 0.3)
    assert _rel(out, np.asarray(same, np.float64)) <= tol


def test_float64_models_keep_the_explicit_form():
    q, k, v = (jnp.asarray(x) for x in _qkv(2))
    assert _rel(MJ.attention(q, k, v, 0.3), MJ.attention_explicit(q, k, v, 0.3)) == 0.0
