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

Checks (``CHECK_NAMES``, in report order): ``scaling_regime``, ``interior_rungs``, ``edge_largest``,
``extrapolation``, ``backtest``, ``lr_interval``, ``loss_penalty``, ``divergence``,
``expert_load``, ``sweep_cost``. ``review(...)`` computes them from a ``Plan`` and the fits;
the verdict rule is ``VERDICT_RULE``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from typing import Any, Mapping


from fits.seed_noise import RungLevel, rung_level, seed_noise
from transfer.plan import Provenance

SCHEMA_VERSION = "1"
PASS, WARN, FAIL, INCONCLUSIVE = "PASS", "WARN", "FAIL", "INCONCLUSIVE"
STATUSES = (PASS, WARN, FAIL, INCONCLUSIVE)
GO, NO_GO = "GO", "NO-GO"
VERDICTS = (GO, NO_GO, INCONCLUSIVE)
CHECK_NAMES = ("scaling_regime", "interior_rungs", "edge_largest", "extrapolation", "backtest", "lr_interval",
               "loss_penalty", "divergence", "expert_load", "sweep_cost", "search_pays")
HARD_CHECKS = ("scaling_regime", "interior_rungs", "edge_largest", "extrapolation", "backtest", "loss_penalty",
               "divergence")
VERDICT_RULE = ("NO-GO if any hard check FAILs; otherwise INCONCLUSIVE if any hard check is INCONCLUSIVE "
                "(evidence missing or not decisive); otherwise GO. Hard checks: " + ", ".join(HARD_CHECKS) +
                ". The other checks only WARN; their warnings are listed with the verdict.")


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


# The checks ------------------------------------------------------------------------------------
def _fmt(x: float) -> str:
    return f"{x:.3g}"


def _check(name: str, title: str, status: str, figure: float | None, unit: str, threshold: str, reason: str,
           **details: Any) -> Check:
    return Check(name=name, title=title, status=status, figure=figure, unit=unit, threshold=threshold,
                 reason=reason, hard=name in HARD_CHECKS, details=details)


def rung_levels(fits: Any) -> list[RungLevel]:
    """Every rung with a usable trial, in ascending active size (``fits.rungs``' order)."""
    levels = (rung_level(f.rung, list(fits.observations.get(f.rung, ()))) for f in fits.rungs)
    return [lv for lv in levels if lv is not None]


def check_scaling_regime(fits: Any, policy: Mapping[str, Any]) -> Check:
    """The ladder is in the scaling regime: each rung's loss is below the next smaller rung's by
    more than ``regime_z`` standard errors of their difference, with the seed-to-seed noise
    measured at the rungs' replicated incumbents (``search.replicates``; ``seed_noise``); and the loss
    law converged with its parameters off their bounds (``LossLawFit.problems``). A ladder whose
    loss does not fall with size is not evidence for any trend fitted on it."""
    z = float(policy["regime_z"])
    title, unit = "Loss falls with size (scaling regime)", "x noise"
    threshold = f"every gap > {z:g} noise sd of the difference; loss law converged, off its bounds"
    levels = rung_levels(fits)
    noise = seed_noise(levels)
    details: dict[str, Any] = {"levels": [{"rung": lv.rung, "loss": lv.loss, "seeds": lv.seeds} for lv in levels]}
    if len(levels) < 2:
        return _check("scaling_regime", title, INCONCLUSIVE, None, unit, threshold,
                      f"{len(levels)} rung(s) with a usable trial: the order of losses cannot be checked", **details)
    if noise is None:
        return _check("scaling_regime", title, INCONCLUSIVE, None, unit, threshold,
                      "no rung's best trial was trained with a second seed, so the seed-to-seed noise the losses are "
                      "compared against is unknown; set search.replicates >= 1", **details)
    sd, dof, model = noise
    details |= {"seed_sd": sd, "seed_sd_dof": dof, "noise_model": model}
    ratios = []
    for small, big in zip(levels, levels[1:]):
        se = sd * math.sqrt(1 / small.seeds + 1 / big.seeds)
        gap = small.loss - big.loss
        ratios.append((gap / se if se > 0 else (math.inf if gap > 0 else -math.inf), small, big, gap, se))
    details["gaps"] = [{"smaller": s.rung, "larger": b.rung, "gap": g, "se": se} for _, s, b, g, se in ratios]
    worst = min(ratios, key=lambda r: r[0])
    figure = worst[0] if math.isfinite(worst[0]) else None
    if worst[0] <= z:
        _, s, b, gap, se = worst
        return _check("scaling_regime", title, INCONCLUSIVE, figure, unit, threshold,
                      f"{b.rung}'s loss {b.loss:.4g} is not below {s.rung}'s {s.loss:.4g} by more than the noise "
                      f"(gap {gap:+.3g} nats, {worst[0]:.2g} standard errors of {se:.2g}; seed sd {sd:.2g}, {model}, "
                      f"{dof} degree(s) of freedom): the ladder is not in the scaling regime there", **details)
    law = fits.loss_law
    if law is None or fits.loss_error:
        return _check("scaling_regime", title, INCONCLUSIVE, figure, unit, threshold,
                      f"the loss falls with size (smallest gap {worst[0]:.2g} noise sd), but "
                      + (fits.loss_error or "no loss law was fitted"), **details)
    return _check("scaling_regime", title, PASS, figure, unit, threshold,
                  f"every rung's loss is below the next smaller one's by more than {z:g} standard errors "
                  f"(smallest gap: {worst[1].rung} to {worst[2].rung}, {worst[0]:.2g}; seed sd {sd:.2g}), and the "
                  f"loss law converged with alpha = {law.params['alpha']:.3g}", **details)


