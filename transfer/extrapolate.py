"""From the store to the plan: per-rung optima, trends, the loss law, and the target config.

``fit_all(experiment, storage)`` reads the store and fits everything (``Fits``); ``fits_json`` writes
them for ``fits.json``; ``make_plan(experiment, fits)`` builds the ``transfer.plan.Plan``:

* Continuous knob: the power-law trend over the rungs with interior optima
  (``fits.trend_from_optima``) on the knob's size axes (``[fit] axes``, else
  ``fits.axes.default_axes``: lr on N and D and the batch size on D when the rungs' tokens vary
  independently of size, every other knob on N), evaluated at the target; the
  reported 80% and 95% intervals are the widest of the mean, prediction and two-level bootstrap
  intervals (``TrendFit.interval(kind="widest")``). Fewer than three usable rungs: the largest
  usable rung's optimum with its own interval (``method="largest_rung"``), or the best trial of
  the largest rung with the human's box as interval when no rung is usable; the review reports
  either as missing evidence.
* Curvature (nats per (natural-log unit)^2 for log knobs): 1/2 H_jj / h_j^2 of the quadratic
  surface (``fits.quadratic``: L = c + b'z + 1/2 z'Hz, z = (u - centre) / h) averaged over the
  two largest usable rungs. Loss penalty at an interval end: curvature * (u_end - u_plan)^2.
  Near-optimal band at the target: |u - u_plan| <= sqrt(band_rel * L_target / curvature).
* muP: for a target with ``parametrization = "mup"`` the knobs muP is meant to keep fixed across
  width (``MUP_FLAT_KNOBS``) get a zero-slope t-test of the trend exponent,
  t = b / se(b) on the trend's degrees of freedom (Yang et al. 2022, "Tensor Programs V").
* Categorical knob: the level that won on each rung and by how much (best-loss gap of the
  runner-up), the level of the largest rung planned.
* Loss: ``fits.fit_loss_law_n`` (L(N) = E + A N^-alpha, N active parameters) on each usable
  rung's fitted minimum (a rung whose optimum is on an edge or unfitted has only an upper bound
  of its minimum, so it stays out), or ``fit_loss_law_nd`` when the rungs'
  tokens vary independently of size (>= 6 rungs, tokens over >= 4x, |corr(log N, log D)| < 0.9); intervals are
  percentiles of the bootstrap predictions at the target.
* Extrapolation: per knob and per axis of its trend, the target's size over the largest size
  among the rungs that entered that trend (or over the one rung the value came from).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Mapping

import numpy as np
from scipy import stats

from fits.axes import AXES, SizePoint, default_axes
from fits.intervals import ConfidenceInterval
from fits.loss_law import LossLawFit, fit_loss_law_n, fit_loss_law_nd
from fits.optimum import RungOptimum
from fits.power_law import TrendFit
from fits.trend import rung_point, trend_from_optima
from proxy.flops import param_counts, train_flops
from proxy.sweep import knobs as K
from transfer.observations import RungFit, fit_rungs, load_observations
from transfer.plan import (SCHEMA_VERSION, BoxAdjustment, CategoricalPlan, ComputeOptimalPlan, Flatness, KnobPlan,
                           LedgerSummary, LossPrediction, Plan, RungWinner, TargetInfo, _jsonable, provenance_for)

if TYPE_CHECKING:
    from optuna.storages import BaseStorage

    from proxy.sweep.experiment import Experiment

MUP_FLAT_KNOBS = ("lr", "init_scale", "aux_loss_coef", "z_loss_coef", "warmup_frac")
BAND_REL = 0.0025             # near-optimal band: within 0.25% of the loss (as fits.fit_optimum)
FLAT_ALPHA = 0.05
LOSS_BOOTSTRAP = 200


@dataclass(frozen=True)
class Fits:
    """Everything fitted from the store: per-rung fits (ascending size), trends per knob (or
    the reason there is none), the loss law (or why not), observations by rung, box records."""

    rungs: tuple[RungFit, ...]
    trends: Mapping[str, TrendFit]
    trend_errors: Mapping[str, str]
    loss_law: LossLawFit | None
    loss_error: str
    observations: Mapping[str, Any] = field(repr=False, default_factory=dict)
    records: Mapping[str, Any] = field(repr=False, default_factory=dict)
    notes: tuple[str, ...] = ()
    axes: Mapping[str, tuple[str, ...]] = field(default_factory=dict)   # knob -> its trend's size axes
    compute_optimal: Any = None      # fits.compute_optimal.ComputeOptimalFit when the rungs form isoFLOP curves
    compute_error: str = ""

    @property
    def optima(self) -> list[RungOptimum]:
        return [f.optimum for f in self.rungs if f.optimum is not None]

    @property
    def usable(self) -> list[RungOptimum]:
        return [o for o in self.optima if o.usable]


def replicated_levels(observations: Mapping[str, Any]) -> dict[str, float]:
    """Rung -> its level (``fits.seed_noise.rung_level``: the mean single-seed loss of the
    incumbent and its replicates) for every rung whose incumbent was trained with two or more
    seeds."""
    from fits.seed_noise import rung_level

    out = {}
    for rung, obs in observations.items():
        level = rung_level(rung, list(obs))
        if level is not None and level.seeds >= 2:
            out[rung] = level.loss
    return out


def _loss_points(optima: list[RungOptimum], levels: Mapping[str, float] | None = None
                 ) -> tuple[list[float], list[float], list[float]]:
    """Each rung's (N_active, D, loss) for the loss laws. The loss is the rung's replicated
    level where it has one (``replicated_levels``), else its fitted minimum, else its best loss.
    Why the level first: the fitted minimum is the vertex value of a surface over trials of one
    seed, extrapolated below the best trial, so it carries that seed's luck (0.03-0.04 nats on
    the CPU ladder near the optimum, as large as the gaps between its rungs) plus the surface's
    error; the level is measured at the incumbent over every seed. On the demo's store at sampler
    seed 0 the fitted minima put L(N)'s E at its 0 bound; the levels give E = 1.40, alpha = 0.69
    [0.18, 1.88]. The incumbent sits near, not at, the optimum: its small excess is about the
    same on every rung and mostly moves E."""
    levels = levels or {}
    n, d, loss = [], [], []
    for o in optima:
        if o.rung in levels:
            value = levels[o.rung]
        elif o.fitted_min_loss is not None and o.fitted_min_loss > 0:
            value = o.fitted_min_loss
        else:
            value = o.best_loss
        n.append(o.params_active)
        d.append(o.tokens)
        loss.append(value)
    return n, d, loss


def _fit_loss(optima: list[RungOptimum], seed: int, levels: Mapping[str, float] | None = None
              ) -> tuple[LossLawFit | None, str, list[str]]:
    n, d, loss = _loss_points(optima, levels)
    notes: list[str] = []
    if len(n) < 4:
        return None, f"{len(n)} rungs with an optimum; the loss law L(N) needs at least 4", notes
    log_d = np.log(d)
    # L(N, D) has five parameters: only when tokens vary over >= 4x and not in step with size.
    use_nd = (len(n) >= 6 and float(np.ptp(log_d)) >= math.log(4.0)
              and abs(float(np.corrcoef(np.log(n), log_d)[0, 1])) < 0.9)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            if use_nd:
                law = fit_loss_law_nd(n, d, loss, n_bootstrap=LOSS_BOOTSTRAP, seed=seed, workers=1)
            else:
                law = fit_loss_law_n(n, loss, n_bootstrap=LOSS_BOOTSTRAP, seed=seed, workers=1)
        except (ValueError, ArithmeticError) as exc:
            return None, f"loss-law fit failed: {exc}", notes
    for w in caught:   # a non-converged refit is reported, not raised (resamples of 4-7 rungs degenerate)
        notes.append(f"loss law: {w.message}")
    problems = law.problems(loss)
    if problems:
        # Kept for the report, which shows it as unusable; nothing is extrapolated from it.
        return law, "the loss law is not usable: " + "; ".join(problems), notes
    return law, "", notes


def fit_all(experiment: Experiment, storage: BaseStorage, *, seed: int = 0,
            observations: Mapping[str, Any] | None = None) -> Fits:
    """Read the store and fit every rung, every continuous knob's trend and the loss law.

    ``storage`` is the command's one open store (``proxy.sweep.store.open_storage``);
    ``observations``: the store's trials when the caller has read them already.
    """
    from transfer.ladder import read_records

    obs = load_observations(experiment, storage) if observations is None else observations
    if not obs:
        raise ValueError(f"the store {experiment.storage} has no finished trial of experiment "
                         f"{experiment.name!r}; run `ladder sweep` or `ladder import` first")
    rungs = fit_rungs(experiment, obs, seed=seed)
    optima = [f.optimum for f in rungs if f.optimum is not None]
    trends: dict[str, TrendFit] = {}
    errors: dict[str, str] = {}
    points = [rung_point(o) for o in optima if o.usable]
    axes = {}
    for name in (optima[0].continuous if optima else ()):
        axes[name] = knob_axes(experiment, name, points)
        try:
            trends[name] = trend_from_optima(optima, name, axes=axes[name], seed=seed)
        except ValueError as exc:
            errors[name] = str(exc)
    usable = [o for o in optima if o.usable]
    levels = replicated_levels(obs)
    law, loss_error, notes = _fit_loss(usable, seed, levels)
    if any(o.rung in levels for o in usable):
        notes.append(f"loss law: {sum(o.rung in levels for o in usable)} of {len(usable)} rungs enter with their "
                     "replicated level (the mean loss of the incumbent over its seeds), the rest with their fitted "
                     "minimum")
    if len(usable) < len(optima):
        notes.append(f"loss law: fitted on the {len(usable)} rungs with a usable optimum; "
                     f"{len(optima) - len(usable)} left out (their best loss only bounds their minimum)")
    co, co_error = fit_isoflop(usable, seed)
    return Fits(rungs=tuple(rungs), trends=trends, trend_errors=errors, loss_law=law, loss_error=loss_error,
                observations=obs, records=read_records(experiment, storage), notes=tuple(notes), axes=axes,
                compute_optimal=co, compute_error=co_error)


COMPUTE_BOOTSTRAP = 500


def isoflop_points(usable: list[RungOptimum]) -> tuple[list[float], list[float], list[float], list[float]]:
    """Each usable rung as an isoFLOP point: (C = 6 N_active D, N_active, D, its minimum loss)."""
    n, d, loss = _loss_points(usable)
    return [6.0 * a * b for a, b in zip(n, d)], n, d, loss


def fit_isoflop(usable: list[RungOptimum], seed: int) -> tuple[Any, str]:
    """The compute-optimal laws from the rungs' minima grouped by training compute (budgets
    within 5%), or why there are none (a ladder whose rungs each have their own budget)."""
    from fits.compute_optimal import fit_compute_optimal

    c, n, d, loss = isoflop_points(usable)
    if len(c) < 9:
        return None, f"{len(c)} usable rungs; isoFLOP curves need at least 3 budgets of 3 sizes"
    try:
        return fit_compute_optimal(c, n, loss, tokens=d, n_bootstrap=COMPUTE_BOOTSTRAP, seed=seed), ""
    except ValueError as exc:
        return None, str(exc)


def knob_axes(experiment: Experiment, knob: str, points: list[SizePoint]) -> tuple[str, ...]:
    """The size axes of ``knob``'s trend: the experiment's ``[fit] axes``, else the defaults."""
    spec = getattr(experiment, "fit", None)
    if spec is not None and knob in spec.axes:
        return tuple(spec.axes[knob])
    return default_axes(knob, points, spec.size if spec is not None else "params_active")


def target_info(experiment: Experiment) -> TargetInfo:
    t = experiment.target
    if t is None:
        p = getattr(experiment, "target_sizes", None)
        if p is None:
            raise ValueError(f"experiment {experiment.name!r} has no [target] table (nor --at): there is nothing "
                             "to plan for")
        return TargetInfo(name=experiment.target_name, params_total=p.params_total, params_active=p.params_active,
                          tokens=p.tokens, flops=p.value("flops"), config={})
    counts = param_counts(t.config)
    return TargetInfo(name=t.name, params_total=float(counts.total), params_active=float(counts.active),
                      tokens=float(t.tokens), flops=float(train_flops(t.config, t.tokens)), config=t.config.to_dict())


def target_point(target: TargetInfo) -> SizePoint:
    return SizePoint(params_total=target.params_total, params_active=target.params_active, tokens=target.tokens,
                     flops=target.flops)


def fits_json(experiment: Experiment, fits: Fits, command: str = "") -> dict[str, Any]:
    """The ``fits.json`` document (schema in ``transfer.plan``)."""
    point = target_point(target_info(experiment)) if experiment.has_target else None
    trends = {}
    for name, tr in fits.trends.items():
        d = tr.to_dict()
        if point is not None:
            d["target"] = {"ci80": tr.interval_at(point, 0.20).to_dict(), "ci95": tr.interval_at(point, 0.05).to_dict()}
        trends[name] = d
    from fits.records import optimum_record
    from transfer.fits_cache import store_digest

    rungs = []
    for f in fits.rungs:
        d = {"rung": f.rung, "n_trials": f.n_trials, "error": f.error}
        if f.optimum is not None:
            d |= f.optimum.to_dict()
            d["record"] = optimum_record(f.optimum)
        rec = fits.records.get(f.rung)
        if rec is not None:
            d["search"] = rec.to_dict()
        rungs.append(d)
    law = None
    if fits.loss_law is not None:
        # Bootstrap refits of a few under-trained rungs can run off to huge A; their spread is
        # reported as it is (inf), not raised as a floating-point warning.
        with np.errstate(over="ignore", invalid="ignore"):
            law = fits.loss_law.to_dict()
    return _jsonable({"schema_version": SCHEMA_VERSION, "experiment": experiment.name,
                      "store_digest": store_digest(experiment, fits.observations), "rungs": rungs,
                      "trends": trends, "trend_errors": dict(fits.trend_errors),
                      "axes": {k: list(v) for k, v in fits.axes.items()},
                      "loss_law": law,
                      "compute_optimal": None if fits.compute_optimal is None else fits.compute_optimal.to_dict(),
                      "compute_error": fits.compute_error,
                      "loss_error": fits.loss_error, "notes": list(fits.notes),
                      "provenance": provenance_for(experiment, command).to_dict()})


def loss_curvature(usable: list[RungOptimum], knob: str) -> float | None:
    """Mean 1/2 H_jj / h_j^2 over the two largest usable rungs (nats per transformed unit^2)."""
    values = []
    for o in usable[-2:]:
        if o.surface is None or knob not in o.continuous:
            continue
        j = o.continuous.index(knob)
        values.append(0.5 * float(o.surface.hessian[j, j]) / o.half_width[j] ** 2)
    return float(np.mean(values)) if values else None


def _flatness(trend: TrendFit) -> Flatness:
    b = trend.exponent
    se = math.sqrt(max(trend.cov[1][1], 0.0))
    t = b / se if se > 0 else math.inf
    p = float(2 * stats.t.sf(abs(t), trend.df)) if math.isfinite(t) else 0.0
    flat = p >= FLAT_ALPHA
    statement = (f"zero slope {'not rejected' if flat else 'rejected'}: exponent {b:+.3g} (se {se:.2g}), "
                 f"t = {t:.2f} on {trend.df} df, p = {p:.3g}"
                 + ("; consistent with muP transfer" if flat else "; the optimum moves with size despite muP"))
    return Flatness(exponent=b, se=se, t=t, df=trend.df, p_value=p, alpha=FLAT_ALPHA, flat=flat, statement=statement)


def _knob_plan(experiment: Experiment, fits: Fits, knob: str, target: TargetInfo, law_at_target: float | None) -> KnobPlan:
    spec = next(k for k in experiment.search.box if k.name == knob)
    box = ConfidenceInterval(float(spec.low), float(spec.high))
    usable = fits.usable
    trend = fits.trends.get(knob)
    log = bool(spec.log)

    def u(x: float) -> float:
        return math.log(x) if log else x
    point = target_point(target)
    if trend is not None:
        i80, i95 = trend.interval_at(point, 0.20), trend.interval_at(point, 0.05)
        value, ci80, ci95, k80, k95, method = i95.estimate, i80.interval, i95.interval, i80.kind, i95.kind, "trend"
        exp_ci = trend.conf_int(0.05)["size_exponent"]
        exponent, n_rungs, excluded = trend.exponent, trend.n, trend.excluded
        axes = trend.axes
        tops = [max(vals) for vals in ((trend.sizes,) + ((trend.tokens,) if trend.tokens is not None else ()))]
        extrapolation = {a: point.value(a) / top for a, top in zip(axes, tops)}
        source = trend.labels[int(np.argmax(trend.sizes))] if trend.labels else ""
    else:
        exponent, exp_ci, excluded = None, None, tuple((f.rung, f.error or "not usable") for f in fits.rungs
                                                       if f.optimum is None or not f.optimum.usable)
        if usable:
            o = usable[-1]
            value = float(o.value(knob))
            ci80, ci95 = o.conf_int(0.20)[knob], o.conf_int(0.05)[knob]
            n_rungs, method = 1, "largest_rung"
        else:
            o = fits.optima[-1]
            value, ci80, ci95, n_rungs, method = float(o.best_setting[knob]), box, box, 0, "largest_rung"
        k80 = k95 = "rung"
        axes = fits.axes.get(knob) or (getattr(getattr(experiment, "fit", None), "size", "params_active"),)
        extrapolation = {a: point.value(a) / rung_point(o).value(a) for a in axes}
        source = o.rung
    curv = loss_curvature(usable, knob)
    band = p80 = p95 = None
    if curv is not None and curv > 0:
        def pen(x: float) -> float:
            return curv * (u(x) - u(value)) ** 2 if (x > 0 or not log) else math.inf
        p80 = ConfidenceInterval(*sorted((pen(ci80.low), pen(ci80.high))))
        p95 = ConfidenceInterval(*sorted((pen(ci95.low), pen(ci95.high))))
        if law_at_target is not None:
            half = math.sqrt(BAND_REL * law_at_target / curv)
            lo, hi = u(value) - half, u(value) + half
            band = ConfidenceInterval(math.exp(lo), math.exp(hi)) if log else ConfidenceInterval(lo, hi)
    flat = None
    if (trend is not None and experiment.target is not None and experiment.target.config.parametrization == "mup"
            and knob in MUP_FLAT_KNOBS):
        flat = _flatness(trend)
    return KnobPlan(name=knob, value=float(value), log=log, ci80=ci80, ci95=ci95, kind80=k80, kind95=k95,
                    method=method, exponent=exponent, exponent_ci95=exp_ci, curvature=curv, band=band,
                    band_rel=BAND_REL, penalty80=p80, penalty95=p95, n_rungs=n_rungs, excluded=tuple(excluded),
                    flatness=flat, box=box, axes=tuple(axes), extrapolation=extrapolation, source_rung=source)


def _categorical_plan(fits: Fits, knob: str) -> CategoricalPlan:
    per = []
    for o in fits.optima:
        c = o.categorical[knob]
        others = [g for lv, g in c.gap_by_level.items() if lv != c.best]
        per.append(RungWinner(rung=o.rung, params_active=o.params_active, winner=c.best,
                              margin=min(others) if others else None,
                              gap_by_level={str(lv): float(g) for lv, g in c.gap_by_level.items()}))
    value = per[-1].winner
    agree = sum(1 for r in per if r.winner == value) / len(per)
    wins = ", ".join(f"{r.rung}: {r.winner!r}" + ("" if r.margin is None else f" by {r.margin:.3g} nats") for r in per)
    statement = (f"{value!r} won on the largest rung and on {agree:.0%} of the rungs ({wins})")
    return CategoricalPlan(name=knob, value=value, per_rung=tuple(per), agreement=agree,
                           margin_largest=per[-1].margin, statement=statement)


def _loss_prediction(law: LossLawFit | None, target: TargetInfo, n_rungs: int,
                     error: str = "") -> LossPrediction | None:
    if law is None or error:   # no law, or one that must not be extrapolated (Fits.loss_error says why)
        return None
    tok = target.tokens if law.form == "ND" else None
    value = float(law.predict(target.params_active, tok))
    ci80 = ci95 = None
    if law.boot.size:
        with np.errstate(over="ignore", invalid="ignore"):   # runaway bootstrap refits give inf, dropped below
            b = law.boot_table()
            preds = b["E"] + b["A"] * target.params_active ** -b["alpha"]
            if law.form == "ND":
                preds = preds + b["B"] * target.tokens ** -b["beta"]
        preds = preds[np.isfinite(preds)]
        if preds.size >= 2:
            lo80, hi80, lo95, hi95 = np.quantile(preds, [0.10, 0.90, 0.025, 0.975])
            ci80 = ConfidenceInterval(float(min(lo80, value)), float(max(hi80, value)))
            ci95 = ConfidenceInterval(float(min(lo95, value)), float(max(hi95, value)))
    return LossPrediction(form=law.form, value=value, ci80=ci80, ci95=ci95, params=dict(law.params),
                          n_rungs=n_rungs, converged=law.converged)


def price_search(experiment: Experiment, fits: Fits, target: TargetInfo,
                 ledger: LedgerSummary) -> tuple[Any, str, str]:
    """(``fits.search_value.SearchValue``, the baseline in words, a note): the hand-set config
    (``[baseline]``, else the box centres) against the plan, in compute of the target run."""
    from fits.search_value import search_value
    from fits.seed_noise import rung_level, seed_noise
    from proxy.sweep.baseline import model_sizes, setting

    spec = getattr(experiment, "baseline", None)
    box = tuple(k for k in experiment.search.box if k.name != K.MIX_KNOB)
    words = (spec.describe(box) if spec is not None else
             "the centre of the human's box for every knob (no [baseline] table)")
    if ledger.fraction_of_target is None:
        return None, words, "search value not priced: the target's FLOPs are unknown"
    if ledger.fraction_of_target >= 1.0:
        return None, words, (f"search value not priced: the sweep cost {ledger.fraction_of_target:.0%} of the target "
                             "run, more than the run itself; under one fixed budget it cannot pay")
    if experiment.target is not None:
        sizes = model_sizes(experiment.target.config, experiment.target.tokens)
    else:
        sizes = {"params_active": target.params_active, "params_total": target.params_total, "tokens": target.tokens}
    try:
        at_target = setting(spec, box, experiment.data.domains, sizes)
        usable = list(fits.usable)
        base = {r: [o for o in obs if o.extra.get("baseline")] for r, obs in fits.observations.items()}
        base = {r: v for r, v in base.items() if v}
        levels = [lv for lv in (rung_level(f.rung, list(fits.observations.get(f.rung, ()))) for f in fits.rungs)
                  if lv is not None]
        noise = seed_noise(levels)
        with np.errstate(over="ignore", invalid="ignore"):   # heavy-tailed draws may overflow: infinite gaps
            value = search_value(usable, base, dict(fits.trends), target_point(target), at_target,
                                 fraction=float(ledger.fraction_of_target),
                                 noise_sd=None if noise is None else noise[0], seed=0,
                                 rung_losses=replicated_levels(fits.observations))
    except (ValueError, ArithmeticError) as exc:
        return None, words, f"search value not priced: {exc}"
    return value, words, ""


def _compute_plan(fits: Fits, target: TargetInfo) -> ComputeOptimalPlan | None:
    co = fits.compute_optimal
    if co is None:
        return None
    p95, p80 = co.predict(target.flops, 0.05), co.predict(target.flops, 0.20)
    ratio = target.params_active / p95.n_opt.estimate
    inside = p95.n_opt.interval.contains(target.params_active)
    statement = (f"at the target's {target.flops:.3g} FLOPs the rungs' isoFLOP curves put the compute-optimal size "
                 f"at {p95.n_opt.estimate:.3g} parameters (95% [{p95.n_opt.interval.low:.3g}, "
                 f"{p95.n_opt.interval.high:.3g}]) and {p95.d_opt.estimate:.3g} tokens; the target's "
                 f"{target.params_active:.3g} is {ratio:.2g}x that, "
                 + ("inside the interval" if inside else "outside the interval: the same compute would buy a lower "
                    "loss at another size"))
    return ComputeOptimalPlan(flops=target.flops, a=co.a, a_ci95=co.conf_int(0.05)["a"], n_opt=p95.n_opt.estimate,
                              n_opt_ci80=p80.n_opt.interval, n_opt_ci95=p95.n_opt.interval, d_opt=p95.d_opt.estimate,
                              d_opt_ci80=p80.d_opt.interval, d_opt_ci95=p95.d_opt.interval,
                              n_budgets=len(co.usable), target_n_ratio=ratio, statement=statement)


def ledger_summary(experiment: Experiment, storage: BaseStorage) -> LedgerSummary:
    """What the sweep cost, from the ledger of the command's open store."""
    from proxy.sweep.ledger import ledger

    led = ledger(storage, experiment)
    trials: dict[str, int] = {}
    for t in led.trials:
        if t.state == "COMPLETE":
            trials[t.rung] = trials.get(t.rung, 0) + 1
    return LedgerSummary(total_flops=led.total_flops, target_flops=led.target_flops,
                         fraction_of_target=led.fraction_of_target, budget_flops=led.budget_flops,
                         fraction_of_budget=led.fraction_of_budget, per_rung_flops=dict(led.per_rung),
                         trials_per_rung=trials, n_trials=sum(trials.values()))


