"""Per-rung optimum: a weighted quadratic response surface near the best trials of one rung.

Method (DESIGN.md, "Fits are maths with honest uncertainty"):

1. Diverged trials (``Observation.usable`` False) are excluded from the surface, counted, and
   reported in a flag.
2. Categorical knobs (expert count, top-k, ...): for each level, the best observed loss among the
   trials at that level; the best level is the level of the best trial (equal to the per-level
   argmin), and the gap of every other level is reported. The continuous surface is fitted on
   the trials at the best trial's combination of categorical levels.
3. Continuous knobs are transformed (natural log where ``KnobSpec.log``) and scaled to
   z = (u - centre) / half-width of the search box, for conditioning.
4. "Near" trials: the trials are ranked by loss and the best ``near_fraction`` of them kept,
   but never fewer than m + ``margin`` where m = 1 + p + p(p+1)/2 is the number of quadratic
   coefficients (p continuous knobs). Fewer usable trials than that: flag ``too_few_points``.
   Weights fall with the loss gap to the best trial, w = 1 / (1 + gap / gap_max), so the
   basin's floor counts about twice as much as the rim where a quadratic fits worst.
5. Full quadratic with cross terms by statsmodels WLS (fits.quadratic); vertex x* = -H^{-1} b;
   its covariance by the delta method. The residual scale is floored at ``noise_sd`` squared
   when the caller measured the seed-to-seed noise (``fits.seed_noise``): the trials of a rung
   share one seed, so their scatter about the quadratic can be far below the loss noise a
   fresh seed adds (measured on the CPU ladder near the optimum lr: trials scattering by 0.01
   nats about the fit, one trial's two seeds 0.04 apart), and the optimum sought is that of the
   loss expected over seeds. H not positive definite: flag ``not_convex`` (the
   reported value is then the best trial's setting). A vertex outside the sampled range of a
   knob, or within ``edge_fraction`` of the range's width from its ends: flag ``edge``.
6. Near-optimal band (``band_rel`` = 0.25% by default): along each knob, with the others at the
   vertex, the settings whose fitted loss is within band_rel of the fitted minimum,
   |t_j| <= sqrt(2 band_rel L* / H_jj); plus the trials whose fitted loss is in the band.
7. Seed-noise bootstrap: when some setting was run with several seeds, trials are resampled
   with replacement within each setting and steps 4-5 redone; the vertex draws give a second,
   non-parametric interval. ``conf_int`` reports the widest of the two by default.

A rung with an ``edge``, ``not_convex`` or ``too_few_points`` flag has ``usable`` False and must
not silently enter a trend (``fits.power_law.trend_from_optima`` excludes it and says why).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Mapping, Sequence

import numpy as np

from fits.intervals import ConfidenceInterval, check_alpha, normal_interval, percentile_interval
from fits.observation import Observation
from fits.quadratic import SurfaceFit, fit_surface, fit_surface_fast, n_coefficients, unpack, vertex

BLOCKING_FLAGS = frozenset({"edge", "not_convex", "too_few_points"})


@dataclass(frozen=True)
class KnobSpec:
    """One knob of the search box: continuous (``low``, ``high``, ``log``) or categorical
    (``choices``). Units are the knob's natural units (a learning rate, a coefficient, ...)."""

    name: str
    low: float | None = None
    high: float | None = None
    log: bool = False
    choices: tuple[float | int | str, ...] | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise ValueError(f"KnobSpec.name must be a non-empty string, got {self.name!r}")
        if self.choices is not None:
            if self.low is not None or self.high is not None or self.log:
                raise ValueError(f"KnobSpec {self.name!r}: a categorical knob takes choices only")
            if len(self.choices) == 0:
                raise ValueError(f"KnobSpec {self.name!r}: choices must not be empty")
            object.__setattr__(self, "choices", tuple(self.choices))
            return
        for attr in ("low", "high"):
            v = getattr(self, attr)
            if not (isinstance(v, (int, float)) and math.isfinite(v)):
                raise ValueError(f"KnobSpec {self.name!r}: {attr} must be a finite number, got {v!r}")
        if not self.low < self.high:
            raise ValueError(f"KnobSpec {self.name!r}: low {self.low!r} must be below high {self.high!r}")
        if self.log and self.low <= 0:
            raise ValueError(f"KnobSpec {self.name!r}: a log knob needs low > 0, got {self.low!r}")

    @property
    def categorical(self) -> bool:
        return self.choices is not None

    def transform(self, value: float | np.ndarray) -> float | np.ndarray:
        return np.log(value) if self.log else value

    def untransform(self, value: float | np.ndarray) -> float | np.ndarray:
        return np.exp(value) if self.log else value