def check_interior_rungs(fits: Any, policy: Mapping[str, Any]) -> Check:
    need = int(policy["min_interior_rungs"])
    usable = [o.rung for o in fits.usable]
    bad = [f"{f.rung} ({'; '.join(f.optimum.flag_codes) if f.optimum is not None else f.error})"
           for f in fits.rungs if f.optimum is None or not f.optimum.usable]
    ok = len(usable) >= need
    reason = (f"{len(usable)} of {len(fits.rungs)} rungs have an interior optimum"
              + (f"; not usable: {', '.join(bad)}" if bad else "")
              + ("" if ok else f"; at least {need} are needed for a trend with a backtest"))
    return _check("interior_rungs", "Rungs with interior optima", PASS if ok else INCONCLUSIVE, float(len(usable)),
                  "rungs", f">= {need} rungs", reason, usable=usable, not_usable=bad)


def largest_rungs(fits: Any, sizes: int = 2) -> list[Any]:
    """The rungs at the ``sizes`` largest active sizes (every rung of an (N, D) grid at them)."""
    from fits.power_law import SAME_SIZE_RTOL

    levels: list[float] = []
    for f in sorted(fits.rungs, key=lambda f: -_rung_size(fits, f)):
        n = _rung_size(fits, f)
        if not levels or n < levels[-1] * (1 - SAME_SIZE_RTOL):
            if len(levels) == sizes:
                break
            levels.append(n)
    floor = levels[-1] * (1 - SAME_SIZE_RTOL) if levels else 0.0
    return [f for f in fits.rungs if _rung_size(fits, f) >= floor]


def _rung_size(fits: Any, f: Any) -> float:
    if f.optimum is not None:
        return f.optimum.params_active
    obs = fits.observations.get(f.rung, ())
    return float(obs[0].params_active) if obs else 0.0


def check_edge_largest(fits: Any) -> Check:
    top = largest_rungs(fits)
    edge, missing = [], []
    for f in top:
        if f.optimum is None:
            missing.append(f"{f.rung}: no optimum ({f.error or 'no trials'})")
        elif "edge" in f.optimum.flag_codes or "not_convex" in f.optimum.flag_codes:
            msgs = [fl.message for fl in f.optimum.flags if fl.code in ("edge", "not_convex")]
            edge.append(f"{f.rung}: {msgs[0]}")
        elif not f.optimum.usable:   # too few points: no fitted optimum, so no evidence either way
            msgs = [fl.message for fl in f.optimum.flags if fl.code == "too_few_points"]
            missing.append(f"{f.rung}: no fitted optimum ({msgs[0] if msgs else 'not usable'})")
    if edge or missing:
        reason = ("the largest rungs give no evidence that their optimum is inside the box (an edge optimum, no "
                  "interior minimum, or no fitted optimum): " + "; ".join(edge + missing))
        status = INCONCLUSIVE
    else:
        reason = f"the optima of {', '.join(f.rung for f in top)} lie inside their boxes"
        status = PASS
    return _check("edge_largest", "No edge optimum on the two largest rungs", status, float(len(edge) + len(missing)),
                  "rungs", "0 at the 2 largest sizes", reason, rungs=[f.rung for f in top])