def make_plan(experiment: Experiment, fits: Fits, ledger: LedgerSummary, command: str = "") -> Plan:
    """The plan for ``experiment.target`` from ``fits`` (see the module docstring)."""
    target = target_info(experiment)
    if not fits.optima:
        raise ValueError("no rung has an optimum (every trial diverged or no trials): nothing to plan from")
    notes = list(fits.notes)
    n_used = len(fits.optima)
    loss = _loss_prediction(fits.loss_law, target, n_used, fits.loss_error)
    if loss is None:
        notes.append(f"no loss prediction: {fits.loss_error}")
    continuous = [k.name for k in experiment.search.box if not k.categorical and k.name != K.MIX_KNOB]
    knobs = tuple(_knob_plan(experiment, fits, k, target, None if loss is None else loss.value) for k in continuous)
    for name, err in fits.trend_errors.items():
        notes.append(f"{name}: no trend ({err}); the plan uses the largest rung's optimum")
    cats = tuple(_categorical_plan(fits, k.name) for k in experiment.search.box if k.categorical)
    if any(k.name == K.MIX_KNOB for k in experiment.search.box):
        notes.append("the data mix was searched; its per-rung optima are in fits.json, the plan keeps the "
                     "largest rung's best mix")
    params: dict[str, Any] = {k.name: (int(round(k.value)) if k.name in K.INT_KNOBS else k.value) for k in knobs}
    params |= {c.name: c.value for c in cats}
    largest = fits.optima[-1]
    best = dict(largest.best_setting)
    if any(k.name == K.MIX_KNOB for k in experiment.search.box):
        params[K.MIX_KNOB] = {key.split(".", 1)[1]: v for key, v in best.items() if key.startswith("mix_weight.")}
    fixed = {k: v for k, v in experiment.search.fixed.items() if k not in params}
    if experiment.target is None:
        # A target given by sizes has no model config: the plan is the settings themselves.
        config = {"model": None, "hparams": _jsonable(dict(fixed) | params), "tokens": int(target.tokens)}
        notes.append("the target is given by sizes, not a model config: the plan lists the settings, and "
                     "builds no model config")
    else:
        setup = K.setup_trial(experiment.target, {k: v for k, v in params.items() if k != K.MIX_KNOB},
                              fixed | ({K.MIX_KNOB: params[K.MIX_KNOB]} if K.MIX_KNOB in params else {}),
                              experiment.data)
        config = {"model": setup.config.to_dict(), "hparams": setup.hparams.to_dict(),
                  "tokens": int(experiment.target.tokens), "train_mix": dict(setup.train_mix)}
    adjustments: list[BoxAdjustment] = []
    for f in fits.rungs:
        rec = fits.records.get(f.rung)
        if rec is not None:
            adjustments += [a for a in rec.adjustments if a.reportable]
    for a in adjustments:
        if a.action != "recentred":   # re-centring is listed in box_adjustments; the rest also as notes
            notes.append(f"{a.rung}/{a.knob}: {a.reason}")
    value, baseline_words, note = price_search(experiment, fits, target, ledger)
    if note:
        notes.append(note)
    return Plan(compute_optimal=_compute_plan(fits, target), search_value=value, baseline=baseline_words,
                experiment=experiment.name, target=target,
                largest_rung=largest.rung,
                largest_params_active=largest.params_active,
                extrapolation_factor=target.params_active / largest.params_active, config=_jsonable(config),
                knobs=knobs, categorical=cats, loss=loss, ledger=ledger,
                provenance=provenance_for(experiment, command), box_adjustments=tuple(adjustments), notes=tuple(notes))


