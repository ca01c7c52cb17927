"""The MoE proxy model in JAX: pure functions over a nested-dict parameter pytree.

This is the JAX twin of ``proxy.backends.torch.model``; both implement exactly the pinned math below, from
the same initial weights (``proxy.init.init_params``), so tests hold them to each other in float64.

Parameters are a nested dict whose flattened key paths are the canonical names of
``proxy.naming`` (``params["blocks"]["3"]["moe"]["w_in"]`` is ``blocks.3.moe.w_in``); matrices
are stored ``(in, out)`` and experts stacked ``(E, in, out)``, so ``y = x @ W`` everywhere.
Buffers (the aux-loss-free balancing biases) are a second tree of the same shape.

Forward pass (tokens ``(B, T)`` byte ids; everything in the model dtype except the router,
which runs in float32 or wider; ``fm`` = ``proxy.parametrization.forward_multipliers``):

1. ``x = embed.tokens[tokens]``.
2. Each block i:
   a. ``h = rmsnorm(x) * attn_norm.scale`` with ``rmsnorm(x) = x / sqrt(mean(x^2) + norm_eps)``;
   b. ``q, k, v = h @ w_q, h @ w_k, h @ w_v`` as ``(B, T, heads, head_dim)``;
   c. RoPE, GPT-NeoX half rotation: ``inv_freq[j] = theta^(-2j/head_dim)``, angle ``t*inv_freq``
      (tables in NumPy float64, cast), ``rot = [x1 cos - x2 sin, x2 cos + x1 sin]``;
   d. ``scores = (q k^T) * fm.attention``, causal mask to -inf, softmax over keys, ``o = p v``
      (``jax.nn.dot_product_attention``; written out in float64, ``attention_explicit``),
      ``a = o @ w_o``;  e. ``x += fm.residual * a``;  f. ``h = rmsnorm(x) * ffn_norm.scale``;
   g. FFN: dense blocks ``gelu_tanh(h @ w_in) @ w_out``. MoE blocks (N = B*T tokens):
      router logits ``z = fm.router * (h @ router)``, ``p = softmax(z)``; selection score
      ``s = p + expert_bias`` (bias balancing, DeepSeek-V3) or ``p``; top-k of s; gates
      ``g_j = p[e_j]`` (the bias never enters the gates), renormalised to sum 1 when
      ``config.renormalize`` -- with k = 1 the gate is then exactly 1 and the router learns
      only through the balancing and z losses. Capacity (optional): ``C = ceil(cf * N * k / E)``,
      slots admitted choice-major (all first choices in token order, then all second ...),
      each expert keeps its first C; a dropped slot contributes 0. Output: sum of kept
      ``g_j * gelu_tanh(h @ w_in[e_j]) @ w_out[e_j]`` plus every shared expert.
      Balancing loss (Switch Transformer, Fedus et al. 2021, eq. 4): ``E * sum_e f_e P_e`` with
      ``f_e`` the fraction of the N*k slots choosing e before drops (no gradient) and ``P_e``
      the mean router probability. z-loss (ST-MoE, Zoph et al. 2022, eq. 5):
      ``mean(logsumexp(z)^2)``;  h. ``x += fm.residual * ffn_out``.
3. ``logits = fm.readout * ((rmsnorm(x) * final_norm.scale) @ readout.w)``.

``gelu_tanh(x) = 0.5 x (1 + tanh(sqrt(2/pi)(x + 0.044715 x^3)))`` (``jax.nn.gelu(approximate=True)``,
torch ``approximate='tanh'``).

Dispatch. ``"dense"`` is the oracle: every expert on every token, combined with a masked gate
matrix. ``"fast"`` is ``"ragged"`` on a GPU or TPU backend and ``"blocked"`` on the CPU
(``resolve_dispatch``). ``"ragged"`` sorts the N*k token-slots by expert and runs each projection
as one grouped GEMM, ``jax.lax.ragged_dot``, with no padding and no copy of the weights.
``"blocked"`` sorts the slots the same way (stable, so choice-major order and so capacity
admission are kept), pads each expert's run to a multiple of a block size and runs a static
number of blocks ``G = ceil(N*k / block) + E``, each one expert's ``(block, d)`` slice times that
expert's weights (a batched matmul over the G blocks with gathered weights): its cost is
``(N*k + E*block) * d * d_expert`` instead of the oracle's ``N*E * d * d_expert``, with static
shapes for ``jit``. On the CPU ``ragged_dot`` computes every expert densely (exact, but the
oracle's cost), hence the blocks there; on accelerators the gathered weights (a copy of the
experts per block) are what the ragged path saves.

x64 is on only where a float64 model is asked for (``enable_x64``): float32 and bf16 models run
in JAX's 32-bit default, indices are int32, and every array is built with an explicit dtype.
"""

