"""Loss laws L(N) = E + A N^-alpha and L(N, D) = E + A N^-alpha + B D^-beta.

Fitting follows Hoffmann et al. (2022), appendix D.2, as replicated by Besiroglu et al. (2024):
the Huber loss (delta = 1e-3) of log L_hat - log L, summed over runs, with the log-sum-exp
parametrisation

    log L_hat = LSE(a - alpha log N, b - beta log D, e),   A = exp(a), B = exp(b), E = exp(e),

minimised from a grid of starting points. To keep it fast the objective is evaluated at every
grid point (vectorised) and BFGS, with the analytic gradient and a tolerance far below the
default, is run from the best ``n_starts`` of them. Convergence is checked (gradient max-norm): an optimiser stopped early leaves bootstrap refits near their start and collapses the
intervals about fifteen-fold (Besiroglu et al. 2024), so a fit that does not converge warns.

Bootstrap: rows resampled with replacement, each refit started from the full-data optimum and
the best few grid points; resamples are drawn up front from ``seed`` so results do not depend
on the number of worker processes.
"""

from __future__ import annotations

import itertools
import math
import multiprocessing
import os
import warnings
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np
from scipy.optimize import minimize

from fits.intervals import ConfidenceInterval, check_alpha, percentile_interval

HUBER_DELTA = 1e-3
# Max-norm of the gradient of the mean Huber loss / delta. Converged fits reach 1e-12 to 1e-8 on
# the Chinchilla data; an optimiser stopped at default tolerances leaves it near 1e-5.
GRAD_TOL = 1e-6
# Hoffmann et al. (2022) grid: alpha, beta in {0, .5, ..., 2}, e in {-1, -.5, ..., 1}, a, b in {0, 5, ..., 25}.
GRID_EXP = np.arange(0.0, 2.01, 0.5)
GRID_E = np.arange(-1.0, 1.01, 0.5)
GRID_LOGCOEF = np.arange(0.0, 25.01, 5.0)
# A credible law's exponents lie in EXPONENT_RANGE and its log-prefactors below LN_PREFACTOR_MAX.
# Published exponents: 0.076 (Kaplan et al. 2020, L(N)), 0.34 and 0.28 (Hoffmann et al. 2022),
# 0.35 and 0.37 (Besiroglu et al. 2024); the starting grid above stops at 2 and e^25. A fit that
# runs past these (alpha = 31.6 with A = 1e147 on rungs whose loss does not fall with size) has
# found no power law, only a step, and must not be extrapolated.
EXPONENT_RANGE = (0.01, 2.0)
LN_PREFACTOR_MAX = 30.0
# E is bounded by 0 and by the smallest observed loss; within this share of either it is at a bound.
E_BOUND_FRACTION = 1e-3
# A 95% bootstrap interval narrower than this share of its estimate has collapsed.
COLLAPSED_REL = 1e-6


class ConvergenceWarning(UserWarning):
    """The optimiser stopped with a gradient norm above ``GRAD_TOL``."""


def _objective(theta: np.ndarray, cols: np.ndarray, log_l: np.ndarray, delta: float) -> tuple[float, np.ndarray]:
    """Mean Huber loss / delta and its gradient. ``theta`` = (a, alpha[, b, beta], e);
    ``cols`` = (log N[, log D]) as rows."""
    m = cols.shape[0]
    terms = [theta[2 * j] - theta[2 * j + 1] * cols[j] for j in range(m)]
    terms.append(np.full_like(log_l, theta[-1]))
    t = np.vstack(terms)
    tmax = t.max(axis=0)
    ex = np.exp(t - tmax)
    s = ex.sum(axis=0)
    r = tmax + np.log(s) - log_l
    p = ex / s
    absr = np.abs(r)
    loss = np.where(absr <= delta, 0.5 * r**2, delta * (absr - 0.5 * delta))
    dr = np.clip(r, -delta, delta)
    n = log_l.size
    grad = np.empty_like(theta)
    for j in range(m):
        g = dr * p[j]
        grad[2 * j] = g.sum()
        grad[2 * j + 1] = -(g * cols[j]).sum()
    grad[-1] = (dr * p[-1]).sum()
    return float(loss.sum() / (n * delta)), grad / (n * delta)