@dataclass(frozen=True)
class Flag:
    """A finding about a fit: ``code`` is machine-readable, ``message`` says why in words."""

    code: str
    message: str


@dataclass(frozen=True)
class CategoricalChoice:
    """Best level of a categorical knob and the best-loss gap (nats) of every level to it."""

    knob: str
    best: float | int | str
    best_loss_by_level: Mapping[float | int | str, float]
    gap_by_level: Mapping[float | int | str, float]


@dataclass(frozen=True)
class RungOptimum:
    """The optimum of one rung. ``vertex`` and ``vertex_cov`` are in transformed coordinates
    (natural log for log knobs) in the order of ``continuous``; losses are in nats."""

    rung: str
    params_total: float
    params_active: float
    tokens: float
    knobs: tuple[KnobSpec, ...]
    continuous: tuple[str, ...]
    vertex: tuple[float, ...]
    vertex_cov: tuple[tuple[float, ...], ...]
    best_setting: Mapping[str, float | int | str]
    best_loss: float
    fitted_min_loss: float | None
    flags: tuple[Flag, ...]
    band: Mapping[str, ConfidenceInterval]
    band_trials: tuple[int, ...]
    band_basis: str
    categorical: Mapping[str, CategoricalChoice]
    n_trials: int
    n_diverged: int
    n_fitted: int
    bootstrap_vertices: tuple[tuple[float, ...], ...] = ()
    surface: SurfaceFit | None = field(default=None, compare=False, repr=False)
    center: tuple[float, ...] = ()
    half_width: tuple[float, ...] = ()

    @property
    def usable(self) -> bool:
        """False when the optimum is on an edge, the surface not convex, or too few points."""
        return not any(f.code in BLOCKING_FLAGS for f in self.flags)

    @property
    def flag_codes(self) -> tuple[str, ...]:
        return tuple(f.code for f in self.flags)

    def _spec(self, knob: str) -> KnobSpec:
        for spec in self.knobs:
            if spec.name == knob:
                return spec
        raise ValueError(f"unknown knob {knob!r}; this rung has {[k.name for k in self.knobs]}")

    def value(self, knob: str) -> float | int | str:
        """The optimum in natural units (a categorical knob: its best level)."""
        spec = self._spec(knob)
        if spec.categorical:
            return self.categorical[knob].best
        return float(spec.untransform(self.vertex[self.continuous.index(knob)]))

    def transformed_se(self, knob: str) -> float:
        """Standard error of the vertex in transformed coordinates (delta method)."""
        i = self.continuous.index(self._spec(knob).name)
        return math.sqrt(max(self.vertex_cov[i][i], 0.0))

    def log_value(self, knob: str) -> tuple[float, float]:
        """(natural log of the optimum, its standard error), the input a trend fit needs."""
        spec = self._spec(knob)
        i = self.continuous.index(knob)
        if spec.log:
            return self.vertex[i], self.transformed_se(knob)
        v = self.vertex[i]
        if v <= 0:
            raise ValueError(f"knob {knob!r}: optimum {v!r} is not positive, so it has no log")
        return math.log(v), self.transformed_se(knob) / v   # delta method: se(log x) = se(x)/x

    def log_samples(self, knob: str) -> np.ndarray:
        """Bootstrap draws of the log optimum (empty when no seed bootstrap was possible)."""
        if not self.bootstrap_vertices:
            return np.zeros(0)
        i = self.continuous.index(knob)
        draws = np.asarray(self.bootstrap_vertices)[:, i]
        return draws if self._spec(knob).log else np.log(draws[draws > 0])

    def conf_int(self, alpha: float = 0.05, method: str = "widest") -> dict[str, ConfidenceInterval]:
        """Per continuous knob, in natural units: ``delta`` (normal, delta method), ``bootstrap``
        (percentile of the seed bootstrap) or ``widest`` (the hull of those available)."""
        check_alpha(alpha)
        if method not in ("delta", "bootstrap", "widest"):
            raise ValueError(f"method must be 'delta', 'bootstrap' or 'widest', got {method!r}")
        if method == "bootstrap" and not self.bootstrap_vertices:
            raise ValueError("no seed bootstrap: no setting of this rung was run with repeated seeds")
        out = {}
        for i, name in enumerate(self.continuous):
            spec = self._spec(name)
            candidates = []
            if method in ("delta", "widest"):
                candidates.append(normal_interval(self.vertex[i], self.transformed_se(name), alpha))
            if method in ("bootstrap", "widest") and self.bootstrap_vertices:
                candidates.append(percentile_interval(np.asarray(self.bootstrap_vertices)[:, i], alpha))
            lo = min(c.low for c in candidates)
            hi = max(c.high for c in candidates)
            out[name] = ConfidenceInterval(float(spec.untransform(lo)), float(spec.untransform(hi)))
        return out

    def predict(self, setting: Mapping[str, float]) -> float:
        """Fitted loss (nats) at a setting of the continuous knobs, in natural units."""
        if self.surface is None:
            raise ValueError("this rung has no fitted surface (too few points)")
        z = [(self._spec(n).transform(float(setting[n])) - c) / h
             for n, c, h in zip(self.continuous, self.center, self.half_width)]
        return float(self.surface.predict(np.asarray([z]))[0])

    def to_dict(self) -> dict:
        ci95 = self.conf_int(0.05) if self.continuous else {}
        ci80 = self.conf_int(0.20) if self.continuous else {}
        return {
            "rung": self.rung, "params_total": self.params_total, "params_active": self.params_active,
            "tokens": self.tokens, "usable": self.usable,
            "flags": [{"code": f.code, "message": f.message} for f in self.flags],
            "values": {k.name: self.value(k.name) for k in self.knobs},
            "ci95": {k: v.to_dict() for k, v in ci95.items()},
            "ci80": {k: v.to_dict() for k, v in ci80.items()},
            "vertex_transformed": list(self.vertex),
            "vertex_cov_transformed": [list(r) for r in self.vertex_cov],
            "best_setting": dict(self.best_setting), "best_loss": self.best_loss,
            "fitted_min_loss": self.fitted_min_loss,
            "band": {k: v.to_dict() for k, v in self.band.items()}, "band_basis": self.band_basis,
            "band_trials": list(self.band_trials),
            "categorical": {k: {"best": c.best, "gap_by_level": {str(lv): g for lv, g in c.gap_by_level.items()}}
                            for k, c in self.categorical.items()},
            "n_trials": self.n_trials, "n_diverged": self.n_diverged, "n_fitted": self.n_fitted,
            "n_bootstrap": len(self.bootstrap_vertices),
        }

    def summary(self) -> str:
        lines = [f"Rung {self.rung or '?'}: N_total={self.params_total:.4g}, N_active={self.params_active:.4g}, "
                 f"D={self.tokens:.4g}; {self.n_trials} trials ({self.n_diverged} diverged), "
                 f"{self.n_fitted} near the best fitted; usable={self.usable}"]
        ci = self.conf_int(0.05) if self.continuous else {}
        for k in self.knobs:
            if k.categorical:
                c = self.categorical[k.name]
                gaps = ", ".join(f"{lv}: +{g:.4g}" for lv, g in c.gap_by_level.items() if lv != c.best)
                lines.append(f"  {k.name:<16} best level {c.best!r}  (loss gaps {gaps or 'none'})")
            else:
                b = self.band[k.name]
                lines.append(f"  {k.name:<16} {self.value(k.name):.6g}  95% CI [{ci[k.name].low:.6g}, "
                             f"{ci[k.name].high:.6g}]  band [{b.low:.6g}, {b.high:.6g}]")
        lines.append(f"  best observed loss {self.best_loss:.6g}; fitted minimum "
                     f"{'n/a' if self.fitted_min_loss is None else format(self.fitted_min_loss, '.6g')}")
        lines += [f"  FLAG {f.code}: {f.message}" for f in self.flags]
        return "\n".join(lines)


