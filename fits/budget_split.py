"""How many trials per rung should the next sweep buy? The search's expected worth against its cost.

A planning aid (``ladder plan --budget-split``): from the sweep already made (its per-rung
optima, the trends of the knobs, the priced ``fits.search_value.SearchValue`` and the ledger),
what the search would be worth with n trials per rung instead of today's, in the unit of the
search value: compute of the target run. Pure maths over the fits' own objects.

Model (each line an assumption, stated in ``BudgetSplit.assumptions`` and in the plan):

1. More trials on a rung measure its optimum more precisely, about as 1/sqrt(trials): each
   rung's noise standard error (``TrendFit.value_se``) is scaled by sqrt(n_now / n), with
   n_now the trials that the sampler ran on that rung today. The rungs' optima themselves stay
   where they are, so the rung-to-rung scatter (``tau^2``, and the Knapp-Hartung factor, which
   can only grow when the errors shrink) does not shrink: it is the floor more trials cannot buy
   down. Nor does the bias a misspecified basin gives every rung alike (``fits.optimum``, the
   specification spread): the aid does not count it, so at large n it is optimistic.
2. The trend's prediction variance at the target is recomputed with those errors, today's
   scatter tau^2 and Knapp-Hartung factor held (``_target_sd``), per knob; the ratio
   s_k(n) / s_k(n_now) scales the planned optimum's sd that the search value used (its reported
   interval read as a normal sd: ``KnobGap.u_opt_scale`` times its t quantile over 1.96).
3. The gain at the target, with today's knowledge u* ~ (u_opt, s_now^2) of the true optimum and
   a separable quadratic basin of curvature c_k (as ``fits.search_value.curvature_gap``):
   the baseline's expected excess loss is c_k ((u_b - u_opt)^2 + s_now^2), the tuned config's
   c_k s_k(n)^2, so

       G(n) = sum_k c_k [(u_b,k - u_opt,k)^2 + s_now,k^2 - s_k(n)^2]

   which at n = n_now is the plug-in curvature gap that the search value reports. Categorical
   knobs (an expert count) are not in G: a baseline at another level adds a gap the aid does
   not see.
4. Cost: each rung's trials cost what they cost today (FLOPs per trial from the ledger), and
   what was not the sampler's (baseline, replicate seeds, widening rounds) is kept as it is:
   f(n) = sum_r cost_r (extra_r + n) / C_target.
5. Worth: m(n) = ``compute_multiplier``(G(n)) through the same compute law L(C), and the net
   effect m(n) (1 - f(n)) - 1 (a fraction of the target run; the search pays when it is > 0).
   Point estimates: the law's and the curvature's uncertainty is that of the search value's
   own intervals, not propagated per row.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np
from scipy import stats

from fits.axes import SizePoint
from fits.power_law import TrendFit
from fits.compute_law import compute_multiplier
from fits.search_value import SearchValue

DEFAULT_GRID = (3, 4, 6, 8, 12, 16, 24, 32, 48)
Z95 = 1.959963984540054

ASSUMPTIONS = (
    "each rung's optimum gets more precise as 1/sqrt(trials) and stays where it is: the rung-to-rung scatter "
    "does not shrink with more trials; a bias shared by the rungs (a basin the quadratic misfits) is not counted",
    "the target's planned optimum narrows as the trend's prediction with today's scatter does",
    "the basin at the target is a separable quadratic with the two largest rungs' curvature; categorical knobs "
    "are left out",
    "a trial costs what it costs today on its rung; baseline, replicate and widening trials are kept as they are",
    "the compute law L(C) converts the loss gain to compute; point estimates only",
)


@dataclass(frozen=True)
class SplitRow:
    """One sweep size: ``trials_per_rung`` n, the sweep's cost ``fraction`` f(n) of the target
    run, the planned optimum's sd at the target per knob (``u_sd``, ln units for a log knob),
    the expected ``gain`` (nats, baseline minus tuned), the compute multiplier ``m``, the
    ``break_even`` 1 / (1 - f) and the ``net`` effect m (1 - f) - 1."""

    trials_per_rung: int
    fraction: float
    u_sd: Mapping[str, float]
    gain: float
    m: float
    break_even: float
    net: float

    @property
    def pays(self) -> bool:
        return self.net > 0

    def to_dict(self) -> dict:
        return {"trials_per_rung": self.trials_per_rung, "fraction": self.fraction, "u_sd": dict(self.u_sd),
                "gain": self.gain, "m": self.m, "break_even": self.break_even, "net": self.net, "pays": self.pays}


@dataclass(frozen=True)
class BudgetSplit:
    """The rows over the grid, today's trials per rung (``current``: the most common n_now), the
    row with the largest net effect (``best``), and the assumptions (module docstring)."""

    rows: tuple[SplitRow, ...]
    current: int
    best: int
    assumptions: tuple[str, ...] = ASSUMPTIONS

    def row(self, n: int) -> SplitRow:
        for r in self.rows:
            if r.trials_per_rung == n:
                return r
        raise KeyError(f"no row for {n} trials per rung")

    def to_dict(self) -> dict:
        return {"current": self.current, "best": self.best, "rows": [r.to_dict() for r in self.rows],
                "assumptions": list(self.assumptions)}

    def table(self) -> str:
        """The rows as a text table (the plan's ``--budget-split`` output)."""
        knobs = list(self.rows[0].u_sd) if self.rows else []
        head = f"{'trials/rung':>11}  {'cost':>7}  " + "".join(f"{'sd ' + k:>10}  " for k in knobs) + \
            f"{'gain nats':>9}  {'multiplier':>10}  {'break-even':>10}  {'net':>8}"
        lines = [head]
        for r in self.rows:
            mark = "  <- today" if r.trials_per_rung == self.current else ("  <- best" if r.trials_per_rung == self.best
                                                                            else "")
            lines.append(f"{r.trials_per_rung:>11d}  {r.fraction:>7.1%}  "
                         + "".join(f"{r.u_sd[k]:>10.3f}  " for k in knobs)
                         + f"{r.gain:>9.4f}  {r.m:>9.3g}x  {r.break_even:>9.3g}x  {r.net:>+8.1%}{mark}")
        return "\n".join(lines)


def _check_counts(name: str, m: Mapping[str, Any], positive: bool) -> dict[str, float]:
    if not isinstance(m, Mapping) or not m:
        raise ValueError(f"{name} must map each rung to a number, got {m!r}")
    out = {}
    for k, v in m.items():
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0 or \
                (positive and v <= 0):
            raise ValueError(f"{name}[{k!r}] must be a finite {'positive' if positive else 'non-negative'} number, "
                             f"got {v!r}")
        out[str(k)] = float(v)
    return out


def _target_sd(trend: TrendFit, target: SizePoint, scale: Mapping[str, float]) -> float:
    """The sd (log units) of the trend's prediction at the target with each rung's noise se
    multiplied by ``scale[label]`` (module docstring, steps 1-2), the scatter held at today's:
    var = scale_q x0' (X' W X)^-1 x0 + scale_q tau^2 with W = 1 / (se^2 + tau^2), the
    prediction variance of ``fits.power_law`` with today's tau^2 and Knapp-Hartung factor. (A
    refit would re-estimate tau^2 from the same optima with smaller errors and call more of their
    scatter real, so the interval could widen with more trials.)"""
    labels = trend.labels or ("",) * trend.n
    se = np.asarray([s * scale.get(lb, 1.0) for s, lb in zip(trend.value_se, labels)], dtype=float)
    tau2 = trend.tau2 or 0.0
    x = np.vstack([trend._x0(n, t) for n, t in zip(trend.sizes, trend.tokens or (None,) * trend.n)])
    w = 1.0 / (se ** 2 + tau2)
    size, tokens = trend.regressors_of(target)
    x0 = trend._x0(size, tokens)
    cov = np.linalg.inv(x.T @ (x * w[:, None])) * trend.scale
    return math.sqrt(float(x0 @ cov @ x0) + trend.scale * tau2)


def budget_split(value: SearchValue, trends: Mapping[str, TrendFit], target: SizePoint, *,
                 sampled_trials: Mapping[str, float], rung_trials: Mapping[str, float],
                 rung_flops: Mapping[str, float], grid: Sequence[int] = DEFAULT_GRID) -> BudgetSplit:
    """The search's worth over ``grid`` trials per rung (module docstring).

    ``value``: the priced search value (its curvature gap supplies the knobs, their curvatures,
    the baseline's and the plan's settings); ``trends``: knob -> TrendFit (with ``value_se``);
    ``sampled_trials``: rung -> the trials the sampler ran there today (n_now);
    ``rung_trials``: rung -> all complete trials there (the sampler's plus baseline, replicates,
    widening); ``rung_flops``: rung -> the FLOPs spent there. Raises ValueError when the search
    value has no curvature gap (no trended continuous knob) or a trend has no per-rung errors."""
    if not isinstance(value, SearchValue):
        raise ValueError(f"value must be a fits.search_value.SearchValue, got {type(value).__name__}")
    if value.curvature is None or not value.curvature.knobs:
        raise ValueError("the search value has no curvature gap (no continuous knob with a trend and a positive "
                         "curvature): the budget split needs one")
    if not isinstance(target, SizePoint):
        raise ValueError(f"target must be a fits.axes.SizePoint, got {type(target).__name__}")
    grid = sorted({int(n) for n in grid})
    if not grid or grid[0] < 1:
        raise ValueError(f"grid must hold positive trial counts, got {grid!r}")
    sampled = _check_counts("sampled_trials", sampled_trials, positive=True)
    counts = _check_counts("rung_trials", rung_trials, positive=True)
    flops = _check_counts("rung_flops", rung_flops, positive=False)
    if set(counts) != set(flops):
        raise ValueError(f"rung_trials and rung_flops must name the same rungs, got {sorted(counts)} and "
                         f"{sorted(flops)}")
    knobs = value.curvature.knobs
    for k in knobs:
        t = trends.get(k.knob)
        if not isinstance(t, TrendFit) or t.value_se is None:
            raise ValueError(f"the {k.knob!r} trend must be a TrendFit fitted with per-rung standard errors")
    c_t = value.target_flops
    per_trial = {r: flops[r] / counts[r] for r in counts}
    extra = {r: max(counts[r] - sampled.get(r, counts[r]), 0.0) for r in counts}
    current = int(round(sorted(sampled.values())[len(sampled) // 2]))
    # Today's sd of each planned optimum, as the search value used it (normal-equivalent).
    s_now = {k.knob: k.u_opt_scale * float(stats.t.ppf(0.975, k.df)) / Z95 for k in knobs}
    base_sd = {k.knob: _target_sd(trends[k.knob], target, {}) for k in knobs}
    rows = []
    for n in grid:
        scale = {r: math.sqrt(sampled[r] / n) for r in sampled}
        sd = {k.knob: s_now[k.knob] * _target_sd(trends[k.knob], target, scale) / base_sd[k.knob]
              if base_sd[k.knob] > 0 else s_now[k.knob] for k in knobs}
        gain = sum(k.curvature * ((k.u_baseline - k.u_opt) ** 2 + s_now[k.knob] ** 2 - sd[k.knob] ** 2)
                   for k in knobs)
        f = sum(per_trial[r] * (extra[r] + n) for r in counts) / c_t
        m = float(compute_multiplier(gain, value.law.A, value.law.alpha, c_t))
        rows.append(SplitRow(trials_per_rung=n, fraction=f, u_sd=sd, gain=float(gain), m=m,
                             break_even=1.0 / (1.0 - f) if f < 1 else math.inf,
                             net=m * (1.0 - f) - 1.0 if f < 1 else -1.0))
    best = max(rows, key=lambda r: r.net).trials_per_rung
    return BudgetSplit(rows=tuple(rows), current=current, best=best)