from __future__ import annotations

import functools
import math
from typing import Any, Mapping

import jax

import jax.numpy as jnp
import numpy as np

from proxy.config import ModelConfig
from proxy.init import init_buffers, init_params
from proxy.naming import buffer_specs, parameter_specs
from proxy.parametrization import forward_multipliers


def enable_x64() -> None:
    """Turn on ``jax_enable_x64``, which a float64 model needs (without it float64 requests
    are silently float32). Only a float64 request calls it (``init``, the trainer's dtype
    check): float32 and bf16 models run with JAX's default 32-bit types, so their steps hold no
    64-bit value (TPUs have no native 64-bit arithmetic); every index here is int32."""
    if not jax.config.jax_enable_x64:
        jax.config.update("jax_enable_x64", True)

DISPATCHES = ("fast", "dense", "ragged", "blocked")
ACCELERATORS = ("gpu", "cuda", "rocm", "tpu")
Params = dict[str, Any]


# Names <-> pytree -----------------------------------------------------------------------------
def path_to_name(path: tuple[Any, ...]) -> str:
    """Canonical dotted name of a ``jax.tree_util`` key path of dict keys.

    ``(DictKey('blocks'), DictKey('3'), DictKey('moe'), DictKey('w_in'))`` -> ``blocks.3.moe.w_in``.
    """
    parts = []
    for key in path:
        if not isinstance(key, jax.tree_util.DictKey):
            raise TypeError(f"path_to_name: expected dict keys only, got {key!r} in {path!r}")
        parts.append(str(key.key))
    return ".".join(parts)


def tree_from_flat(flat: Mapping[str, Any]) -> Params:
    """Inverse of flattening with ``path_to_name``: {canonical name: leaf} -> nested dicts."""
    tree: Params = {}
    for name, leaf in flat.items():
        *parents, last = name.split(".")
        node = tree
        for part in parents:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ValueError(f"tree_from_flat: name {name!r} nests under a leaf")
        if last in node:
            raise ValueError(f"tree_from_flat: duplicate name {name!r}")
        node[last] = leaf
    return tree


def flatten_named(tree: Params) -> dict[str, Any]:
    """Nested pytree -> {canonical name: leaf}."""
    leaves, _ = jax.tree_util.tree_flatten_with_path(tree)
    return {path_to_name(path): leaf for path, leaf in leaves}


# Initialisation --------------------------------------------------------------------------------
def init(config: ModelConfig, seed: int, init_scale: float = 1.0,
         dtype: Any = jnp.float32) -> tuple[Params, Params]:
    """(params, buffers) from ``proxy.init`` (NumPy float64), cast to ``dtype``."""
    dtype = _check_dtype(dtype)
    params = {n: jnp.asarray(a, dtype=dtype) for n, a in init_params(config, seed, init_scale).items()}
    buffers = {n: jnp.asarray(a, dtype=dtype) for n, a in init_buffers(config).items()}
    return tree_from_flat(params), tree_from_flat(buffers)


