"""The MoE proxy model in PyTorch: one readable file, the pinned math of both frameworks.

Inputs are byte tokens ``(B, T)``; all compute runs in the model dtype (float32 or float64,
or bfloat16 over float32 master weights: ``compute_dtype``), except the router, whose logits
and softmax run in float32 or wider (float64 stays float64), and the RMSNorm statistics.
Parameters carry the canonical names of ``proxy.naming.parameter_specs`` and are stored
``(in, out)`` / ``(E, in, out)``, so every product is ``y = x @ W``. Forward multipliers ``fm``
come from ``proxy.parametrization.forward_multipliers``.

1. ``x = embed.tokens[tokens]``                                               (B, T, d)
2. For each block i:
   a. ``h = rmsnorm(x) * attn_norm.scale``, ``rmsnorm(x) = x / sqrt(mean(x^2) + norm_eps)``
   b. ``q, k, v = h @ w_q, h @ w_k, h @ w_v`` as (B, T, n_heads, head_dim)
   c. RoPE on q and k, GPT-NeoX half rotation: ``inv_freq[j] = theta^(-2j/head_dim)``,
      ``angle[t, j] = t * inv_freq[j]`` (tables in NumPy float64, cast to the model dtype),
      ``rot = concat(x1 cos - x2 sin, x2 cos + x1 sin)`` with x1, x2 the two halves.
   d. causal softmax attention with logit scale ``fm.attention``; ``a = o @ w_o``
   e. ``x = x + fm.residual * a``
   f. ``h = rmsnorm(x) * ffn_norm.scale``
   g. FFN: leading dense layers ``gelu_tanh(h @ mlp.w_in) @ mlp.w_out``; MoE layers route
      each of the N = B*T tokens to k of E experts (``route`` below, each step with its
      formula and citation), ``out = sum_kept g_j * expert_{e_j}(h) + sum_shared expert_s(h)``
      with ``expert_e(h) = gelu_tanh(h @ w_in[e]) @ w_out[e]``.
   h. ``x = x + fm.residual * ffn_out``
3. ``logits = fm.readout * ((rmsnorm(x) * final_norm.scale) @ readout.w)``       (B, T, V)

``forward`` returns ``(logits, aux)``; ``aux`` holds ``balance_loss`` and ``z_loss`` (means
over MoE layers; 1 and 0 when there is none), ``load_fractions`` (n_moe_layers, E),
``dropped_fraction`` (mean over MoE layers) and ``slot_counts`` (n_moe_layers, E), the
token-slots each expert was chosen for (before capacity drops), for the aux-loss-free bias
update that the trainer applies after each optimiser step.

Expert dispatch modes, all computing the same math (tests hold them equal in float64):

- ``"dense"``: the oracle. Every expert runs on every token; a (N, E) gate matrix, zero for
  unchosen or dropped experts, combines them. Exact top-k math at E/k times the FLOPs.
- ``"loop"``: the common per-expert loop with a mask (the benchmark's baseline).
- ``"fast"``: token-slots sorted by expert (one stable argsort) into contiguous blocks, run as
  one grouped GEMM (``torch.nn.functional.grouped_mm``) where it serves (float32, rows of a
  multiple of 16 bytes: d_model and d_expert multiples of 4), else one product per block;
  scattered back with ``index_add_``. ``resolve_dispatch`` names the schedule it runs
  ("grouped" or "sorted"). A padded ``bmm`` of the same blocks was measured slower and removed
  (docs/benchmarks.md).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Mapping

import numpy as np
import torch
import torch.nn.functional as F
import torch.utils.checkpoint
from torch import Tensor, nn

from proxy.config import ModelConfig
from proxy.init import init_params
from proxy.naming import parameter_specs
from proxy.parametrization import ForwardMultipliers, forward_multipliers

DISPATCHES = ("fast", "dense", "loop")
FAST_SCHEDULES = ("grouped", "sorted")   # what "fast" runs: grouped GEMM, or per-block products
DTYPES = (torch.float32, torch.float64)


# --------------------------------------------------------------------------------------
# Small pure functions
# --------------------------------------------------------------------------------------
def gelu_tanh(x: Tensor) -> Tensor:
    """0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))), as jax.nn.gelu(approximate=True)."""
    return F.gelu(x, approximate="tanh")


def _scaled(multiplier: float, x: Tensor) -> Tensor:
    """multiplier * x, skipping the (exact, but not free) product when the multiplier is 1."""
    return x if multiplier == 1.0 else multiplier * x


def rmsnorm(x: Tensor, scale: Tensor, eps: float) -> Tensor:
    """x / sqrt(mean(x^2, last axis) + eps) * scale (Zhang & Sennrich 2019), the statistics in
    float32 or wider (a bfloat16 mean of squares loses the small features)."""
    wide = x.to(torch.promote_types(x.dtype, torch.float32))
    return (wide * torch.rsqrt(wide.square().mean(dim=-1, keepdim=True) + eps)).to(x.dtype) * scale


def rope_tables(seq_len: int, head_dim: int, theta: float) -> tuple[np.ndarray, np.ndarray]:
    """(cos, sin) of shape (seq_len, head_dim/2) in float64: angle[t, j] = t * theta^(-2j/head_dim)."""
    half = head_dim // 2
    inv_freq = theta ** (-2.0 * np.arange(half, dtype=np.float64) / head_dim)
    angle = np.arange(seq_len, dtype=np.float64)[:, None] * inv_freq[None, :]
    return np.cos(angle), np.sin(angle)


def apply_rope(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """GPT-NeoX half rotation (Su et al. 2021) of x (B, T, ..., head_dim) by (T, half) tables."""
    half = x.shape[-1] // 2
    full_cos, signed_sin = rope_full_tables(cos, sin)
    return rotate_halves(x, full_cos, signed_sin, half)


def rope_full_tables(cos: Tensor, sin: Tensor) -> tuple[Tensor, Tensor]:
    """(cat(cos, cos), cat(-sin, sin)), (T, head_dim): the half rotation as two full-width products."""
    return torch.cat((cos, cos), dim=-1), torch.cat((-sin, sin), dim=-1)


def rotate_halves(x: Tensor, full_cos: Tensor, signed_sin: Tensor, half: int) -> Tensor:
    """x * cat(cos, cos) + cat(x2, x1) * cat(-sin, sin) for x (B, T, ..., head_dim).

    Bit-for-bit the rotation ``cat(x1 cos - x2 sin, x2 cos + x1 sin)`` (a + (-b) is a - b in
    IEEE arithmetic), in two full-width products instead of four half-width ones.
    """
    shape = (full_cos.shape[0],) + (1,) * (x.dim() - 3) + (full_cos.shape[1],)
    # cat(x2, x1) as a roll by half (its backward is the opposite roll, where two slices would
    # each zero-fill a full-size gradient).
    swapped = torch.roll(x, half, dims=-1)
    # Not addcmul: its fused multiply-add rounds once where the pinned formula rounds twice.
    return x * full_cos.view(shape) + swapped * signed_sin.view(shape)


def router_dtype(dtype: torch.dtype) -> torch.dtype:
    """The router runs in float32 or wider: float64 stays float64, anything narrower is float32."""
    return torch.promote_types(dtype, torch.float32)


# --------------------------------------------------------------------------------------
# Routing: every step of the pinned routing math, one function each
# --------------------------------------------------------------------------------------
def router_logits(h: Tensor, w_router: Tensor, multiplier: float) -> Tensor:
    """z = fm.router * (h @ router) in float32-or-wider, (N, E).

    Routers are kept in float32 because the softmax over experts is sensitive to rounding
    (Fedus et al. 2021, Switch Transformer, section 2.4 "selective precision").
    """
    dt = router_dtype(h.dtype)
    return _scaled(multiplier, h.to(dt) @ w_router.to(dt))


def topk_experts(probs: Tensor, k: int, bias: Tensor | None = None) -> Tensor:
    """Indices (N, k) of the k largest selection scores, best first, ties to the lowest index.

    The score is ``p + expert_bias`` under aux-loss-free balancing (DeepSeek-V3, Liu et al.
    2024, eq. 16; Wang et al. 2024), else ``p``. The bias only chooses experts; it never enters
    the gates and receives no gradient.
    """
    scores = probs if bias is None else probs + bias.detach().to(probs.dtype)
    # Ties go to the lowest expert index, as jax.lax.top_k documents: torch.topk makes no
    # promise (on the CPU it returns the highest index first), and with tied scores (a zero
    # router, a saturated softmax) the two frameworks would route to different experts. A
    # stable descending sort keeps equal scores in index order.
    return torch.sort(scores, dim=-1, descending=True, stable=True).indices[:, :k]


def gate_weights(probs: Tensor, experts: Tensor, renormalize: bool) -> Tensor:
    """Gates (N, k): g_j = p[token, e_j], divided by sum_j g_j when ``renormalize``.

    Renormalised top-k gates sum to 1 (Mixtral; DeepSeek-V3 eq. 13); without it they are the raw
    probabilities (Switch Transformer, Shazeer et al. 2017). With k = 1 and renormalisation the
    gate is exactly 1, so the router then learns only through the balancing and z losses.
    """
    gates = torch.gather(probs, 1, experts)
    if renormalize:
        gates = gates / gates.sum(dim=-1, keepdim=True)
    return gates


def expert_capacity(n_tokens: int, k: int, n_experts: int, capacity_factor: float | None) -> int | None:
    """C = ceil(capacity_factor * N * k / E) token-slots per expert (Fedus et al. 2021, eq. 3); None if dropless."""
    if capacity_factor is None:
        return None
    return math.ceil(capacity_factor * n_tokens * k / n_experts)


def capacity_keep(experts: Tensor, n_experts: int, capacity: int | None) -> Tensor:
    """Bool (N, k): which token-slots an expert of capacity C admits.

    Slots are admitted choice-major: every token's first choice in token order, then every
    second choice, and so on; an expert keeps its first C slots (the priority of GShard,
    Lepikhin et al. 2020, section 2.2, and Switch). A dropped slot contributes 0.
    """
    if capacity is None:
        return torch.ones_like(experts, dtype=torch.bool)
    n, k = experts.shape
    choice_major = experts.t().reshape(-1)                       # slot order: (choice, token)
    onehot = F.one_hot(choice_major, n_experts)
    position = (onehot.cumsum(0) * onehot).sum(dim=1) - 1        # rank of the slot in its expert
    return (position < capacity).reshape(k, n).t()


def slot_counts(experts: Tensor, n_experts: int) -> Tensor:
    """c_e: token-slots whose choice is expert e, before capacity drops, (E,) int64."""
    return torch.bincount(experts.reshape(-1), minlength=n_experts)


def balance_loss(counts: Tensor, probs: Tensor) -> Tensor:
    """Switch load-balancing loss (Fedus et al. 2021, eq. 4): E * sum_e f_e * P_e.

    f_e = c_e / (N k) is the share of token-slots choosing e (no gradient), P_e the mean router
    probability of e over tokens. It equals 1 when both are uniform.
    """
    n_experts = probs.shape[-1]
    f = counts.to(probs.dtype) / counts.sum()
    return n_experts * torch.sum(f * probs.mean(dim=0))


def z_loss(logits: Tensor) -> Tensor:
    """Router z-loss (ST-MoE, Zoph et al. 2022, eq. 5): mean over tokens of logsumexp(z)^2."""
    return torch.logsumexp(logits, dim=-1).square().mean()


@dataclass(frozen=True)
class Routing:
    """One MoE layer's routing of N tokens to k of E experts."""

    logits: Tensor            # z (N, E), router dtype
    probs: Tensor             # p = softmax(z) (N, E)
    experts: Tensor           # chosen experts (N, k), best first
    gates: Tensor             # g (N, k), router dtype
    keep: Tensor              # (N, k) bool, False for capacity-dropped slots
    counts: Tensor            # c (E,) slots per expert before drops
    balance_loss: Tensor
    z_loss: Tensor
    dropped_fraction: Tensor  # dropped slots / (N k)

    @property
    def load_fractions(self) -> Tensor:
        return self.counts.to(self.probs.dtype) / self.counts.sum()


