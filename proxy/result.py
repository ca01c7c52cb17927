"""``TrainResult``: what one proxy training run reports, identical for every backend.

It is the record the sweep stores as trial attributes and the fits read back, so every field
is a plain JSON value (``to_dict`` / ``from_dict`` round-trip exactly).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any, Mapping


@dataclass(frozen=True)
class ExpertLoad:
    """Routing statistics averaged over the last evaluation.

    ``fractions[layer][e]`` is the fraction of routed token-slots (T * k) that went to expert e
    in that MoE layer (rows sum to 1); ``max_over_mean`` is max_e(f_e) * E, 1.0 at perfect
    balance; ``dropped_fraction`` is the share of token-slots dropped by a capacity limit
    (0 when dropless); ``balance_loss`` is the Switch load-balancing loss E * sum f_i P_i
    averaged over MoE layers.
    """

    fractions: tuple[tuple[float, ...], ...] = ()
    max_over_mean: float = 1.0
    dropped_fraction: float = 0.0
    balance_loss: float = 1.0


@dataclass(frozen=True)
class TrainResult:
    """One training run.

    Units: ``tokens`` is training tokens seen; ``flops`` is training FLOPs
    (``proxy.flops.train_flops``) for those tokens; losses are in nats per byte-token.
    ``final_loss`` is the evaluation loss on the experiment's evaluation mix (NaN/inf when the
    run diverged before it could be evaluated); ``eval_loss_by_domain`` maps each domain to its
    validation loss. ``loss_curve`` is a downsampled list of (step, training loss).
    """

    final_loss: float
    eval_loss_by_domain: Mapping[str, float]
    final_train_loss: float
    loss_curve: tuple[tuple[int, float], ...]
    steps: int
    tokens: int
    flops: float
    wall_time_s: float
    tokens_per_s: float
    expert_load: ExpertLoad
    seed: int
    backend: str
    diverged: bool = False
    diverged_step: int | None = None
    divergence_reason: str = ""
    params_total: int = 0
    params_active: int = 0
    config: Mapping[str, Any] = field(default_factory=dict)
    hparams: Mapping[str, Any] = field(default_factory=dict)

    @property
    def objective(self) -> float:
        """The loss a sweep minimises (``final_loss``; diverged runs are handled by the sweep)."""
        return self.final_loss

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["eval_loss_by_domain"] = dict(self.eval_loss_by_domain)
        data["loss_curve"] = [list(p) for p in self.loss_curve]
        data["expert_load"]["fractions"] = [list(r) for r in self.expert_load.fractions]
        # JSON has no NaN/inf: store them as strings so files stay standard JSON.
        return _encode_nonfinite(data)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "TrainResult":
        data = _decode_nonfinite(dict(data))
        load = data.pop("expert_load", {}) or {}
        load = ExpertLoad(
            fractions=tuple(tuple(float(x) for x in row) for row in load.get("fractions", ())),
            max_over_mean=float(load.get("max_over_mean", 1.0)),
            dropped_fraction=float(load.get("dropped_fraction", 0.0)),
            balance_loss=float(load.get("balance_loss", 1.0)),
        )
        data["loss_curve"] = tuple((int(s), float(v)) for s, v in data.get("loss_curve", ()))
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown TrainResult field(s): {', '.join(unknown)}")
        return cls(expert_load=load, **data)


def _encode_nonfinite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return repr(value)  # 'nan', 'inf', '-inf'
    if isinstance(value, dict):
        return {k: _encode_nonfinite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_encode_nonfinite(v) for v in value]
    return value


_NONFINITE = {"nan": math.nan, "inf": math.inf, "-inf": -math.inf}


def _decode_nonfinite(value: Any) -> Any:
    if isinstance(value, str) and value in _NONFINITE:
        return _NONFINITE[value]
    if isinstance(value, dict):
        return {k: _decode_nonfinite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_decode_nonfinite(v) for v in value]
    return value
