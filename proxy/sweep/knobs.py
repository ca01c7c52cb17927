"""Knobs: the settings a sweep searches, and how an assignment becomes a runnable trial.

A knob lives in one of three places:

* ``TrainHParams``: ``lr``, ``aux_loss_coef``, ``z_loss_coef``, ``init_scale``,
  ``warmup_frac``, ``weight_decay`` (floats) and ``batch_size`` (int, sequences per step);
* ``ModelConfig``: ``n_experts`` and ``top_k`` (ints, usually searched as categorical choices);
* the data mixture: ``mix``.

The mix is searched through per-domain log-weights normalised by a softmax, with the first
domain's logit pinned at 0 (so K domains give K-1 free coordinates and no redundant direction):
``w_i = exp(z_i) / sum_j exp(z_j)``, ``z_0 = 0``, Optuna parameters ``mix.<domain>`` = z_i for
the other domains, each in the box's ``[low, high]`` (linear scale, in nats). A fixed mix is given
as weights (``mix = {code = 2, prose = 1}``, normalised to sum 1).

Any knob can be fixed instead of searched (``[search.fixed]``); ``[search.fixed]`` also accepts
the other ``TrainHParams`` fields (``schedule``, ``beta2``, ...) as fixed settings.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Mapping

from proxy.config import ModelConfig
from proxy.hparams import TrainHParams
from proxy.sweep.spec import DataSpec, KnobSpec, RungSpec

HPARAM_FLOAT_KNOBS = ("lr", "aux_loss_coef", "z_loss_coef", "init_scale", "warmup_frac",
                      "weight_decay")
HPARAM_INT_KNOBS = ("batch_size",)
CONFIG_KNOBS = ("n_experts", "top_k")
MIX_KNOB = "mix"
KNOBS = HPARAM_FLOAT_KNOBS + HPARAM_INT_KNOBS + CONFIG_KNOBS + (MIX_KNOB,)
INT_KNOBS = HPARAM_INT_KNOBS + CONFIG_KNOBS
# Fields of TrainHParams the experiment sets itself (tokens come from the rung).
_NOT_FIXABLE = ("tokens",)


def fixable_names() -> tuple[str, ...]:
    """Names allowed in ``[search.fixed]``: every knob and the other TrainHParams fields."""
    extra = tuple(f.name for f in dataclasses.fields(TrainHParams)
                  if f.name not in KNOBS and f.name not in _NOT_FIXABLE)
    return KNOBS + extra


def mix_param_names(domains: tuple[str, ...]) -> tuple[str, ...]:
    """Optuna parameter names of a searched mix: one logit per domain but the first."""
    return tuple(f"{MIX_KNOB}.{d}" for d in domains[1:])


def mix_from_logits(domains: tuple[str, ...], logits: Mapping[str, float]) -> dict[str, float]:
    """Softmax weights from ``mix.<domain>`` logits (first domain pinned at 0)."""
    z = [0.0] + [float(logits[f"{MIX_KNOB}.{d}"]) for d in domains[1:]]
    top = max(z)
    e = [math.exp(v - top) for v in z]  # shift by the max for stability
    total = sum(e)
    return {d: v / total for d, v in zip(domains, e)}


def normalise_mix(weights: Mapping[str, float]) -> dict[str, float]:
    total = float(sum(weights.values()))
    if total <= 0:
        raise ValueError(f"mix weights must not all be zero, got {dict(weights)!r}")
    return {k: float(v) / total for k, v in weights.items()}


def distributions(box: tuple[KnobSpec, ...], domains: tuple[str, ...]) -> dict[str, Any]:
    """Optuna distributions of the searched knobs (the ``mix`` box expands to its logits)."""
    from optuna.distributions import (CategoricalDistribution, FloatDistribution,
                                      IntDistribution)

    out: dict[str, Any] = {}
    for knob in box:
        if knob.categorical:
            out[knob.name] = CategoricalDistribution(list(knob.choices))
        elif knob.name == MIX_KNOB:
            for name in mix_param_names(domains):
                out[name] = FloatDistribution(float(knob.low), float(knob.high))
        elif knob.integer:
            out[knob.name] = IntDistribution(int(knob.low), int(knob.high), log=knob.log)
        else:
            out[knob.name] = FloatDistribution(float(knob.low), float(knob.high), log=knob.log)
    return out


def grid_space(box: tuple[KnobSpec, ...], domains: tuple[str, ...], points: int) -> dict[str, list[Any]]:
    """The grid sampler's values per parameter: the choices of a categorical knob, else
    ``points`` values spaced evenly in the knob's own scale (integers rounded, duplicates
    merged)."""
    import numpy as np
    from optuna.distributions import IntDistribution

    space: dict[str, list[Any]] = {}
    for name, dist in distributions(box, domains).items():
        if hasattr(dist, "choices"):
            space[name] = list(dist.choices)
            continue
        lo, hi, log = dist.low, dist.high, dist.log
        pts = np.geomspace(lo, hi, points) if log else np.linspace(lo, hi, points)
        if isinstance(dist, IntDistribution):
            space[name] = sorted({int(round(p)) for p in pts})
        else:
            space[name] = [float(p) for p in pts]
    return space


@dataclass(frozen=True)
class MixWeights:
    """Mixture weights without a corpus: what the simulated backend needs of the data."""

    train_mix: Mapping[str, float]
    eval_mix: Mapping[str, float]
    domains: tuple[str, ...] = ()


@dataclass(frozen=True)
class TrialSetup:
    """What one trial trains: the model, the hyperparameters and the mixture weights."""

    config: ModelConfig
    hparams: TrainHParams
    train_mix: Mapping[str, float]
    eval_mix: Mapping[str, float]
    knobs: Mapping[str, Any]          # every knob value (searched and fixed); mix as mix_weight.<domain>

    def weights(self, domains: tuple[str, ...]) -> MixWeights:
        return MixWeights(dict(self.train_mix), dict(self.eval_mix), domains)


def _integer(name: str, value: Any) -> int:
    """An integer knob's value: a whole number (4.0 is 4), never truncated (4.7) or infinite."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not float(value).is_integer():
        raise ValueError(f"{name} must be an integer, got {value!r}")
    return int(value)