def route(h: Tensor, w_router: Tensor, bias: Tensor | None, config: ModelConfig,
          multiplier: float) -> Routing:
    """All routing of one MoE layer for tokens h (N, d)."""
    n, e = h.shape[0], config.n_experts
    z = router_logits(h, w_router, multiplier)
    p = torch.softmax(z, dim=-1)
    experts = topk_experts(p, config.top_k, bias if config.bias_balancing else None)
    gates = gate_weights(p, experts, config.renormalize)
    keep = capacity_keep(experts, e, expert_capacity(n, config.top_k, e, config.capacity_factor))
    counts = slot_counts(experts, e)
    dropped = (~keep).sum().to(p.dtype) / keep.numel()
    return Routing(z, p, experts, gates, keep, counts, balance_loss(counts, p), z_loss(z), dropped)


# --------------------------------------------------------------------------------------
# Expert dispatch: same math, different schedules
# --------------------------------------------------------------------------------------
def grouped_mm_available(dtype: torch.dtype, d_model: int, d_expert: int, device_type: str = "cpu") -> bool:
    """Whether torch's grouped GEMM serves this case, forward and backward, with rows a
    multiple of 16 bytes: on the CPU in float32 (its bfloat16 backward fails there), on CUDA
    in bfloat16 (the dtype its kernels are written for)."""
    if not hasattr(F, "grouped_mm"):
        return False
    if device_type == "cpu":
        return dtype == torch.float32 and d_model % 4 == 0 and d_expert % 4 == 0
    return device_type == "cuda" and dtype == torch.bfloat16 and d_model % 8 == 0 and d_expert % 8 == 0


