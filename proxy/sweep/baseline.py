"""The hand-set config: what a team would run without a search (the experiment's ``[baseline]``).

Per searched knob, either a fixed value (``lr = 3e-3``, ``n_experts = 8``) or a value at a
reference size with a size exponent, the usual hand rule (``lr = 3e-3 * (d_model / 256)^-1``)::

    [baseline]
    lr = { value = 3e-3, reference = 256, exponent = -1.0 }   # size = "d_model" (the default)
    aux_loss_coef = 1e-2
    # batch_size = { value = 64, reference = 1e8, exponent = 0.3, size = "params_active" }
    # counts = false   # the baseline trial is extra to search.trials_per_rung (the default)

A knob not named takes the centre of the human's box in its own scale (the geometric centre of
a log box, the middle choice of a categorical one, a mix of equal weights): the default, said
so in the report. With a ``[baseline]`` table (even an empty one) the sweep trains the baseline
once on every rung, marked ``baseline`` in the store; without one nothing is trained and the
plan prices the box centre from the fitted surfaces alone.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from typing import Any, Mapping

from proxy.sweep import knobs as K
from proxy.sweep.fields import ExperimentError, _check_keys, _number, _table
from proxy.sweep.spec import KnobSpec

SIZES = ("d_model", "params_active", "params_total", "tokens")
BASELINE_ATTR = "baseline"


@dataclass(frozen=True)
class BaselineRule:
    """``value * (size / reference) ^ exponent`` (a fixed value when ``reference`` is None)."""

    knob: str
    value: float | int | str
    reference: float | None = None
    exponent: float = 0.0
    size: str = "d_model"

    def at(self, sizes: Mapping[str, float]) -> float | int | str:
        if self.reference is None or isinstance(self.value, str):
            return self.value
        if self.size not in sizes:
            raise ValueError(f"baseline.{self.knob}: the rule scales with {self.size}, which this model "
                             f"does not give (sizes known: {', '.join(sorted(sizes))})")
        return float(self.value) * (float(sizes[self.size]) / self.reference) ** self.exponent

    def describe(self) -> str:
        if self.reference is None:
            return f"{self.knob} = {self.value:g}" if not isinstance(self.value, str) else f"{self.knob} = {self.value}"
        return f"{self.knob} = {float(self.value):g} * ({self.size} / {self.reference:g})^{self.exponent:g}"


@dataclass(frozen=True)
class BaselineSpec:
    """The ``[baseline]`` table: rules per knob; ``counts``: the baseline trial counts toward the
    rung's ``trials_per_rung`` (default: it is extra); ``trained``: a table was given, so the
    sweep trains it (the default centre-of-box baseline of a file without one is not)."""

    rules: Mapping[str, BaselineRule] = field(default_factory=dict)
    counts: bool = False
    trained: bool = True

    def describe(self, box: tuple[KnobSpec, ...]) -> str:
        parts = [self.rules[k.name].describe() if k.name in self.rules else f"{k.name} at the box centre"
                 for k in box]
        return "; ".join(parts)


def _value(knob: KnobSpec, value: float | int | str) -> float | int | str:
    if knob.categorical:
        return value
    if knob.integer:
        return int(round(float(value)))
    return float(value)


def centre(knob: KnobSpec) -> float | int | str:
    """The centre of a knob's box in its own scale (see the module docstring)."""
    if knob.categorical:
        return knob.choices[(len(knob.choices) - 1) // 2]
    lo, hi = float(knob.low), float(knob.high)
    return _value(knob, math.sqrt(lo * hi) if knob.log else (lo + hi) / 2)


def setting(spec: BaselineSpec | None, box: tuple[KnobSpec, ...], domains: tuple[str, ...],
            sizes: Mapping[str, float]) -> dict[str, Any]:
    """The baseline's parameters (Optuna names, as a trial's) for a model of ``sizes``."""
    rules = {} if spec is None else spec.rules
    out: dict[str, Any] = {}
    for knob in box:
        if knob.name == K.MIX_KNOB:   # equal weights: every logit at the centre of its range
            for name in K.mix_param_names(domains):
                out[name] = (float(knob.low) + float(knob.high)) / 2
            continue
        out[knob.name] = _value(knob, rules[knob.name].at(sizes)) if knob.name in rules else centre(knob)
    return out


def model_sizes(config: Any, tokens: float) -> dict[str, float]:
    """The sizes a rule may scale with, for a model config and its tokens."""
    from proxy.flops import param_counts

    counts = param_counts(config)
    return {"d_model": float(config.d_model), "params_active": float(counts.active),
            "params_total": float(counts.total), "tokens": float(tokens)}


def parse_baseline(table: Any, box: tuple[KnobSpec, ...], rungs: tuple[Any, ...]) -> BaselineSpec:
    """Validate ``[baseline]`` against the search box and the ladder (see module docstring): an
    unknown knob, a bad exponent or reference, a level not among the choices, or a value that is
    outside the human's box on every rung is an ExperimentError naming the key."""
    table = _table(table, "baseline")
    searched = {k.name: k for k in box}
    counts = table.get("counts", False)
    if not isinstance(counts, bool):
        raise ExperimentError("baseline.counts", "must be true or false", counts)
    rules: dict[str, BaselineRule] = {}
    for name, spec in table.items():
        if name == "counts":
            continue
        key = f"baseline.{name}"
        if name not in searched or name == K.MIX_KNOB:
            raise ExperimentError(key, "is not a searched knob (searched: "
                                  + ", ".join(k for k in searched if k != K.MIX_KNOB) + ")")
        knob = searched[name]
        if isinstance(spec, Mapping):
            _check_keys(spec, key, ("value", "reference", "exponent", "size"))
            if "value" not in spec:
                raise ExperimentError(f"{key}.value", "is required")
            if knob.categorical:
                raise ExperimentError(key, "a categorical knob takes one level, not a rule", dict(spec))
            size = spec.get("size", "d_model")
            if size not in SIZES:
                raise ExperimentError(f"{key}.size", f"must be one of {', '.join(SIZES)}", size)
            rule = BaselineRule(knob=name, value=_number(spec["value"], f"{key}.value", positive=knob.log),
                                reference=_number(spec.get("reference", 1.0), f"{key}.reference", positive=True),
                                exponent=_number(spec.get("exponent", 0.0), f"{key}.exponent"), size=size)
            if not -10.0 <= rule.exponent <= 10.0:
                raise ExperimentError(f"{key}.exponent", "must lie in [-10, 10]", rule.exponent)
        else:
            if knob.categorical:
                if spec not in knob.choices:
                    raise ExperimentError(key, f"must be one of the box's choices {list(knob.choices)}", spec)
            else:
                _number(spec, key, positive=knob.log)
            rule = BaselineRule(knob=name, value=spec)
        if not knob.categorical and rungs:
            values = [float(rule.at(model_sizes(r.config, r.tokens))) for r in rungs]
            lo, hi = float(knob.low), float(knob.high)
            if all(not lo <= v <= hi for v in values):
                raise ExperimentError(key, f"is outside the box [{lo:g}, {hi:g}] on every rung "
                                      f"({min(values):.3g} to {max(values):.3g}): the fits cannot price it", spec)
        rules[name] = rule
    return BaselineSpec(rules=rules, counts=counts, trained=True)


def baseline_extra(experiment: Any) -> int:
    """1 when the experiment trains a baseline that is extra to the rung's trials, else 0."""
    spec = getattr(experiment, "baseline", None)
    return int(spec is not None and spec.trained and not spec.counts)


def enqueue_baseline(experiment: Any, rung: Any, study: Any) -> None:
    """Queue the hand-set config once on ``rung`` (``proxy.sweep.baseline``): never again once
    the study holds a trial marked ``baseline``, whatever its state (a failed one is retried
    with its mark, ``proxy.sweep.store.RETRY_KEEPS``)."""
    spec = getattr(experiment, "baseline", None)
    if spec is None or not spec.trained:
        return
    if any(t.user_attrs.get(BASELINE_ATTR) for t in study.get_trials(deepcopy=False)):
        return
    from proxy.sweep.store import claim_once

    if not claim_once(study, "baseline"):   # another process queued it
        return
    params = setting(spec, experiment.search.box, experiment.data.domains, model_sizes(rung.config, rung.tokens))
    with warnings.catch_warnings():
        # A hand-set value outside a re-centred rung's box is trained as it is: Optuna warns.
        warnings.simplefilter("ignore")
        study.enqueue_trial(params, user_attrs={BASELINE_ATTR: True})
