"""The JAX model: names and shapes against the naming table, the fast dispatch against the dense
oracle (float64, values and gradients), capacity admission against a plain Python loop."""

from __future__ import annotations

import math

import numpy as np
import pytest

jax = pytest.importorskip("jax")
jnp = pytest.importorskip("jax.numpy")

from proxy.backends.jax import model as M  # noqa: E402
from proxy.config import ModelConfig  # noqa: E402
from proxy.init import init_params  # noqa: E402
from proxy.naming import buffer_specs, parameter_specs  # noqa: E402

BASE = dict(d_model=32, n_layers=1, n_heads=2, head_dim=16, n_experts=4, top_k=2, d_expert=24,
            seq_len=16)
CONFIGS = {
    "dropless": ModelConfig(**BASE),
    "capacity": ModelConfig(**BASE, capacity_factor=0.75),
    "shared_dense_bias": ModelConfig(**BASE | dict(n_layers=2), n_shared_experts=1, n_dense_layers=1,
                                     bias_balancing=True, renormalize=False),
    "top1_mup": ModelConfig(**BASE | dict(top_k=1, n_experts=6), parametrization="mup",
                            base_d_model=16, capacity_factor=1.5),
}
_fwd = jax.jit(M.forward, static_argnames=("config", "dispatch"))


def _tokens(config: ModelConfig, batch: int = 3, seed: int = 0) -> jax.Array:
    return jnp.asarray(np.random.default_rng(seed).integers(0, config.vocab_size, (batch, config.seq_len)))


def _with_random_bias(buffers, config, seed=1):
    """Nonzero balancing biases, so the test sees the bias move the choice but not the gates."""
    rng = np.random.default_rng(seed)
    flat = {n: jnp.asarray(rng.normal(0, 0.05, np.shape(a))) for n, a in M.flatten_named(buffers).items()}
    return M.tree_from_flat(flat) if flat else buffers


def test_path_to_name_round_trip():
    config = CONFIGS["shared_dense_bias"]
    flat = init_params(config, 0)
    tree = M.tree_from_flat(flat)
    assert tree["blocks"]["1"]["moe"]["w_in"] is flat["blocks.1.moe.w_in"]
    paths = jax.tree_util.tree_flatten_with_path(tree)[0]
    assert {M.path_to_name(p) for p, _ in paths} == set(flat)
    back = M.flatten_named(tree)
    assert set(back) == set(flat) and all(back[n] is flat[n] for n in flat)
    key = jax.tree_util.DictKey
    assert M.path_to_name((key("blocks"), key("3"), key("moe"), key("w_in"))) == "blocks.3.moe.w_in"
    with pytest.raises(TypeError, match="dict keys"):
        M.path_to_name((key("blocks"), jax.tree_util.SequenceKey(0)))
    with pytest.raises(ValueError, match="duplicate"):
        M.tree_from_flat({"a.b.c": 1, "a.b": 2})
    with pytest.raises(ValueError, match="under a leaf"):
        M.tree_from_flat({"a.b": 1, "a.b.c": 2})


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.float64])
def test_names_shapes_dtypes_equal_the_table(dtype):
    config = CONFIGS["shared_dense_bias"]
    params, buffers = M.init(config, seed=3, init_scale=0.5, dtype=dtype)
    flat = M.flatten_named(params)
    specs = {s.name: s.shape for s in parameter_specs(config)}
    assert set(flat) == set(specs)
    for name, arr in flat.items():
        assert arr.shape == specs[name] and arr.dtype == np.dtype(dtype), name
    reference = init_params(config, 3, 0.5)
    for name, arr in flat.items():
        np.testing.assert_array_equal(np.asarray(arr), reference[name].astype(dtype))
    bufs = M.flatten_named(buffers)
    assert {b.name: b.shape for b in buffer_specs(config)} == {n: a.shape for n, a in bufs.items()}
    logits, aux = _fwd(params, buffers, _tokens(config), config, dispatch="fast")
    assert logits.shape == (3, config.seq_len, config.vocab_size) and logits.dtype == np.dtype(dtype)
    assert aux["load_fractions"].shape == (1, config.n_experts)