def resolve_dispatch(dispatch: str, dtype: torch.dtype, d_model: int, d_expert: int) -> str:
    """The schedule ``dispatch`` runs: "dense", "loop", or for "fast" grouped GEMM where it
    serves ("grouped"), else the same sorted blocks one product each ("sorted").

    Measured on two CPU cores at the w96 rung (d_model 96, 4 layers, 8 experts top-2, batch
    8 x 128; ``ladder bench``, single steps alternating): grouped GEMM is the fastest exact
    schedule, 1.5-1.6x the per-expert masked loop per MoE layer (forward and backward) and
    1.13-1.25x per training step, where shared work dilutes it (docs/benchmarks.md). Per MoE
    layer the sorted-block loop was about 25% slower than grouped GEMM and a padded bmm about
    15% slower (building the padding costs more than the batched product saves).
    """
    if dispatch not in DISPATCHES:
        raise ValueError(f"dispatch must be one of {DISPATCHES}, got {dispatch!r}")
    if dispatch == "fast":
        return "grouped" if grouped_mm_available(dtype, d_model, d_expert) else "sorted"
    return dispatch


def _expert(x: Tensor, w_in: Tensor, w_out: Tensor) -> Tensor:
    return gelu_tanh(x @ w_in) @ w_out


def dispatch_dense(h: Tensor, w_in: Tensor, w_out: Tensor, experts: Tensor, gates: Tensor,
                   keep: Tensor) -> Tensor:
    """Oracle: every expert on every token, combined by a (N, E) gate matrix zero off the chosen slots."""
    n, e = h.shape[0], w_in.shape[0]
    gate_matrix = torch.zeros(n, e, dtype=h.dtype, device=h.device).scatter_add(
        1, experts, gates.to(h.dtype) * keep)
    y = gelu_tanh(torch.einsum("nd,edh->enh", h, w_in))
    y = torch.einsum("enh,ehd->end", y, w_out)
    return torch.einsum("ne,end->nd", gate_matrix, y)