def _grid(m: int) -> np.ndarray:
    per_term = [(a, e) for a in GRID_LOGCOEF for e in GRID_EXP]
    rows = [sum(combo, ()) + (e,) for combo in itertools.product(per_term, repeat=m) for e in GRID_E]
    return np.asarray(rows, dtype=float)


def _grid_values(grid: np.ndarray, cols: np.ndarray, log_l: np.ndarray, delta: float) -> np.ndarray:
    m = cols.shape[0]
    terms = [grid[:, 2 * j, None] - grid[:, 2 * j + 1, None] * cols[j][None, :] for j in range(m)]
    terms.append(np.broadcast_to(grid[:, -1, None], (grid.shape[0], log_l.size)))
    t = np.stack(terms)
    tmax = t.max(axis=0)
    r = tmax + np.log(np.exp(t - tmax).sum(axis=0)) - log_l[None, :]
    absr = np.abs(r)
    return np.where(absr <= delta, 0.5 * r**2, delta * (absr - 0.5 * delta)).mean(axis=1) / delta


def _minimise(starts: np.ndarray, cols: np.ndarray, log_l: np.ndarray, delta: float) -> tuple[np.ndarray, float, float]:
    """Best BFGS result over ``starts``: (theta, objective, gradient norm)."""
    best = (None, math.inf, math.inf)
    for x0 in starts:
        # BFGS to a gradient tolerance far below the default; it may end with "precision loss"
        # once the objective stops changing in the last digits, so the gradient is checked.
        res = minimize(_objective, x0, args=(cols, log_l, delta), jac=True, method="BFGS",
                       options={"gtol": 1e-9, "maxiter": 20000})
        if res.fun < best[1]:
            gnorm = float(np.linalg.norm(_objective(res.x, cols, log_l, delta)[1], ord=np.inf))
            best = (res.x, float(res.fun), gnorm)
    return best