def _check_dtype(dtype: Any) -> np.dtype:
    dt = np.dtype(dtype)
    if dt not in (np.dtype(np.float32), np.dtype(np.float64)):
        raise ValueError(f"dtype must be float32 or float64, got {dtype!r}")
    if dt == np.float64:
        enable_x64()
    return dt


# Building blocks ---------------------------------------------------------------------------------
def _rmsnorm(x: jax.Array, scale: jax.Array, eps: float) -> jax.Array:
    """x / sqrt(mean(x^2) + eps) * scale, the statistics in float32 or wider."""
    wide = x.astype(jnp.promote_types(x.dtype, jnp.float32))
    return (wide / jnp.sqrt(jnp.mean(wide * wide, axis=-1, keepdims=True) + eps)).astype(x.dtype) * scale


def cast_for_compute(params: Params, dtype: Any) -> Params:
    """The weights a mixed-precision step computes with: every tensor in ``dtype`` except the
    routers', which stay in their master dtype (the router's logits are float32 products).
    Differentiable, so the gradients reach the float32 masters."""
    flat = flatten_named(params)
    return tree_from_flat({n: w if n.endswith(".router") else w.astype(dtype) for n, w in flat.items()})


def _gelu(x: jax.Array) -> jax.Array:
    return jax.nn.gelu(x, approximate=True)


def rope_tables(seq_len: int, head_dim: int, theta: float) -> tuple[np.ndarray, np.ndarray]:
    """cos, sin tables (seq_len, head_dim/2) in NumPy float64: angle[t, j] = t * theta^(-2j/hd)."""
    half = head_dim // 2
    inv_freq = theta ** (-(2.0 * np.arange(half, dtype=np.float64)) / head_dim)
    angle = np.arange(seq_len, dtype=np.float64)[:, None] * inv_freq[None, :]
    return np.cos(angle), np.sin(angle)


def _rope(x: jax.Array, cos: jax.Array, sin: jax.Array) -> jax.Array:
    # x: (B, T, H, hd); cos/sin: (T, hd/2) broadcast over batch and heads.
    half = x.shape[-1] // 2
    x1, x2 = x[..., :half], x[..., half:]
    c, s = cos[None, :, None, :], sin[None, :, None, :]
    return jnp.concatenate([x1 * c - x2 * s, x2 * c + x1 * s], axis=-1)


def attention_explicit(q: jax.Array, k: jax.Array, v: jax.Array, scale: float) -> jax.Array:
    """The oracle: causal softmax(q k^T * scale) v over (B, T, H, hd), the (B, H, T, T) scores
    written out, masked scores -inf before the softmax; the softmax in float32 or wider."""
    t = q.shape[1]
    scores = jnp.einsum("bqhd,bkhd->bhqk", q, k) * scale
    causal = np.tril(np.ones((t, t), dtype=bool))
    scores = jnp.where(causal, scores, -jnp.inf)
    wide = jnp.promote_types(scores.dtype, jnp.float32)
    probs = jax.nn.softmax(scores.astype(wide), axis=-1).astype(v.dtype)
    return jnp.einsum("bhqk,bkhd->bqhd", probs, v)


def attention(q: jax.Array, k: jax.Array, v: jax.Array, scale: float) -> jax.Array:
    """Causal attention through ``jax.nn.dot_product_attention`` (cuDNN's fused kernel on a GPU
    where it serves, XLA's elsewhere), except in float64: that kernel computes its softmax in
    float32 (1.8e-7 from the explicit form in a float64 model), so float64, the precision the
    parity tests hold the frameworks to, keeps ``attention_explicit``."""
    if q.dtype == jnp.float64:
        return attention_explicit(q, k, v, scale)
    return jax.nn.dot_product_attention(q, k, v, scale=scale, is_causal=True)