def dispatch_loop(h: Tensor, w_in: Tensor, w_out: Tensor, experts: Tensor, gates: Tensor,
                  keep: Tensor) -> Tensor:
    """The common loop: for each expert, the tokens that chose it (by mask), y[idx] += g * expert(h[idx]).

    Written as the usual reference implementations write it (e.g. Hugging Face's Mixtral sparse
    MoE block): ``nonzero`` of the expert's mask, a gather, the expert, and an in-place
    ``index_add_`` into one zero-initialised output.
    """
    out = torch.zeros_like(h)
    gates = gates.to(h.dtype)
    for e in range(w_in.shape[0]):
        token, slot = torch.nonzero((experts == e) & keep, as_tuple=True)
        if token.numel():
            y = _expert(h[token], w_in[e], w_out[e]) * gates[token, slot, None]
            out.index_add_(0, token, y)
    return out


def dispatch_fast(h: Tensor, w_in: Tensor, w_out: Tensor, experts: Tensor, gates: Tensor,
                    keep: Tensor, schedule: str, dropless: bool = False) -> Tensor:
    """The fast path: token-slots sorted by expert into contiguous blocks, computed per
    ``schedule``, scattered back.

    ``schedule``: "grouped" (one grouped GEMM over the jagged blocks) or "sorted" (one product
    per block, for dtypes and shapes grouped GEMM does not serve; its block sizes are read on
    the host). ``dropless`` (no capacity factor: every slot kept) skips the kept-slot search,
    so the grouped schedule never waits on the device.
    """
    if schedule not in FAST_SCHEDULES:
        raise ValueError(f"unknown fast-path schedule {schedule!r}; one of {FAST_SCHEDULES}")
    n, k = experts.shape
    n_experts = w_in.shape[0]
    if dropless:   # every slot kept: no nonzero(), whose output size would sync with the host
        kept = torch.arange(n * k, device=experts.device)
    else:
        kept = keep.reshape(-1).nonzero().squeeze(1)             # kept slots, token-major
    slot_expert = experts.reshape(-1)[kept]
    order = torch.argsort(slot_expert, stable=True)
    slot = kept[order]
    token = torch.div(slot, k, rounding_mode="floor")
    sorted_expert = slot_expert[order]
    counts = torch.bincount(sorted_expert, minlength=n_experts)
    x = h.index_select(0, token)                                 # (S, d), expert-contiguous
    if schedule == "grouped":
        offs = counts.cumsum(0).to(torch.int32)
        y = F.grouped_mm(gelu_tanh(F.grouped_mm(x, w_in, offs=offs)), w_out, offs=offs)
    else:
        blocks = x.split(counts.tolist())
        y = torch.cat([_expert(b, w_in[e], w_out[e]) for e, b in enumerate(blocks)])
    y = y * gates.reshape(-1).index_select(0, slot).to(h.dtype)[:, None]
    return torch.zeros_like(h).index_add(0, token, y)


