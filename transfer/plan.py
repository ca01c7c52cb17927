"""The plan for the full-size run: frozen value types and their JSON form (``plan.json``).

These dataclasses are the contract between ``transfer.extrapolate`` (which builds a ``Plan``
from the fits), ``reports.review`` (which checks it) and ``reports.pdf`` (which draws it).
Every type has ``to_dict()`` (plain JSON types only) and ``from_dict()`` (its inverse:
``T.from_dict(x.to_dict()) == x``).

JSON schema of ``runs/<name>/plan.json`` (``schema_version`` "1"; units in brackets)::

    {
      "schema_version": "1",
      "experiment": str,                         # experiment name
      "target": {"name": str, "params_total": float, "params_active": float,
                 "tokens": float, "flops": float [training FLOPs],
                 "config": {ModelConfig fields}},
      "largest_rung": {"name": str, "params_active": float},
      "extrapolation_factor": float,             # target active params / largest rung's
      "config": {                                # what a training script reads
        "model": {ModelConfig fields, categorical knobs (n_experts, top_k) set to the plan},
        "hparams": {knob: value, ...},           # planned continuous knobs + fixed settings
        "tokens": int
      },
      "knobs": [KnobPlan, ...],                  # continuous knobs, see below
      "categorical": [CategoricalPlan, ...],
      "loss": LossPrediction | null,
      "ledger": LedgerSummary,
      "box_adjustments": [BoxAdjustment, ...],   # what the ladder-aware search did to the boxes
      "compute_optimal": ComputeOptimalPlan | null,  # when the rungs form isoFLOP curves
      "search_value": SearchValue | null,        # did the search pay: fits.search_value.SearchValue
      "baseline": str,                           # the hand-set config it was priced against
      "notes": [str, ...],                       # plain-language warnings
      "provenance": Provenance
    }

    KnobPlan = {"name", "value" [knob units], "log": bool,
                "ci80": {"low", "high"}, "ci95": {"low", "high"},
                "kind80", "kind95": str          # which interval was widest: prediction | bootstrap | mean
                "method": "trend" | "flat" | "largest_rung",
                "exponent": float|null, "exponent_ci95": {"low","high"}|null,   # d log k* / d log N
                "curvature": float|null          # [nats per (natural-log unit)^2] at the largest rungs
                "band": {"low","high"}|null      # near-optimal band at the target (within band_rel)
                "band_rel": float,
                "penalty80": {"low","high"}|null,  # predicted loss penalty [nats] at the ci80 ends
                "penalty95": {"low","high"}|null,  # ... at the ci95 ends
                "n_rungs": int, "excluded": [{"rung", "reason"}],
                "flatness": Flatness|null,       # muP zero-slope test, for the knobs expected flat
                "box": {"low","high"}|null,      # the human's box
                "axes": [str],                   # size axes of the trend (fits.axes)
                "extrapolation": {axis: float}|null,  # target / largest rung of the trend, per axis
                "source_rung": str}              # largest rung of the trend (or the rung used)

    Flatness = {"exponent", "se", "t", "df", "p_value", "alpha", "flat": bool, "statement": str}
    CategoricalPlan = {"name", "value", "per_rung": [RungWinner], "agreement": float [0-1],
                       "margin_largest": float|null [nats], "statement": str}
    RungWinner = {"rung", "params_active", "winner", "margin": float|null [nats, runner-up gap],
                  "gap_by_level": {str(level): float [nats]}}
    LossPrediction = {"form": "N" | "ND", "value" [nats], "ci80", "ci95", "params": {E, A, alpha[, B, beta]},
                      "n_rungs": int, "size": "params_active", "converged": bool}
    LedgerSummary = {"total_flops", "target_flops"|null, "fraction_of_target"|null,
                     "budget_flops"|null, "fraction_of_budget"|null,
                     "per_rung_flops": {rung: float}, "trials_per_rung": {rung: int}, "n_trials": int}
    BoxAdjustment = {"rung", "knob", "action": "recentred" | "widened_low" | "widened_high" | "kept",
                     "human": {"low","high"}, "box": {"low","high"}, "centre": float|null,
                     "factor": float (width / human width), "clipped": bool, "reason": str}
    ComputeOptimalPlan = {"flops", "a", "a_ci95", "n_opt", "n_opt_ci80", "n_opt_ci95", "d_opt",
                          "d_opt_ci80", "d_opt_ci95", "n_budgets", "target_n_ratio", "statement"}
    Provenance = {"toolkit_version", "git_commit"|null, "experiment_sha256", "experiment_path",
                  "experiment_name", "backend", "seeds": [int], "created_utc", "command"}

``fits.json`` (written by ``ladder fit``) holds ``{"schema_version", "experiment", "rungs":
[RungOptimum.to_dict()], "trends": {knob: TrendFit.to_dict() + {"target": TrendInterval}},
"loss_law": LossLawFit.to_dict()|null, "provenance"}``.
"""