EXTRAPOLATION_POLICY = {"params_active": "", "params_total": "", "tokens": "_tokens", "flops": "_flops"}
AXIS_WORDS = {"params_active": "active parameters", "params_total": "total parameters", "tokens": "tokens",
              "flops": "training FLOPs"}


def check_extrapolation(plan: Any, policy: Mapping[str, Any]) -> Check:
    """Per knob and per axis its trend uses, the target's size over that of the largest rung that
    entered the trend (or the rung the value came from); each axis against its own warn and fail
    factors (``extrapolation[_tokens|_flops]_warn/_fail``). The worst axis decides."""
    rows = []
    for k in plan.knobs:
        factors = k.extrapolation or {"params_active": plan.extrapolation_factor}
        for axis, x in factors.items():
            suffix = EXTRAPOLATION_POLICY.get(axis, "")
            warn, fail = float(policy[f"extrapolation{suffix}_warn"]), float(policy[f"extrapolation{suffix}_fail"])
            status = FAIL if x > fail else WARN if x > warn else PASS
            rows.append((("PASS", "WARN", "FAIL").index(status), x / warn, k, axis, x, warn, fail, status))
    if not rows:
        x, warn, fail = plan.extrapolation_factor, float(policy["extrapolation_warn"]), float(policy["extrapolation_fail"])
        rows.append((0, x / warn, None, "params_active", x, warn, fail, FAIL if x > fail else WARN if x > warn else PASS))
    _, _, k, axis, x, warn, fail, status = max(rows, key=lambda r: (r[0], r[1]))
    source = (k.source_rung if k is not None and k.source_rung else plan.largest_rung)
    what = f"{k.name}'s {'trend' if k is not None and k.method == 'trend' else 'value'}" if k is not None else "the plan"
    reason = (f"the target has {_fmt(x)}x the {AXIS_WORDS.get(axis, axis)} of {source}, the largest rung behind "
              f"{what}" + {PASS: "", WARN: f", beyond the {warn:g}x the policy trusts without warning",
                           FAIL: f", beyond the {fail:g}x limit: add larger rungs"}[status])
    per = {f"{r[2].name}/{r[3]}" if r[2] is not None else r[3]: r[4] for r in rows}
    return _check("extrapolation", "Extrapolation factor", status, x, "x",
                  f"warn > {warn:g}x, fail > {fail:g}x ({AXIS_WORDS.get(axis, axis)})", reason, per_knob_axis=per)