# --------------------------------------------------------------------------------------
# Modules (named so that named_parameters() yields the canonical names)
# --------------------------------------------------------------------------------------
def _param(shape: tuple[int, ...], dtype: torch.dtype) -> nn.Parameter:
    return nn.Parameter(torch.empty(shape, dtype=dtype))


class TokenEmbedding(nn.Module):
    def __init__(self, config: ModelConfig, dtype: torch.dtype):
        super().__init__()
        self.tokens = _param((config.vocab_size, config.d_model), dtype)

    def forward(self, tokens: Tensor) -> Tensor:
        return self.tokens[tokens]


class RMSNorm(nn.Module):
    def __init__(self, d: int, eps: float, dtype: torch.dtype):
        super().__init__()
        self.eps = eps
        self.scale = _param((d,), dtype)

    def forward(self, x: Tensor) -> Tensor:
        return rmsnorm(x, self.scale, self.eps)


class Attention(nn.Module):
    def __init__(self, config: ModelConfig, fm: ForwardMultipliers, dtype: torch.dtype):
        super().__init__()
        d, da = config.d_model, config.d_attn
        self.n_heads, self.head_dim, self.scale = config.n_heads, config.head_dim, fm.attention
        self.w_q, self.w_k, self.w_v = (_param((d, da), dtype) for _ in range(3))
        self.w_o = _param((da, d), dtype)

    def forward(self, h: Tensor, full_cos: Tensor, signed_sin: Tensor) -> Tensor:
        b, t, _ = h.shape
        # One product for q, k and v (each output column is the same dot product as in
        # h @ w_q etc.), then one rotation of q and k together.
        qkv = (h @ torch.cat((self.w_q, self.w_k, self.w_v), dim=1)).view(b, t, 3, self.n_heads, self.head_dim)
        # split/unbind, not indexing: their backward concatenates rather than zero-filling.
        qk, v = qkv.split((2, 1), dim=2)
        q, k = rotate_halves(qk, full_cos, signed_sin, self.head_dim // 2).unbind(2)
        v = v.squeeze(2)
        # Causal softmax(q k^T * scale) v; masked scores are -inf before the softmax.
        o = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2),
                                           is_causal=True, scale=self.scale)
        return o.transpose(1, 2).reshape(b, t, -1) @ self.w_o