from __future__ import annotations

import datetime as _dt
import math
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

from fits.intervals import ConfidenceInterval

if TYPE_CHECKING:
    from proxy.sweep.experiment import Experiment

SCHEMA_VERSION = "1"
INTERVAL_KINDS = ("prediction", "bootstrap", "mean", "flat", "rung")
KNOB_METHODS = ("trend", "flat", "largest_rung")
BOX_ACTIONS = ("recentred", "widened_low", "widened_high", "kept")


def _ci(d: Mapping[str, Any] | None) -> ConfidenceInterval | None:
    return None if d is None else ConfidenceInterval(float(d["low"]), float(d["high"]))


def _ci_dict(c: ConfidenceInterval | None) -> dict[str, float] | None:
    return None if c is None else c.to_dict()


def _num(x: float | None) -> float | None:
    """JSON has no NaN/inf: non-finite numbers are written as null."""
    return None if x is None or not math.isfinite(float(x)) else float(x)


@dataclass(frozen=True)
class Provenance:
    """Where a JSON artifact came from: toolkit version, git commit (None outside a checkout),
    the experiment file's SHA-256 and path, backend and training seeds, UTC creation time."""

    toolkit_version: str
    git_commit: str | None
    experiment_sha256: str
    experiment_path: str
    experiment_name: str
    backend: str
    seeds: tuple[int, ...]
    created_utc: str
    command: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"toolkit_version": self.toolkit_version, "git_commit": self.git_commit,
                "experiment_sha256": self.experiment_sha256, "experiment_path": self.experiment_path,
                "experiment_name": self.experiment_name, "backend": self.backend,
                "seeds": list(self.seeds), "created_utc": self.created_utc, "command": self.command}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "Provenance":
        return cls(toolkit_version=d["toolkit_version"], git_commit=d.get("git_commit"),
                   experiment_sha256=d["experiment_sha256"], experiment_path=d.get("experiment_path", ""),
                   experiment_name=d["experiment_name"], backend=d["backend"],
                   seeds=tuple(int(s) for s in d.get("seeds", ())), created_utc=d["created_utc"],
                   command=d.get("command", ""))


def git_commit(path: str | Path | None = None) -> str | None:
    """The commit of the checkout holding ``path`` (default: this package), or None."""
    where = Path(path) if path else Path(__file__).resolve().parent
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=where, capture_output=True, text=True,
                             timeout=5, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    sha = out.stdout.strip()
    return sha if out.returncode == 0 and len(sha) == 40 else None


def provenance_for(experiment: Experiment, command: str = "") -> Provenance:
    """Provenance of an artifact made from ``experiment`` (a ``proxy.sweep.Experiment``)."""
    from proxy import __version__

    return Provenance(toolkit_version=__version__, git_commit=git_commit(),
                      experiment_sha256=getattr(experiment, "sha256", "") or "",
                      experiment_path=getattr(experiment, "path", "") or "",
                      experiment_name=experiment.name, backend=experiment.backend,
                      seeds=tuple(int(s) for s in experiment.seeds),
                      created_utc=_dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
                      command=command)


@dataclass(frozen=True)
class Flatness:
    """Zero-slope test of a knob expected flat under muP: t = b / se(b) on df degrees of
    freedom (the trend's Knapp-Hartung t), two-sided ``p_value``; ``flat`` is True when zero
    slope is not rejected at ``alpha``."""

    exponent: float
    se: float
    t: float
    df: int
    p_value: float
    alpha: float
    flat: bool
    statement: str

    def to_dict(self) -> dict[str, Any]:
        return {"exponent": self.exponent, "se": self.se, "t": _num(self.t), "df": self.df,
                "p_value": self.p_value, "alpha": self.alpha, "flat": self.flat, "statement": self.statement}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "Flatness":
        return cls(exponent=float(d["exponent"]), se=float(d["se"]),
                   t=math.nan if d.get("t") is None else float(d["t"]), df=int(d["df"]),
                   p_value=float(d["p_value"]), alpha=float(d["alpha"]), flat=bool(d["flat"]),
                   statement=d["statement"])


