"""The one description of a proxy model: a frozen, self-validating ``ModelConfig``.

Everything else about a rung (parameter counts, FLOPs per token, the list of parameter
tensors) is derived from this object by ``proxy.flops`` and ``proxy.naming``, never stored
twice. Both frameworks build exactly the same network from it.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Literal, Mapping

Parametrization = Literal["sp", "mup"]
PARAMETRIZATIONS = ("sp", "mup")
DTYPES = ("float32", "float64")


@dataclass(frozen=True)
class ModelConfig:
    """A decoder-only MoE transformer (pre-norm RMSNorm, causal attention with RoPE).

    Sizes are in units of features (d_model, d_expert), heads, layers and tokens (seq_len).
    ``vocab_size`` defaults to 256: the toolkit's tokens are bytes.
    """

    d_model: int
    n_layers: int
    n_heads: int
    head_dim: int
    n_experts: int
    top_k: int
    d_expert: int
    seq_len: int = 128
    vocab_size: int = 256
    name: str = ""
    # Architecture options.
    n_shared_experts: int = 0          # always-on experts of width d_expert (DeepSeekMoE-style)
    n_dense_layers: int = 0            # leading blocks whose FFN is a dense MLP, not MoE
    d_dense_ff: int = 0                # hidden width of those dense MLPs; 0 means 4 * d_model
    # Routing (formulas in the routing section of proxy.backends.torch.model and proxy.backends.jax.model).
    renormalize: bool = True           # renormalise the k selected gate weights to sum to 1
    capacity_factor: float | None = None  # None = dropless; else capacity = ceil(cf * T * k / E)
    bias_balancing: bool = False       # aux-loss-free balancing (DeepSeek-V3): bias added for top-k choice only
    bias_update_rate: float = 1e-3     # step of the sign update of that bias, per training step
    # Numerics pinned explicitly so both frameworks agree by construction.
    norm_eps: float = 1e-6
    rope_theta: float = 10000.0
    init_std: float = 0.02             # base init std for SP (before the init_scale knob)
    readout_zero_init: bool = False    # start the readout at zero (Tensor Programs V, App. D.2)
    # Parametrization (see proxy.parametrization).
    parametrization: Parametrization = "sp"
    base_d_model: int = 0              # width the muP multipliers are relative to; 0 means d_model
    base_head_dim: int = 0             # head size at the base width (muP attention scale); 0 means head_dim
    depth_scaling: bool = False        # CompleteP-style residual-branch scaling by base_n_layers / n_layers
    base_n_layers: int = 0             # depth the depth rule is relative to; 0 means n_layers

    def __post_init__(self) -> None:
        positive = ("d_model", "n_layers", "n_heads", "head_dim", "n_experts", "top_k",
                    "d_expert", "seq_len", "vocab_size")
        for name in positive:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int):
                raise TypeError(f"ModelConfig.{name} must be an int, got {value!r}")
            if value <= 0:
                raise ValueError(f"ModelConfig.{name} must be positive, got {value!r}")
        non_negative = ("n_shared_experts", "n_dense_layers", "d_dense_ff", "base_d_model",
                        "base_head_dim", "base_n_layers")
        for name in non_negative:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int):
                raise TypeError(f"ModelConfig.{name} must be an int, got {value!r}")
            if value < 0:
                raise ValueError(f"ModelConfig.{name} must be >= 0, got {value!r}")
        for name in ("renormalize", "bias_balancing", "depth_scaling", "readout_zero_init"):
            if not isinstance(getattr(self, name), bool):
                raise TypeError(f"ModelConfig.{name} must be a bool, got {getattr(self, name)!r}")
        if not isinstance(self.name, str):
            raise TypeError(f"ModelConfig.name must be a str, got {self.name!r}")
        if self.top_k > self.n_experts:
            raise ValueError(f"ModelConfig.top_k must be <= n_experts ({self.n_experts}), got {self.top_k!r}")
        if self.n_dense_layers > self.n_layers:
            raise ValueError(
                f"ModelConfig.n_dense_layers must be <= n_layers ({self.n_layers}), got {self.n_dense_layers!r}")
        if self.head_dim % 2:
            raise ValueError(f"ModelConfig.head_dim must be even (RoPE rotates pairs), got {self.head_dim!r}")
        if self.capacity_factor is not None and (
                isinstance(self.capacity_factor, bool) or not isinstance(self.capacity_factor, (int, float))
                or not (math.isfinite(self.capacity_factor) and self.capacity_factor > 0)):
            raise ValueError(f"ModelConfig.capacity_factor must be None or > 0, got {self.capacity_factor!r}")
        for name in ("norm_eps", "rope_theta", "init_std", "bias_update_rate"):
            value = getattr(self, name)
            if isinstance(value, bool) or not (
                    isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
                raise ValueError(f"ModelConfig.{name} must be a finite positive number, got {value!r}")
        if self.parametrization not in PARAMETRIZATIONS:
            raise ValueError(
                f"ModelConfig.parametrization must be one of {PARAMETRIZATIONS}, got {self.parametrization!r}")

    # Derived sizes -----------------------------------------------------------------------
    @property
    def d_attn(self) -> int:
        """Width of the concatenated attention heads (n_heads * head_dim)."""
        return self.n_heads * self.head_dim

    @property
    def dense_ff(self) -> int:
        return self.d_dense_ff or 4 * self.d_model

    @property
    def width_multiplier(self) -> float:
        """m = d_model / base_d_model, the muP width ratio (1.0 when no base is set)."""
        return self.d_model / (self.base_d_model or self.d_model)

    @property
    def depth_multiplier(self) -> float:
        return self.n_layers / (self.base_n_layers or self.n_layers)

    def is_moe_layer(self, layer: int) -> bool:
        return layer >= self.n_dense_layers

    @property
    def moe_layers(self) -> tuple[int, ...]:
        """Indices of the blocks whose FFN is MoE (every block after the leading dense ones)."""
        return tuple(range(self.n_dense_layers, self.n_layers))

    def replace(self, **changes: Any) -> "ModelConfig":
        """A copy with some fields changed (validated again)."""
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "ModelConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown ModelConfig field(s): {', '.join(unknown)}")
        return cls(**dict(data))
