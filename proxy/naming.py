"""The one table of parameter tensors: canonical name, shape, role and fan-in.

Both frameworks name their parameters exactly as listed here. Matrices are stored ``(in, out)``
and expert weights stacked ``(E, in, out)``, so ``y = x @ W`` everywhere and converting weights
between frameworks never transposes. Roles live here, never as attributes on tensors; the
parametrization table (``proxy.parametrization``) is keyed by them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from proxy.config import ModelConfig

Role = Literal["embedding", "attention", "router", "expert", "mlp", "norm", "readout"]
ROLES: tuple[Role, ...] = ("embedding", "attention", "router", "expert", "mlp", "norm", "readout")


@dataclass(frozen=True)
class ParamSpec:
    """One parameter tensor.

    ``fan_in`` is the contraction size of the matrix product the tensor takes part in (the
    ``in`` axis), 1 for gains; for the token embedding it is the one-hot vocabulary size.
    """

    name: str
    shape: tuple[int, ...]
    role: Role
    fan_in: int
    layer: int | None = None

    @property
    def size(self) -> int:
        n = 1
        for s in self.shape:
            n *= s
        return n

    @property
    def is_matrix(self) -> bool:
        return len(self.shape) >= 2


@dataclass(frozen=True)
class BufferSpec:
    """Non-trainable state that is part of the model (updated outside the gradient)."""

    name: str
    shape: tuple[int, ...]
    layer: int


def parameter_specs(config: ModelConfig) -> tuple[ParamSpec, ...]:
    """Every trainable tensor of ``config``, in canonical order."""
    d, v = config.d_model, config.vocab_size
    specs: list[ParamSpec] = [ParamSpec("embed.tokens", (v, d), "embedding", v)]
    for i in range(config.n_layers):
        p = f"blocks.{i}"
        specs += [
            ParamSpec(f"{p}.attn_norm.scale", (d,), "norm", 1, i),
            ParamSpec(f"{p}.attn.w_q", (d, config.d_attn), "attention", d, i),
            ParamSpec(f"{p}.attn.w_k", (d, config.d_attn), "attention", d, i),
            ParamSpec(f"{p}.attn.w_v", (d, config.d_attn), "attention", d, i),
            ParamSpec(f"{p}.attn.w_o", (config.d_attn, d), "attention", config.d_attn, i),
            ParamSpec(f"{p}.ffn_norm.scale", (d,), "norm", 1, i),
        ]
        if config.is_moe_layer(i):
            e, h = config.n_experts, config.d_expert
            specs += [
                ParamSpec(f"{p}.moe.router", (d, e), "router", d, i),
                ParamSpec(f"{p}.moe.w_in", (e, d, h), "expert", d, i),
                ParamSpec(f"{p}.moe.w_out", (e, h, d), "expert", h, i),
            ]
            if config.n_shared_experts:
                s = config.n_shared_experts
                specs += [
                    ParamSpec(f"{p}.moe.shared_w_in", (s, d, h), "expert", d, i),
                    ParamSpec(f"{p}.moe.shared_w_out", (s, h, d), "expert", h, i),
                ]
        else:
            f = config.dense_ff
            specs += [
                ParamSpec(f"{p}.mlp.w_in", (d, f), "mlp", d, i),
                ParamSpec(f"{p}.mlp.w_out", (f, d), "mlp", f, i),
            ]
    specs += [
        ParamSpec("final_norm.scale", (d,), "norm", 1),
        ParamSpec("readout.w", (d, v), "readout", d),
    ]
    return tuple(specs)


def buffer_specs(config: ModelConfig) -> tuple[BufferSpec, ...]:
    """Non-trainable state: the aux-loss-free balancing bias of each MoE layer, when enabled."""
    if not config.bias_balancing:
        return ()
    return tuple(BufferSpec(f"blocks.{i}.moe.expert_bias", (config.n_experts,), i)
                 for i in config.moe_layers)


def spec_by_name(config: ModelConfig) -> dict[str, ParamSpec]:
    return {s.name: s for s in parameter_specs(config)}