@dataclass(frozen=True)
class KnobPlan:
    """One continuous knob at the target: ``value`` and its 80% / 95% intervals in the knob's
    units; ``kind80`` / ``kind95`` name the interval kind that was widest (the reported one).
    ``curvature`` is the loss surface's curvature in nats per (natural-log unit)^2 (log knobs;
    per unit^2 for linear knobs) at the largest usable rungs; ``penalty80`` / ``penalty95`` are
    the predicted loss penalties (nats) at the interval ends, curvature * (distance)^2."""

    name: str
    value: float
    log: bool
    ci80: ConfidenceInterval
    ci95: ConfidenceInterval
    kind80: str
    kind95: str
    method: str
    exponent: float | None = None
    exponent_ci95: ConfidenceInterval | None = None
    curvature: float | None = None
    band: ConfidenceInterval | None = None
    band_rel: float = 0.0025
    penalty80: ConfidenceInterval | None = None
    penalty95: ConfidenceInterval | None = None
    n_rungs: int = 0
    excluded: tuple[tuple[str, str], ...] = ()
    flatness: Flatness | None = None
    box: ConfidenceInterval | None = None
    axes: tuple[str, ...] = ("params_active",)
    extrapolation: Mapping[str, float] | None = None
    source_rung: str = ""

    def __post_init__(self) -> None:
        if self.method not in KNOB_METHODS:
            raise ValueError(f"KnobPlan.method must be one of {KNOB_METHODS}, got {self.method!r}")
        for name in ("kind80", "kind95"):
            if getattr(self, name) not in INTERVAL_KINDS:
                raise ValueError(f"KnobPlan.{name} must be one of {INTERVAL_KINDS}, got {getattr(self, name)!r}")
        if not math.isfinite(self.value):
            raise ValueError(f"KnobPlan.value must be finite, got {self.value!r}")

    @property
    def ratio95(self) -> float:
        """high / low of the 95% interval (inf when low <= 0)."""
        return self.ci95.high / self.ci95.low if self.ci95.low > 0 else math.inf

    @property
    def max_penalty95(self) -> float | None:
        return None if self.penalty95 is None else max(self.penalty95.low, self.penalty95.high)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "value": self.value, "log": self.log, "ci80": self.ci80.to_dict(),
                "ci95": self.ci95.to_dict(), "kind80": self.kind80, "kind95": self.kind95, "method": self.method,
                "exponent": _num(self.exponent), "exponent_ci95": _ci_dict(self.exponent_ci95),
                "curvature": _num(self.curvature), "band": _ci_dict(self.band), "band_rel": self.band_rel,
                "penalty80": _ci_dict(self.penalty80), "penalty95": _ci_dict(self.penalty95),
                "n_rungs": self.n_rungs, "excluded": [{"rung": a, "reason": b} for a, b in self.excluded],
                "flatness": None if self.flatness is None else self.flatness.to_dict(),
                "box": _ci_dict(self.box), "axes": list(self.axes),
                "extrapolation": None if self.extrapolation is None else {k: float(v) for k, v in self.extrapolation.items()},
                "source_rung": self.source_rung}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "KnobPlan":
        return cls(name=d["name"], value=float(d["value"]), log=bool(d["log"]), ci80=_ci(d["ci80"]),
                   ci95=_ci(d["ci95"]), kind80=d["kind80"], kind95=d["kind95"], method=d["method"],
                   exponent=d.get("exponent"), exponent_ci95=_ci(d.get("exponent_ci95")),
                   curvature=d.get("curvature"), band=_ci(d.get("band")), band_rel=float(d.get("band_rel", 0.0025)),
                   penalty80=_ci(d.get("penalty80")), penalty95=_ci(d.get("penalty95")),
                   n_rungs=int(d.get("n_rungs", 0)),
                   excluded=tuple((e["rung"], e["reason"]) for e in d.get("excluded", ())),
                   flatness=None if d.get("flatness") is None else Flatness.from_dict(d["flatness"]),
                   box=_ci(d.get("box")), axes=tuple(d.get("axes", ("params_active",))),
                   extrapolation=None if d.get("extrapolation") is None else dict(d["extrapolation"]),
                   source_rung=d.get("source_rung", ""))