class MLP(nn.Module):
    def __init__(self, config: ModelConfig, dtype: torch.dtype):
        super().__init__()
        self.w_in = _param((config.d_model, config.dense_ff), dtype)
        self.w_out = _param((config.dense_ff, config.d_model), dtype)

    def forward(self, h: Tensor) -> Tensor:
        return _expert(h, self.w_in, self.w_out)


class MoE(nn.Module):
    """Routed experts (plus optional shared ones) over flattened tokens."""

    def __init__(self, config: ModelConfig, fm: ForwardMultipliers, dispatch: str, dtype: torch.dtype):
        super().__init__()
        d, e, hid = config.d_model, config.n_experts, config.d_expert
        self.config, self.router_mult = config, fm.router
        self.dispatch = resolve_dispatch(dispatch, dtype, d, hid)   # the schedule it runs
        self.router = _param((d, e), dtype)
        self.w_in = _param((e, d, hid), dtype)
        self.w_out = _param((e, hid, d), dtype)
        if config.n_shared_experts:
            self.shared_w_in = _param((config.n_shared_experts, d, hid), dtype)
            self.shared_w_out = _param((config.n_shared_experts, hid, d), dtype)
        if config.bias_balancing:
            self.register_buffer("expert_bias", torch.zeros(e, dtype=router_dtype(dtype)))
        else:
            self.expert_bias = None

    def forward(self, h: Tensor) -> tuple[Tensor, Routing]:
        shape = h.shape
        h = h.reshape(-1, shape[-1])
        r = route(h, self.router, self.expert_bias, self.config, self.router_mult)
        if self.dispatch == "dense":
            out = dispatch_dense(h, self.w_in, self.w_out, r.experts, r.gates, r.keep)
        elif self.dispatch == "loop":
            out = dispatch_loop(h, self.w_in, self.w_out, r.experts, r.gates, r.keep)
        else:
            # The schedule follows what the step computes in, and where: the model's dispatch
            # was resolved for its master dtype on the CPU.
            cfg = self.config
            grouped = grouped_mm_available(h.dtype, cfg.d_model, cfg.d_expert, h.device.type)
            out = dispatch_fast(h, self.w_in, self.w_out, r.experts, r.gates, r.keep,
                                "grouped" if grouped else "sorted", cfg.capacity_factor is None)
        for s in range(self.config.n_shared_experts):
            out = out + _expert(h, self.shared_w_in[s], self.shared_w_out[s])
        return out.reshape(shape), r