@dataclass(frozen=True)
class LossLawFit:
    """Fitted loss law; ``params`` holds E, A, alpha [, B, beta] (losses in nats, N in
    parameters, D in tokens). ``boot`` holds bootstrap rows in the order of ``names``."""

    form: str
    params: Mapping[str, float]
    objective: float
    grad_norm: float
    converged: bool
    n: int
    huber_delta: float
    boot: np.ndarray = field(default_factory=lambda: np.zeros((0, 0)), compare=False, repr=False)
    n_boot_unconverged: int = 0

    @property
    def names(self) -> tuple[str, ...]:
        return ("E", "A", "alpha") + (("B", "beta") if self.form == "ND" else ())

    @property
    def compute_optimal_exponent(self) -> float:
        """a = beta / (alpha + beta): N_opt grows as C^a (Hoffmann et al. 2022, approach 3)."""
        if self.form != "ND":
            raise ValueError("the compute-optimal exponent needs the L(N, D) form")
        return self.params["beta"] / (self.params["alpha"] + self.params["beta"])

    def predict(self, n_params, tokens=None) -> np.ndarray | float:
        """Predicted loss (nats) at N parameters [and D tokens]."""
        n_arr = np.asarray(n_params, dtype=float)
        out = self.params["E"] + self.params["A"] * n_arr ** -self.params["alpha"]
        if self.form == "ND":
            if tokens is None:
                raise ValueError("this law is L(N, D): give tokens")
            out = out + self.params["B"] * np.asarray(tokens, dtype=float) ** -self.params["beta"]
        elif tokens is not None:
            raise ValueError("this law is L(N): tokens must be None")
        return float(out) if np.ndim(out) == 0 else out

    def problems(self, losses: Sequence[float] | None = None) -> tuple[str, ...]:
        """Why this law must not be extrapolated (empty when it may): not converged, an exponent
        outside ``EXPONENT_RANGE``, a prefactor above e^LN_PREFACTOR_MAX, or (given the fitted
        ``losses``) an irreducible loss E at 0 or at the smallest loss."""
        out = []
        if not self.converged:
            out.append(f"the fit did not converge (gradient norm {self.grad_norm:.2g} > {GRAD_TOL:g})")
        lo, hi = EXPONENT_RANGE
        for k in ("alpha", "beta"):
            v = self.params.get(k)
            if v is not None and not lo <= v <= hi:
                out.append(f"{k} = {v:.3g} is outside [{lo:g}, {hi:g}]")
        for k in ("A", "B"):
            v = self.params.get(k)
            if v is not None and (not math.isfinite(v) or v > math.exp(LN_PREFACTOR_MAX)):
                out.append(f"{k} = {v:.3g} is above e^{LN_PREFACTOR_MAX:g}")
        if self.boot.size and self.boot.shape[0] >= 10:
            # A bootstrap whose refits all land on one value has not measured anything: the
            # optimiser stayed at its start or a parameter sits on a bound (Besiroglu et al. 2024).
            for i, k in enumerate(self.names):
                col = self.boot[:, i]
                col = col[np.isfinite(col)]
                centre = abs(float(self.params[k])) or 1.0
                if col.size >= 10 and float(np.quantile(col, 0.975) - np.quantile(col, 0.025)) <= COLLAPSED_REL * centre:
                    out.append(f"the bootstrap interval of {k} has collapsed (95% width <= {COLLAPSED_REL:g} of "
                               f"{self.params[k]:.3g}): the data do not pin it down, it sits on a bound")
        if losses is not None and len(losses):
            least, e = float(min(losses)), self.params["E"]
            if e >= least * (1 - E_BOUND_FRACTION):
                out.append(f"E = {e:.4g} is at the smallest loss ({least:.4g}): no power-law term is left")
            elif e <= least * E_BOUND_FRACTION:
                out.append(f"E = {e:.3g} is at 0")
        return tuple(out)

    def boot_table(self) -> dict[str, np.ndarray]:
        if not self.boot.size:
            raise ValueError("no bootstrap: refit with n_bootstrap > 0")
        table = {n: self.boot[:, i] for i, n in enumerate(self.names)}
        if self.form == "ND":
            table["a"] = table["beta"] / (table["alpha"] + table["beta"])
        return table

    def conf_int(self, alpha: float = 0.05) -> dict[str, ConfidenceInterval]:
        """Percentile bootstrap intervals of every parameter (and of a, for L(N, D))."""
        check_alpha(alpha)
        return {k: percentile_interval(v, alpha) for k, v in self.boot_table().items()}

    def to_dict(self) -> dict:
        out = {"form": self.form, "params": dict(self.params), "objective": self.objective,
               "grad_norm": self.grad_norm, "converged": self.converged, "n": self.n,
               "huber_delta": self.huber_delta, "n_bootstrap": int(self.boot.shape[0]),
               "n_boot_unconverged": self.n_boot_unconverged}
        if self.form == "ND":
            out["compute_optimal_exponent"] = self.compute_optimal_exponent
        # The draws themselves, so a plan made from fits.json needs no refit (non-finite as null).
        out["boot"] = [[float(v) if math.isfinite(v) else None for v in row] for row in self.boot]
        if self.boot.size:
            out["ci95"] = {k: v.to_dict() for k, v in self.conf_int(0.05).items()}
            # Prefactors are spread over orders of magnitude when the data pin them down poorly (a
            # refit can land at A ~ 1e100): their spread is reported on the log scale the fit uses.
            # (exp of a fitted log-prefactor can also underflow to 0: floored at the smallest float).
            out["sd"] = {(f"ln_{k}" if k in ("A", "B") else k):
                         float(np.std(np.log(np.maximum(v, np.finfo(float).tiny)) if k in ("A", "B") else v,
                                      ddof=1))
                         for k, v in self.boot_table().items()}
        return out

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "LossLawFit":
        """The inverse of ``to_dict`` (bootstrap draws included when stored)."""
        m = 5 if d["form"] == "ND" else 3
        rows = [[math.nan if v is None else float(v) for v in r] for r in d.get("boot") or []]
        boot = np.asarray(rows, dtype=float).reshape(-1, m) if rows else np.zeros((0, 0))
        return cls(form=d["form"], params={k: float(v) for k, v in d["params"].items()},
                   objective=float(d["objective"]), grad_norm=float(d["grad_norm"]), converged=bool(d["converged"]),
                   n=int(d["n"]), huber_delta=float(d["huber_delta"]), boot=boot,
                   n_boot_unconverged=int(d.get("n_boot_unconverged", 0)))

    def summary(self) -> str:
        law = "E + A N^-alpha" + (" + B D^-beta" if self.form == "ND" else "")
        lines = [f"Loss law L = {law}: {self.n} runs, Huber delta {self.huber_delta:g}, "
                 f"objective {self.objective:.6g}, gradient norm {self.grad_norm:.2g} "
                 f"({'converged' if self.converged else 'NOT CONVERGED'})"]
        ci = self.conf_int(0.05) if self.boot.size else {}
        for k in self.names + (("a",) if self.form == "ND" else ()):
            v = self.compute_optimal_exponent if k == "a" else self.params[k]
            extra = f"  95% CI [{ci[k].low:.6g}, {ci[k].high:.6g}]" if k in ci else ""
            lines.append(f"  {k:<6} {v:.6g}{extra}")
        return "\n".join(lines)