def test_bad_dtype_and_dispatch_raise():
    config = CONFIGS["dropless"]
    with pytest.raises(ValueError, match="dtype"):
        M.init(config, 0, dtype=jnp.float16)
    params, buffers = M.init(config, 0)
    with pytest.raises(ValueError, match="dispatch"):
        M.forward(params, buffers, _tokens(config), config, dispatch="loop")


@pytest.mark.parametrize("schedule", ["blocked", "ragged"])
@pytest.mark.parametrize("name", [n if n == "capacity" else pytest.param(n, marks=pytest.mark.slow)
                                  for n in sorted(CONFIGS)])
def test_fast_path_equals_dense_oracle(name, schedule):
    """The padded blocks (the CPU's fast path) and ``jax.lax.ragged_dot`` (the fast path on GPUs
    and TPUs, dense on the CPU but exact) against the dense oracle, capacity drops included."""
    config = CONFIGS[name]
    params, buffers = M.init(config, seed=7, dtype=jnp.float64)
    buffers = _with_random_bias(buffers, config)
    tokens = _tokens(config, batch=4)

    def loss(p, dispatch):
        logits, aux = M.forward(p, buffers, tokens, config, dispatch=dispatch)
        value = jnp.mean(jax.nn.logsumexp(logits, -1) - logits[..., 0]) + 0.1 * aux["balance_loss"] + \
            0.01 * aux["z_loss"]
        return value, (logits, aux)

    step = jax.jit(jax.value_and_grad(loss, has_aux=True), static_argnums=1)
    (_, (lf, af)), gf = step(params, schedule)
    (_, (ld, ad)), gd = step(params, "dense")
    np.testing.assert_allclose(np.asarray(lf), np.asarray(ld), rtol=1e-12, atol=1e-13)
    for key in ("balance_loss", "z_loss", "load_fractions", "dropped_fraction"):
        np.testing.assert_allclose(np.asarray(af[key]), np.asarray(ad[key]), rtol=1e-12, atol=1e-15)
    np.testing.assert_array_equal(np.asarray(af["expert_choices"]), np.asarray(ad["expert_choices"]))
    np.testing.assert_array_equal(np.asarray(af["slot_counts"]), np.asarray(ad["slot_counts"]))
    if config.capacity_factor == 0.75:
        assert float(af["dropped_fraction"]) > 0  # the capacity limit really binds here
    gf, gd = M.flatten_named(gf), M.flatten_named(gd)
    for n in gf:
        scale = float(np.max(np.abs(np.asarray(gd[n])))) or 1.0
        assert float(np.max(np.abs(np.asarray(gf[n]) - np.asarray(gd[n])))) <= 1e-11 * scale, n
    router = gf["blocks.1.moe.router"] if config.n_dense_layers else gf["blocks.0.moe.router"]
    assert float(jnp.max(jnp.abs(router))) > 0  # router gets a gradient (balancing and z losses)


def test_capacity_admission_is_choice_major():
    """Drops and gates against a Python loop: all first choices in token order, then seconds."""
    config = CONFIGS["capacity"]
    params, buffers = M.init(config, seed=11, dtype=jnp.float64)
    tokens = _tokens(config, batch=2, seed=5)
    _, aux = _fwd(params, buffers, tokens, config, dispatch="fast")
    choices = np.asarray(aux["expert_choices"][0])          # (N, k)
    n, k = choices.shape
    cap = math.ceil(config.capacity_factor * n * k / config.n_experts)
    assert M.capacity(config, n) == cap
    used = np.zeros(config.n_experts, int)
    dropped = 0
    for j in range(k):
        for t in range(n):
            e = choices[t, j]
            if used[e] < cap:
                used[e] += 1
            else:
                dropped += 1
    assert dropped > 0
    assert float(aux["dropped_fraction"]) == pytest.approx(dropped / (n * k), abs=1e-15)
    np.testing.assert_array_equal(np.asarray(aux["slot_counts"][0]),
                                  np.bincount(choices.reshape(-1), minlength=config.n_experts))