def setup_trial(rung: RungSpec, params: Mapping[str, Any], fixed: Mapping[str, Any],
                data: DataSpec) -> TrialSetup:
    """Turn searched ``params`` plus ``fixed`` values into a config, hparams and mix for a rung.

    Raises ValueError (from the config / hparams validation) naming the field and value.
    """
    values: dict[str, Any] = dict(fixed)
    values.update({k: v for k, v in params.items() if not k.startswith(MIX_KNOB + ".")})
    domains = tuple(data.domains)
    mix_logits = {k: v for k, v in params.items() if k.startswith(MIX_KNOB + ".")}
    if mix_logits:
        train_mix = mix_from_logits(domains, mix_logits)
    elif isinstance(values.get(MIX_KNOB), Mapping):
        train_mix = normalise_mix(values[MIX_KNOB])
    elif data.train_mix:
        train_mix = normalise_mix(data.train_mix)
    else:
        train_mix = {d: 1.0 / len(domains) for d in domains}
    eval_mix = normalise_mix(data.eval_mix) if data.eval_mix else {d: 1.0 / len(domains) for d in domains}
    values.pop(MIX_KNOB, None)
    config_changes = {k: _integer(k, values.pop(k)) for k in CONFIG_KNOBS if k in values}
    config = rung.config.replace(**config_changes) if config_changes else rung.config
    hp = {"tokens": int(rung.tokens), "batch_size": int(rung.batch_size)}
    hp.update(values)
    if "batch_size" in hp:
        hp["batch_size"] = _integer("batch_size", hp["batch_size"])
    hparams = TrainHParams.from_dict(hp)
    knobs: dict[str, Any] = {k: getattr(hparams, k) for k in HPARAM_FLOAT_KNOBS + HPARAM_INT_KNOBS}
    knobs.update({k: getattr(config, k) for k in CONFIG_KNOBS})
    knobs.update({f"mix_weight.{d}": w for d, w in train_mix.items()})
    return TrialSetup(config=config, hparams=hparams, train_mix=train_mix, eval_mix=eval_mix,
                      knobs=knobs)


def materialize(rung: RungSpec, params: Mapping[str, Any], fixed: Mapping[str, Any],
                data: DataSpec, *, load: bool = True) -> tuple[ModelConfig, TrainHParams, Any]:
    """``(ModelConfig, TrainHParams, data)`` for a rung; data is a ``proxy.data.MixtureData``
    when ``load`` (the corpus is read, cached), else a weights-only ``MixWeights``."""
    setup = setup_trial(rung, params, fixed, data)
    return setup.config, setup.hparams, load_mixture(setup, data) if load else setup.weights(
        tuple(data.domains))


def load_mixture(setup: TrialSetup, data: DataSpec) -> Any:
    if data.shards:
        from proxy.data.shards import ShardDomain, TokenShardData

        domains = [ShardDomain(d, *data.shards[d]) for d in data.domains]
        return TokenShardData(domains, data.vocab_size, train_mix=dict(setup.train_mix),
                              eval_mix=dict(setup.eval_mix), val_fraction=data.val_fraction)
    from proxy.data import load_data  # the corpus module is loaded only when a trial needs it

    return load_data(tuple(data.domains), dict(setup.train_mix), dict(setup.eval_mix),
                     dict(data.user_domains) or None)
