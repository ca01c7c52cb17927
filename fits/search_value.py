"""Did the hyperparameter search pay? The tuned config's worth in compute against a hand-set one.

The question: with one fixed compute budget, does spending a fraction ``f`` of the target run's
compute on the ladder's search pay, against the settings an engineer would pick by hand (the
"baseline")? Pure maths (numpy, scipy) over the fits' own objects.

API
---
``search_value(optima, baseline, trends, target, baseline_at_target, *, fraction, rung_flops=None,
noise_sd=None, method="auto", law=None, n_draws=4000, law_bootstrap=200, law_boot_starts=1,
law_starts=16, size_axis="params_active", seed=0) -> SearchValue``

* ``optima``: the usable ``fits.optimum.RungOptimum`` of the ladder, ascending in active size;
* ``baseline``: rung label -> the baseline's ``fits.observation.Observation`` trials on that rung
  (one setting per rung; several seeds or several trials of it are averaged);
* ``trends``: knob -> ``fits.power_law.TrendFit`` of its optimum across the rungs;
* ``target``: the target as a ``fits.axes.SizePoint`` (its ``flops`` is the target run's
  training compute, 6 N_active D when not given);
* ``baseline_at_target``: knob -> the baseline's setting at the target (natural units), a
  mapping or a function of the knob name;
* ``fraction``: the sweep's cost as a fraction f of the target run's compute, 0 <= f < 1;
* ``rung_flops``: each rung's training FLOPs (rung label -> FLOPs, or a sequence aligned with
  ``optima``; None: 6 N_active D);
* ``noise_sd``: the measured seed-to-seed sd of one trial's loss (``fits.seed_noise``), or None;
* ``law``: a ``fits.loss_law.LossLawFit`` already fitted on (rung FLOPs, rung minimum loss);
  None fits it here (``law_bootstrap`` rows, ``law_starts`` / ``law_boot_starts`` as in
  ``fits.loss_law.fit_loss_law_n``).

The parts are public too: ``rung_gaps``, ``curvature_gap``, ``gap_trend``, ``judge``, and
``fit_compute_law`` and ``compute_multiplier`` (step 3, in ``fits.compute_law``). ``SearchValue.to_dict()`` is JSON-safe (no NaN, no inf) and
``SearchValue.from_dict`` inverts it (without the draws).

Method and assumptions
----------------------
1. Per-rung gap (``rung_gaps``). On a rung with a usable optimum and a measured baseline:
   gap = Lbar_b - L*, with Lbar_b the baseline's loss averaged over its seeds (an Observation
   carrying ``seed_loss.<seed>`` extras counts each seed, else it is one seed) and L* the
   rung's fitted minimum (``RungOptimum.fitted_min_loss``). Its variance is
   var(Lbar_b) + var(L*):
   * var(Lbar_b) = noise_sd^2 / seeds when ``noise_sd`` is given (basis "noise_sd"); else the
     baseline seeds' own sample variance / seeds when it has >= 2 seeds ("seeds"); else an upper
     bound of the surface's residual scale, n_fitted var(L*), over the seeds ("surface_bound":
     at any point the fitted value of a weighted least-squares fit with an intercept and
     weights <= 1 has variance >= scale / n, so n var(L*) >= scale). The baseline usually shares
     the sweep's seed, so this counts as noise what common random numbers cancel: conservative.
   * var(L*) by the delta method on the vertex value: by the envelope theorem
     dL*/dbeta = x(z*), the design row at the vertex, so var(L*) = x(z*)' Cov(beta) x(z*) with
     ``surface.cov`` (floored at noise_sd^2 when the rung was fitted with it).
   The surface-predicted gap, L(z_b) - L*, is the second figure, with variance
   (x(z_b) - x(z*))' Cov (x(z_b) - x(z*)); it is None when the baseline's categorical levels
   differ from the rung's best (the surface was fitted at those levels only).
2. Gap at the target, two ways.
   (a) ``curvature_gap`` (separable quadratic, as the plan's penalties in
   ``transfer.extrapolate``): dL = sum_k c_k (u_b,k - u*_k)^2 over continuous knobs with a
   trend, u = ln(knob) for log knobs (else the knob itself). c_k = 1/2 H_jj / h_j^2 (nats per
   u^2) averaged over the two largest rungs, as ``transfer.extrapolate.loss_curvature``; cross
   terms are neglected. Draws: u*_k = mu + s T_df, T Student's t on the trend's df, mu the
   trend's log prediction and s chosen so that the draws' 95% interval is the trend's reported
   (widest) 95% interval at the target (``TrendFit.interval_at``): the planned value and its
   interval are used as they are (the log draw is exponentiated for a knob that is not log).
   c_k ~ Normal(cbar, sd^2) clipped at 0, with
   sd^2 = 3/4 (c_1 - c_2)^2 + (s_1^2 + s_2^2) / 4: the rung-to-rung spread as the prediction
   variance of a new rung from two, sigma^2 (1 + 1/2) with sigma^2 = (c_1 - c_2)^2 / 2, plus
   the variance of the mean of the rungs' own estimates (s_i from ``surface.cov`` of q_jj);
   with one rung, sd = s_1. Knobs are independent. Each draw is the gap between the two runs
   that would be made, c [(u_b - u*)^2 - (mu - u*)^2]: the baseline's excess over the true
   optimum u* minus the tuned config's (it runs at the planned mu, not at u*). Its mean over u*
   is the plug-in sum cbar_k (u_b,k - mu_k)^2, the point estimate; it is linear in u*, so near a
   baseline close to the plan the interval reaches below 0 (the baseline may be the nearer one).
   (b) ``gap_trend``: the measured per-rung gaps against rung size (``size_axis``). When every
   gap is positive and at least twice its standard error, a power law
   ln gap = a + b (ln N - mean) by ``fits.power_law.fit_trend`` (value_se = se / gap, the
   delta method; DerSimonian-Laird scatter and modified Knapp-Hartung t(n - 2) intervals);
   otherwise (a gap near or below 0 has no log) the same meta-regression linear in ln N,
   gap = a + b (ln N - mean). The prediction interval at the target includes the rung-to-rung
   scatter; draws are t(n - 2) with that interval's scale. At least 3 rungs with a gap.
   The result uses (a) by default ("auto"): it carries the planned optimum at the target and
   the basin's measured curvature directly, while (b) extrapolates a handful of noisy gaps;
   (b) is the cross-check, and ``z_difference`` = (a - b) / sqrt(sd_a^2 + sd_b^2) (sd: half
   the 16-84% range of each one's draws). Without a trended continuous knob, (b) is used.
3. Compute multiplier (``fit_compute_law``, ``compute_multiplier``). L(C) = E + A C^-alpha is
   fitted on the rungs' minimum losses (fitted minimum, else best loss) against their training
   FLOPs by ``fits.loss_law.fit_loss_law_n`` with C in place of N. Model: the baseline at
   compute C performs as the tuned config at C / m, a constant compute multiplier, so with the
   gap dL at the target compute C_t: A (C_t / m)^-alpha = A C_t^-alpha + dL, i.e.
   m = (1 + dL / (A C_t^-alpha))^(1/alpha) (for small dL, ln m ~ dL / |dL/d ln C|). dL = 0
   gives m = 1; a negative dL gives m < 1 (the baseline was better: honest, kept); a negative
   dL beyond the whole reducible loss A C_t^-alpha gives m = 0; m is capped at ``M_MAX``.
   Draws: each gap draw is paired with a bootstrap row (E, A, alpha) of the law drawn at
   random; rows with a non-finite parameter or alpha <= 0 are dropped and counted. The
   estimate is the plug-in (the law's parameters, the point gap); the 80% and 95% intervals
   are percentiles of the draws, widened to hold the estimate.
4. Verdict (``judge``). The tuned run gets (1 - f) of the budget, so the search pays when
   m (1 - f) > 1: break-even m = 1 / (1 - f); net effect m (1 - f) - 1 (a fraction of the
   target run). "PASS" when the 95% lower bound of m clears break-even, "WARN" when only the
   estimate does, "FAIL" otherwise. A compute law with ``LossLawFit.problems`` caps a PASS at
   WARN (it must not be extrapolated), and so does a curvature gap whose baseline lies further
   from the plan than the two largest rungs measured their basins (``KnobGap.reach``: the
   largest distance from a rung's vertex to an end of its box; beyond it the quadratic is an
   extrapolation, and real curves rise slower than a quadratic below the optimum and end in
   divergence above it).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

import numpy as np
from scipy import stats

from fits.axes import SizePoint, check_axis, check_spread
from fits.compute_law import (ComputeLaw, _check_optima, _finite, _law_rows, _rung_sizes, compute_multiplier,
                              fit_compute_law)
from fits.intervals import ConfidenceInterval, percentile_interval
from fits.loss_law import LossLawFit
from fits.observation import Observation
from fits.optimum import RungOptimum
from fits.power_law import TrendFit, fit_trend
from fits.quadratic import design_matrix

METHODS = ("auto", "curvature", "gap_trend")
STATUSES = ("PASS", "WARN", "FAIL")
POWER_LAW_MIN_Z = 2.0    # the gap trend is a power law when every gap >= this many standard errors


# ---------------------------------------------------------------------------------------------
# Small helpers


def _ci(d: Mapping[str, Any] | None) -> ConfidenceInterval | None:
    return None if d is None else ConfidenceInterval(float(d["low"]), float(d["high"]))


def _cid(ci: ConfidenceInterval | None) -> dict | None:
    return None if ci is None else ci.to_dict()


def _opt(x: float | None) -> float | None:
    """A JSON-safe float: None for None or a non-finite value."""
    return None if x is None or not math.isfinite(float(x)) else float(x)


def _hull(ci: ConfidenceInterval, value: float) -> ConfidenceInterval:
    return ConfidenceInterval(min(ci.low, value), max(ci.high, value))


def _robust_sd(draws: np.ndarray) -> float:
    """Half the 16-84% range: the sd of a normal, robust to the heavy tails of t draws."""
    lo, hi = np.quantile(draws, [0.15865525, 0.84134475])
    return float(hi - lo) / 2.0


def _draw_intervals(draws: np.ndarray, estimate: float) -> tuple[ConfidenceInterval, ConfidenceInterval, float]:
    return (_hull(percentile_interval(draws, 0.20), estimate), _hull(percentile_interval(draws, 0.05), estimate),
            _robust_sd(draws))


def _check_fraction(fraction: Any) -> float:
    f = _finite("fraction", fraction)
    if not 0.0 <= f < 1.0:
        raise ValueError(f"fraction (the sweep's share of the target run's compute) must lie in [0, 1), got {f!r}")
    return f


# ---------------------------------------------------------------------------------------------
# 1. Per-rung gaps


@dataclass(frozen=True)
class RungGap:
    """The baseline's measured gap to a rung's fitted minimum (nats), and the surface's figure.

    ``gap`` = baseline loss (mean over ``seeds``) - ``fitted_min_loss``; ``gap_se`` combines the
    baseline's noise (``noise_basis``: "noise_sd", "seeds" or "surface_bound"; ``noise_se``)
    and the fitted minimum's delta-method standard error (``min_se``). ``predicted_gap``: the
    surface at the baseline's setting minus the minimum (None when the baseline's categorical
    levels are not the rung's best); ``baseline_in_box``: the setting lies in the rung's box."""

    rung: str
    params_active: float
    size: float
    baseline_setting: Mapping[str, float | int | str]
    baseline_loss: float
    seeds: int
    fitted_min_loss: float
    gap: float
    gap_se: float
    noise_se: float
    noise_basis: str
    min_se: float
    predicted_gap: float | None
    predicted_gap_se: float | None
    baseline_in_box: bool
    n_diverged: int = 0

    def to_dict(self) -> dict:
        return {"rung": self.rung, "params_active": self.params_active, "size": self.size,
                "baseline_setting": dict(self.baseline_setting), "baseline_loss": self.baseline_loss,
                "seeds": self.seeds, "fitted_min_loss": self.fitted_min_loss, "gap": self.gap,
                "gap_se": self.gap_se, "noise_se": self.noise_se, "noise_basis": self.noise_basis,
                "min_se": self.min_se, "predicted_gap": _opt(self.predicted_gap),
                "predicted_gap_se": _opt(self.predicted_gap_se), "baseline_in_box": self.baseline_in_box,
                "n_diverged": self.n_diverged}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "RungGap":
        return cls(rung=str(d["rung"]), params_active=float(d["params_active"]), size=float(d["size"]),
                   baseline_setting=dict(d["baseline_setting"]), baseline_loss=float(d["baseline_loss"]),
                   seeds=int(d["seeds"]), fitted_min_loss=float(d["fitted_min_loss"]), gap=float(d["gap"]),
                   gap_se=float(d["gap_se"]), noise_se=float(d["noise_se"]), noise_basis=str(d["noise_basis"]),
                   min_se=float(d["min_se"]),
                   predicted_gap=None if d.get("predicted_gap") is None else float(d["predicted_gap"]),
                   predicted_gap_se=None if d.get("predicted_gap_se") is None else float(d["predicted_gap_se"]),
                   baseline_in_box=bool(d["baseline_in_box"]), n_diverged=int(d.get("n_diverged", 0)))


def _seed_values(o: Observation) -> list[float]:
    per_seed = [float(v) for k, v in o.extra.items() if k.startswith("seed_loss.")]
    return per_seed or [float(o.loss)]


def _z_of(opt: RungOptimum, setting: Mapping[str, Any]) -> np.ndarray:
    specs = {k.name: k for k in opt.knobs}
    return np.asarray([(float(specs[n].transform(float(setting[n]))) - c) / h
                       for n, c, h in zip(opt.continuous, opt.center, opt.half_width)])


def _rung_gap(opt: RungOptimum, obs: Sequence[Observation], noise_sd: float | None,
              size: float) -> tuple[RungGap | None, str]:
    label = opt.rung
    for i, o in enumerate(obs):
        if not isinstance(o, Observation):
            raise ValueError(f"baseline[{label!r}][{i}] must be an Observation, got {type(o).__name__}")
        if not math.isclose(o.params_active, opt.params_active, rel_tol=1e-6):
            raise ValueError(f"baseline[{label!r}][{i}] has params_active {o.params_active:g}, the rung has "
                             f"{opt.params_active:g}: a baseline trial of another rung")
    if opt.surface is None or opt.fitted_min_loss is None:
        return None, f"rung {label}: no fitted surface, so no minimum to measure the baseline against"
    ok = [o for o in obs if o.usable]
    n_div = len(obs) - len(ok)
    if not ok:
        return None, (f"rung {label}: all {len(obs)} baseline trial(s) diverged; the gap is not measured "
                      "(the baseline is far worse there)")
    first = ok[0]
    for i, o in enumerate(ok):
        for k in opt.knobs:
            if k.name not in o.knobs:
                raise ValueError(f"baseline[{label!r}] trial {i} has no value for knob {k.name!r}")
            a, b = o.knobs[k.name], first.knobs[k.name]
            same = (math.isclose(float(a), float(b), rel_tol=1e-9) if not k.categorical else a == b)
            if not same:
                raise ValueError(f"baseline[{label!r}] holds two settings of {k.name!r} ({b!r}, {a!r}): "
                                 "one baseline setting per rung")
    values = [v for o in ok for v in _seed_values(o)]
    seeds = len(values)
    loss = float(np.mean(values))
    surf = opt.surface
    cov = np.asarray(surf.cov, dtype=float)
    zs = surf.vertex()
    row_s = design_matrix(zs[None, :])[0]
    var_min = max(float(row_s @ cov @ row_s), 0.0)
    if noise_sd is not None:
        var_noise, basis = noise_sd ** 2 / seeds, "noise_sd"
    elif seeds >= 2:
        var_noise, basis = float(np.var(values, ddof=1)) / seeds, "seeds"
    else:
        var_noise, basis = max(opt.n_fitted, surf.n) * var_min / seeds, "surface_bound"
    gap = loss - float(opt.fitted_min_loss)
    setting = {k.name: first.knobs[k.name] for k in opt.knobs}
    zb = _z_of(opt, setting)
    in_box = bool(np.all(np.abs(zb) <= 1.0 + 1e-12))
    same_levels = all(first.knobs[k.name] == opt.categorical[k.name].best for k in opt.knobs if k.categorical)
    pred = pred_se = None
    if same_levels:
        pred = float(surf.predict(zb[None, :])[0]) - float(opt.fitted_min_loss)
        g = design_matrix(zb[None, :])[0] - row_s
        pred_se = math.sqrt(max(float(g @ cov @ g), 0.0))
    note = "" if same_levels else (f"rung {label}: the baseline's categorical levels differ from the rung's best; "
                                   "its measured gap includes them, the surface's figure is left out")
    return RungGap(rung=label, params_active=float(opt.params_active), size=float(size),
                   baseline_setting={k: (v if isinstance(v, str) else (int(v) if isinstance(v, (int, np.integer))
                                                                        else float(v))) for k, v in setting.items()},
                   baseline_loss=loss, seeds=seeds, fitted_min_loss=float(opt.fitted_min_loss), gap=float(gap),
                   gap_se=math.sqrt(var_noise + var_min), noise_se=math.sqrt(var_noise), noise_basis=basis,
                   min_se=math.sqrt(var_min), predicted_gap=pred, predicted_gap_se=pred_se, baseline_in_box=in_box,
                   n_diverged=n_div), note


def rung_gaps(optima: Sequence[RungOptimum], baseline: Mapping[str, Sequence[Observation]], *,
              noise_sd: float | None = None, rung_flops: Mapping[str, float] | Sequence[float] | None = None,
              size_axis: str = "params_active") -> tuple[tuple[RungGap, ...], tuple[str, ...]]:
    """(per-rung gaps in the optima's order, notes on the rungs left out). See the module docstring,
    step 1. ``size_axis`` (``fits.axes``) sets ``RungGap.size``, the gap trend's regressor."""
    opts = _check_optima(optima)
    if not isinstance(baseline, Mapping):
        raise ValueError(f"baseline must map a rung label to its baseline Observations, got {type(baseline).__name__}")
    if noise_sd is not None:
        noise_sd = _finite("noise_sd", noise_sd)
        if noise_sd < 0:
            raise ValueError(f"noise_sd must be >= 0 or None, got {noise_sd!r}")
    points = _rung_sizes(opts, rung_flops, size_axis)
    out: list[RungGap] = []
    notes: list[str] = []
    labels = {o.rung for o in opts}
    for extra in sorted(set(baseline) - labels):
        notes.append(f"baseline trials of rung {extra!r} have no usable optimum to compare with; left out")
    for o, pt in zip(opts, points):
        if not o.usable:
            notes.append(f"rung {o.rung}: its optimum is not usable ({', '.join(o.flag_codes)}); left out")
            continue
        obs = baseline.get(o.rung)
        if obs is None or len(obs) == 0:
            notes.append(f"rung {o.rung}: no baseline trial")
            continue
        g, note = _rung_gap(o, list(obs), noise_sd, pt.value(size_axis))
        if note:
            notes.append(note)
        if g is not None:
            out.append(g)
            if g.n_diverged:
                notes.append(f"rung {o.rung}: {g.n_diverged} of {g.n_diverged + g.seeds} baseline trial(s) "
                             "diverged and are left out of its mean")
    return tuple(out), tuple(notes)


# ---------------------------------------------------------------------------------------------
# 2a. Gap at the target from the curvature


@dataclass(frozen=True)
class KnobGap:
    """One knob's share of the curvature gap at the target. ``u_*`` are in the knob's transformed
    coordinate (ln for a log knob); ``u_opt_scale`` and ``df`` define the t draws of the optimum;
    ``curvature`` (nats per u^2) is the mean over ``curvature_rungs`` with draw sd
    ``curvature_sd``; ``gap`` the plug-in curvature (u_baseline - u_opt)^2."""

    knob: str
    log: bool
    baseline: float
    planned: float
    u_baseline: float
    u_opt: float
    u_opt_scale: float
    df: int
    interval_kind: str
    curvature: float
    curvature_sd: float
    curvature_rungs: tuple[str, ...]
    gap: float
    reach: float = math.inf   # how far from their vertex the curvature rungs measured the basin (u units)

    @property
    def beyond_basin(self) -> bool:
        """The baseline is further from the plan than the rungs measured their basins: the
        quadratic's gap is an extrapolation (real curves rise slower on the low side, and end in
        divergence on the high side)."""
        return bool(abs(self.u_baseline - self.u_opt) > self.reach)

    def to_dict(self) -> dict:
        return {"knob": self.knob, "log": self.log, "baseline": self.baseline, "planned": self.planned,
                "u_baseline": self.u_baseline, "u_opt": self.u_opt, "u_opt_scale": self.u_opt_scale, "df": self.df,
                "interval_kind": self.interval_kind, "curvature": self.curvature, "curvature_sd": self.curvature_sd,
                "curvature_rungs": list(self.curvature_rungs), "gap": self.gap,
                "reach": self.reach if math.isfinite(self.reach) else None, "beyond_basin": self.beyond_basin}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "KnobGap":
        return cls(knob=str(d["knob"]), log=bool(d["log"]), baseline=float(d["baseline"]),
                   planned=float(d["planned"]), u_baseline=float(d["u_baseline"]), u_opt=float(d["u_opt"]),
                   u_opt_scale=float(d["u_opt_scale"]), df=int(d["df"]), interval_kind=str(d["interval_kind"]),
                   curvature=float(d["curvature"]), curvature_sd=float(d["curvature_sd"]),
                   curvature_rungs=tuple(d["curvature_rungs"]), gap=float(d["gap"]),
                   reach=math.inf if d.get("reach") is None else float(d["reach"]))


@dataclass(frozen=True)
class TargetGap:
    """The gap (nats) at the target by one method: ``estimate`` (plug-in), percentile ``ci80``
    and ``ci95`` of the draws (holding the estimate), ``sd`` (half their 16-84% range).
    ``method`` "curvature" fills ``knobs``; "gap_trend" fills ``form`` ("power_law" or
    "linear_log"), ``form_reason``, ``coef`` (a, b) and ``n_rungs``. ``draws`` is not serialised."""

    method: str
    estimate: float
    ci80: ConfidenceInterval
    ci95: ConfidenceInterval
    sd: float
    knobs: tuple[KnobGap, ...] = ()
    form: str = ""
    form_reason: str = ""
    coef: tuple[float, ...] = ()
    n_rungs: int = 0
    n_draws: int = 0
    draws: np.ndarray = field(default_factory=lambda: np.zeros(0), compare=False, repr=False)

    def to_dict(self) -> dict:
        return {"method": self.method, "estimate": self.estimate, "ci80": _cid(self.ci80), "ci95": _cid(self.ci95),
                "sd": self.sd, "knobs": [k.to_dict() for k in self.knobs], "form": self.form,
                "form_reason": self.form_reason, "coef": list(self.coef), "n_rungs": self.n_rungs,
                "n_draws": self.n_draws}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "TargetGap":
        return cls(method=str(d["method"]), estimate=float(d["estimate"]), ci80=_ci(d["ci80"]), ci95=_ci(d["ci95"]),
                   sd=float(d["sd"]), knobs=tuple(KnobGap.from_dict(k) for k in d.get("knobs", ())),
                   form=str(d.get("form", "")), form_reason=str(d.get("form_reason", "")),
                   coef=tuple(float(c) for c in d.get("coef", ())), n_rungs=int(d.get("n_rungs", 0)),
                   n_draws=int(d.get("n_draws", 0)))


def _baseline_value(baseline_at_target: Mapping[str, float] | Callable[[str], float], knob: str) -> float:
    if isinstance(baseline_at_target, Mapping):
        if knob not in baseline_at_target:
            raise ValueError(f"baseline_at_target has no value for knob {knob!r}")
        v = baseline_at_target[knob]
    elif callable(baseline_at_target):
        v = baseline_at_target(knob)
    else:
        raise ValueError("baseline_at_target must be a mapping knob -> value or a function of the knob name, "
                         f"got {type(baseline_at_target).__name__}")
    return _finite(f"baseline_at_target[{knob!r}]", v)


def _reach(opts: Sequence[RungOptimum], knob: str) -> float:
    """How far from its vertex each of the curvature rungs (``_curvatures``) measured its basin,
    the smaller of the two: the largest distance from the vertex to an end of the box the
    surface was fitted in (transformed coordinates)."""
    out = []
    for o in [o for o in opts if o.surface is not None and knob in o.continuous][-2:]:
        j = o.continuous.index(knob)
        lo, hi = o.center[j] - o.half_width[j], o.center[j] + o.half_width[j]
        out.append(float(max(abs(o.vertex[j] - lo), abs(hi - o.vertex[j]))))
    return min(out) if out else math.inf


def _curvatures(opts: Sequence[RungOptimum], knob: str) -> tuple[list[float], list[float], list[str]]:
    """Per rung (the two largest with a surface and the knob): q_jj / h_j^2 = 1/2 H_jj / h_j^2 and
    its standard error from ``surface.cov``."""
    cs, ses, labels = [], [], []
    for o in [o for o in opts if o.surface is not None and knob in o.continuous][-2:]:
        j, p = o.continuous.index(knob), len(o.continuous)
        h2 = o.half_width[j] ** 2
        k = 1 + p + j
        cs.append(float(o.surface.beta[k]) / h2)
        ses.append(math.sqrt(max(float(np.asarray(o.surface.cov)[k, k]), 0.0)) / h2)
        labels.append(o.rung)
    return cs, ses, labels


def curvature_gap(optima: Sequence[RungOptimum], trends: Mapping[str, TrendFit], target: SizePoint,
                  baseline_at_target: Mapping[str, float] | Callable[[str], float], *, n_draws: int = 4000,
                  seed: int = 0) -> tuple[TargetGap | None, tuple[str, ...]]:
    """The curvature gap at the target (module docstring, step 2a), or None when no continuous
    knob has both a trend and a positive curvature; with notes on the knobs left out."""
    opts = _check_optima(optima)
    if not isinstance(target, SizePoint):
        raise ValueError(f"target must be a fits.axes.SizePoint, got {type(target).__name__}")
    if not isinstance(trends, Mapping):
        raise ValueError(f"trends must map a knob name to its TrendFit, got {type(trends).__name__}")
    n_draws = _check_draws(n_draws)
    usable = [o for o in opts if o.usable]
    specs = {k.name: k for k in opts[-1].knobs}
    rng = np.random.default_rng(seed)
    notes: list[str] = []
    knobs: list[KnobGap] = []
    total = np.zeros(n_draws)
    for name in opts[-1].continuous:
        trend = trends.get(name)
        if trend is None:
            notes.append(f"{name}: no trend, so no planned optimum at the target; left out of the curvature gap")
            continue
        if not isinstance(trend, TrendFit):
            raise ValueError(f"trends[{name!r}] must be a TrendFit, got {type(trend).__name__}")
        cs, ses, labels = _curvatures(usable, name)
        if not cs or np.mean(cs) <= 0:
            notes.append(f"{name}: no positive curvature on the largest rungs; left out of the curvature gap")
            continue
        spec = specs[name]
        b = _baseline_value(baseline_at_target, name)
        if spec.log and b <= 0:
            raise ValueError(f"baseline_at_target[{name!r}] must be positive for a log knob, got {b!r}")
        iv = trend.interval_at(target, 0.05)
        df = max(int(trend.df), 1)
        mu = iv.log_estimate
        scale = (iv.log_interval.width / 2.0) / float(stats.t.ppf(0.975, df))
        log_draws = mu + scale * rng.standard_t(df, n_draws)
        u_draws = log_draws if spec.log else np.exp(log_draws)
        u_opt = mu if spec.log else math.exp(mu)
        u_b = math.log(b) if spec.log else b
        cbar = float(np.mean(cs))
        if len(cs) == 2:
            csd = math.sqrt(0.75 * (cs[0] - cs[1]) ** 2 + (ses[0] ** 2 + ses[1] ** 2) / 4.0)
        else:
            csd = ses[0]
        c_draws = np.clip(rng.normal(cbar, csd, n_draws), 0.0, None)
        # The gap between the two runs that would be made: the baseline's excess over the true
        # optimum u* minus the tuned config's (it runs at the planned u_opt, not at u*).
        total += c_draws * ((u_b - u_draws) ** 2 - (u_opt - u_draws) ** 2)
        knobs.append(KnobGap(knob=name, log=bool(spec.log), baseline=b, planned=math.exp(mu), u_baseline=u_b,
                             u_opt=float(u_opt), u_opt_scale=float(scale), df=df, interval_kind=iv.kind,
                             curvature=cbar, curvature_sd=csd, curvature_rungs=tuple(labels),
                             gap=cbar * (u_b - u_opt) ** 2, reach=_reach(usable, name)))
        if knobs[-1].beyond_basin:
            notes.append(f"{name}: the hand-set value is {abs(u_b - u_opt):.3g} from the plan in "
                         f"{'ln ' if spec.log else ''}{name}, beyond the {knobs[-1].reach:.3g} over which "
                         f"{' and '.join(labels)} measured the basin: the quadratic's gap is an extrapolation")
    cats = [k.name for k in opts[-1].knobs if k.categorical]
    if cats:
        notes.append(f"categorical knob(s) {', '.join(cats)}: the curvature gap covers continuous knobs only; a "
                     "baseline at another level adds a gap it does not see (the measured per-rung gaps include it)")
    if not knobs:
        return None, tuple(notes)
    est = float(sum(k.gap for k in knobs))
    ci80, ci95, sd = _draw_intervals(total, est)
    return TargetGap(method="curvature", estimate=est, ci80=ci80, ci95=ci95, sd=sd, knobs=tuple(knobs),
                     n_draws=int(total.size), draws=total), tuple(notes)


def _check_draws(n_draws: Any) -> int:
    if isinstance(n_draws, bool) or not isinstance(n_draws, (int, np.integer)) or n_draws < 100:
        raise ValueError(f"n_draws must be an integer >= 100, got {n_draws!r}")
    return int(n_draws)


# ---------------------------------------------------------------------------------------------
# 2b. Gap at the target from the trend of the measured gaps


def _linear_meta(x: np.ndarray, y: np.ndarray, se: np.ndarray, x0: float) -> tuple[np.ndarray, float, float, int]:
    """y = a + b x by the meta-regression of ``fits.power_law`` (DerSimonian-Laird tau^2, weights
    1 / (se^2 + tau^2), modified Knapp-Hartung scale q* = max(1, q)): (coef, prediction at x0,
    its prediction sd (mean variance + q* tau^2), df = n - 2)."""
    xm = np.column_stack([np.ones_like(x), x])
    n, k = xm.shape
    w0 = 1.0 / se ** 2
    xtwx = xm.T @ (xm * w0[:, None])
    beta0 = np.linalg.solve(xtwx, xm.T @ (w0 * y))
    q0 = float(np.sum(w0 * (y - xm @ beta0) ** 2))
    denom = float(w0.sum() - np.trace(np.linalg.solve(xtwx, xm.T @ (xm * (w0 ** 2)[:, None]))))
    tau2 = max(0.0, (q0 - (n - k)) / denom) if denom > 0 else 0.0
    w = 1.0 / (se ** 2 + tau2)
    xtwx = xm.T @ (xm * w[:, None])
    beta = np.linalg.solve(xtwx, xm.T @ (w * y))
    q = float(np.sum(w * (y - xm @ beta) ** 2)) / (n - k)
    qs = max(q, 1.0)
    cov = qs * np.linalg.inv(xtwx)
    row = np.asarray([1.0, x0])
    var = float(row @ cov @ row) + qs * tau2
    return beta, float(row @ beta), math.sqrt(max(var, 0.0)), n - k


def gap_trend(gaps: Sequence[RungGap], target: SizePoint, *, size_axis: str = "params_active", n_draws: int = 4000,
              seed: int = 0) -> tuple[TargetGap | None, str]:
    """The trend of the measured per-rung gaps extrapolated to the target (module docstring, step
    2b), or (None, why) with fewer than 3 rungs or sizes that do not spread."""
    if not isinstance(target, SizePoint):
        raise ValueError(f"target must be a fits.axes.SizePoint, got {type(target).__name__}")
    check_axis(size_axis)
    n_draws = _check_draws(n_draws)
    gs = list(gaps)
    for i, g in enumerate(gs):
        if not isinstance(g, RungGap):
            raise ValueError(f"gaps[{i}] must be a RungGap, got {type(g).__name__}")
    if len(gs) < 3:
        return None, f"{len(gs)} rung(s) with a measured gap; a trend of the gaps needs at least 3"
    sizes = np.asarray([g.size for g in gs])
    try:
        check_spread(size_axis, sizes)
    except ValueError as exc:
        return None, str(exc)
    y = np.asarray([g.gap for g in gs])
    se = np.asarray([max(g.gap_se, 1e-12) for g in gs])
    size0 = target.value(size_axis)
    rng = np.random.default_rng(seed + 1)
    if np.all(y > 0) and np.all(y >= POWER_LAW_MIN_Z * se):
        form = "power_law"
        reason = (f"every rung's gap is positive and at least {POWER_LAW_MIN_Z:g} standard errors from 0: "
                  "a power law ln gap = a + b (ln N - mean)")
        try:
            tr = fit_trend(sizes, y, value_se=se / y, n_bootstrap=0, axes=(size_axis,),
                           labels=[g.rung for g in gs])
        except ValueError as exc:
            return None, f"the gap trend: {exc}"
        pred = tr.log_intervals(size0, 0.05)["prediction"]
        mu = tr.predict_log(size0)
        df = max(int(tr.df), 1)
        scale = (pred.width / 2.0) / float(stats.t.ppf(0.975, df))
        with np.errstate(over="ignore"):   # a t(1) tail can overflow: such a draw is an infinite gap
            draws = np.exp(mu + scale * rng.standard_t(df, n_draws))
        est, coef = math.exp(mu), tuple(float(c) for c in tr.coef)
    else:
        form = "linear_log"
        small = [g.rung for g in gs if not (g.gap > 0 and g.gap >= POWER_LAW_MIN_Z * g.gap_se)]
        reason = (f"the gap of rung(s) {', '.join(small)} is below {POWER_LAW_MIN_Z:g} standard errors (or not "
                  "positive), so it has no trustworthy log: gap = a + b (ln N - mean), linear in log size")
        lx = np.log(sizes)
        xm = float(lx.mean())
        beta, est, sd, df = _linear_meta(lx - xm, y, se, math.log(size0) - xm)
        df = max(df, 1)
        draws = est + sd * rng.standard_t(df, n_draws)
        coef = (float(beta[0]), float(beta[1]))
    ci80, ci95, sd_d = _draw_intervals(draws, est)
    return TargetGap(method="gap_trend", estimate=float(est), ci80=ci80, ci95=ci95, sd=sd_d, form=form,
                     form_reason=reason, coef=coef, n_rungs=len(gs), n_draws=int(draws.size), draws=draws), ""


# ---------------------------------------------------------------------------------------------
# 3. The loss law in compute and the multiplier


# ---------------------------------------------------------------------------------------------
# 4. Verdict and the result


@dataclass(frozen=True)
class Verdict:
    """``status`` (PASS / WARN / FAIL), ``break_even`` = 1 / (1 - f), ``net`` = m (1 - f) - 1 with
    its intervals, and the ``statement``."""

    status: str
    break_even: float
    net: float
    net_ci80: ConfidenceInterval
    net_ci95: ConfidenceInterval
    statement: str


def _fmt_m(m: float) -> str:
    return f"{m:.3g}x"


def judge(fraction: float, m: float, m_ci95: ConfidenceInterval, m_ci80: ConfidenceInterval | None = None,
          problems: Sequence[str] = ()) -> Verdict:
    """The verdict on a multiplier (module docstring, step 4)."""
    f = _check_fraction(fraction)
    m = _finite("m", m)
    be = 1.0 / (1.0 - f)
    status = "PASS" if m_ci95.low > be else ("WARN" if m > be else "FAIL")
    capped = status == "PASS" and bool(problems)
    if capped:
        status = "WARN"
    m80 = m_ci80 or m_ci95
    net = m * (1 - f) - 1
    n80 = ConfidenceInterval(m80.low * (1 - f) - 1, m80.high * (1 - f) - 1)
    n95 = ConfidenceInterval(m_ci95.low * (1 - f) - 1, m_ci95.high * (1 - f) - 1)
    head = (f"The sweep cost {100 * f:.3g}% of the target run; the tuned config is worth {_fmt_m(m)} "
            f"[{_fmt_m(m_ci95.low)}, {_fmt_m(m_ci95.high)}] the target's compute against the hand-set one")
    if status == "PASS":
        tail = ": the search paid for itself."
    elif capped:
        tail = (f": the 95% interval clears the break-even of {_fmt_m(be)}, but it rests on what must not be "
                f"extrapolated ({'; '.join(problems)}), so the search only probably paid for itself.")
    elif status == "WARN":
        tail = (f": the estimate clears the break-even of {_fmt_m(be)}, but the 95% interval reaches below it: the "
                "search probably paid for itself, not surely.")
    elif m < 1.0:
        tail = (f": the hand-set config was as good as the tuned one or better, so the search did not pay "
                f"(break-even {_fmt_m(be)}).")
    else:
        tail = f": below the break-even of {_fmt_m(be)}, the search did not pay for itself at this budget."
    if problems and not capped:
        tail += f" It rests on what must not be extrapolated: {'; '.join(problems)}."
    return Verdict(status=status, break_even=be, net=net, net_ci80=n80, net_ci95=n95, statement=head + tail)


@dataclass(frozen=True)
class SearchValue:
    """Everything ``search_value`` found: the per-rung ``gaps``; the target gap by ``curvature``
    and by ``gap_trend`` (either None when not available; ``gap_trend_error`` says why) and
    which one is used (``method``, ``method_reason``), the used ``gap`` with ``gap_ci80/95``,
    ``z_difference`` between the two; the compute ``law``; the multiplier ``m`` with ``m_ci80``,
    ``m_ci95`` over ``n_draws`` draws; ``fraction`` f, ``break_even``, ``net`` = m (1 - f) - 1 with
    its intervals, ``status`` and ``statement``; ``notes`` on everything left out."""

    fraction: float
    target: Mapping[str, float]
    target_flops: float
    gaps: tuple[RungGap, ...]
    curvature: TargetGap | None
    gap_trend: TargetGap | None
    gap_trend_error: str
    method: str
    method_reason: str
    gap: float
    gap_ci80: ConfidenceInterval
    gap_ci95: ConfidenceInterval
    z_difference: float | None
    law: ComputeLaw
    m: float
    m_ci80: ConfidenceInterval
    m_ci95: ConfidenceInterval
    n_draws: int
    break_even: float
    net: float
    net_ci80: ConfidenceInterval
    net_ci95: ConfidenceInterval
    status: str
    statement: str
    noise_sd: float | None = None
    notes: tuple[str, ...] = ()
    m_draws: np.ndarray = field(default_factory=lambda: np.zeros(0), compare=False, repr=False)

    def to_dict(self) -> dict:
        return {"fraction": self.fraction, "target": dict(self.target), "target_flops": self.target_flops,
                "gaps": [g.to_dict() for g in self.gaps],
                "curvature": None if self.curvature is None else self.curvature.to_dict(),
                "gap_trend": None if self.gap_trend is None else self.gap_trend.to_dict(),
                "gap_trend_error": self.gap_trend_error, "method": self.method, "method_reason": self.method_reason,
                "gap": self.gap, "gap_ci80": _cid(self.gap_ci80), "gap_ci95": _cid(self.gap_ci95),
                "z_difference": _opt(self.z_difference), "law": self.law.to_dict(), "m": self.m,
                "m_ci80": _cid(self.m_ci80), "m_ci95": _cid(self.m_ci95), "n_draws": self.n_draws,
                "break_even": self.break_even, "net": self.net, "net_ci80": _cid(self.net_ci80),
                "net_ci95": _cid(self.net_ci95), "status": self.status, "statement": self.statement,
                "noise_sd": _opt(self.noise_sd), "notes": list(self.notes)}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "SearchValue":
        """The inverse of ``to_dict`` (the draws are not stored)."""
        return cls(fraction=float(d["fraction"]), target={k: float(v) for k, v in d["target"].items()},
                   target_flops=float(d["target_flops"]), gaps=tuple(RungGap.from_dict(g) for g in d["gaps"]),
                   curvature=None if d.get("curvature") is None else TargetGap.from_dict(d["curvature"]),
                   gap_trend=None if d.get("gap_trend") is None else TargetGap.from_dict(d["gap_trend"]),
                   gap_trend_error=str(d.get("gap_trend_error", "")), method=str(d["method"]),
                   method_reason=str(d["method_reason"]), gap=float(d["gap"]), gap_ci80=_ci(d["gap_ci80"]),
                   gap_ci95=_ci(d["gap_ci95"]),
                   z_difference=None if d.get("z_difference") is None else float(d["z_difference"]),
                   law=ComputeLaw.from_dict(d["law"]), m=float(d["m"]), m_ci80=_ci(d["m_ci80"]),
                   m_ci95=_ci(d["m_ci95"]), n_draws=int(d["n_draws"]), break_even=float(d["break_even"]),
                   net=float(d["net"]), net_ci80=_ci(d["net_ci80"]), net_ci95=_ci(d["net_ci95"]),
                   status=str(d["status"]), statement=str(d["statement"]),
                   noise_sd=None if d.get("noise_sd") is None else float(d["noise_sd"]),
                   notes=tuple(d.get("notes", ())))

    def summary(self) -> str:
        lines = [f"Search value [{self.status}]: {self.statement}",
                 f"  gap at the target ({self.method}): {self.gap:.4g} nats, 95% [{self.gap_ci95.low:.4g}, "
                 f"{self.gap_ci95.high:.4g}]; {self.method_reason}"]
        if self.curvature is not None and self.gap_trend is not None:
            z = "n/a" if self.z_difference is None else f"{self.z_difference:.2f}"
            lines.append(f"  curvature {self.curvature.estimate:.4g} vs gap trend ({self.gap_trend.form}) "
                         f"{self.gap_trend.estimate:.4g}: z = {z}")
        lines.append(f"  m = {self.m:.3g}, 80% [{self.m_ci80.low:.3g}, {self.m_ci80.high:.3g}], 95% "
                     f"[{self.m_ci95.low:.3g}, {self.m_ci95.high:.3g}]; break-even {self.break_even:.3g}; "
                     f"net {self.net:+.3g} of the target run")
        for g in self.gaps:
            pred = "n/a" if g.predicted_gap is None else f"{g.predicted_gap:.4g}"
            lines.append(f"  rung {g.rung}: gap {g.gap:.4g} +- {g.gap_se:.2g} ({g.seeds} seed(s), {g.noise_basis}); "
                         f"surface's {pred}")
        lines += [f"  note: {n}" for n in self.notes]
        return "\n".join(lines)


def search_value(optima: Sequence[RungOptimum], baseline: Mapping[str, Sequence[Observation]],
                 trends: Mapping[str, TrendFit], target: SizePoint,
                 baseline_at_target: Mapping[str, float] | Callable[[str], float], *, fraction: float,
                 rung_flops: Mapping[str, float] | Sequence[float] | None = None, noise_sd: float | None = None,
                 method: str = "auto", law: LossLawFit | None = None, rung_losses: Mapping[str, float] | None = None,
                 n_draws: int = 4000,
                 law_bootstrap: int = 200, law_boot_starts: int = 1, law_starts: int = 16,
                 size_axis: str = "params_active", seed: int = 0) -> SearchValue:
    """Was the search worth its compute against the baseline? See the module docstring."""
    f = _check_fraction(fraction)
    if method not in METHODS:
        raise ValueError(f"method must be one of {', '.join(METHODS)}, got {method!r}")
    if not isinstance(target, SizePoint):
        raise ValueError(f"target must be a fits.axes.SizePoint, got {type(target).__name__}")
    n_draws = _check_draws(n_draws)
    opts = _check_optima(optima)
    gaps, notes = rung_gaps(opts, baseline, noise_sd=noise_sd, rung_flops=rung_flops, size_axis=size_axis)
    notes = list(notes)
    curv, curv_notes = curvature_gap(opts, trends, target, baseline_at_target, n_draws=n_draws, seed=seed)
    notes += curv_notes
    trend, trend_err = gap_trend(gaps, target, size_axis=size_axis, n_draws=n_draws, seed=seed)
    if method == "curvature" and curv is None:
        raise ValueError("method 'curvature': no continuous knob has both a trend and a positive curvature")
    if method == "gap_trend" and trend is None:
        raise ValueError(f"method 'gap_trend': {trend_err}")
    if curv is None and trend is None:
        raise ValueError(f"no gap at the target: no continuous knob has a trend and a curvature, and {trend_err}")
    if method == "curvature" or (method == "auto" and curv is not None):
        used = curv
        reason = ("curvature: it evaluates the basin's measured curvature at the planned optimum of the target "
                  "itself; the trend of the measured gaps is the cross-check" if method == "auto"
                  else "curvature, as asked")
    else:
        used = trend
        reason = ("gap trend, as asked" if method == "gap_trend" else
                  "gap trend: no continuous knob has both a trend and a positive curvature")
    z = None
    if curv is not None and trend is not None:
        s = math.hypot(curv.sd, trend.sd)
        z = (curv.estimate - trend.estimate) / s if s > 0 else None
    claw, law_notes = fit_compute_law(opts, rung_flops, n_bootstrap=law_bootstrap, boot_starts=law_boot_starts,
                                      n_starts=law_starts, seed=seed, law=law, rung_losses=rung_losses)
    notes += law_notes
    if claw.problems:
        notes.append("compute law: " + "; ".join(claw.problems))
    c_t = target.value("flops")
    m_hat = float(compute_multiplier(used.estimate, claw.A, claw.alpha, c_t))
    rows = _law_rows(claw)
    rng = np.random.default_rng(seed + 2)
    if rows.shape[0]:
        pick = rows[rng.integers(0, rows.shape[0], used.draws.size)]
        m_draws = compute_multiplier(used.draws, pick[:, 1], pick[:, 2], c_t)
    else:
        m_draws = compute_multiplier(used.draws, claw.A, claw.alpha, c_t)
    m80, m95, _ = _draw_intervals(np.asarray(m_draws), m_hat)
    problems = list(claw.problems)
    if used.method == "curvature":
        problems += [f"the {k.knob} gap extrapolates the measured basin {abs(k.u_baseline - k.u_opt) / k.reach:.2g}x "
                     "beyond its reach" for k in used.knobs if k.beyond_basin]
    verdict = judge(f, m_hat, m95, m80, problems)
    return SearchValue(fraction=f, target=target.to_dict(), target_flops=float(c_t), gaps=gaps, curvature=curv,
                       gap_trend=trend, gap_trend_error=trend_err, method=used.method, method_reason=reason,
                       gap=used.estimate, gap_ci80=used.ci80, gap_ci95=used.ci95, z_difference=z, law=claw, m=m_hat,
                       m_ci80=m80, m_ci95=m95, n_draws=int(np.asarray(m_draws).size), break_even=verdict.break_even,
                       net=verdict.net, net_ci80=verdict.net_ci80, net_ci95=verdict.net_ci95, status=verdict.status,
                       statement=verdict.statement, noise_sd=None if noise_sd is None else float(noise_sd),
                       notes=tuple(notes), m_draws=np.asarray(m_draws))
