"""Compute-optimal model size from isoFLOP curves: "Approach 2" of Hoffmann et al. (2022).

Runs are grouped by training compute C (FLOPs); within one budget the runs differ in model size
N and hence in tokens D = C / (6 N) (Kaplan et al. 2020's count, used when tokens are not
given). Method (Hoffmann et al. 2022, section 3.2):

1. Budgets. Runs are grouped by C (``group_budgets``): sorted by C, a run joins the current
   budget when its C is within a factor (1 + ``rtol``) of the previous run's (single linkage in
   log C; ``rtol`` 0 groups by exact C). Digitised or rounded figures scatter about a nominal
   budget, so with ``nominal`` budgets each nominal budget takes, of the chained groups whose
   geometric-mean C is nearest to it and within a factor (1 + ``nominal_rtol``), the one with
   the most runs; the other runs are in no budget (counted as left out). The budget's C is then
   the nominal figure, since the runs' own C only placed them. Explicit labels (``groups``)
   override both; the C of a labelled budget is the geometric mean of its runs' C.
2. Per budget with at least ``min_sizes`` (3) distinct N: a parabola of loss in u = ln N - ubar
   (ubar: the budget's mean ln N, centred for conditioning),

       L(u) = c0 + c1 u + c2 u^2,

   fitted by least squares (statsmodels OLS, or WLS with weights 1 / se^2 when per-run loss
   standard errors are given; the residual scale is then floored at 1, as in ``fits.power_law``:
   known errors are a lower bound, misfit adds to them). Its vertex is

       u* = -c1 / (2 c2),       ln N_opt = ubar + u*,

   with the standard error by the delta method, Var(u*) = g' Sigma g over (c1, c2) with
   g = (-1 / (2 c2), c1 / (2 c2^2)) (Hoffmann et al. fit the same parabola; the delta method as
   in Myers, Montgomery & Anderson-Cook, *Response Surface Methodology*, section 6.3).
   D_opt = C / (6 N_opt) (the same standard error in log units), or, when tokens are given,
   ln D read off the budget's least-squares line of ln D on ln N at the vertex (standard error
   |slope| times that of ln N_opt).
3. Flags. A budget enters the power laws only when its parabola has a minimum inside the
   sizes it sampled: ``not_convex`` (c2 <= 0, no minimum), ``edge`` (vertex outside the
   sampled ln N range or within ``edge_fraction``, 5%, of the range's width from an end: the
   minimum is not bracketed and the vertex is an extrapolation), ``too_few_sizes`` (fewer than
   ``min_sizes`` distinct N) and ``no_error_estimate`` (no residual degree of freedom and no
   loss standard errors: the vertex has no standard error to weight it by). Each excluded
   budget is listed with its reason.
4. Laws across budgets: N_opt(C) = k_N C^a and D_opt(C) = k_D C^b fitted in log-log by the
   meta-regression of ``fits.power_law.fit_trend`` (DerSimonian-Laird scatter tau^2,
   Knapp-Hartung t(n - 2) intervals, mean / prediction / two-level bootstrap intervals at a
   target), with the vertices' standard errors as ``value_se``. With D = C / (6 N) the D law is
   the N law reflected: ln D_opt = ln(C / 6) - ln N_opt, so b = 1 - a exactly (the same
   weights, residuals and scatter). Under the parametric law L = E + A N^-alpha + B D^-beta the
   true exponents are a = beta / (alpha + beta), b = alpha / (alpha + beta), and the finite-C
   optimum is exactly N_opt = G (C / 6)^a with G = (alpha A / (beta B))^(1 / (alpha + beta))
   (Hoffmann et al. eq. 4).

A known property of the method, not a defect of the fit: under that law the loss along a
budget, L(u) = E + K (e^(-alpha u) / alpha + e^(beta u) / beta) about the optimum, is a sum of
exponentials, not a parabola, so the vertex of a least-squares parabola over a symmetric grid
centred on the true optimum sits at u* = (alpha - beta) m4 / (6 m2) to leading order (m2, m4:
the grid's second and fourth moments in u; the cubic Taylor term projected on the linear one),
and a grid whose centre is off by d moves it by a further (beta - alpha) d^2 / 2. The shape in u
is the same at every budget (only K changes), so with the same grid relative to the optimum at
every budget the shift is too: the prefactor k_N carries it, the exponent a does not.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Hashable, Sequence

import numpy as np
import statsmodels.api as sm

from fits.intervals import ConfidenceInterval, check_alpha, percentile_interval
from fits.optimum import Flag
from fits.power_law import TrendFit, TrendInterval, fit_trend

BLOCKING_FLAGS = frozenset({"edge", "not_convex", "too_few_sizes", "no_error_estimate"})
EXPONENT_KINDS = ("t", "bootstrap")


def _finite_positive(name: str, values: Any) -> np.ndarray:
    arr = np.asarray(values, dtype=float).ravel()
    bad = ~(np.isfinite(arr) & (arr > 0))
    if bad.any():
        i = int(np.argmax(bad))
        raise ValueError(f"{name} must be finite and positive, got {arr[i]!r} at index {i}")
    return arr


def _check_length(name: str, arr: np.ndarray, n: int, against: str) -> None:
    if arr.size != n:
        raise ValueError(f"{name} has {arr.size} entries but {against} has {n}: give one per run")


def _none_if_nan(x: float | None) -> float | None:
    return None if x is None or not math.isfinite(x) else float(x)


def _json_safe(doc: Any) -> Any:
    """``doc`` with numpy scalars as Python numbers and non-finite floats as None, so that
    ``json.dumps(..., allow_nan=False)`` takes it (an infinite prefactor from a wild exponent
    must not make the file unreadable by strict JSON parsers)."""
    if isinstance(doc, dict):
        return {str(k): _json_safe(v) for k, v in doc.items()}
    if isinstance(doc, (list, tuple)):
        return [_json_safe(v) for v in doc]
    if isinstance(doc, (bool, np.bool_)):
        return bool(doc)
    if isinstance(doc, (int, np.integer)):
        return int(doc)
    if isinstance(doc, (float, np.floating)):
        return _none_if_nan(float(doc))
    return doc


def _budget_label(c: float, taken: set[str]) -> str:
    """A short label for a budget, e.g. '5.45e+18'; more digits when a shorter one is taken
    (exact grouping can leave budgets closer than three significant digits tell apart)."""
    for digits in range(3, 18):
        label = f"{c:.{digits}g}"
        if label not in taken:
            return label
    return repr(c)


def group_budgets(flops: Sequence[float], *, rtol: float = 0.05, nominal: Sequence[float] | None = None,
                  nominal_rtol: float = 0.15) -> tuple[tuple[str | None, ...], dict[str, float]]:
    """Group runs by compute budget (module docstring, step 1).

    Returns (one label per run, None where a run belongs to no budget; the budget C of each
    label). ``rtol``: runs whose sorted C differ by at most a factor (1 + rtol) from the
    previous run's share a budget (chained); 0 groups by exact C. ``nominal``: the budgets the
    runs were planned at (e.g. Hoffmann et al.'s nine, 6e18 to 3e21); each takes the largest
    chained group within a factor (1 + ``nominal_rtol``) whose geometric-mean C is nearest to
    it; runs in no group so taken are labelled None.
    """
    c = _finite_positive("flops", flops)
    if not (math.isfinite(rtol) and rtol >= 0):
        raise ValueError(f"rtol must be finite and >= 0, got {rtol!r}")
    if not (math.isfinite(nominal_rtol) and nominal_rtol >= 0):
        raise ValueError(f"nominal_rtol must be finite and >= 0, got {nominal_rtol!r}")
    if c.size == 0:
        raise ValueError("flops is empty: give at least one run")
    order = np.argsort(c, kind="stable")
    lc = np.log(c[order])
    # A new group wherever the gap to the previous run exceeds the tolerance (chaining).
    starts = np.concatenate([[0], np.cumsum(np.diff(lc) > math.log1p(rtol) + 1e-12)])
    chained = np.empty(c.size, dtype=int)
    chained[order] = starts
    labels: list[str | None] = [None] * c.size
    budgets: dict[str, float] = {}
    if nominal is None:
        for g in range(int(starts.max()) + 1):
            idx = np.flatnonzero(chained == g)
            label = _budget_label(float(np.exp(np.mean(np.log(c[idx])))), set(budgets))
            budgets[label] = float(np.exp(np.mean(np.log(c[idx]))))
            for i in idx:
                labels[i] = label
        return tuple(labels), budgets
    nom = _finite_positive("nominal budgets", nominal)
    if np.unique(nom).size != nom.size:
        raise ValueError("nominal budgets must be distinct")
    nominal_labels: dict[float, str] = {}
    for b in sorted(nom):
        nominal_labels[float(b)] = _budget_label(float(b), set(nominal_labels.values()))
    # Each chained group is a candidate for the nominal budget nearest its geometric-mean C
    # (within the tolerance); each nominal budget takes its candidate with the most runs (ties:
    # the nearest). One curve per planned budget: the runs an isoFLOP design put at a budget are
    # many, while other runs near it (another experiment's, at a slightly different C) come in
    # ones and threes and would bend its parabola.
    best: dict[int, tuple[int, float, int]] = {}   # nominal index -> (runs, -distance, group)
    for g in range(int(starts.max()) + 1):
        idx = np.flatnonzero(chained == g)
        dist = np.abs(np.log(nom) - float(np.mean(np.log(c[idx]))))
        j = int(np.argmin(dist))
        if dist[j] <= math.log1p(nominal_rtol) + 1e-12:
            best[j] = max(best.get(j, (-1, -math.inf, -1)), (int(idx.size), -float(dist[j]), g))
    for j, (_, _, g) in best.items():
        label = nominal_labels[float(nom[j])]
        budgets[label] = float(nom[j])
        for i in np.flatnonzero(chained == g):
            labels[i] = label
    return tuple(labels), budgets


@dataclass(frozen=True)
class BudgetFit:
    """One isoFLOP budget: its parabola L(u) = c0 + c1 u + c2 u^2 in u = ln N - ``log_n_centre``
    (``coef``, ``cov``; empty when too few sizes), the vertex in natural log (``log_n_opt``,
    ``log_n_opt_se``; None without a minimum), D_opt likewise, the fitted loss at the vertex
    and the best observed loss (nats), and the flags. ``usable``: enters the power laws."""

    label: str
    flops: float
    n_runs: int
    n_sizes: int
    log_n_range: tuple[float, float]
    log_n_centre: float
    coef: tuple[float, ...]
    cov: tuple[tuple[float, ...], ...]
    df_resid: int
    log_n_opt: float | None
    log_n_opt_se: float | None
    log_d_opt: float | None
    log_d_opt_se: float | None
    fitted_min_loss: float | None
    best_loss: float
    flags: tuple[Flag, ...] = ()

    @property
    def usable(self) -> bool:
        return not any(f.code in BLOCKING_FLAGS for f in self.flags)

    @property
    def flag_codes(self) -> tuple[str, ...]:
        return tuple(f.code for f in self.flags)

    @property
    def n_opt(self) -> float | None:
        return None if self.log_n_opt is None else math.exp(self.log_n_opt)

    @property
    def d_opt(self) -> float | None:
        return None if self.log_d_opt is None else math.exp(self.log_d_opt)

    @property
    def reason(self) -> str:
        """Why the budget is left out of the laws ('' when it is not)."""
        return "; ".join(f"{f.code}: {f.message}" for f in self.flags if f.code in BLOCKING_FLAGS)

    def fitted_loss(self, n_params: Any) -> np.ndarray:
        """The parabola at parameter counts ``n_params`` (for drawing); NaN without a fit."""
        u = np.log(np.asarray(n_params, dtype=float)) - self.log_n_centre
        if len(self.coef) != 3:
            return np.full(u.shape, np.nan)
        return self.coef[0] + self.coef[1] * u + self.coef[2] * u**2

    def to_dict(self) -> dict:
        return {"label": self.label, "flops": self.flops, "n_runs": self.n_runs, "n_sizes": self.n_sizes,
                "n_range": [math.exp(self.log_n_range[0]), math.exp(self.log_n_range[1])],
                "log_n_centre": self.log_n_centre, "coef": [_none_if_nan(c) for c in self.coef],
                "cov": [[_none_if_nan(c) for c in r] for r in self.cov], "df_resid": self.df_resid,
                "n_opt": _none_if_nan(self.n_opt), "log_n_opt": _none_if_nan(self.log_n_opt),
                "log_n_opt_se": _none_if_nan(self.log_n_opt_se), "d_opt": _none_if_nan(self.d_opt),
                "log_d_opt": _none_if_nan(self.log_d_opt), "log_d_opt_se": _none_if_nan(self.log_d_opt_se),
                "fitted_min_loss": _none_if_nan(self.fitted_min_loss), "best_loss": self.best_loss,
                "usable": self.usable, "flags": [{"code": f.code, "message": f.message} for f in self.flags]}


def fit_budget(label: str, flops: float, params: np.ndarray, loss: np.ndarray, *, tokens: np.ndarray | None = None,
               loss_se: np.ndarray | None = None, min_sizes: int = 3, edge_fraction: float = 0.05) -> BudgetFit:
    """The parabola, vertex and flags of one budget (module docstring, steps 2-3)."""
    x = np.log(params)
    centre = float(x.mean())
    u = x - centre
    n_sizes = int(np.unique(params).size)
    lo, hi = float(x.min()), float(x.max())
    common = dict(label=label, flops=float(flops), n_runs=int(params.size), n_sizes=n_sizes, log_n_range=(lo, hi),
                  log_n_centre=centre, best_loss=float(loss.min()))
    if n_sizes < min_sizes:
        return BudgetFit(**common, coef=(), cov=(), df_resid=0, log_n_opt=None, log_n_opt_se=None, log_d_opt=None,
                         log_d_opt_se=None, fitted_min_loss=None,
                         flags=(Flag("too_few_sizes", f"{n_sizes} distinct model sizes; a parabola needs "
                                                      f"{min_sizes}"),))
    design = np.column_stack([np.ones(u.size), u, u**2])
    if loss_se is None:
        res = sm.OLS(loss, design).fit()
        df = int(round(res.df_resid))
        # OLS scale is RSS / df: with no residual degree of freedom there is no error estimate.
        scale = float(res.scale) if df > 0 else math.nan
    else:
        res = sm.WLS(loss, design, weights=1.0 / loss_se**2).fit()
        df = int(round(res.df_resid))
        # Known per-run errors: the scale is 1 unless the parabola misfits them (then larger).
        scale = max(float(res.scale), 1.0) if df > 0 else 1.0
    coef = np.asarray(res.params, dtype=float)
    cov = np.asarray(res.normalized_cov_params, dtype=float) * scale
    c0, c1, c2 = (float(v) for v in coef)
    flags: list[Flag] = []
    common.update(coef=tuple(float(v) for v in coef), cov=tuple(tuple(float(v) for v in r) for r in cov),
                  df_resid=df)
    if not c2 > 0:
        flags.append(Flag("not_convex", f"the parabola opens downward (curvature {c2:.3g} <= 0): no minimum"))
        return BudgetFit(**common, log_n_opt=None, log_n_opt_se=None, log_d_opt=None, log_d_opt_se=None,
                         fitted_min_loss=None, flags=tuple(flags))
    v = -c1 / (2.0 * c2)
    grad = np.array([0.0, -1.0 / (2.0 * c2), c1 / (2.0 * c2**2)])   # d u* / d (c0, c1, c2)
    var = float(grad @ cov @ grad)
    se = math.sqrt(var) if math.isfinite(var) and var > 0 else None
    log_n = centre + v
    if se is None:
        flags.append(Flag("no_error_estimate", f"{params.size} runs for 3 coefficients and no loss standard "
                                               "errors: the vertex has no standard error"))
    margin = edge_fraction * (hi - lo)
    if not (lo + margin <= log_n <= hi - margin):
        where = "outside" if not lo <= log_n <= hi else f"within {edge_fraction:.0%} of an end of"
        flags.append(Flag("edge", f"vertex N = {math.exp(log_n):.3g} lies {where} the sampled sizes "
                                  f"[{math.exp(lo):.3g}, {math.exp(hi):.3g}]: the minimum is not bracketed"))
    if tokens is None:
        log_d, d_se = math.log(flops / 6.0) - log_n, se
    else:
        # Tokens given: read ln D at the vertex off the budget's line of ln D on ln N.
        slope, intercept = np.polyfit(x, np.log(tokens), 1)
        log_d = float(intercept + slope * log_n)
        d_se = None if se is None else abs(float(slope)) * se
    return BudgetFit(**common, log_n_opt=log_n, log_n_opt_se=se, log_d_opt=log_d, log_d_opt_se=d_se,
                     fitted_min_loss=c0 - c1**2 / (4.0 * c2), flags=tuple(flags))


@dataclass(frozen=True)
class ComputeOptimalPrediction:
    """N_opt and D_opt at one budget: each a ``TrendInterval`` (estimate, interval of ``kind``,
    and all candidates: mean, prediction, bootstrap)."""

    flops: float
    alpha: float
    n_opt: TrendInterval
    d_opt: TrendInterval

    @property
    def tokens_per_param(self) -> float:
        return self.d_opt.estimate / self.n_opt.estimate

    def to_dict(self) -> dict:
        return _json_safe({"flops": self.flops, "alpha": self.alpha, "n_opt": self.n_opt.to_dict(),
                           "d_opt": self.d_opt.to_dict(), "tokens_per_param": self.tokens_per_param})


@dataclass(frozen=True)
class ComputeOptimalFit:
    """Approach 2: the per-budget fits (all of them, usable or not), the laws N_opt(C) and
    D_opt(C) (``TrendFit`` with C as the size), and whether tokens were given (else D = C / 6N).
    ``run_labels``: each run's budget label in input order (None: in no budget, e.g. no
    nominal budget near it)."""

    budgets: tuple[BudgetFit, ...]
    n_trend: TrendFit
    d_trend: TrendFit
    tokens_given: bool
    run_labels: tuple[str | None, ...]

    @property
    def n_runs(self) -> int:
        return len(self.run_labels)

    @property
    def n_left_out(self) -> int:
        """Runs in no budget."""
        return sum(1 for g in self.run_labels if g is None)

    def budget(self, label: str) -> BudgetFit:
        """The fit of the budget labelled ``label``."""
        for b in self.budgets:
            if b.label == label:
                return b
        raise KeyError(f"no budget labelled {label!r}; budgets: {', '.join(b.label for b in self.budgets)}")

    @property
    def usable(self) -> tuple[BudgetFit, ...]:
        return tuple(b for b in self.budgets if b.usable)

    @property
    def excluded(self) -> tuple[BudgetFit, ...]:
        return tuple(b for b in self.budgets if not b.usable)

    @property
    def a(self) -> float:
        """Exponent of N_opt in C."""
        return self.n_trend.exponent

    @property
    def b(self) -> float:
        """Exponent of D_opt in C (1 - a when D = C / 6N)."""
        return self.d_trend.exponent

    @property
    def k_n(self) -> float:
        return self.n_trend.prefactor

    @property
    def k_d(self) -> float:
        return self.d_trend.prefactor

    def exponent_intervals(self, alpha: float = 0.05) -> dict[str, dict[str, ConfidenceInterval]]:
        """{"a": {...}, "b": {...}}, each with the Knapp-Hartung t(n - 2) interval ("t") and,
        when the trend was bootstrapped, the percentile interval of the bootstrap slopes."""
        alpha = check_alpha(alpha)
        out: dict[str, dict[str, ConfidenceInterval]] = {}
        for name, trend in (("a", self.n_trend), ("b", self.d_trend)):
            cands = {"t": trend.conf_int(alpha)["size_exponent"]}
            if trend.boot_coefs.size:
                cands["bootstrap"] = percentile_interval(trend.boot_coefs[:, 1], alpha)
            out[name] = cands
        return out

    def conf_int(self, alpha: float = 0.05, kind: str = "widest") -> dict[str, ConfidenceInterval]:
        """Intervals of the exponents a and b: ``kind`` t, bootstrap or widest (the default:
        the wider of those available)."""
        out = {}
        for name, cands in self.exponent_intervals(alpha).items():
            if kind == "widest":
                out[name] = max((cands[k] for k in EXPONENT_KINDS if k in cands), key=lambda c: c.width)
            elif kind in cands:
                out[name] = cands[kind]
            else:
                raise ValueError(f"kind must be one of {sorted(cands)} or 'widest', got {kind!r}")
        return out

    def predict(self, flops: float, alpha: float = 0.05, kind: str = "widest") -> ComputeOptimalPrediction:
        """N_opt and D_opt at budget ``flops`` with (1 - alpha) intervals of ``kind`` (mean,
        prediction, bootstrap or widest; the candidates are all kept)."""
        if not (isinstance(flops, (int, float)) and math.isfinite(flops) and flops > 0):
            raise ValueError(f"flops must be a finite positive number, got {flops!r}")
        return ComputeOptimalPrediction(flops=float(flops), alpha=check_alpha(alpha),
                                        n_opt=self.n_trend.interval(float(flops), alpha, kind),
                                        d_opt=self.d_trend.interval(float(flops), alpha, kind))

    def to_dict(self) -> dict:
        ci = self.conf_int(0.05)
        cands = self.exponent_intervals(0.05)
        return _json_safe({"method": "isoFLOP parabolas (Hoffmann et al. 2022, Approach 2)",
                "n_runs": self.n_runs, "n_left_out": self.n_left_out, "tokens_given": self.tokens_given,
                "budgets": [b.to_dict() for b in self.budgets], "run_labels": list(self.run_labels),
                "a": self.a, "b": self.b, "k_n": self.k_n, "k_d": self.k_d,
                "ci95": {k: v.to_dict() for k, v in ci.items()},
                "ci95_candidates": {k: {n: c.to_dict() for n, c in v.items()} for k, v in cands.items()},
                "n_trend": self.n_trend.to_dict(), "d_trend": self.d_trend.to_dict()})

    def summary(self) -> str:
        lines = [f"Compute-optimal fit (isoFLOP parabolas): {len(self.usable)} of {len(self.budgets)} budgets used, "
                 f"{self.n_runs} runs" + (f" ({self.n_left_out} in no budget)" if self.n_left_out else ""),
                 f"  {'budget C':>10} {'runs':>4} {'sizes':>5} {'N_opt':>10} {'se lnN':>7} {'D_opt':>10} "
                 f"{'D/N':>6} {'min loss':>8}  status"]
        # Budgets with too few sizes for a parabola (often single runs between isoFLOP budgets)
        # are counted in one line rather than listed: they carry no curve to read.
        sparse = [b for b in self.budgets if b.flag_codes == ("too_few_sizes",)]
        sparse_ids = {id(b) for b in sparse}
        for b in self.budgets:
            if id(b) in sparse_ids:
                continue
            n_opt = "-" if b.n_opt is None else f"{b.n_opt:.4g}"
            se = "-" if b.log_n_opt_se is None else f"{b.log_n_opt_se:.3f}"
            d_opt = "-" if b.d_opt is None else f"{b.d_opt:.4g}"
            ratio = "-" if b.d_opt is None else f"{b.d_opt / b.n_opt:.3g}"
            loss = f"{b.fitted_min_loss:.4f}" if b.fitted_min_loss is not None else f"{b.best_loss:.4f}*"
            status = "used" if b.usable else "left out: " + ", ".join(c for c in b.flag_codes if c in BLOCKING_FLAGS)
            lines.append(f"  {b.flops:>10.3g} {b.n_runs:>4d} {b.n_sizes:>5d} {n_opt:>10} {se:>7} {d_opt:>10} "
                         f"{ratio:>6} {loss:>8}  {status}")
        ci = self.conf_int(0.05)
        d_how = "" if self.tokens_given else " (D = C / 6N: b = 1 - a)"
        lines += [f"  N_opt = {self.k_n:.4g} * C^{self.a:.4f}   a 95% CI [{ci['a'].low:.4f}, {ci['a'].high:.4f}]",
                  f"  D_opt = {self.k_d:.4g} * C^{self.b:.4f}   b 95% CI [{ci['b'].low:.4f}, {ci['b'].high:.4f}]"
                  + d_how,
                  f"  df={self.n_trend.df}, residual scale q={self.n_trend.scale:.4g}, "
                  f"tau^2={'n/a' if self.n_trend.tau2 is None else format(self.n_trend.tau2, '.4g')}"]
        if sparse:
            lines.append(f"  {len(sparse)} more budgets ({sum(b.n_runs for b in sparse)} runs) left out: "
                         "too_few_sizes (fewer distinct model sizes than a parabola needs)")
        lines += [f"  left out {b.label}: {b.reason}" for b in self.excluded if id(b) not in sparse_ids]
        return "\n".join(lines)


def fit_compute_optimal(flops: Sequence[float], params: Sequence[float], loss: Sequence[float], *,
                        tokens: Sequence[float] | None = None, loss_se: Sequence[float] | None = None,
                        groups: Sequence[Hashable | None] | None = None, budget_rtol: float = 0.05,
                        budgets: Sequence[float] | None = None, nominal_rtol: float = 0.15, min_sizes: int = 3,
                        edge_fraction: float = 0.05, n_bootstrap: int = 1000, seed: int = 0) -> ComputeOptimalFit:
    """Approach 2 of Hoffmann et al. (2022) on runs given as arrays (module docstring).

    ``flops`` C, ``params`` N and ``loss`` (nats) per run; ``tokens`` D per run (default
    C / 6N); ``loss_se``: per-run standard errors of the loss (WLS weights); ``groups``: a
    budget label per run (None: left out), else ``group_budgets(flops, rtol=budget_rtol,
    nominal=budgets, nominal_rtol=nominal_rtol)``; ``n_bootstrap``/``seed``: the laws'
    two-level bootstrap (``fits.power_law.fit_trend``; 0 for none).
    """
    c = _finite_positive("flops", flops)
    n = c.size
    if n == 0:
        raise ValueError("no runs: flops, params and loss are empty")
    p = _finite_positive("params", params)
    _check_length("params", p, n, "flops")
    y = _finite_positive("loss", loss)
    _check_length("loss", y, n, "flops")
    tok = None if tokens is None else _finite_positive("tokens", tokens)
    if tok is not None:
        _check_length("tokens", tok, n, "flops")
    se = None if loss_se is None else _finite_positive("loss_se", loss_se)
    if se is not None:
        _check_length("loss_se", se, n, "flops")
    if not (isinstance(min_sizes, int) and min_sizes >= 3):
        raise ValueError(f"min_sizes must be an integer >= 3 (a parabola has 3 coefficients), got {min_sizes!r}")
    if not (isinstance(edge_fraction, (int, float)) and 0 <= edge_fraction < 0.5):
        raise ValueError(f"edge_fraction must lie in [0, 0.5), got {edge_fraction!r}")
    if groups is not None:
        labels = [None if g is None else str(g) for g in groups]
        if len(labels) != n:
            raise ValueError(f"groups has {len(labels)} entries but flops has {n}: give one label per run")
        names = sorted({g for g in labels if g is not None},
                       key=lambda g: float(np.mean(np.log(c[[i for i, h in enumerate(labels) if h == g]]))))
        budget_c = {g: float(np.exp(np.mean(np.log(c[[i for i, h in enumerate(labels) if h == g]])))) for g in names}
    else:
        lab, budget_c = group_budgets(c, rtol=budget_rtol, nominal=budgets, nominal_rtol=nominal_rtol)
        labels = list(lab)
        names = sorted(budget_c, key=budget_c.get)
    fits: list[BudgetFit] = []
    for name in names:
        idx = np.asarray([i for i, g in enumerate(labels) if g == name])
        fits.append(fit_budget(name, budget_c[name], p[idx], y[idx], tokens=None if tok is None else tok[idx],
                               loss_se=None if se is None else se[idx], min_sizes=min_sizes,
                               edge_fraction=edge_fraction))
    used = [b for b in fits if b.usable]
    excluded = [(b.label, b.reason) for b in fits if not b.usable]
    if len(used) < 3:
        why = "; ".join(f"{a} ({r})" for a, r in excluded) or "none"
        raise ValueError(f"a compute-optimal law needs at least 3 usable budgets, got {len(used)} of {len(fits)}; "
                         f"left out: {why}")
    sizes = [b.flops for b in used]
    labels_used = [b.label for b in used]
    n_trend = fit_trend(sizes, [b.n_opt for b in used], value_se=[b.log_n_opt_se for b in used],
                        n_bootstrap=n_bootstrap, seed=seed, labels=labels_used, excluded=excluded, axes=("flops",))
    d_trend = fit_trend(sizes, [b.d_opt for b in used], value_se=[b.log_d_opt_se for b in used],
                        n_bootstrap=n_bootstrap, seed=seed, labels=labels_used, excluded=excluded, axes=("flops",))
    return ComputeOptimalFit(budgets=tuple(fits), n_trend=n_trend, d_trend=d_trend, tokens_given=tok is not None,
                             run_labels=tuple(labels))


def true_compute_optimal(flops: Any, *, A: float, alpha: float, B: float, beta: float) -> np.ndarray:
    """N_opt(C) of L = E + A N^-alpha + B D^-beta with D = C / 6N: G (C / 6)^(beta / (alpha +
    beta)), G = (alpha A / (beta B))^(1 / (alpha + beta)) (Hoffmann et al. 2022, eq. 4)."""
    g = (alpha * A / (beta * B)) ** (1.0 / (alpha + beta))
    return g * (np.asarray(flops, dtype=float) / 6.0) ** (beta / (alpha + beta))