def plan_budget_split(experiment: Experiment, fits: Fits, plan: Any, grid: Any = None) -> Any:
    """``fits.budget_split.budget_split`` for a made plan: what the search would be worth with n
    trials per rung (``ladder plan --budget-split``). The sampler's trials on a rung are its
    complete trials that are neither the baseline nor a replicate seed. Raises ValueError when
    the plan has no priced search value (``plan.notes`` says why)."""
    from fits.budget_split import DEFAULT_GRID, budget_split

    if plan.search_value is None:
        why = next((n for n in plan.notes if "search value" in n), "the search value was not priced")
        raise ValueError(f"no budget split: {why}")
    ledger = plan.ledger
    counts = {r: float(n) for r, n in ledger.trials_per_rung.items() if n > 0}
    sampled = {}
    for rung in counts:
        obs = fits.observations.get(rung, ())
        own = sum(1 for o in obs if not o.extra.get("baseline") and "replicate_of" not in o.extra)
        sampled[rung] = float(min(max(own, 1), counts[rung]))
    flops = {r: float(ledger.per_rung_flops.get(r, 0.0)) for r in counts}
    return budget_split(plan.search_value, dict(fits.trends), target_point(target_info(experiment)),
                        sampled_trials=sampled, rung_trials=counts, rung_flops=flops,
                        grid=DEFAULT_GRID if grid is None else grid)