@dataclass(frozen=True)
class RungWinner:
    """The winning level of a categorical knob on one rung; ``margin`` is the runner-up's
    best-loss gap in nats (None with one level tried); ``gap_by_level`` keyed by str(level)."""

    rung: str
    params_active: float
    winner: float | int | str
    margin: float | None
    gap_by_level: Mapping[str, float]

    def to_dict(self) -> dict[str, Any]:
        return {"rung": self.rung, "params_active": self.params_active, "winner": self.winner,
                "margin": _num(self.margin), "gap_by_level": {k: float(v) for k, v in self.gap_by_level.items()}}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "RungWinner":
        return cls(rung=d["rung"], params_active=float(d["params_active"]), winner=d["winner"],
                   margin=d.get("margin"), gap_by_level=dict(d.get("gap_by_level", {})))


@dataclass(frozen=True)
class CategoricalPlan:
    """A categorical knob (expert count, top-k, ...): the planned level and its evidence.
    ``agreement`` is the share of rungs whose winner is ``value``; ``margin_largest`` the
    runner-up gap (nats) on the largest rung."""

    name: str
    value: float | int | str
    per_rung: tuple[RungWinner, ...]
    agreement: float
    margin_largest: float | None
    statement: str

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "value": self.value, "per_rung": [r.to_dict() for r in self.per_rung],
                "agreement": self.agreement, "margin_largest": _num(self.margin_largest),
                "statement": self.statement}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "CategoricalPlan":
        return cls(name=d["name"], value=d["value"], per_rung=tuple(RungWinner.from_dict(r) for r in d["per_rung"]),
                   agreement=float(d["agreement"]), margin_largest=d.get("margin_largest"),
                   statement=d["statement"])


@dataclass(frozen=True)
class LossPrediction:
    """Predicted final loss (nats) of the target run from the loss law fitted on the per-rung
    best losses (``form`` "N": L(N) = E + A N^-alpha on active params; "ND": L(N, D))."""

    form: str
    value: float
    ci80: ConfidenceInterval | None
    ci95: ConfidenceInterval | None
    params: Mapping[str, float]
    n_rungs: int
    converged: bool
    size: str = "params_active"

    def to_dict(self) -> dict[str, Any]:
        return {"form": self.form, "value": self.value, "ci80": _ci_dict(self.ci80), "ci95": _ci_dict(self.ci95),
                "params": {k: float(v) for k, v in self.params.items()}, "n_rungs": self.n_rungs,
                "converged": self.converged, "size": self.size}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "LossPrediction":
        return cls(form=d["form"], value=float(d["value"]), ci80=_ci(d.get("ci80")), ci95=_ci(d.get("ci95")),
                   params=dict(d["params"]), n_rungs=int(d["n_rungs"]), converged=bool(d["converged"]),
                   size=d.get("size", "params_active"))


@dataclass(frozen=True)
class LedgerSummary:
    """Sweep cost in training FLOPs, and as fractions of the target run and of the budget."""

    total_flops: float
    target_flops: float | None
    fraction_of_target: float | None
    budget_flops: float | None
    fraction_of_budget: float | None
    per_rung_flops: Mapping[str, float]
    trials_per_rung: Mapping[str, int]
    n_trials: int

    def to_dict(self) -> dict[str, Any]:
        return {"total_flops": self.total_flops, "target_flops": self.target_flops,
                "fraction_of_target": self.fraction_of_target, "budget_flops": self.budget_flops,
                "fraction_of_budget": self.fraction_of_budget, "per_rung_flops": dict(self.per_rung_flops),
                "trials_per_rung": dict(self.trials_per_rung), "n_trials": self.n_trials}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "LedgerSummary":
        return cls(total_flops=float(d["total_flops"]), target_flops=d.get("target_flops"),
                   fraction_of_target=d.get("fraction_of_target"), budget_flops=d.get("budget_flops"),
                   fraction_of_budget=d.get("fraction_of_budget"), per_rung_flops=dict(d.get("per_rung_flops", {})),
                   trials_per_rung={k: int(v) for k, v in d.get("trials_per_rung", {}).items()},
                   n_trials=int(d.get("n_trials", 0)))