def check_backtest(fits: Any, policy: Mapping[str, Any]) -> Check:
    from fits.power_law import backtest_leave_largest_out

    alpha = float(policy["backtest_alpha"])
    # Every rung at the largest size is left out; at least three sizes must remain to fit on.
    from fits.power_law import distinct_sizes

    eligible = {k: t for k, t in fits.trends.items() if distinct_sizes(t.sizes) >= 4 and t.n >= len(t.coef) + 2}
    if not eligible:
        sizes = max((distinct_sizes(t.sizes) for t in fits.trends.values()), default=0)
        return _check("backtest", "Backtest on the largest rung", INCONCLUSIVE, None, "z",
                      f"inside the {1 - alpha:.0%} prediction interval",
                      f"the trends rest on {sizes} distinct size(s) with interior optima: without the rungs at the "
                      "largest size fewer than three sizes remain, so no trend can be tested on them")
    # Bonferroni over knobs: the chance that any knob misses by chance stays alpha.
    a = alpha / len(eligible)
    results = {}
    for k, t in eligible.items():
        results[k] = backtest_leave_largest_out(t.sizes, t.values, value_se=t.value_se, tokens=t.tokens, alpha=a,
                                                axes=t.axes or None, labels=t.labels)
    missed = {k: b for k, b in results.items() if not b.inside}
    # A largest rung whose own optimum is so uncertain that the loss at stake within its 95%
    # interval, curvature * (1.96 se)^2, exceeds max_loss_penalty cannot test the trend: no test,
    # not a pass. (A knob with a flat basin may be vague; its vagueness then costs nothing.)
    from transfer.extrapolate import loss_curvature

    limit = float(policy["max_loss_penalty"])
    vague = {}
    for k, t in eligible.items():
        curv = loss_curvature(list(fits.usable), k)
        se_top = None if t.value_se is None else t.value_se[int(np.argmax(t.sizes))]
        if se_top is not None and curv is not None and curv * (1.96 * se_top) ** 2 > limit:
            vague[k] = (se_top, curv * (1.96 * se_top) ** 2)
    if vague and not missed:
        k, (se, stake) = next(iter(vague.items()))
        return _check("backtest", "Backtest on the largest rung", INCONCLUSIVE, results[k].z, "z",
                      f"inside the {1 - alpha:.0%} prediction interval (Bonferroni over {len(eligible)} knobs)",
                      f"the largest rung's {k} optimum is too imprecise to test the trend (log standard error "
                      f"{se:.2f}, {stake:.3g} nats at stake within its 95% interval > {limit:g}); add trials on that rung",
                      knobs={kk: b.to_dict() for kk, b in results.items()})
    worst = max(results, key=lambda k: abs(results[k].z))
    details = {k: b.to_dict() | {"rung": b.rung or _tested_rung(eligible[k])} for k, b in results.items()}
    # When the trend predicts a knob outside the tested rung's own box and the rung's optimum sits
    # against that edge (within half the prediction interval's log width of it), the box has
    # censored the optimum: its vertex could only land inside, near the edge, and the joint
    # quadratic fit carries the bias into the other knobs. A miss then says "the box is drawn
    # wrong there", not "the optimum bends away", and cannot test the trend. An optimum far
    # inside the box is not censored, whatever the prediction: that miss stays a FAIL.
    censored = {}
    for k, b in results.items():
        spec = _tested_box(fits, eligible[k], k)
        if spec is not None and _censored_by_box(b, spec):
            censored[k] = spec
    if missed and censored:
        k, spec = next(iter(censored.items()))
        b, rung = results[k], _tested_rung(eligible[k])
        return _check("backtest", "Backtest on the largest rung", INCONCLUSIVE, b.z, "z",
                      f"inside the {1 - alpha:.0%} prediction interval (Bonferroni over {len(eligible)} knobs)",
                      f"fitted without {rung}, the trend predicts {k} = {_fmt(b.predicted)} there, outside that rung's "
                      f"box [{_fmt(spec.low)}, {_fmt(spec.high)}]: the box censors its optimum ({_fmt(b.observed)}), "
                      f"so a miss there ({', '.join(missed)}) cannot test the trend; widen or move the box",
                      knobs=details)
    if missed:
        k, b = next(iter(missed.items()))
        reason = (f"fitted without the largest rung, the trend predicted {k} = {_fmt(b.predicted)} there, but the rung's "
                  f"optimum is {_fmt(b.observed)}, outside the {1 - a:.1%} prediction interval [{_fmt(b.interval.low)}, "
                  f"{_fmt(b.interval.high)}]: the optimum bends away from the power law")
        return _check("backtest", "Backtest on the largest rung", FAIL, results[worst].z, "z",
                      f"inside the {1 - alpha:.0%} prediction interval (Bonferroni over {len(eligible)} knobs)",
                      reason, knobs=details)
    reason = (f"the largest rung's optima ({', '.join(eligible)}) lie inside the prediction intervals of trends fitted "
              f"without it (worst: {worst}, z = {results[worst].z:+.2f})")
    return _check("backtest", "Backtest on the largest rung", PASS, results[worst].z, "z",
                  f"inside the {1 - alpha:.0%} prediction interval (Bonferroni over {len(eligible)} knobs)",
                  reason, knobs=details)


def _censored_by_box(b: Any, spec: Any) -> bool:
    """Prediction beyond an edge of the box, and the observed optimum within half the log width
    of the prediction interval of that edge."""
    if spec.low <= b.predicted <= spec.high:
        return False
    edge = spec.low if b.predicted < spec.low else spec.high
    half_width = 0.5 * math.log(b.interval.high / b.interval.low)
    return abs(math.log(b.observed / edge)) <= half_width


def _tested_rung(trend: Any) -> str:
    """The rung a leave-largest-out backtest tests: the trend's last (largest usable) rung."""
    return trend.labels[int(np.argmax(trend.sizes))] if trend.labels else ""


def _tested_box(fits: Any, trend: Any, knob: str) -> Any:
    """The tested rung's box for ``knob`` (a continuous KnobSpec), or None."""
    rung = _tested_rung(trend)
    for o in fits.usable:
        if o.rung == rung:
            return next((s for s in o.knobs if s.name == knob and s.low is not None), None)
    return None