class Block(nn.Module):
    def __init__(self, config: ModelConfig, layer: int, fm: ForwardMultipliers, dispatch: str,
                 dtype: torch.dtype):
        super().__init__()
        self.residual = fm.residual
        self.attn_norm = RMSNorm(config.d_model, config.norm_eps, dtype)
        self.attn = Attention(config, fm, dtype)
        self.ffn_norm = RMSNorm(config.d_model, config.norm_eps, dtype)
        if config.is_moe_layer(layer):
            self.moe = MoE(config, fm, dispatch, dtype)
        else:
            self.mlp = MLP(config, dtype)

    def forward(self, x: Tensor, cos: Tensor, sin: Tensor) -> tuple[Tensor, Routing | None]:
        x = x + _scaled(self.residual, self.attn(self.attn_norm(x), cos, sin))
        h = self.ffn_norm(x)
        if hasattr(self, "moe"):
            out, routing = self.moe(h)
        else:
            out, routing = self.mlp(h), None
        return x + _scaled(self.residual, out), routing


class Readout(nn.Module):
    def __init__(self, config: ModelConfig, dtype: torch.dtype):
        super().__init__()
        self.w = _param((config.d_model, config.vocab_size), dtype)


class TorchMoEModel(nn.Module):
    """The proxy MoE transformer; see the module docstring for the math.

    ``params`` (canonical name -> array) gives the weights; without it they are drawn by
    ``proxy.init.init_params(config, init_seed, init_scale)``. Either way they are cast to
    ``dtype`` (float32 or float64), the master weights. ``compute_dtype`` (default ``dtype``;
    bfloat16 for mixed precision, with float32 masters) is what the forward computes in: each
    call casts the weights to it (the casts are differentiable, so the gradients reach the
    masters in their own dtype), and the router, the RMSNorm statistics and the attention
    softmax stay float32 (``proxy.backends.placement``). ``checkpoint`` recomputes every
    block's activations in the backward pass (``torch.utils.checkpoint``), keeping only the
    blocks' inputs: memory per token falls from every intermediate tensor to one (B, T, d).
    """

    def __init__(self, config: ModelConfig, *, dispatch: str = "fast", dtype: torch.dtype = torch.float32,
                 params: Mapping[str, np.ndarray] | None = None, init_seed: int = 0,
                 init_scale: float = 1.0, compute_dtype: torch.dtype | None = None,
                 checkpoint: bool = False):
        super().__init__()
        if not isinstance(config, ModelConfig):
            raise TypeError(f"config must be a ModelConfig, got {type(config).__name__}")
        if dtype not in DTYPES:
            raise ValueError(f"dtype must be torch.float32 or torch.float64, got {dtype!r}")
        compute_dtype = compute_dtype or dtype
        if compute_dtype != dtype and (compute_dtype, dtype) != (torch.bfloat16, torch.float32):
            raise ValueError(f"compute_dtype must be the master dtype or bfloat16 over float32 masters, "
                             f"got {compute_dtype} over {dtype}")
        self.config, self.dtype, self.compute_dtype = config, dtype, compute_dtype
        self.checkpoint = checkpoint
        self.dispatch = resolve_dispatch(dispatch, dtype, config.d_model, config.d_expert)   # as the MoE layers
        fm = forward_multipliers(config)
        self.readout_mult = fm.readout
        self.embed = TokenEmbedding(config, dtype)
        self.blocks = nn.ModuleList(Block(config, i, fm, dispatch, dtype) for i in range(config.n_layers))
        self.final_norm = RMSNorm(config.d_model, config.norm_eps, dtype)
        self.readout = Readout(config, dtype)
        self._rope: dict[tuple, tuple[Tensor, Tensor]] = {}
        self.load_params(init_params(config, init_seed, init_scale) if params is None else params)

    @torch.no_grad()
    def load_params(self, params: Mapping[str, np.ndarray]) -> None:
        """Copy canonical-name arrays into the parameters; names and shapes must match the table."""
        own = dict(self.named_parameters())
        missing, unknown = sorted(set(own) - set(params)), sorted(set(params) - set(own))
        if missing or unknown:
            raise ValueError(f"params do not match the canonical table: missing {missing}, unknown {unknown}")
        for name, value in params.items():
            value = torch.as_tensor(np.asarray(value))
            if tuple(value.shape) != tuple(own[name].shape):
                raise ValueError(f"params[{name!r}] has shape {tuple(value.shape)}, "
                                 f"expected {tuple(own[name].shape)}")
            own[name].copy_(value.to(self.dtype))

    def moe_blocks(self) -> list[MoE]:
        return [b.moe for b in self.blocks if hasattr(b, "moe")]

    def _rope_tables(self, t: int, device: torch.device, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
        """The cached (cat(cos, cos), cat(-sin, sin)) tables of ``rope_full_tables``, (T, head_dim)."""
        key = (t, device, dtype)
        if key not in self._rope:
            cos, sin = rope_tables(t, self.config.head_dim, self.config.rope_theta)
            self._rope[key] = rope_full_tables(torch.as_tensor(cos, dtype=dtype, device=device),
                                               torch.as_tensor(sin, dtype=dtype, device=device))
        return self._rope[key]

    def forward(self, tokens: Tensor, _cast: bool = True) -> tuple[Tensor, dict[str, Tensor]]:
        """tokens (B, T) int -> logits (B, T, V) in the compute dtype, and the aux dict."""
        if tokens.dim() != 2:
            raise ValueError(f"tokens must be (batch, time), got shape {tuple(tokens.shape)}")
        if _cast and self.compute_dtype != self.dtype:
            # The router's weights stay in their master dtype: its logits are float32 products.
            low = {n: p.to(self.compute_dtype) for n, p in self.named_parameters() if not n.endswith(".router")}
            return torch.func.functional_call(self, low, (tokens,), {"_cast": False}, strict=False)
        cos, sin = self._rope_tables(tokens.shape[1], tokens.device, self.embed.tokens.dtype)
        x = self.embed(tokens)
        routings: list[Routing] = []
        for block in self.blocks:
            if self.checkpoint and torch.is_grad_enabled():
                # Activation checkpointing: keep the block's input only and run the block again
                # in the backward (its routing is deterministic, so the recomputation matches).
                x, routing = torch.utils.checkpoint.checkpoint(block, x, cos, sin, use_reentrant=False)
            else:
                x, routing = block(x, cos, sin)
            if routing is not None:
                routings.append(routing)
        logits = _scaled(self.readout_mult, self.final_norm(x) @ self.readout.w)
        return logits, self._aux(routings)

    def _aux(self, routings: list[Routing]) -> dict[str, Tensor]:
        rdt, dev, e = router_dtype(self.dtype), self.readout.w.device, self.config.n_experts
        if not routings:
            return {"balance_loss": torch.ones((), dtype=rdt, device=dev),
                    "z_loss": torch.zeros((), dtype=rdt, device=dev),
                    "load_fractions": torch.zeros((0, e), dtype=rdt, device=dev),
                    "dropped_fraction": torch.zeros((), dtype=rdt, device=dev),
                    "slot_counts": torch.zeros((0, e), dtype=torch.int64, device=dev)}
        return {"balance_loss": torch.stack([r.balance_loss for r in routings]).mean(),
                "z_loss": torch.stack([r.z_loss for r in routings]).mean(),
                "load_fractions": torch.stack([r.load_fractions for r in routings]),
                "dropped_fraction": torch.stack([r.dropped_fraction for r in routings]).mean(),
                "slot_counts": torch.stack([r.counts for r in routings])}

    @torch.no_grad()
    def update_expert_bias(self, counts: Tensor, rate: float) -> None:
        """Aux-loss-free balancing (DeepSeek-V3; Wang et al. 2024): b_e += rate * sign(mean(c) - c_e).

        ``counts`` is ``aux["slot_counts"]`` (n_moe_layers, E) of the step's batch. Underloaded
        experts gain bias, overloaded ones lose it. A no-op without ``bias_balancing``.
        """
        if not self.config.bias_balancing:
            return
        for moe, c in zip(self.moe_blocks(), counts):
            c = c.to(moe.expert_bias.dtype)
            moe.expert_bias.add_(rate * torch.sign(c.mean() - c))


def canonical_names(config: ModelConfig) -> list[str]:
    """The canonical parameter names in table order (what named_parameters() must yield)."""
    return [s.name for s in parameter_specs(config)]