def test_bias_changes_choice_not_gates():
    """A large bias on expert 0 sends every token there, yet the gate stays the router
    probability p[0] (DeepSeek-V3: the bias only enters the selection)."""
    config = ModelConfig(**BASE | dict(n_layers=1, top_k=2), bias_balancing=True, renormalize=False)
    params, _ = M.init(config, seed=2, dtype=jnp.float64)
    moe = params["blocks"]["0"]["moe"]
    h = jnp.asarray(np.random.default_rng(0).normal(size=(40, config.d_model)))
    bias = jnp.asarray([10.0, 0.0, 0.0, 0.0])
    r = M._route(moe, bias, h, config, 0.5)
    probs = np.asarray(jax.nn.softmax(0.5 * (h @ moe["router"]), axis=-1))
    idx = np.asarray(r["idx"])
    assert np.all(idx[:, 0] == 0)
    np.testing.assert_array_equal(idx[:, 1], np.argsort(-probs[:, 1:], axis=1)[:, 0] + 1)
    np.testing.assert_allclose(np.asarray(r["gates"]), np.take_along_axis(probs, idx, 1), rtol=1e-14)
    unbiased = M._route(moe, None, h, config, 0.5)
    assert not np.array_equal(np.asarray(unbiased["idx"]), idx)


def test_block_size_bounds_padding():
    for n_slots, experts in [(4096, 8), (96, 4), (10, 64), (1 << 16, 16)]:
        blk = M.block_size(n_slots, experts)
        assert 8 <= blk <= 128 and blk & (blk - 1) == 0
        rows = (-(-n_slots // blk) + experts) * blk
        assert rows <= n_slots + (experts + 1) * blk


def test_the_fast_path_is_ragged_dot_on_accelerators_and_the_blocks_on_the_cpu(monkeypatch):
    assert M.resolve_dispatch("fast") == "blocked"          # this machine's backend is the CPU
    for backend in ("gpu", "tpu"):
        monkeypatch.setattr(M.jax, "default_backend", lambda b=backend: b)
        assert M.resolve_dispatch("fast") == "ragged"
    assert M.resolve_dispatch("dense") == "dense"
    with pytest.raises(ValueError, match="dispatch must be one of"):
        M.resolve_dispatch("loop")


def test_a_float32_step_runs_without_x64_and_holds_no_64_bit_value():
    """In a fresh process (this suite turns x64 on for its float64 tests), a float32 JAX
    training step leaves ``jax_enable_x64`` off and its compiled HLO has no 64-bit type: the
    step a TPU can run natively. A float64 model then turns x64 on for itself."""
    import subprocess
    import sys

    code = """
import numpy as np, jax
from proxy.backends.jax import trainer as TJ
from proxy.config import ModelConfig
from proxy.hparams import TrainHParams
cfg = ModelConfig(d_model=32, n_layers=2, n_heads=2, head_dim=16, n_experts=4, top_k=2, d_expert=32,
                  seq_len=16, capacity_factor=1.0, bias_balancing=True)
hp = TrainHParams(lr=1e-2, batch_size=4, tokens=2 * 4 * 16)
batches = [np.random.default_rng(i).integers(0, 256, (4, 17)) for i in range(2)]
r = TJ.train(cfg, hp, None, 0, batches=batches, device="cpu")
state = TJ.init_state(cfg, hp, 0, "float32")
hlo = TJ.guarded_step(cfg, "fast").lower(*state, batches[0].astype(np.int32), TJ.hp_inputs(hp, cfg, 1e-2),
                                         np.float32(10)).as_text()
print(jax.config.jax_enable_x64, any(t in hlo for t in ("f64", "s64", "u64")), r.steps)
TJ.train(cfg, hp, None, 0, batches=batches, device="cpu", dtype="float64")
print(jax.config.jax_enable_x64)
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False", "2", "True"], out.stdout + out.stderr