def check_lr_interval(plan: Any, policy: Mapping[str, Any]) -> Check:
    limit = float(policy["max_lr_ratio"])
    lr = [k for k in plan.knobs if k.name == "lr"]
    if not lr:
        return _check("lr_interval", "Width of the learning-rate interval", WARN, None, "x", f"<= {limit:g}x",
                      "the learning rate is not searched, so its interval at the target is unknown")
    k = lr[0]
    r = k.ratio95
    ok = r <= limit
    reason = (f"the 95% interval of the target lr is [{_fmt(k.ci95.low)}, {_fmt(k.ci95.high)}] ({k.kind95}), "
              f"a factor {_fmt(r)} wide" + ("" if ok else f", wider than {limit:g}x"))
    return _check("lr_interval", "Width of the learning-rate interval", PASS if ok else WARN, r, "x", f"<= {limit:g}x",
                  reason, ci95=k.ci95.to_dict(), kind=k.kind95)


def check_loss_penalty(plan: Any, policy: Mapping[str, Any]) -> Check:
    limit = float(policy["max_loss_penalty"])
    missing = [k.name for k in plan.knobs if k.penalty95 is None]
    per = {k.name: k.max_penalty95 for k in plan.knobs if k.penalty95 is not None}
    if missing or not plan.knobs:
        return _check("loss_penalty", "Loss penalty at the interval ends", INCONCLUSIVE, None, "nats",
                      f"<= {limit:g} nats", f"no convex loss surface on the largest rungs for {', '.join(missing) or 'any knob'}"
                      ", so the cost of the plan's uncertainty is unknown", per_knob=per)
    total = float(sum(per.values()))   # a separable quadratic: penalties of the knobs add
    ok = total <= limit
    worst = max(per, key=per.get)
    reason = (f"at the ends of the 95% intervals the predicted loss penalty is {_fmt(total)} nats in all "
              f"(largest: {worst}, {_fmt(per[worst])} nats)"
              + ("" if ok else f", above {limit:g} nats: more rungs or trials are needed to narrow the intervals"))
    return _check("loss_penalty", "Loss penalty at the interval ends", PASS if ok else INCONCLUSIVE, total, "nats",
                  f"<= {limit:g} nats", reason, per_knob=per)


def check_divergence(plan: Any, fits: Any, policy: Mapping[str, Any]) -> Check:
    w, limit = float(policy["divergence_window"]), float(policy["max_divergence_fraction"])
    thr = f"<= {limit:.0%} of trials within {w:g}x of the planned lr"
    largest = list(fits.rungs)[-1]
    obs = list(fits.observations.get(largest.rung, ()))
    if "lr" not in (largest.optimum.continuous if largest.optimum is not None else ()):
        return _check("divergence", "Divergences near the planned lr", WARN, None, "fraction", thr,
                      "the learning rate is not searched on the largest rung; divergence cannot be checked")
    trend = fits.trends.get("lr")
    if trend is not None:
        from fits.trend import rung_point

        centre = trend.predict(*trend.regressors_of(rung_point(largest.optimum)))
    else:
        centre = float(largest.optimum.value("lr"))
    near = [o for o in obs if centre / w <= float(o.knobs["lr"]) <= centre * w]
    if not near:
        return _check("divergence", "Divergences near the planned lr", WARN, None, "fraction", thr,
                      f"no trial of {largest.rung} ran within {w:g}x of its planned lr {_fmt(centre)}")
    div = sum(1 for o in near if o.diverged)
    frac = div / len(near)
    status = PASS if div == 0 else WARN if frac <= limit else FAIL
    reason = (f"{div} of {len(near)} trials of {largest.rung} within {w:g}x of its planned lr ({_fmt(centre)}) diverged"
              + ("" if status != FAIL else ": the planned lr sits near the stability wall"))
    return _check("divergence", "Divergences near the planned lr", status, frac, "fraction", thr, reason,
                  rung=largest.rung, lr=centre, n_near=len(near), n_diverged=div)