def _attention(p: Params, h: jax.Array, config: ModelConfig, scale: float,
               cos: jax.Array, sin: jax.Array) -> jax.Array:
    b, t, _ = h.shape
    shape = (b, t, config.n_heads, config.head_dim)
    q = _rope((h @ p["w_q"]).reshape(shape), cos, sin)
    k = _rope((h @ p["w_k"]).reshape(shape), cos, sin)
    v = (h @ p["w_v"]).reshape(shape)
    o = attention(q, k, v, scale)
    return o.reshape(b, t, config.d_attn) @ p["w_o"]


def capacity(config: ModelConfig, n_tokens: int) -> int | None:
    """Slots each expert keeps, ceil(cf * N * k / E), or None when dropless."""
    if config.capacity_factor is None:
        return None
    return int(math.ceil(config.capacity_factor * n_tokens * config.top_k / config.n_experts))


def block_size(n_slots: int, n_experts: int) -> int:
    """Rows per expert block of the fast path: a power of two near N*k / (4E), in [8, 128].

    Padding costs at most E * block rows; a quarter of the mean per-expert load keeps it
    under ~25% of N*k while blocks stay large enough for efficient matmuls.
    """
    target = max(n_slots // (4 * n_experts), 1)
    return int(min(128, max(8, 2 ** int(math.floor(math.log2(target))))))


def _route(p: Params, bias: jax.Array | None, h: jax.Array, config: ModelConfig,
           router_mult: float) -> dict[str, jax.Array]:
    """Router: probabilities, top-k choices, gates, balancing and z losses for h (N, d)."""
    rdt = jnp.promote_types(h.dtype, jnp.float32)  # float32 or wider
    z = router_mult * (h.astype(rdt) @ p["router"].astype(rdt))
    probs = jax.nn.softmax(z, axis=-1)
    score = probs if bias is None else probs + jax.lax.stop_gradient(bias).astype(rdt)
    _, idx = jax.lax.top_k(score, config.top_k)                       # (N, k), descending
    gates = jnp.take_along_axis(probs, idx, axis=-1)
    if config.renormalize:
        gates = gates / jnp.sum(gates, axis=-1, keepdims=True)
    n, e = probs.shape
    counts = jnp.zeros((e,), jnp.int32).at[idx.reshape(-1)].add(1)    # slots per expert, pre-drop
    frac = counts.astype(rdt) / (n * config.top_k)
    balance = e * jnp.sum(frac * jnp.mean(probs, axis=0))             # f carries no gradient
    z_loss = jnp.mean(jax.nn.logsumexp(z, axis=-1) ** 2)
    return {"idx": idx, "gates": gates.astype(h.dtype), "counts": counts, "frac": frac,
            "balance": balance, "z_loss": z_loss, "logits": z}


def _choice_major(idx: jax.Array, gates: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Flatten (N, k) choices choice-major: slot j*N + n is token n's (j+1)-th choice."""
    n, k = idx.shape
    return idx.T.reshape(-1), jnp.tile(jnp.arange(n, dtype=jnp.int32), k), gates.T.reshape(-1)


def _keep_mask(expert: jax.Array, n_experts: int, cap: int | None) -> jax.Array:
    """Capacity admission over choice-major slots: a slot is kept if fewer than C earlier slots
    chose the same expert."""
    if cap is None:
        return jnp.ones(expert.shape, bool)
    onehot = jax.nn.one_hot(expert, n_experts, dtype=jnp.int32)
    position = jnp.take_along_axis(jnp.cumsum(onehot, axis=0) - onehot, expert[:, None], axis=1)[:, 0]
    return position < cap


def _experts_dense(p: Params, h: jax.Array, expert: jax.Array, token: jax.Array, gate: jax.Array,
                   kept: jax.Array, n_experts: int) -> jax.Array:
    """Oracle: every expert on every token, combined by a (N, E) gate matrix of kept slots."""
    n = h.shape[0]
    combine = jnp.zeros((n, n_experts), h.dtype).at[token, expert].add(jnp.where(kept, gate, 0))
    hidden = _gelu(jnp.einsum("nd,edh->enh", h, p["w_in"]))
    y = jnp.einsum("enh,ehd->end", hidden, p["w_out"])
    return jnp.einsum("ne,end->nd", combine, y)


def _experts_sorted(p: Params, h: jax.Array, expert: jax.Array, token: jax.Array, gate: jax.Array,
                    cap: int | None, n_experts: int) -> tuple[jax.Array, jax.Array]:
    """Fast path: slots sorted by expert, padded per expert to whole blocks of static size.

    Returns the combined output (N, d) and the number of dropped slots.
    """
    n, d = h.shape
    n_slots = expert.shape[0]
    blk = block_size(n_slots, n_experts)
    n_blocks = -(-n_slots // blk) + n_experts          # static worst case of sum_e ceil(c_e / blk)
    rows = n_blocks * blk
    order = jnp.argsort(expert, stable=True)           # stable: choice-major order within an expert
    e_sorted = expert[order]
    counts = jnp.zeros((n_experts,), jnp.int32).at[expert].add(1)
    rank = jnp.arange(n_slots, dtype=jnp.int32) - (jnp.cumsum(counts) - counts)[e_sorted]
    kept_counts = counts if cap is None else jnp.minimum(counts, cap)
    kept = jnp.ones((n_slots,), bool) if cap is None else rank < cap
    padded = -(-kept_counts // blk) * blk
    padded_end = jnp.cumsum(padded)
    dest = jnp.where(kept, (padded_end - padded)[e_sorted] + rank, rows)  # rows = out of range: dropped
    row_token = jnp.full((rows,), n, jnp.int32).at[dest].set(token[order], mode="drop")
    row_gate = jnp.zeros((rows,), h.dtype).at[dest].set(gate[order], mode="drop")
    block_expert = jnp.minimum(
        jnp.searchsorted(padded_end, jnp.arange(n_blocks, dtype=jnp.int32) * blk, side="right"),
        n_experts - 1)                                  # trailing unused blocks: zero rows, gate 0
    x = jnp.concatenate([h, jnp.zeros((1, d), h.dtype)])[row_token].reshape(n_blocks, blk, d)
    hidden = _gelu(jnp.einsum("gbd,gdh->gbh", x, p["w_in"][block_expert]))
    y = jnp.einsum("gbh,ghd->gbd", hidden, p["w_out"][block_expert]).reshape(rows, d)
    out = jnp.zeros((n + 1, d), h.dtype).at[row_token].add(y * row_gate[:, None])[:n]
    return out, n_slots - jnp.sum(kept_counts)


def _experts_ragged(p: Params, h: jax.Array, expert: jax.Array, token: jax.Array, gate: jax.Array,
                    cap: int | None, n_experts: int) -> tuple[jax.Array, jax.Array]:
    """Grouped GEMM: every slot sorted by expert (stable, so capacity admission stays
    choice-major) and each expert's rows multiplied by its own weights in one
    ``jax.lax.ragged_dot`` per projection, no padding and no copy of the weights; a slot over
    capacity keeps its row with gate 0. The right call on GPUs and TPUs; on the CPU, XLA computes
    every group densely (exact, slow). Returns the output (N, d) and the dropped slots."""
    n, d = h.shape
    n_slots = expert.shape[0]
    order = jnp.argsort(expert, stable=True)
    e_sorted = expert[order]
    counts = jnp.zeros((n_experts,), jnp.int32).at[expert].add(1)
    rank = jnp.arange(n_slots, dtype=jnp.int32) - (jnp.cumsum(counts) - counts)[e_sorted]
    kept = jnp.ones((n_slots,), bool) if cap is None else rank < cap
    rows = token[order]
    x = h[rows]
    hidden = _gelu(jax.lax.ragged_dot(x, p["w_in"], counts))
    y = jax.lax.ragged_dot(hidden, p["w_out"], counts)
    g = jnp.where(kept, gate[order], jnp.zeros((), gate.dtype))
    out = jnp.zeros((n, d), h.dtype).at[rows].add(y * g[:, None])
    return out, n_slots - jnp.sum(kept)


def resolve_dispatch(dispatch: str) -> str:
    """The expert schedule ``dispatch`` runs: ``"fast"`` is ``"ragged"`` (``jax.lax.ragged_dot``)
    on a GPU or TPU backend and ``"blocked"`` (``_experts_sorted``, padded static blocks) on the
    CPU, where ragged_dot runs densely; the others are themselves."""
    if dispatch not in DISPATCHES:
        raise ValueError(f"dispatch must be one of {DISPATCHES}, got {dispatch!r}")
    if dispatch == "fast":
        return "ragged" if jax.default_backend() in ACCELERATORS else "blocked"
    return dispatch


def _moe(p: Params, bias: jax.Array | None, h: jax.Array, config: ModelConfig, router_mult: float,
         dispatch: str) -> tuple[jax.Array, dict[str, jax.Array]]:
    b, t, d = h.shape
    flat = h.reshape(b * t, d)
    r = _route(p, bias, flat, config, router_mult)
    expert, token, gate = _choice_major(r["idx"], r["gates"])
    cap = capacity(config, b * t)
    schedule = resolve_dispatch(dispatch)
    if schedule == "dense":
        kept = _keep_mask(expert, config.n_experts, cap)
        out = _experts_dense(p, flat, expert, token, gate, kept, config.n_experts)
        dropped = expert.shape[0] - jnp.sum(kept)
    elif schedule == "ragged":
        out, dropped = _experts_ragged(p, flat, expert, token, gate, cap, config.n_experts)
    else:
        out, dropped = _experts_sorted(p, flat, expert, token, gate, cap, config.n_experts)
    for s in range(config.n_shared_experts):
        out = out + _gelu(flat @ p["shared_w_in"][s]) @ p["shared_w_out"][s]
    stats = {"balance": r["balance"], "z_loss": r["z_loss"], "frac": r["frac"], "counts": r["counts"],
             "dropped": dropped.astype(r["frac"].dtype) / expert.shape[0], "idx": r["idx"],
             "router_logits": r["logits"]}
    return out.reshape(b, t, d), stats


# The model -----------------------------------------------------------------------------------------
def _block(blk: Params, bias: jax.Array | None, x: jax.Array, cos: jax.Array, sin: jax.Array, *,
           config: ModelConfig, layer: int, fm: Any, dispatch: str
           ) -> tuple[jax.Array, dict[str, jax.Array] | None, jax.Array, jax.Array]:
    """One block (steps 2a-2h): the new residual stream, the MoE statistics (None for a dense
    block), the attention output and the FFN output."""
    h = _rmsnorm(x, blk["attn_norm"]["scale"], config.norm_eps)
    a = _attention(blk["attn"], h, config, fm.attention, cos, sin)
    x = x + fm.residual * a
    h = _rmsnorm(x, blk["ffn_norm"]["scale"], config.norm_eps)
    if config.is_moe_layer(layer):
        ffn, stats = _moe(blk["moe"], bias, h, config, fm.router, dispatch)
    else:
        ffn, stats = _gelu(h @ blk["mlp"]["w_in"]) @ blk["mlp"]["w_out"], None
    return x + fm.residual * ffn, stats, a, ffn


def forward(params: Params, buffers: Params, tokens: jax.Array, config: ModelConfig, *,
            dispatch: str = "fast", collect: dict[str, jax.Array] | None = None, remat: bool = False
            ) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Logits (B, T, V) in the model dtype and aux statistics.

    aux: ``balance_loss`` and ``z_loss`` (means over MoE layers; 1 and 0 without MoE layers),
    ``load_fractions`` (n_moe_layers, E) pre-drop slot fractions f_e, ``slot_counts``
    (n_moe_layers, E) int pre-drop slot counts, ``dropped_fraction`` (mean over MoE layers),
    ``expert_choices`` (n_moe_layers, B*T, k) chosen expert ids. Jit with
    ``static_argnames=("config", "dispatch")``.

    ``collect``, when a dict, receives the module outputs the coordinate check records
    (``proxy.diagnostics.coordcheck``): ``embed``, ``blocks.i.attn`` (a), ``blocks.i.router`` (z),
    ``blocks.i.experts`` (the FFN output) and ``logits``; inside ``jit`` they are tracers, so
    reduce and return them from the traced function.

    ``remat`` checkpoints every block (``jax.checkpoint``): the backward recomputes a block's
    activations from its input instead of keeping them. Jit with ``remat`` static too.
    """
    if dispatch not in DISPATCHES:
        raise ValueError(f"dispatch must be one of {DISPATCHES}, got {dispatch!r}")
    fm = forward_multipliers(config)
    x = params["embed"]["tokens"][tokens]
    dtype = x.dtype
    collected = {} if collect is None else collect
    collected["embed"] = x
    cos_np, sin_np = rope_tables(tokens.shape[1], config.head_dim, config.rope_theta)
    cos, sin = jnp.asarray(cos_np, dtype), jnp.asarray(sin_np, dtype)
    layer_stats = []
    for i in range(config.n_layers):
        blk = params["blocks"][str(i)]
        bias = (buffers["blocks"][str(i)]["moe"]["expert_bias"]
                if config.is_moe_layer(i) and config.bias_balancing else None)
        body = functools.partial(_block, config=config, layer=i, fm=fm, dispatch=dispatch)
        if remat:
            # Activation checkpointing: keep the block's input, recompute the rest in the backward.
            body = jax.checkpoint(body)
        x, stats, a, ffn = body(blk, bias, x, cos, sin)
        collected[f"blocks.{i}.attn"] = a
        if stats is not None:
            layer_stats.append(stats)
            collected[f"blocks.{i}.router"] = stats["router_logits"]
        collected[f"blocks.{i}.experts"] = ffn
    logits = fm.readout * (_rmsnorm(x, params["final_norm"]["scale"], config.norm_eps)
                           @ params["readout"]["w"])
    collected["logits"] = logits
    rdt = jnp.promote_types(dtype, jnp.float32)
    if layer_stats:
        aux = {
            "balance_loss": jnp.mean(jnp.stack([s["balance"] for s in layer_stats])),
            "z_loss": jnp.mean(jnp.stack([s["z_loss"] for s in layer_stats])),
            "load_fractions": jnp.stack([s["frac"] for s in layer_stats]),
            "slot_counts": jnp.stack([s["counts"] for s in layer_stats]),
            "dropped_fraction": jnp.mean(jnp.stack([s["dropped"] for s in layer_stats])),
            "expert_choices": jnp.stack([s["idx"] for s in layer_stats]),
        }
    else:
        n = tokens.shape[0] * tokens.shape[1]
        aux = {"balance_loss": jnp.ones((), rdt), "z_loss": jnp.zeros((), rdt),
               "load_fractions": jnp.zeros((0, config.n_experts), rdt),
               "slot_counts": jnp.zeros((0, config.n_experts), jnp.int32),
               "dropped_fraction": jnp.zeros((), rdt),
               "expert_choices": jnp.zeros((0, n, config.top_k), jnp.int32)}
    return logits, aux


def parameter_shapes(config: ModelConfig) -> dict[str, tuple[int, ...]]:
    """Canonical name -> shape, from the naming table (for checks)."""
    return {s.name: s.shape for s in parameter_specs(config)} | {
        b.name: b.shape for b in buffer_specs(config)}