@dataclass(frozen=True)
class BoxAdjustment:
    """What the ladder-aware search did to one knob's box on one rung (natural units).
    ``factor`` = box width / human box width in transformed (log) units; ``clipped`` is True
    when the box was cut back to the human's box (or the widening cap)."""

    rung: str
    knob: str
    action: str
    human: ConfidenceInterval
    box: ConfidenceInterval
    centre: float | None
    factor: float
    clipped: bool
    reason: str

    def __post_init__(self) -> None:
        if self.action not in BOX_ACTIONS:
            raise ValueError(f"BoxAdjustment.action must be one of {BOX_ACTIONS}, got {self.action!r}")

    @property
    def reportable(self) -> bool:
        """Worth stating in the plan and on the command line: the box moved or grew, or trials were
        added to it (the ladder's widening loop: an edge optimum whose widening was refused at the
        limit, or no interior optimum yet). A rung merely searched on the human's box is not."""
        return self.action != "kept" or "edge" in self.reason or "added" in self.reason

    def to_dict(self) -> dict[str, Any]:
        return {"rung": self.rung, "knob": self.knob, "action": self.action, "human": self.human.to_dict(),
                "box": self.box.to_dict(), "centre": _num(self.centre), "factor": self.factor,
                "clipped": self.clipped, "reason": self.reason}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "BoxAdjustment":
        return cls(rung=d["rung"], knob=d["knob"], action=d["action"], human=_ci(d["human"]), box=_ci(d["box"]),
                   centre=d.get("centre"), factor=float(d["factor"]), clipped=bool(d["clipped"]),
                   reason=d["reason"])


@dataclass(frozen=True)
class ComputeOptimalPlan:
    """The compute-optimal size and tokens at the target's training FLOPs from the rungs' isoFLOP
    curves (``fits.compute_optimal``, Hoffmann et al. 2022 Approach 2): the exponent ``a`` of
    N_opt ~ C^a with its 95% interval, N_opt and D_opt with 80% / 95% intervals (widest kind),
    and the target's own N and D against them."""

    flops: float
    a: float
    a_ci95: ConfidenceInterval
    n_opt: float
    n_opt_ci80: ConfidenceInterval
    n_opt_ci95: ConfidenceInterval
    d_opt: float
    d_opt_ci80: ConfidenceInterval
    d_opt_ci95: ConfidenceInterval
    n_budgets: int
    target_n_ratio: float
    statement: str

    def to_dict(self) -> dict[str, Any]:
        return {"flops": self.flops, "a": self.a, "a_ci95": self.a_ci95.to_dict(), "n_opt": self.n_opt,
                "n_opt_ci80": self.n_opt_ci80.to_dict(), "n_opt_ci95": self.n_opt_ci95.to_dict(),
                "d_opt": self.d_opt, "d_opt_ci80": self.d_opt_ci80.to_dict(), "d_opt_ci95": self.d_opt_ci95.to_dict(),
                "n_budgets": self.n_budgets, "target_n_ratio": self.target_n_ratio, "statement": self.statement}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "ComputeOptimalPlan":
        return cls(flops=float(d["flops"]), a=float(d["a"]), a_ci95=_ci(d["a_ci95"]), n_opt=float(d["n_opt"]),
                   n_opt_ci80=_ci(d["n_opt_ci80"]), n_opt_ci95=_ci(d["n_opt_ci95"]), d_opt=float(d["d_opt"]),
                   d_opt_ci80=_ci(d["d_opt_ci80"]), d_opt_ci95=_ci(d["d_opt_ci95"]), n_budgets=int(d["n_budgets"]),
                   target_n_ratio=float(d["target_n_ratio"]), statement=d["statement"])