def check_expert_load(fits: Any, policy: Mapping[str, Any]) -> Check:
    limit = float(policy["max_expert_load"])
    largest = list(fits.rungs)[-1]
    ok_obs = [o for o in fits.observations.get(largest.rung, ()) if o.usable]
    best = min(ok_obs, key=lambda o: o.loss, default=None)
    load = None if best is None else best.extra.get("expert_max_over_mean")
    if load is None:
        return _check("expert_load", "Expert-load imbalance on the largest rung", WARN, None, "max/mean",
                      f"<= {limit:g}", f"no expert-load record for the best trial of {largest.rung}")
    ok = load <= limit
    reason = (f"the busiest expert of {largest.rung}'s best trial takes {_fmt(load)}x the mean load"
              + ("" if ok else f", above {limit:g}x: routing is unbalanced"))
    return _check("expert_load", "Expert-load imbalance on the largest rung", PASS if ok else WARN, float(load),
                  "max/mean", f"<= {limit:g}", reason)


def check_sweep_cost(plan: Any, policy: Mapping[str, Any]) -> Check:
    limit = float(policy["max_budget_fraction"])
    frac = plan.ledger.fraction_of_target
    if frac is None:
        return _check("sweep_cost", "Sweep cost", WARN, None, "fraction of target", f"<= {limit:g}",
                      "the target's FLOPs are unknown, so the sweep's share cannot be stated")
    ok = frac <= limit
    reason = (f"the sweep spent {plan.ledger.total_flops:.3g} FLOPs, {frac:.2%} of the target run"
              + ("" if ok else f", more than the {limit:.0%} the policy allows"))
    return _check("sweep_cost", "Sweep cost", PASS if ok else WARN, frac, "fraction of target", f"<= {limit:g}", reason)


def check_search_pays(plan: Any) -> Check:
    """Soft: did the search pay for itself (``fits.search_value``)? PASS when the 95% lower bound
    of the compute multiplier clears break-even 1 / (1 - f), WARN when only its estimate does,
    FAIL when the estimate does not; WARN when it could not be priced."""
    title, unit = "The search pays for itself", "x target compute"
    v = getattr(plan, "search_value", None)
    if v is None:
        why = next((n.split(": ", 1)[1] for n in plan.notes if n.startswith("search value not priced: ")),
                   "no baseline could be priced")
        return _check("search_pays", title, WARN, None, unit, "95% lower bound of the multiplier > 1 / (1 - f)",
                      f"not priced: {why}")
    return _check("search_pays", title, v.status, v.m, unit, f"95% lower bound of the multiplier > {v.break_even:.4g}x "
                  "(break-even 1 / (1 - f))", v.statement, m_ci80=v.m_ci80.to_dict(), m_ci95=v.m_ci95.to_dict(),
                  break_even=v.break_even, net=v.net, baseline=getattr(plan, "baseline", ""))


def decide(checks: tuple[Check, ...]) -> tuple[str, tuple[str, ...]]:
    """The verdict and its reasons under ``VERDICT_RULE``."""
    fails = [c for c in checks if c.hard and c.status == FAIL]
    missing = [c for c in checks if c.hard and c.status == INCONCLUSIVE]
    warns = [c for c in checks if c.status == WARN or (not c.hard and c.status == FAIL)]   # a soft FAIL warns
    verdict = NO_GO if fails else INCONCLUSIVE if missing else GO
    lead = fails if fails else missing
    reasons = tuple(f"{c.title}: {c.reason}" for c in lead) + tuple(f"warning - {c.title}: {c.reason}" for c in warns)
    if verdict == GO and not reasons:
        reasons = ("every check passed",)
    return verdict, reasons


def review(plan: Any, fits: Any, policy: Mapping[str, Any], provenance: Provenance | None = None) -> Verdict:
    """Run every check on a ``transfer.plan.Plan`` and the ``transfer.extrapolate.Fits`` it came
    from, under ``policy`` (the experiment's ``review`` table, defaults filled in)."""
    from proxy.sweep.experiment import REVIEW_DEFAULTS

    pol = dict(REVIEW_DEFAULTS) | dict(policy)
    checks = (check_scaling_regime(fits, pol), check_interior_rungs(fits, pol), check_edge_largest(fits), check_extrapolation(plan, pol),
              check_backtest(fits, pol), check_lr_interval(plan, pol), check_loss_penalty(plan, pol),
              check_divergence(plan, fits, pol), check_expert_load(fits, pol), check_sweep_cost(plan, pol),
              check_search_pays(plan))
    verdict, reasons = decide(checks)
    return Verdict(experiment=plan.experiment, verdict=verdict, checks=checks, reasons=reasons, rule=VERDICT_RULE,
                   policy=pol, provenance=provenance or plan.provenance)
