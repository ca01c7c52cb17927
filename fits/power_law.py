"""Trend of an optimal setting across ladder rungs: a power law fitted in log-log.

Model (the meta-regression form; DerSimonian & Laird 1986, Knapp & Hartung 2003):

    y_i = log(value_i) = a + b (log N_i - mean log N) [+ c (log D_i - mean log D)] + d_i + e_i

with e_i the rung's own estimation error (standard error ``value_se`` in log units, from the
per-rung vertex) and d_i ~ N(0, tau^2) the rung-to-rung scatter about the law. Centred
regressors make a the fitted log value at the ladder's geometric-mean size; coefficients are
kept unrounded.

* With ``value_se``: tau^2 by the method of moments for meta-regression (DerSimonian-Laird),
  weights 1 / (se_i^2 + tau^2), statsmodels WLS; the coefficient covariance is scaled by the
  residual factor q = sum w r^2 / (n - k) and intervals use t(n - k) (Knapp-Hartung), which
  keeps them honest when the per-rung standard errors are off by a common factor. q is
  truncated below at 1 (the modified Knapp-Hartung of Roever, Knapp & Friede 2015, BMC Med.
  Res. Methodol. 15:99): with four or five rungs that happen to lie close to a line, q < 1
  would shrink the intervals below what the rungs' own standard errors allow (a backtest on
  the CPU demo's ladder gave q = 0.1 and a "miss" at z = 11 by it).
* Without it: ordinary least squares (or WLS with the given relative ``weights``).
* At a target: the mean interval (x0' Cov x0), the prediction interval (adds the scatter,
  q tau^2, and a new rung's own variance when given; without ``value_se`` the residual
  variance), and a two-level bootstrap: each rung's value drawn from its own sampling
  distribution (its trial-bootstrap draws ``rung_samples``, else normal with ``value_se``),
  then the rungs' deviations from the law resampled across rungs, the law refitted and a
  scatter draw added (details in ``_two_level_bootstrap``). The widest
  of the three is the reported interval (``TrendFit.interval(kind="widest")``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np
import statsmodels.api as sm

from fits.axes import check_axes, check_spread
from fits.intervals import ConfidenceInterval, check_alpha, percentile_interval, t_interval

KINDS = ("mean", "prediction", "bootstrap")
KINDS_TIE_ORDER = ("prediction", "bootstrap", "mean")   # on a tie, name the interval that includes scatter


def _positive_array(name: str, values, n: int | None = None) -> np.ndarray:
    arr = np.asarray(values, dtype=float).ravel()
    if n is not None and arr.size != n:
        raise ValueError(f"{name} must have {n} entries, got {arr.size}")
    bad = ~(np.isfinite(arr) & (arr > 0))
    if bad.any():
        raise ValueError(f"{name} must be finite and positive, got {arr[bad][0]!r} at index {int(np.argmax(bad))}")
    return arr


def _dl_tau2(x: np.ndarray, y: np.ndarray, se: np.ndarray) -> float:
    """Method-of-moments between-rung variance for a meta-regression (DerSimonian-Laird):
    tau^2 = max(0, (Q - (n - k)) / (sum w - tr((X'WX)^-1 X'W^2X))), W = diag(1/se^2)."""
    w = 1.0 / se**2
    n, k = x.shape
    xtwx = x.T @ (x * w[:, None])
    beta = np.linalg.solve(xtwx, x.T @ (w * y))
    q = float(np.sum(w * (y - x @ beta) ** 2))
    denom = float(w.sum() - np.trace(np.linalg.solve(xtwx, x.T @ (x * (w**2)[:, None]))))
    return max(0.0, (q - (n - k)) / denom) if denom > 0 else 0.0


@dataclass(frozen=True)
class TrendInterval:
    """An interval at one target: ``estimate`` and ``interval`` in natural units, their logs,
    ``kind`` (mean, prediction or bootstrap; for widest, which one won) and all candidates."""

    alpha: float
    kind: str
    estimate: float
    interval: ConfidenceInterval
    log_estimate: float
    log_interval: ConfidenceInterval
    candidates: Mapping[str, ConfidenceInterval]

    def to_dict(self) -> dict:
        return {"alpha": self.alpha, "kind": self.kind, "estimate": self.estimate,
                "interval": self.interval.to_dict(), "log_interval": self.log_interval.to_dict(),
                "candidates_log": {k: v.to_dict() for k, v in self.candidates.items()}}


@dataclass(frozen=True)
class TrendFit:
    """A fitted trend; ``coef`` = (a, b[, c]) for centred log size [and log tokens]."""

    coef: tuple[float, ...]
    cov: tuple[tuple[float, ...], ...]
    df: int
    scale: float
    tau2: float | None
    log_size_mean: float
    log_tokens_mean: float | None
    sizes: tuple[float, ...]
    values: tuple[float, ...]
    value_se: tuple[float, ...] | None
    tokens: tuple[float, ...] | None
    weights: tuple[float, ...]
    labels: tuple[str, ...] = ()
    excluded: tuple[tuple[str, str], ...] = ()
    boot_coefs: np.ndarray = field(default_factory=lambda: np.zeros((0, 0)), compare=False, repr=False)
    axes: tuple[str, ...] = ()   # the size axes (fits.axes) of the regressors: sizes [, tokens]

    @property
    def n(self) -> int:
        return len(self.sizes)

    @property
    def names(self) -> tuple[str, ...]:
        return ("intercept", "size_exponent") + (("tokens_exponent",) if self.tokens is not None else ())

    @property
    def exponent(self) -> float:
        """b: d log(value) / d log(size)."""
        return self.coef[1]

    @property
    def prefactor(self) -> float:
        """K in value = K N^b [D^c] (uncentred form)."""
        ln_k = self.coef[0] - self.coef[1] * self.log_size_mean
        if self.tokens is not None:
            ln_k -= self.coef[2] * self.log_tokens_mean
        try:
            return math.exp(ln_k)
        except OverflowError:   # a wild exponent on large sizes: report it, never crash on it
            return math.inf

    def regressors_of(self, point: Any) -> tuple[float, float | None]:
        """(size, tokens) of a ``fits.axes.SizePoint`` on this trend's axes."""
        axes = self.axes or (("params_active", "tokens") if self.tokens is not None else ("params_active",))
        vals = point.values(axes)
        return vals[0], (vals[1] if len(vals) > 1 else None)

    def interval_at(self, point: Any, alpha: float = 0.05, kind: str = "widest") -> "TrendInterval":
        """``interval`` at a ``fits.axes.SizePoint`` (the target), read on this trend's axes."""
        size, tokens = self.regressors_of(point)
        return self.interval(size, alpha, kind, tokens=tokens)

    def _x0(self, size: float, tokens: float | None) -> np.ndarray:
        if not (isinstance(size, (int, float)) and math.isfinite(size) and size > 0):
            raise ValueError(f"size must be a finite positive number, got {size!r}")
        row = [1.0, math.log(size) - self.log_size_mean]
        if self.tokens is not None:
            if tokens is None or not (math.isfinite(tokens) and tokens > 0):
                raise ValueError(f"this trend has a tokens term: tokens must be finite positive, got {tokens!r}")
            row.append(math.log(tokens) - self.log_tokens_mean)
        elif tokens is not None:
            raise ValueError("this trend was fitted without tokens; pass tokens=None")
        return np.asarray(row)

    def predict_log(self, size: float, tokens: float | None = None) -> float:
        return float(self._x0(size, tokens) @ np.asarray(self.coef))

    def predict(self, size: float, tokens: float | None = None) -> float:
        """Point prediction of the setting (natural units) at ``size`` [and ``tokens``]."""
        return math.exp(self.predict_log(size, tokens))

    def _new_variance(self, value_se: float) -> float:
        """Variance of a new rung's value about the law (log units, before the mean term)."""
        if self.tau2 is not None:
            return self.scale * (self.tau2 + value_se**2)
        mean_w = float(np.mean(self.weights))
        return self.scale / mean_w + value_se**2

    def log_intervals(self, size: float, alpha: float = 0.05, tokens: float | None = None,
                      value_se: float = 0.0) -> dict[str, ConfidenceInterval]:
        """Mean, prediction and (when drawn) bootstrap intervals of the log value at a target.
        ``value_se``: the target's own estimation error (log units), e.g. when comparing with a
        rung that was measured (the backtest); 0 for the true optimum."""
        alpha = check_alpha(alpha)
        x0 = self._x0(size, tokens)
        mu = float(x0 @ np.asarray(self.coef))
        var_mean = float(x0 @ np.asarray(self.cov) @ x0)
        out = {"mean": t_interval(mu, math.sqrt(var_mean), alpha, self.df),
               "prediction": t_interval(mu, math.sqrt(var_mean + self._new_variance(value_se)), alpha, self.df)}
        if self.boot_coefs.size:
            draws = self.boot_coefs @ x0
            rng = np.random.default_rng(12345)   # fixed: the scatter draw must not make intervals flicker
            draws = draws + rng.normal(0.0, math.sqrt(self._new_variance(value_se)), draws.size)
            out["bootstrap"] = percentile_interval(draws, alpha)
        return out

    def interval(self, size: float, alpha: float = 0.05, kind: str = "widest", *, tokens: float | None = None,
                 value_se: float = 0.0) -> TrendInterval:
        """Interval of the setting at a target size: ``kind`` in mean, prediction, bootstrap or
        widest (the default: the widest of those available, the one to report)."""
        cands = self.log_intervals(size, alpha, tokens, value_se)
        if kind == "widest":
            kind = max(sorted(cands, key=KINDS_TIE_ORDER.index), key=lambda k: cands[k].width)
        elif kind not in cands:
            raise ValueError(f"kind must be one of {sorted(cands)} or 'widest', got {kind!r}")
        mu = self.predict_log(size, tokens)
        return TrendInterval(alpha=alpha, kind=kind, estimate=math.exp(mu), interval=cands[kind].exp(),
                             log_estimate=mu, log_interval=cands[kind], candidates=cands)

    def conf_int(self, alpha: float = 0.05) -> dict[str, ConfidenceInterval]:
        """t(df) intervals of the coefficients (intercept at the centre, exponents)."""
        se = np.sqrt(np.diag(np.asarray(self.cov)))
        return {n: t_interval(c, s, alpha, self.df) for n, c, s in zip(self.names, self.coef, se)}

    def to_dict(self) -> dict:
        return {"axes": list(self.axes), "coef": dict(zip(self.names, self.coef)), "cov": [list(r) for r in self.cov],
                "df": self.df, "scale": self.scale, "tau2": self.tau2, "prefactor": self.prefactor,
                "log_size_mean": self.log_size_mean, "log_tokens_mean": self.log_tokens_mean,
                "sizes": list(self.sizes), "values": list(self.values),
                "value_se": None if self.value_se is None else list(self.value_se),
                "tokens": None if self.tokens is None else list(self.tokens), "labels": list(self.labels),
                "excluded": [{"label": a, "reason": b} for a, b in self.excluded],
                "ci95": {k: v.to_dict() for k, v in self.conf_int(0.05).items()},
                "weights": list(self.weights), "n_bootstrap": int(self.boot_coefs.shape[0]),
                "boot_coefs": [list(map(float, r)) for r in self.boot_coefs]}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "TrendFit":
        """The inverse of ``to_dict`` (the bootstrap draws included), so a plan can be made from
        ``fits.json`` without refitting."""
        def tup(x):
            return None if x is None else tuple(float(v) for v in x)
        names = ("intercept", "size_exponent", "tokens_exponent")
        coef = tuple(float(d["coef"][n]) for n in names if n in d["coef"])
        boot = np.asarray(d.get("boot_coefs") or np.zeros((0, len(coef))), dtype=float).reshape(-1, len(coef))
        return cls(coef=coef, cov=tuple(tuple(float(v) for v in r) for r in d["cov"]), df=int(d["df"]),
                   scale=float(d["scale"]), tau2=None if d.get("tau2") is None else float(d["tau2"]),
                   log_size_mean=float(d["log_size_mean"]),
                   log_tokens_mean=None if d.get("log_tokens_mean") is None else float(d["log_tokens_mean"]),
                   sizes=tup(d["sizes"]), values=tup(d["values"]), value_se=tup(d.get("value_se")),
                   tokens=tup(d.get("tokens")), weights=tup(d["weights"]), labels=tuple(d.get("labels", ())),
                   excluded=tuple((e["label"], e["reason"]) for e in d.get("excluded", ())), boot_coefs=boot,
                   axes=tuple(d.get("axes", ())))

    def summary(self) -> str:
        ci = self.conf_int(0.05)
        from fits.axes import AXIS_LABELS

        first = AXIS_LABELS.get(self.axes[0], "N") if self.axes else "N"
        law = f"value = {self.prefactor:.6g} * {first}^{self.exponent:.6g}"
        if self.tokens is not None:
            law += f" * D^{self.coef[2]:.6g}"
        lines = [f"Power-law trend over {self.n} rungs: {law}",
                 f"  df={self.df}, residual scale q={self.scale:.4g}, "
                 f"tau^2={'n/a' if self.tau2 is None else format(self.tau2, '.4g')}"]
        se = np.sqrt(np.diag(np.asarray(self.cov)))
        for n, c, s in zip(self.names, self.coef, se):
            lines.append(f"  {n:<16} {c:+.6g}  se {s:.4g}  95% CI [{ci[n].low:+.6g}, {ci[n].high:+.6g}]")
        lines += [f"  excluded {a}: {b}" for a, b in self.excluded]
        return "\n".join(lines)


def _wls_coefs(x: np.ndarray, y: np.ndarray, w: np.ndarray) -> np.ndarray:
    sw = np.sqrt(w)
    return np.linalg.lstsq(x * sw[:, None], y * sw, rcond=None)[0]


def fit_trend(sizes: Sequence[float], values: Sequence[float], *, value_se: Sequence[float] | None = None,
              tokens: Sequence[float] | None = None, weights: Sequence[float] | None = None,
              rung_samples: Sequence[Sequence[float]] | None = None, n_bootstrap: int = 1000, seed: int = 0,
              labels: Sequence[str] = (), excluded: Sequence[tuple[str, str]] = (),
              axes: Sequence[str] | None = None) -> TrendFit:
    """Fit log(value) = a + b (log size - mean) [+ c (log tokens - mean)] across rungs.

    ``sizes``: parameters (total or active, the caller's choice) per rung; ``values``: optimal
    setting per rung (natural units, positive); ``value_se``: standard error of log(value) per
    rung; ``weights``: relative weights instead of ``value_se``; ``rung_samples``: per rung,
    bootstrap draws of log(value) for the first bootstrap level; ``axes``: the names of the
    regressors (``fits.axes``; default active parameters [and tokens]). A regressor spanning
    less than ``fits.axes.MIN_SPREAD`` is refused by name. See the module docstring.
    """
    s = _positive_array("sizes", sizes)
    n = s.size
    v = _positive_array("values", values, n)
    if value_se is not None and weights is not None:
        raise ValueError("give value_se or weights, not both")
    se = None if value_se is None else _positive_array("value_se", value_se, n)
    tok = None if tokens is None else _positive_array("tokens", tokens, n)
    axes = check_axes(axes if axes is not None else ("params_active",) + (("tokens",) if tok is not None else ()))
    if len(axes) != 1 + (tok is not None):
        raise ValueError(f"axes {list(axes)} do not match the regressors (sizes{' and tokens' if tok is not None else ''})")
    if n >= 2:
        check_spread(axes[0], s)
        if tok is not None:
            check_spread(axes[1], tok)
    lx = np.log(s)
    cols = [np.ones(n), lx - lx.mean()]
    if tok is not None:
        cols.append(np.log(tok) - np.log(tok).mean())
    x = np.column_stack(cols)
    k = x.shape[1]
    if n < k + 1:
        raise ValueError(f"fit_trend needs at least {k + 1} rungs for {k} coefficients (one residual degree of "
                         f"freedom), got {n}")
    if np.linalg.matrix_rank(x) < k:
        raise ValueError("the regressors are collinear (all sizes equal, or tokens proportional to size): "
                         "the trend cannot separate them; drop tokens or vary them independently")
    y = np.log(v)
    tau2 = None
    if se is not None:
        tau2 = _dl_tau2(x, y, se)
        w = 1.0 / (se**2 + tau2)
    elif weights is not None:
        w = _positive_array("weights", weights, n)
    else:
        w = np.ones(n)
    res = sm.WLS(y, x, weights=w).fit()
    # Modified Knapp-Hartung with standard errors: q* = max(1, q); cov = q* (X'WX)^-1.
    scale = max(float(res.scale), 1.0) if se is not None else float(res.scale)
    cov = np.asarray(res.normalized_cov_params) * scale
    if rung_samples is not None and len(rung_samples) != n:
        raise ValueError(f"rung_samples must have one entry per rung ({n}), got {len(rung_samples)}")
    boot = _two_level_bootstrap(x, y, w, se, tau2, rung_samples, n_bootstrap, seed)
    return TrendFit(coef=tuple(float(c) for c in res.params), cov=tuple(tuple(float(c) for c in r) for r in cov),
                    df=int(n - k), scale=scale, tau2=tau2, log_size_mean=float(lx.mean()),
                    log_tokens_mean=None if tok is None else float(np.log(tok).mean()),
                    sizes=tuple(float(a) for a in s), values=tuple(float(a) for a in v),
                    value_se=None if se is None else tuple(float(a) for a in se),
                    tokens=None if tok is None else tuple(float(a) for a in tok), weights=tuple(float(a) for a in w),
                    labels=tuple(labels), excluded=tuple(excluded), boot_coefs=boot, axes=axes)


def _two_level_bootstrap(x, y, w, se, tau2, rung_samples, n_boot, seed) -> np.ndarray:
    """Coefficient draws of y*_i = yhat_i + e*_i + d*_i, refitted by WLS with the same weights.

    Level 1 (within rungs): e*_i from rung i's own sampling distribution, centred at zero (its
    trial-bootstrap draws minus their mean, else N(0, se_i^2); absent without either).
    Level 2 (across rungs): d*_i resampled with replacement from all rungs' deviations from the
    law, r_j / sqrt(1 - h_j) (leverage-adjusted, Davison & Hinkley 1997 section 6.2), shrunk to
    the scatter share tau^2 / (tau^2 + se_j^2) of their variance when per-rung errors are known.
    Rungs are resampled through their deviations (a fixed-design bootstrap), not as cases: with
    4-6 designed sizes most case resamples hold 2-3 distinct sizes and extrapolate wildly.
    """
    n, k = x.shape
    if n_boot <= 0:
        return np.zeros((0, k))
    rng = np.random.default_rng(seed)
    beta = _wls_coefs(x, y, w)
    fitted = x @ beta
    sw = np.sqrt(w)
    xw = x * sw[:, None]
    lev = np.einsum("ij,ji->i", xw, np.linalg.pinv(xw))
    dev = (y - fitted) / np.sqrt(np.clip(1.0 - lev, 1e-12, None))
    if se is not None:
        dev = dev * np.sqrt(tau2 / (tau2 + se**2)) if tau2 and tau2 > 0 else np.zeros(n)
    dev = dev - dev.mean()
    if rung_samples is not None:
        centred = [np.asarray(r, dtype=float) - np.mean(r) if len(r) else np.zeros(1) for r in rung_samples]
        e = np.column_stack([r[rng.integers(0, r.size, n_boot)] for r in centred])
    elif se is not None:
        e = rng.normal(0.0, 1.0, (n_boot, n)) * se
    else:
        e = np.zeros((n_boot, n))
    d = dev[rng.integers(0, n, (n_boot, n))]
    ystar = fitted + e + d
    coefs = np.linalg.lstsq(xw, (ystar * sw).T, rcond=None)[0].T
    return coefs


@dataclass(frozen=True)
class Backtest:
    """Leave-largest-out check: were the rungs at the largest size inside the prediction
    intervals of a trend fitted without them? The figures are those of the worst of them
    (``rung``; largest |z|): ``log_ratio`` = log(observed / predicted), ``z`` its standardised
    value; ``inside`` holds for all ``n_left_out`` of them (each tested at alpha / n_left_out)."""

    size: float
    observed: float
    predicted: float
    interval: ConfidenceInterval
    alpha: float
    inside: bool
    log_ratio: float
    z: float
    n_left_out: int = 1
    rung: str = ""
    sizes_left: int = 0

    def to_dict(self) -> dict:
        return {"size": self.size, "observed": self.observed, "predicted": self.predicted,
                "interval": self.interval.to_dict(), "alpha": self.alpha, "inside": self.inside,
                "log_ratio": self.log_ratio, "z": self.z, "n_left_out": self.n_left_out, "rung": self.rung,
                "sizes_left": self.sizes_left}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "Backtest":
        return cls(size=float(d["size"]), observed=float(d["observed"]), predicted=float(d["predicted"]),
                   interval=ConfidenceInterval(float(d["interval"]["low"]), float(d["interval"]["high"])),
                   alpha=float(d["alpha"]), inside=bool(d["inside"]), log_ratio=float(d["log_ratio"]),
                   z=float(d["z"]), n_left_out=int(d.get("n_left_out", 1)), rung=str(d.get("rung", "")),
                   sizes_left=int(d.get("sizes_left", 0)))


SAME_SIZE_RTOL = 1e-6   # rungs whose first regressor agrees to this share one size


def distinct_sizes(sizes: Sequence[float]) -> int:
    """How many different sizes (to ``SAME_SIZE_RTOL``) the rungs have."""
    out: list[float] = []
    for v in sorted(float(x) for x in sizes):
        if not out or v > out[-1] * (1 + SAME_SIZE_RTOL):
            out.append(v)
    return len(out)


def backtest_leave_largest_out(sizes: Sequence[float], values: Sequence[float], *,
                               value_se: Sequence[float] | None = None, tokens: Sequence[float] | None = None,
                               weights: Sequence[float] | None = None, alpha: float = 0.05,
                               axes: Sequence[str] | None = None, labels: Sequence[str] = ()) -> Backtest:
    """Fit without every rung at the largest size (of the first regressor; several rungs of an
    (N, D) grid share it); test each against the prediction interval at alpha / (their number),
    which includes that rung's own estimation error when ``value_se`` is given. Fewer than three
    sizes left without them: ValueError (nothing to test the trend with)."""
    s = _positive_array("sizes", sizes)
    top = float(s.max())
    out_idx = [i for i in range(s.size) if s[i] >= top * (1 - SAME_SIZE_RTOL)]
    keep = [i for i in range(s.size) if i not in out_idx]
    left = distinct_sizes([s[i] for i in keep])
    if left < 3:
        raise ValueError(f"leaving out the {len(out_idx)} rung(s) at the largest size leaves {left} size(s); "
                         "a backtest needs at least three")

    def sub(a):
        return None if a is None else [np.asarray(a, dtype=float)[i] for i in keep]
    fit = fit_trend([s[i] for i in keep], sub(values), value_se=sub(value_se), tokens=sub(tokens),
                    weights=sub(weights), n_bootstrap=0, axes=axes)
    a_each = alpha / len(out_idx)
    results = []
    for i in out_idx:
        own_se = 0.0 if value_se is None else float(np.asarray(value_se, dtype=float)[i])
        tok = None if tokens is None else float(np.asarray(tokens, dtype=float)[i])
        iv = fit.interval(float(s[i]), a_each, kind="prediction", tokens=tok, value_se=own_se)
        observed = float(np.asarray(values, dtype=float)[i])
        log_ratio = math.log(observed) - iv.log_estimate
        x0 = fit._x0(float(s[i]), tok)
        sd = math.sqrt(float(x0 @ np.asarray(fit.cov) @ x0) + fit._new_variance(own_se))
        results.append((abs(log_ratio / sd), i, observed, iv, log_ratio, log_ratio / sd))
    _, i, observed, iv, log_ratio, z = max(results)
    return Backtest(size=float(s[i]), observed=observed, predicted=iv.estimate, interval=iv.interval, alpha=a_each,
                    inside=all(r[3].interval.contains(r[2]) for r in results), log_ratio=log_ratio, z=z,
                    n_left_out=len(out_idx), rung=labels[i] if len(labels) > i else "", sizes_left=left)


@dataclass(frozen=True)
class DrawPrediction:
    """A log-linear law evaluated over parameter draws (e.g. a paper's published bootstrap)."""

    geometric_mean: float
    arithmetic_mean: float
    median: float
    interval: ConfidenceInterval
    alpha: float


def predict_from_parameter_draws(draws: np.ndarray, regressors: Sequence[float], alpha: float = 0.05) -> DrawPrediction:
    """``draws``: (B, 1 + m) rows of (intercept, coef_1..coef_m) of ln y = i + sum c_j ln x_j
    (natural log); ``regressors``: the m values x_j in natural units."""
    d = np.asarray(draws, dtype=float)
    x = _positive_array("regressors", regressors)
    if d.ndim != 2 or d.shape[1] != 1 + x.size:
        raise ValueError(f"draws must have shape (B, {1 + x.size}), got {d.shape}")
    ln = d[:, 0] + d[:, 1:] @ np.log(x)
    return DrawPrediction(geometric_mean=float(np.exp(ln.mean())), arithmetic_mean=float(np.exp(ln).mean()),
                          median=float(np.exp(np.median(ln))), interval=percentile_interval(ln, alpha).exp(),
                          alpha=alpha)