def _prepare(n_params, tokens, loss) -> tuple[np.ndarray, np.ndarray]:
    arrays = {"N": n_params, "L": loss} | ({} if tokens is None else {"D": tokens})
    out = {}
    for name, a in arrays.items():
        arr = np.asarray(a, dtype=float).ravel()
        bad = ~(np.isfinite(arr) & (arr > 0))
        if bad.any():
            raise ValueError(f"{name} must be finite and positive, got {arr[bad][0]!r} at index {int(np.argmax(bad))}")
        out[name] = arr
    n = out["N"].size
    for name, arr in out.items():
        if arr.size != n:
            raise ValueError(f"{name} has {arr.size} entries, N has {n}")
    cols = np.vstack([np.log(out["N"])] + ([np.log(out["D"])] if tokens is not None else []))
    if n < 2 * cols.shape[0] + 2:
        raise ValueError(f"too few runs ({n}) for {2 * cols.shape[0] + 1} parameters")
    return cols, np.log(out["L"])


def _bootstrap_chunk(args) -> tuple[np.ndarray, int]:
    cols, log_l, delta, starts, index_rows = args
    out = np.empty((len(index_rows), starts.shape[1]))
    bad = 0
    for i, idx in enumerate(index_rows):
        theta, _, gnorm = _minimise(starts, cols[:, idx], log_l[idx], delta)
        out[i] = theta
        bad += gnorm > GRAD_TOL
    return out, bad


def _exp(x: float) -> float:
    """exp, but a bootstrap refit run off to a log-prefactor of hundreds gives inf, not a crash."""
    try:
        return math.exp(x)
    except OverflowError:
        return math.inf


def _to_params(theta: np.ndarray, m: int) -> dict[str, float]:
    p = {"E": _exp(theta[-1]), "A": _exp(theta[0]), "alpha": float(theta[1])}
    if m == 2:
        p |= {"B": _exp(theta[2]), "beta": float(theta[3])}
    return p