def _near_and_weights(y: np.ndarray, near_fraction: float, n_min: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices of the near trials (best by loss) and their weights (see module docstring)."""
    order = np.argsort(y, kind="stable")
    n_near = min(len(y), max(int(math.ceil(near_fraction * len(y))), n_min))
    idx = order[:n_near]
    gap = y[idx] - y[idx[0]]
    gmax = gap.max()
    w = 1.0 / (1.0 + gap / gmax) if gmax > 0 else np.ones(n_near)
    return idx, w


def _rung_identity(obs: Sequence[Observation]) -> tuple[str, float, float, float]:
    first = obs[0]
    for i, o in enumerate(obs):
        for attr in ("params_total", "params_active", "tokens"):
            a, b = getattr(o, attr), getattr(first, attr)
            if not math.isclose(a, b, rel_tol=1e-9):
                raise ValueError(f"observations[{i}].{attr}={a!r} differs from observations[0] ({b!r}): "
                                 "one rung per fit_optimum call")
    rungs = {o.rung for o in obs}
    return (first.rung if len(rungs) == 1 else ",".join(sorted(rungs))), first.params_total, \
        first.params_active, first.tokens


def fit_optimum(observations: Sequence[Observation], knobs: Sequence[KnobSpec], *,
                near_fraction: float = 0.5, margin: int = 3, band_rel: float = 0.0025,
                edge_fraction: float = 0.05, n_bootstrap: int = 200, seed: int = 0,
                noise_sd: float | None = None) -> RungOptimum:
    """Fit the optimum of one rung from its trials (see the module docstring for the method).

    ``near_fraction``: share of usable trials (ranked by loss) used for the surface;
    ``margin``: extra points required beyond the number of quadratic coefficients;
    ``band_rel``: relative loss tolerance of the near-optimal band (0.0025 = 0.25%);
    ``edge_fraction``: a vertex closer than this fraction of the sampled range to its ends is
    on the edge; ``n_bootstrap``: seed-bootstrap resamples (used only when seeds repeat);
    ``noise_sd``: the measured seed-to-seed sd of one trial's loss, the floor of the surface's
    residual scale (None: the residuals alone).
    """
    if noise_sd is not None and not (math.isfinite(noise_sd) and noise_sd >= 0):
        raise ValueError(f"noise_sd must be a finite number >= 0 or None, got {noise_sd!r}")
    obs = list(observations)
    if not obs:
        raise ValueError("observations must not be empty")
    for i, o in enumerate(obs):
        if not isinstance(o, Observation):
            raise TypeError(f"observations[{i}] must be an Observation, got {type(o).__name__}")
    specs = tuple(knobs)
    if not specs:
        raise ValueError("knobs must name at least one KnobSpec")
    for s in specs:
        if not isinstance(s, KnobSpec):
            raise TypeError(f"knobs must be KnobSpec, got {type(s).__name__}")
        for i, o in enumerate(obs):
            if s.name not in o.knobs:
                raise ValueError(f"observations[{i}] has no value for knob {s.name!r}")
    if not 0.0 < near_fraction <= 1.0:
        raise ValueError(f"near_fraction must lie in (0, 1], got {near_fraction!r}")
    if not 0.0 <= band_rel < 1.0:
        raise ValueError(f"band_rel must lie in [0, 1), got {band_rel!r}")
    rung, n_tot, n_act, tokens = _rung_identity(obs)
    flags: list[Flag] = []
    usable_idx = [i for i, o in enumerate(obs) if o.usable]
    n_div = len(obs) - len(usable_idx)
    if n_div:
        flags.append(Flag("diverged_excluded", f"{n_div} of {len(obs)} trials diverged; excluded from the surface"))
    if not usable_idx:
        raise ValueError(f"rung {rung!r}: all {len(obs)} trials diverged; no optimum can be estimated")
    best_i = min(usable_idx, key=lambda i: obs[i].loss)
    best = obs[best_i]

    # Categorical knobs: best level by best observed loss within level.
    cats = [s for s in specs if s.categorical]
    categorical: dict[str, CategoricalChoice] = {}
    for s in cats:
        by_level: dict = {}
        for i in usable_idx:
            lv = obs[i].knobs[s.name]
            by_level[lv] = min(by_level.get(lv, math.inf), obs[i].loss)
        best_level = best.knobs[s.name]
        categorical[s.name] = CategoricalChoice(
            s.name, best_level, dict(by_level), {lv: v - by_level[best_level] for lv, v in by_level.items()})
    idx = np.asarray([i for i in usable_idx if all(obs[i].knobs[s.name] == best.knobs[s.name] for s in cats)])

    conts = [s for s in specs if not s.categorical]
    names = tuple(s.name for s in conts)
    p = len(conts)
    y = np.asarray([obs[i].loss for i in idx])
    common = dict(rung=rung, params_total=n_tot, params_active=n_act, tokens=tokens, knobs=specs,
                  continuous=names, best_setting=dict(best.knobs), best_loss=float(best.loss),
                  categorical=categorical, n_trials=len(obs), n_diverged=n_div)
    if p == 0:
        return RungOptimum(vertex=(), vertex_cov=(), fitted_min_loss=None, flags=tuple(flags), band={},
                           band_trials=tuple(int(i) for i in idx if obs[i].loss <= best.loss + band_rel * abs(best.loss)),
                           band_basis="observed", n_fitted=0, **common)
    center = np.asarray([(s.transform(s.low) + s.transform(s.high)) / 2 for s in conts], dtype=float)
    half = np.asarray([(s.transform(s.high) - s.transform(s.low)) / 2 for s in conts], dtype=float)
    u = np.asarray([[s.transform(float(obs[i].knobs[s.name])) for s in conts] for i in idx], dtype=float)
    z = (u - center) / half
    u_best = np.asarray([s.transform(float(best.knobs[s.name])) for s in conts])
    n_min = n_coefficients(p) + margin

    def fallback(extra: list[Flag], surface: SurfaceFit | None, n_fitted: int) -> RungOptimum:
        # No trustworthy vertex: report the best trial's setting and the observed band.
        cut = best.loss + band_rel * abs(best.loss)
        in_band = [int(i) for i in idx if obs[i].loss <= cut]
        band = {}
        for j, s in enumerate(conts):
            vals = [float(obs[i].knobs[s.name]) for i in in_band]
            band[s.name] = ConfidenceInterval(min(vals), max(vals))
        return RungOptimum(vertex=tuple(float(v) for v in u_best),
                           vertex_cov=tuple(tuple(math.inf if a == b else 0.0 for b in range(p)) for a in range(p)),
                           fitted_min_loss=None, flags=tuple(flags + extra), band=band, band_trials=tuple(in_band),
                           band_basis="observed", n_fitted=n_fitted, surface=surface,
                           center=tuple(center), half_width=tuple(half), **common)

    if len(idx) < n_min:
        return fallback([Flag("too_few_points", f"{len(idx)} usable trials at the best categorical levels; a "
                              f"quadratic in {p} knob(s) needs at least {n_min} ({n_coefficients(p)} coefficients "
                              f"+ {margin})")], None, 0)
    near, w = _near_and_weights(y, near_fraction, n_min)
    surface = fit_surface(z[near], y[near], w, min_scale=None if noise_sd is None else noise_sd ** 2)
    eig = np.linalg.eigvalsh(surface.hessian)
    if not np.all(eig > 0):
        return fallback([Flag("not_convex", f"Hessian of the fitted surface is not positive definite "
                              f"(eigenvalues {np.array2string(eig, precision=4)}); the loss has no interior "
                              "minimum in the sampled region")], surface, len(near))
    zs = surface.vertex()
    us = center + half * zs
    cov_u = surface.vertex_cov() * np.outer(half, half)
    # Edge: the vertex must lie inside the sampled range, away from its ends.
    lo_s, hi_s = u.min(axis=0), u.max(axis=0)
    for j, s in enumerate(conts):
        width = hi_s[j] - lo_s[j]
        margin_u = edge_fraction * width
        if width <= 0 or not (lo_s[j] + margin_u <= us[j] <= hi_s[j] - margin_u):
            where = "outside" if (us[j] < lo_s[j] or us[j] > hi_s[j]) else "within edge margin of"
            flags.append(Flag("edge", f"vertex {s.name}={float(s.untransform(us[j])):.6g} lies {where} the sampled "
                              f"range [{float(s.untransform(lo_s[j])):.6g}, {float(s.untransform(hi_s[j])):.6g}] "
                              f"(edge margin {edge_fraction:.0%} of its width); widen or move the box"))
    l_star = surface.min_value()
    hess = surface.hessian
    band = {}
    for j, s in enumerate(conts):
        t = math.sqrt(2.0 * band_rel * abs(l_star) / hess[j, j]) * half[j]
        band[s.name] = ConfidenceInterval(float(s.untransform(us[j] - t)), float(s.untransform(us[j] + t)))
    fitted_all = surface.predict(z)
    band_trials = tuple(int(i) for i, f in zip(idx, fitted_all) if f <= l_star + band_rel * abs(l_star))

    draws = _seed_bootstrap(z, y, near_fraction, n_min, n_bootstrap, seed, p)
    if draws is not None:
        ok = draws[np.all(np.isfinite(draws), axis=1)]
        if len(ok) < len(draws):
            flags.append(Flag("bootstrap_not_convex", f"{len(draws) - len(ok)} of {len(draws)} seed-bootstrap "
                              "refits had no convex vertex; they are left out of the bootstrap interval"))
        boot = tuple(tuple(float(v) for v in center + half * d) for d in ok)
    else:
        boot = ()
    return RungOptimum(vertex=tuple(float(v) for v in us), vertex_cov=tuple(tuple(float(v) for v in r) for r in cov_u),
                       fitted_min_loss=float(l_star), flags=tuple(flags), band=band, band_trials=band_trials,
                       band_basis="fitted", n_fitted=len(near), bootstrap_vertices=boot if len(boot) >= 2 else (),
                       surface=surface, center=tuple(center), half_width=tuple(half), **common)


def _seed_bootstrap(z: np.ndarray, y: np.ndarray, near_fraction: float, n_min: int, n_boot: int,
                    seed: int, p: int) -> np.ndarray | None:
    """Vertex draws (scaled coordinates) from resampling trials within each repeated setting;
    None when no setting was repeated (then there is no seed noise to resample)."""
    if n_boot <= 0:
        return None
    keys = [tuple(np.round(row, 12)) for row in z]
    groups: dict = {}
    for i, k in enumerate(keys):
        groups.setdefault(k, []).append(i)
    members = [np.asarray(g) for g in groups.values()]
    if not any(len(g) > 1 for g in members):
        return None
    rng = np.random.default_rng(seed)
    out = np.full((n_boot, p), np.nan)
    for b in range(n_boot):
        pick = np.concatenate([g[rng.integers(0, len(g), len(g))] if len(g) > 1 else g for g in members])
        yb, zb = y[pick], z[pick]
        near, w = _near_and_weights(yb, near_fraction, n_min)
        beta = fit_surface_fast(zb[near], yb[near], w)
        try:
            if np.all(np.linalg.eigvalsh(unpack(beta, p)[2]) > 0):
                out[b] = vertex(beta, p)
        except np.linalg.LinAlgError:
            pass
    return out
