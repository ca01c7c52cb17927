"""Parameter counts and training FLOPs per token, derived from a ``ModelConfig``.

Counts:
- ``embedding``: the token-embedding table (a lookup, no FLOPs).
- ``total``: every trainable parameter (``proxy.naming.parameter_specs``).
- ``active``: parameters a single token touches: everything except the experts it is not
  routed to (k of E routed experts per MoE layer, plus shared experts).
- ``active_non_embedding``: ``active`` less the embedding table. The untied readout is a
  matrix product and counts as non-embedding here (with a 256-byte vocabulary it is a
  sizeable share of the compute of a small proxy).

Training FLOPs per token (Kaplan et al. 2020, "Scaling Laws for Neural Language Models",
Table 1): forward ``2 N + 2 n_layer n_ctx d_attn`` where N is the active non-embedding
parameter count (each weight is one multiply-add per token) and the second term is the
attention score and value products; backward is twice the forward, so training costs
``6 N + 6 n_layer n_ctx d_attn``. Norm gains are counted in N although they cost one
multiply, not two; the difference is below 0.1% for every preset.
"""

from __future__ import annotations

from dataclasses import dataclass

from proxy.config import ModelConfig
from proxy.naming import parameter_specs


@dataclass(frozen=True)
class ParamCounts:
    total: int
    active: int
    embedding: int

    @property
    def active_non_embedding(self) -> int:
        return self.active - self.embedding

    @property
    def total_non_embedding(self) -> int:
        return self.total - self.embedding


def param_counts(config: ModelConfig) -> ParamCounts:
    total = active = embedding = 0
    for spec in parameter_specs(config):
        total += spec.size
        if spec.role == "embedding":
            embedding += spec.size
            active += spec.size
        elif spec.name.endswith((".moe.w_in", ".moe.w_out")):
            active += spec.size // config.n_experts * config.top_k
        else:
            active += spec.size
    return ParamCounts(total=total, active=active, embedding=embedding)


def attention_flops_per_token(config: ModelConfig) -> float:
    """Forward FLOPs of QK^T and AV per token: 2 * n_layers * seq_len * d_attn (Kaplan 2020)."""
    return 2.0 * config.n_layers * config.seq_len * config.d_attn


def forward_flops_per_token(config: ModelConfig) -> float:
    return 2.0 * param_counts(config).active_non_embedding + attention_flops_per_token(config)


def train_flops_per_token(config: ModelConfig) -> float:
    """6 N_active_non_embedding + 6 n_layers seq_len d_attn: forward plus a backward twice as dear."""
    return 3.0 * forward_flops_per_token(config)


def train_flops(config: ModelConfig, tokens: int | float) -> float:
    return train_flops_per_token(config) * float(tokens)