@dataclass(frozen=True)
class TargetInfo:
    """The full-size run: sizes in parameters, tokens, training FLOPs, its ModelConfig fields."""

    name: str
    params_total: float
    params_active: float
    tokens: float
    flops: float
    config: Mapping[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "params_total": self.params_total, "params_active": self.params_active,
                "tokens": self.tokens, "flops": self.flops, "config": dict(self.config)}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "TargetInfo":
        return cls(name=d["name"], params_total=float(d["params_total"]), params_active=float(d["params_active"]),
                   tokens=float(d["tokens"]), flops=float(d["flops"]), config=dict(d["config"]))


@dataclass(frozen=True)
class Plan:
    """The config for the full-size run with its evidence (see the module docstring)."""

    experiment: str
    target: TargetInfo
    largest_rung: str
    largest_params_active: float
    extrapolation_factor: float
    config: Mapping[str, Any]
    knobs: tuple[KnobPlan, ...]
    categorical: tuple[CategoricalPlan, ...]
    loss: LossPrediction | None
    ledger: LedgerSummary
    provenance: Provenance
    box_adjustments: tuple[BoxAdjustment, ...] = ()
    notes: tuple[str, ...] = ()
    schema_version: str = SCHEMA_VERSION
    compute_optimal: ComputeOptimalPlan | None = None
    search_value: Any = None         # fits.search_value.SearchValue: did the search pay (None: not priced)
    baseline: str = ""               # the hand-set config priced against the plan, in words

    def knob(self, name: str) -> KnobPlan:
        for k in self.knobs:
            if k.name == name:
                return k
        raise ValueError(f"the plan has no continuous knob {name!r}; it has {[k.name for k in self.knobs]}")

    def to_dict(self) -> dict[str, Any]:
        return {"schema_version": self.schema_version, "experiment": self.experiment,
                "target": self.target.to_dict(),
                "largest_rung": {"name": self.largest_rung, "params_active": self.largest_params_active},
                "extrapolation_factor": self.extrapolation_factor, "config": _jsonable(self.config),
                "knobs": [k.to_dict() for k in self.knobs], "categorical": [c.to_dict() for c in self.categorical],
                "loss": None if self.loss is None else self.loss.to_dict(), "ledger": self.ledger.to_dict(),
                "box_adjustments": [b.to_dict() for b in self.box_adjustments], "notes": list(self.notes),
                "provenance": self.provenance.to_dict(),
                "compute_optimal": None if self.compute_optimal is None else self.compute_optimal.to_dict(),
                "search_value": None if self.search_value is None else self.search_value.to_dict(),
                "baseline": self.baseline}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "Plan":
        if str(d.get("schema_version")) != SCHEMA_VERSION:
            raise ValueError(f"plan schema_version {d.get('schema_version')!r} is not {SCHEMA_VERSION!r}")
        return cls(experiment=d["experiment"], target=TargetInfo.from_dict(d["target"]),
                   largest_rung=d["largest_rung"]["name"],
                   largest_params_active=float(d["largest_rung"]["params_active"]),
                   extrapolation_factor=float(d["extrapolation_factor"]), config=d["config"],
                   knobs=tuple(KnobPlan.from_dict(k) for k in d["knobs"]),
                   categorical=tuple(CategoricalPlan.from_dict(c) for c in d["categorical"]),
                   loss=None if d.get("loss") is None else LossPrediction.from_dict(d["loss"]),
                   ledger=LedgerSummary.from_dict(d["ledger"]), provenance=Provenance.from_dict(d["provenance"]),
                   box_adjustments=tuple(BoxAdjustment.from_dict(b) for b in d.get("box_adjustments", ())),
                   notes=tuple(d.get("notes", ())), schema_version=str(d["schema_version"]),
                   compute_optimal=None if d.get("compute_optimal") is None
                   else ComputeOptimalPlan.from_dict(d["compute_optimal"]),
                   search_value=_search_value(d.get("search_value")), baseline=d.get("baseline", ""))


def _search_value(d: Mapping[str, Any] | None) -> Any:
    from fits.search_value import SearchValue

    return None if d is None else SearchValue.from_dict(d)


def _jsonable(x: Any) -> Any:
    """Mappings and sequences as dicts and lists (tuples become lists, as JSON has no tuple);
    NaN and infinities, which JSON cannot hold, as null."""
    if isinstance(x, Mapping):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if hasattr(x, "item") and not isinstance(x, (str, bytes)):   # numpy scalars
        return _jsonable(x.item())
    return x
