"""Parametrizations as one table keyed by parameter role: SP and muP (with an optional depth rule).

For each canonical parameter (``proxy.naming``) the table gives

- ``init_std``: standard deviation of its normal initialisation (gains start at 1, never drawn;
  0 draws zeros);
- ``lr_mult``: multiplier of the Adam learning rate (and so of its decoupled weight decay);

and, per model, forward multipliers (``ForwardMultipliers``): on the readout logits, the router
logits, the attention logits and the residual branches.

Width multiplier ``m = d_model / base_d_model``. muP for Adam (Yang et al. 2022, "Tensor Programs
V", Table 3 with the output multiplier of its Table 8 / the ``mup`` package):

| role       | init std              | Adam lr mult | forward mult           |
|------------|-----------------------|--------------|------------------------|
| embedding  | sigma                 | 1            | 1                      |
| norm gains | (ones)                | 1            | 1                      |
| attention, expert, mlp, router (hidden) | sigma / sqrt(m) (i.e. prop. to 1/sqrt(fan_in)) | 1/m | 1 |
| readout    | sigma (0 with ``readout_zero_init``) | 1 | logits x 1/m     |

Attention logits use ``sqrt(base_head_dim) / head_dim`` under muP (1/head_dim scaling, equal to
the SP ``1/sqrt(head_dim)`` at the base head size), so m = 1 gives the identical model.

The router maps a growing width to a fixed number of experts, so Tensor Programs V's shape
classification would call it an *output* weight (finite fan-out), with the readout's rule. The
coordinate check (``ladder coordcheck``) decides otherwise, and the table follows the check: on
the output rule the router logits start at Theta(m^-1/2) and still fall with width after the
first updates (slope -0.35 to -0.51 at step 2, -0.05 to -0.16 at step 5), while on the hidden rule
(init prop. to 1/sqrt(fan_in), lr 1/m, no multiplier) they are Theta(1) from the start and stay
flat (|slope| <= 0.06), like the hidden pre-activations the router logits are: a top-k over a
softmax reads their values, not a sum over the width. Stacked expert weights ``(E, in, out)``
are E independent hidden matrices whose fan-in is ``in``: the hidden rule applies to each slice,
also checked by the coordinate check.

``readout_zero_init`` (a ``ModelConfig`` flag, either parametrization, so m = 1 stays the
identical model) starts the readout at zero, as Tensor Programs V (Appendix D.2) recommends and
the ``mup`` package's ``MuReadout(readout_zero_init=True)`` does: the logits' initial value,
Theta(m^-1/2) under muP, is then absent instead of decaying through the first steps.

Depth rule (optional, ``depth_scaling``): residual branches are multiplied by
``base_n_layers / n_layers`` (CompleteP, Dey et al. 2025, alpha = 1), so the residual stream's
updates stay of the same size as depth grows; Adam learning rates of hidden weights are left
unchanged, as CompleteP prescribes for alpha = 1.

SP (standard): every matrix has init std ``sigma``, every lr multiplier is 1, attention logits
use ``1/sqrt(head_dim)``. ``sigma = config.init_std * init_scale`` in both.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from proxy.config import ModelConfig
from proxy.naming import ParamSpec, Role, parameter_specs

HIDDEN_ROLES: frozenset[Role] = frozenset({"attention", "expert", "mlp", "router"})
OUTPUT_ROLES: frozenset[Role] = frozenset({"readout"})


@dataclass(frozen=True)
class ParamRule:
    init_std: float   # 0.0 for gains, which start at 1
    lr_mult: float
    weight_decay: bool


@dataclass(frozen=True)
class ForwardMultipliers:
    readout: float     # multiplies the output logits
    router: float      # multiplies the router logits (before softmax); 1 in both tables
    attention: float   # the attention-logit scale (replaces 1/sqrt(head_dim))
    residual: float    # multiplies every residual branch (attention and FFN outputs)


def param_rule(spec: ParamSpec, config: ModelConfig, init_scale: float = 1.0) -> ParamRule:
    """Init std, Adam lr multiplier and weight-decay flag of one parameter."""
    sigma = config.init_std * init_scale
    if spec.role == "norm":
        return ParamRule(0.0, 1.0, False)
    if spec.role == "readout" and config.readout_zero_init:
        sigma = 0.0
    if config.parametrization == "sp":
        return ParamRule(sigma, 1.0, spec.role != "embedding")
    m = config.width_multiplier
    if spec.role in HIDDEN_ROLES:
        return ParamRule(sigma / math.sqrt(m), 1.0 / m, True)
    if spec.role in OUTPUT_ROLES:
        return ParamRule(sigma, 1.0, True)
    return ParamRule(sigma, 1.0, False)  # embedding


def param_rules(config: ModelConfig, init_scale: float = 1.0) -> dict[str, ParamRule]:
    """The table for every canonical parameter name of ``config``."""
    return {spec.name: param_rule(spec, config, init_scale) for spec in parameter_specs(config)}


def forward_multipliers(config: ModelConfig) -> ForwardMultipliers:
    residual = 1.0 / config.depth_multiplier if config.depth_scaling else 1.0
    if config.parametrization == "sp":
        return ForwardMultipliers(1.0, 1.0, 1.0 / math.sqrt(config.head_dim), residual)
    m = config.width_multiplier
    base_hd = config.base_head_dim or config.head_dim
    return ForwardMultipliers(1.0 / m, 1.0, math.sqrt(base_hd) / config.head_dim, residual)