def _theta_to_row(theta: np.ndarray, m: int) -> list[float]:
    p = _to_params(theta, m)
    return [p[k] for k in ("E", "A", "alpha") + (("B", "beta") if m == 2 else ())]


def _fit(cols, log_l, *, delta, n_starts, n_bootstrap, boot_starts, seed, workers, form) -> LossLawFit:
    m = cols.shape[0]
    grid = _grid(m)
    order = np.argsort(_grid_values(grid, cols, log_l, delta))
    theta, obj, gnorm = _minimise(grid[order[:n_starts]], cols, log_l, delta)
    converged = gnorm <= GRAD_TOL
    if not converged:
        warnings.warn(f"loss-law fit did not converge: gradient norm {gnorm:.3g} > {GRAD_TOL:g}", ConvergenceWarning,
                      stacklevel=3)
    boot = np.zeros((0, 0))
    bad = 0
    if n_bootstrap > 0:
        rng = np.random.default_rng(seed)
        n = log_l.size
        idx = rng.integers(0, n, (n_bootstrap, n))
        starts = np.vstack([theta, grid[order[:boot_starts]]])
        workers = workers or min(os.cpu_count() or 1, 8)
        chunks = np.array_split(np.arange(n_bootstrap), max(1, workers * 4))
        jobs = [(cols, log_l, delta, starts, idx[c]) for c in chunks if c.size]
        if workers > 1 and n_bootstrap >= 20:
            # "spawn", not the default fork: the caller may hold threads (JAX, BLAS pools), and a
            # forked child of a multithreaded process can deadlock.
            with ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn")) as pool:
                results = list(pool.map(_bootstrap_chunk, jobs))
        else:
            results = [_bootstrap_chunk(j) for j in jobs]
        thetas = np.vstack([r[0] for r in results])
        bad = sum(r[1] for r in results)
        boot = np.asarray([_theta_to_row(t, m) for t in thetas])
        if bad:
            warnings.warn(f"{bad} of {n_bootstrap} bootstrap refits did not converge", ConvergenceWarning, stacklevel=3)
    return LossLawFit(form=form, params=_to_params(theta, m), objective=obj, grad_norm=gnorm, converged=converged,
                      n=int(log_l.size), huber_delta=delta, boot=boot, n_boot_unconverged=int(bad))


def fit_loss_law_n(n_params: Sequence[float], loss: Sequence[float], *, huber_delta: float = HUBER_DELTA,
                   n_starts: int = 16, n_bootstrap: int = 0, boot_starts: int = 1, seed: int = 0,
                   workers: int | None = None) -> LossLawFit:
    """Fit L(N) = E + A N^-alpha (N in parameters, L in nats); see the module docstring."""
    cols, log_l = _prepare(n_params, None, loss)
    return _fit(cols, log_l, delta=huber_delta, n_starts=n_starts, n_bootstrap=n_bootstrap, boot_starts=boot_starts,
                seed=seed, workers=workers, form="N")


def fit_loss_law_nd(n_params: Sequence[float], tokens: Sequence[float], loss: Sequence[float], *,
                    huber_delta: float = HUBER_DELTA, n_starts: int = 16, n_bootstrap: int = 0, boot_starts: int = 1,
                    seed: int = 0, workers: int | None = None) -> LossLawFit:
    """Fit L(N, D) = E + A N^-alpha + B D^-beta (N parameters, D tokens, L nats).

    ``n_starts``: grid points (best by objective) the full fit starts from; ``n_bootstrap``:
    row resamples; ``boot_starts``: grid points each refit starts from beside the full-data
    optimum; ``workers``: processes for the bootstrap (default: the CPU count, at most 8).
    """
    cols, log_l = _prepare(n_params, tokens, loss)
    return _fit(cols, log_l, delta=huber_delta, n_starts=n_starts, n_bootstrap=n_bootstrap, boot_starts=boot_starts,
                seed=seed, workers=workers, form="ND")
