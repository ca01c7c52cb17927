"""The go/no-go review: checks of the evidence behind a plan, and the verdict.

Value types (the contract read by ``reports.pdf`` and written to ``runs/<name>/review.json``)::

    review.json = {
      "schema_version": "1",
      "experiment": str,
      "verdict": "GO" | "NO-GO" | "INCONCLUSIVE",
      "reasons": [str, ...],          # one sentence per check that drove the verdict
      "rule": str,                    # the verdict rule in words (VERDICT_RULE)
      "checks": [Check, ...],
      "policy": {key: value},         # the review policy used (experiment [review] over defaults)
      "provenance": Provenance        # transfer.plan.Provenance
    }
    Check = {"name": str,             # machine id, one of CHECK_NAMES
             "title": str,            # short human label
             "status": "PASS" | "WARN" | "FAIL" | "INCONCLUSIVE",
             "figure": float | null,  # the measured number the check is about
             "unit": str,             # unit of figure ("rungs", "x", "nats", "fraction", ...)
             "threshold": str,        # the threshold in words, e.g. ">= 4 rungs", "warn > 100x, fail > 1000x"
             "reason": str,           # one sentence: why this status
             "hard": bool,            # a FAIL of a hard check makes the verdict NO-GO
             "details": {...}}        # extra numbers for figures (JSON types)

Checks (``CHECK_NAMES``, in report order): ``interior_rungs``, ``edge_largest``,
``extrapolation``, ``backtest``, ``lr_interval``, ``loss_penalty``, ``divergence``,
``expert_load``, ``sweep_cost``. ``review(...)`` computes them from a ``Plan`` and the fits;
the verdict rule is ``VERDICT_RULE``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

from transfer.plan import Provenance

SCHEMA_VERSION = "1"
PASS, WARN, FAIL, INCONCLUSIVE = "PASS", "WARN", "FAIL", "INCONCLUSIVE"
STATUSES = (PASS, WARN, FAIL, INCONCLUSIVE)
GO, NO_GO = "GO", "NO-GO"
VERDICTS = (GO, NO_GO, INCONCLUSIVE)
CHECK_NAMES = ("interior_rungs", "edge_largest", "extrapolation", "backtest", "lr_interval", "loss_penalty",
               "divergence", "expert_load", "sweep_cost")
VERDICT_RULE = ("NO-GO if any hard check FAILs; otherwise INCONCLUSIVE if any check is INCONCLUSIVE "
                "(evidence missing or not decisive); otherwise GO (WARNs are listed as reasons but do not "
                "block).")


def _jsonable(x: Any) -> Any:
    if isinstance(x, Mapping):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, float) and x != x:   # NaN is not JSON
        return None
    return x


@dataclass(frozen=True)
class Check:
    """One review check: ``status`` in STATUSES, the measured ``figure`` (in ``unit``), the
    ``threshold`` in words, and a one-sentence ``reason``."""

    name: str
    title: str
    status: str
    figure: float | None
    unit: str
    threshold: str
    reason: str
    hard: bool = True
    details: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise ValueError(f"Check.status must be one of {STATUSES}, got {self.status!r}")
        if not isinstance(self.name, str) or not self.name:
            raise ValueError(f"Check.name must be a non-empty string, got {self.name!r}")

    def to_dict(self) -> dict[str, Any]:
        fig = None if self.figure is None or self.figure != self.figure else float(self.figure)
        return {"name": self.name, "title": self.title, "status": self.status, "figure": fig, "unit": self.unit,
                "threshold": self.threshold, "reason": self.reason, "hard": self.hard,
                "details": _jsonable(self.details)}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "Check":
        return cls(name=d["name"], title=d.get("title", d["name"]), status=d["status"], figure=d.get("figure"),
                   unit=d.get("unit", ""), threshold=d.get("threshold", ""), reason=d["reason"],
                   hard=bool(d.get("hard", True)), details=dict(d.get("details", {})))


@dataclass(frozen=True)
class Verdict:
    """GO, NO-GO or INCONCLUSIVE, with every check and the sentences that decided it."""

    experiment: str
    verdict: str
    checks: tuple[Check, ...]
    reasons: tuple[str, ...]
    rule: str
    policy: Mapping[str, Any]
    provenance: Provenance | None = None
    schema_version: str = SCHEMA_VERSION

    def __post_init__(self) -> None:
        if self.verdict not in VERDICTS:
            raise ValueError(f"Verdict.verdict must be one of {VERDICTS}, got {self.verdict!r}")

    def check(self, name: str) -> Check:
        for c in self.checks:
            if c.name == name:
                return c
        raise ValueError(f"no check {name!r}; checks are {[c.name for c in self.checks]}")

    def to_dict(self) -> dict[str, Any]:
        return {"schema_version": self.schema_version, "experiment": self.experiment, "verdict": self.verdict,
                "reasons": list(self.reasons), "rule": self.rule, "checks": [c.to_dict() for c in self.checks],
                "policy": _jsonable(self.policy),
                "provenance": None if self.provenance is None else self.provenance.to_dict()}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "Verdict":
        return cls(experiment=d["experiment"], verdict=d["verdict"],
                   checks=tuple(Check.from_dict(c) for c in d["checks"]), reasons=tuple(d.get("reasons", ())),
                   rule=d.get("rule", ""), policy=dict(d.get("policy", {})),
                   provenance=None if d.get("provenance") is None else Provenance.from_dict(d["provenance"]),
                   schema_version=str(d.get("schema_version", SCHEMA_VERSION)))

    def summary(self) -> str:
        lines = [f"Verdict: {self.verdict}"]
        for c in self.checks:
            fig = "n/a" if c.figure is None else f"{c.figure:.4g}"
            lines.append(f"  [{c.status:<12}] {c.title}: {fig} {c.unit} (threshold {c.threshold}) - {c.reason}")
        lines += [f"  reason: {r}" for r in self.reasons]
        return "\n".join(lines)
