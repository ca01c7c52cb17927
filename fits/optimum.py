"""Per-rung optimum: a weighted quadratic response surface near the best trials of one rung,
its specification spread across windows and surface forms, and a three-point parabola on
coarse grids.

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
   coefficients (p continuous knobs). Fewer usable trials than that: step 8 (one knob, three
   or more distinct values) or flag ``too_few_points``. Weights fall with the loss gap to the
   best trial, w = 1 / (1 + gap / gap_max), so the basin's floor counts about twice as much as
   the rim where a quadratic fits worst.
5. The default specification: a full quadratic with cross terms by statsmodels WLS
   (fits.quadratic); vertex x* = -H^{-1} b, its covariance by the delta method. The residual
   scale is floored at ``noise_sd`` squared when the caller measured the seed-to-seed noise
   (``fits.seed_noise``): the trials of a rung share one seed, so their scatter about the
   quadratic can be far below the loss noise a fresh seed adds (measured on the CPU ladder
   near the optimum lr: trials scattering by 0.01 nats about the fit, one trial's two seeds 0.04
   apart), and the optimum sought is that of the loss expected over seeds. H not positive
   definite: flag ``not_convex`` (the reported value is then the best trial's setting).
6. Specification spread. Real learning-rate curves are asymmetric (a gentle rise below the
   optimum, a wall above), so the quadratic is misspecified and its vertex moves with the
   window it is fitted on: on the Step Law dense cells (tests/data) the optimum lr moves by 0.125
   decades between near_fraction 0.25, 0.5 and 1.0 while the delta method's 95% interval is
   +-0.026 decades. So the fit is redone over ``spec_windows`` (near fractions 0.25, 0.35, 0.5,
   0.7, 1.0) x ``spec_forms`` (the quadratic; plus a cubic term per knob; plus a split
   quadratic whose curvature changes at the vertex: ``fits.quadratic.fit_form``). The reported
   vertex is the equal-weight average of the specifications with a convex minimum inside the
   sampled range (``spec_labels``, ``spec_vertices``; the default's own vertex is
   ``default_vertex``), and its covariance ``vertex_cov`` = ``delta_cov`` + ``spec_cov``: the
   average's delta method (the trials' noise, propagated through every specification's
   influence on the losses) plus the specifications' spread about the average (model averaging,
   Buckland, Burnham & Augustin 1997). ``transformed_se``, ``log_value`` and ``conf_int`` use
   the total; ``noise_se`` and ``conf_int(method="noise")`` the noise part alone.
   ``predict`` is the default surface translated so that its minimum sits at the reported vertex.
   Calibration (tests/test_fits_interval_calibration.py, docs/fits.md): on simulated
   asymmetric basins with a divergence wall the 95% interval covers the true argmin in 97% of
   rungs at asymmetry 2.5 (94-99% over asymmetries 2 to 4; the default quadratic alone: 26%);
   on correct quadratics it is conservative (100%; its noise part alone 94%).
7. Edge: the reported vertex, or the default surface's, outside the sampled range of a knob or
   within ``edge_fraction`` of the range's width from its ends: flag ``edge``. Near-optimal band
   (``band_rel`` = 0.25% by default): along each knob, with the others at the vertex, the
   settings whose fitted loss is within band_rel of the fitted minimum,
   |t_j| <= sqrt(2 band_rel L* / H_jj); plus the trials whose fitted loss is in the band.
8. Coarse grid: one continuous knob, at least three distinct values but fewer trials than the
   quadratic needs (step 4). The optimum is the vertex of the parabola through the best distinct
   value (lowest mean loss) and its two neighbours, in the transformed coordinate (flag
   ``coarse_grid``, informational). The best value at the grid's lowest or highest end: flag
   ``edge`` (the optimum may lie beyond the grid). The vertex's variance is the delta method's
   with the noise of one trial taken from, in order: ``noise_sd``, the pooled within-setting
   variance of repeated settings when larger (or when noise_sd is absent), else a stated prior
   of ``coarse_noise_fraction`` (0.25) times the three points' loss range; the basis is in the
   flag's message and in ``noise_basis``. Fewer than three distinct values: ``too_few_points``.
9. Seed-noise bootstrap: when some setting was run with several seeds, trials are resampled
   with replacement within each setting and steps 4-5 redone (the default specification only;
   the draws are shifted by the average's offset from the default); the vertex draws give a
   second, non-parametric interval. ``conf_int`` reports the widest of the two by default.

A rung with an ``edge``, ``not_convex`` or ``too_few_points`` flag has ``usable`` False and must
not silently enter a trend (``fits.power_law.trend_from_optima`` excludes it and says why).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Mapping, Sequence

import numpy as np

from fits.coarse_grid import _Coarse, _coarse_parabola
from fits.intervals import ConfidenceInterval, check_alpha, normal_interval, percentile_interval
from fits.observation import Observation
from fits.quadratic import (SURFACE_FORMS, SurfaceFit, fit_form, fit_surface, fit_surface_fast, n_coefficients,
                            n_form_coefficients, unpack, vertex)

BLOCKING_FLAGS = frozenset({"edge", "not_convex", "too_few_points"})
# Informational flags (the optimum stays usable): ``diverged_excluded``, ``bootstrap_not_convex``,
# ``coarse_grid`` (the optimum is a three-point parabola's vertex, module docstring step 8).

# The specification spread (module docstring, step 6): the windows of near trials and the
# surface forms refitted beside the default (near_fraction, quadratic).
SPEC_WINDOWS = (0.25, 0.35, 0.5, 0.7, 1.0)
SPEC_FORMS = SURFACE_FORMS
# Coarse grid without measured noise: the noise prior as a fraction of the three points' loss
# range (module docstring, step 8).
COARSE_NOISE_FRACTION = 0.25


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
    # The two parts of ``vertex_cov`` (= delta_cov + spec_cov): the delta method's covariance of
    # the default surface (the noise of its trials), and the specification spread (module
    # docstring, step 6). Empty in a record made before the spread was added: then vertex_cov
    # is the delta method's alone.
    delta_cov: tuple[tuple[float, ...], ...] = ()
    spec_cov: tuple[tuple[float, ...], ...] = ()
    # The vertex (transformed coordinates) of every specification that had a convex minimum
    # inside the sampled range, labelled "form@near_fraction" (e.g. "cubic@0.35"), and how many
    # specifications were tried in all.
    spec_labels: tuple[str, ...] = ()
    spec_vertices: tuple[tuple[float, ...], ...] = ()
    n_spec_tried: int = 0
    # The default specification's vertex (near_fraction, quadratic), transformed coordinates;
    # ``vertex`` is the specifications' average (empty where the two coincide by construction:
    # no specification set, a coarse grid, a fallback).
    default_vertex: tuple[float, ...] = ()
    # Where the noise behind the interval came from: "residuals" (the surface's own residuals,
    # floored at noise_sd when given), or for a coarse grid "noise_sd", "replicates" or "prior".
    noise_basis: str = "residuals"

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
        """Standard error of the vertex in transformed coordinates: the delta method's plus the
        specification spread (``vertex_cov``)."""
        i = self.continuous.index(self._spec(knob).name)
        return math.sqrt(max(self.vertex_cov[i][i], 0.0))

    def noise_se(self, knob: str) -> float:
        """Standard error from the delta method alone (the trials' noise, no specification
        spread): the interval this fit reported before the spread was added."""
        i = self.continuous.index(self._spec(knob).name)
        cov = self.delta_cov or self.vertex_cov
        return math.sqrt(max(cov[i][i], 0.0))

    def spec_se(self, knob: str) -> float:
        """Standard error added by the specification spread (0 when there is none)."""
        if not self.spec_cov:
            return 0.0
        i = self.continuous.index(self._spec(knob).name)
        return math.sqrt(max(self.spec_cov[i][i], 0.0))

    def log_value(self, knob: str, part: str = "total") -> tuple[float, float]:
        """(natural log of the optimum, its standard error), the input a trend fit needs.
        ``part``: ``total`` (``transformed_se``), ``noise`` (``noise_se``: the trials' noise
        alone) or ``spec`` (``spec_se``: the specification spread alone)."""
        se_of = {"total": self.transformed_se, "noise": self.noise_se, "spec": self.spec_se}
        if part not in se_of:
            raise ValueError(f"part must be one of {sorted(se_of)}, got {part!r}")
        spec = self._spec(knob)
        i = self.continuous.index(knob)
        if spec.log:
            return self.vertex[i], se_of[part](knob)
        v = self.vertex[i]
        if v <= 0:
            raise ValueError(f"knob {knob!r}: optimum {v!r} is not positive, so it has no log")
        return math.log(v), se_of[part](knob) / v   # delta method: se(log x) = se(x)/x

    def log_samples(self, knob: str) -> np.ndarray:
        """Bootstrap draws of the log optimum (empty when no seed bootstrap was possible)."""
        if not self.bootstrap_vertices:
            return np.zeros(0)
        i = self.continuous.index(knob)
        draws = np.asarray(self.bootstrap_vertices)[:, i]
        return draws if self._spec(knob).log else np.log(draws[draws > 0])

    def conf_int(self, alpha: float = 0.05, method: str = "widest") -> dict[str, ConfidenceInterval]:
        """Per continuous knob, in natural units: ``delta`` (normal, with ``vertex_cov``: the delta
        method plus the specification spread), ``noise`` (normal, the delta method alone),
        ``bootstrap`` (percentile of the seed bootstrap) or ``widest`` (the hull of ``delta`` and
        ``bootstrap``, those available)."""
        check_alpha(alpha)
        if method not in ("delta", "noise", "bootstrap", "widest"):
            raise ValueError(f"method must be 'delta', 'noise', 'bootstrap' or 'widest', got {method!r}")
        if method == "bootstrap" and not self.bootstrap_vertices:
            raise ValueError("no seed bootstrap: no setting of this rung was run with repeated seeds")
        out = {}
        for i, name in enumerate(self.continuous):
            spec = self._spec(name)
            candidates = []
            if method in ("delta", "widest"):
                candidates.append(normal_interval(self.vertex[i], self.transformed_se(name), alpha))
            if method == "noise":
                candidates.append(normal_interval(self.vertex[i], self.noise_se(name), alpha))
            if method in ("bootstrap", "widest") and self.bootstrap_vertices:
                candidates.append(percentile_interval(np.asarray(self.bootstrap_vertices)[:, i], alpha))
            lo = min(c.low for c in candidates)
            hi = max(c.high for c in candidates)
            out[name] = ConfidenceInterval(float(spec.untransform(lo)), float(spec.untransform(hi)))
        return out

    def predict(self, setting: Mapping[str, float]) -> float:
        """Fitted loss (nats) at a setting of the continuous knobs, in natural units: the default
        surface, translated so that its minimum sits at the reported vertex (the
        specifications' average; no translation where there is no default_vertex), so that
        whoever ranks trials by it (``transfer.ladder.replicate_choice``) or draws it ranks them
        about the reported optimum."""
        if self.surface is None:
            raise ValueError("this rung has no fitted surface (too few points)")
        shift = [(v - d) for v, d in zip(self.vertex, self.default_vertex)] if self.default_vertex else [0.0] * len(self.continuous)
        z = [(self._spec(n).transform(float(setting[n])) - c - dv) / h
             for n, c, h, dv in zip(self.continuous, self.center, self.half_width, shift)]
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
            "delta_cov_transformed": [list(r) for r in (self.delta_cov or self.vertex_cov)],
            "spec_cov_transformed": [list(r) for r in self.spec_cov],
            "specifications": [{"label": lb, "vertex_transformed": list(v)}
                               for lb, v in zip(self.spec_labels, self.spec_vertices)],
            "n_spec_tried": self.n_spec_tried, "noise_basis": self.noise_basis,
            "default_vertex_transformed": list(self.default_vertex or self.vertex),
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
                if self.spec_labels:
                    lines.append(f"  {'':<16} se (transformed) {self.transformed_se(k.name):.4g} = noise "
                                 f"{self.noise_se(k.name):.4g} (+) specification {self.spec_se(k.name):.4g} "
                                 f"over {len(self.spec_labels)} of {self.n_spec_tried} specifications")
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
                noise_sd: float | None = None, spec_windows: Sequence[float] = SPEC_WINDOWS,
                spec_forms: Sequence[str] = SPEC_FORMS,
                coarse_noise_fraction: float = COARSE_NOISE_FRACTION) -> RungOptimum:
    """Fit the optimum of one rung from its trials (see the module docstring for the method).

    ``near_fraction``: share of usable trials (ranked by loss) used for the surface;
    ``margin``: extra points required beyond the number of quadratic coefficients;
    ``band_rel``: relative loss tolerance of the near-optimal band (0.0025 = 0.25%);
    ``edge_fraction``: a vertex closer than this fraction of the sampled range to its ends is
    on the edge; ``n_bootstrap``: seed-bootstrap resamples (used only when seeds repeat);
    ``noise_sd``: the measured seed-to-seed sd of one trial's loss, the floor of the surface's
    residual scale (None: the residuals alone);
    ``spec_windows``, ``spec_forms``: the windows (near fractions) and surface forms
    (``fits.quadratic.SURFACE_FORMS``) whose vertices make the specification spread (either
    empty: no spread, the delta method alone);
    ``coarse_noise_fraction``: on a coarse grid with neither ``noise_sd`` nor a repeated
    setting, the stated noise prior, as a fraction of the three points' loss range.
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
    windows = tuple(spec_windows)
    if any(not (isinstance(f, (int, float)) and 0.0 < f <= 1.0) for f in windows):
        raise ValueError(f"spec_windows must be near fractions in (0, 1], got {windows!r}")
    forms = tuple(spec_forms)
    if any(f not in SURFACE_FORMS for f in forms):
        raise ValueError(f"spec_forms must be drawn from {SURFACE_FORMS}, got {forms!r}")
    if not (isinstance(coarse_noise_fraction, (int, float)) and math.isfinite(coarse_noise_fraction)
            and coarse_noise_fraction > 0):
        raise ValueError(f"coarse_noise_fraction must be a finite number > 0, got {coarse_noise_fraction!r}")
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
    geometry = dict(center=tuple(center), half_width=tuple(half))

    def fallback(extra: list[Flag], surface: SurfaceFit | None, n_fitted: int,
                 noise_basis: str = "residuals") -> RungOptimum:
        # No trustworthy vertex: report the best trial's setting and the observed band.
        cut = best.loss + band_rel * abs(best.loss)
        in_band = [int(i) for i in idx if obs[i].loss <= cut]
        band = {}
        for j, s in enumerate(conts):
            vals = [float(obs[i].knobs[s.name]) for i in in_band]
            band[s.name] = ConfidenceInterval(min(vals), max(vals))
        inf_cov = tuple(tuple(math.inf if a == b else 0.0 for b in range(p)) for a in range(p))
        return RungOptimum(vertex=tuple(float(v) for v in u_best), vertex_cov=inf_cov, delta_cov=inf_cov,
                           fitted_min_loss=None, flags=tuple(flags + extra), band=band, band_trials=tuple(in_band),
                           band_basis="observed", n_fitted=n_fitted, surface=surface, noise_basis=noise_basis,
                           **geometry, **common)

    if len(idx) < n_min:
        n_values = len(np.unique(np.round(u[:, 0], 12))) if p == 1 else 0
        if p == 1 and n_values >= 3:
            coarse = _coarse_parabola(z[:, 0], y, noise_sd, coarse_noise_fraction)
            note = Flag("coarse_grid", f"{len(idx)} usable trials at {n_values} distinct values of {names[0]}, "
                        f"fewer than the {n_min} a quadratic surface needs: the optimum is the vertex of the "
                        f"parabola through the best value and its two neighbours (in {names[0]}'s "
                        f"{'log ' if conts[0].log else ''}coordinate); {coarse.noise_note}")
            if coarse.edge_side is not None:
                at = float(conts[0].untransform(u_best[0]))
                return fallback([note, Flag("edge", f"the best of the {n_values} values of {names[0]}, {at:.6g}, "
                                            f"is the grid's {coarse.edge_side}; the optimum may lie beyond it: "
                                            "widen or move the grid")], None, 0, coarse.basis)
            return _coarse_optimum(coarse, conts, center, half, flags + [note], band_rel, idx, z, common, geometry)
        why = (f"{n_values} distinct value(s) of {names[0]}: a parabola needs 3" if p == 1 else
               f"a quadratic in {p} knobs needs at least {n_min} ({n_coefficients(p)} coefficients + {margin})")
        return fallback([Flag("too_few_points", f"{len(idx)} usable trials at the best categorical levels; {why}")],
                        None, 0)
    near, w = _near_and_weights(y, near_fraction, n_min)
    min_scale = None if noise_sd is None else noise_sd ** 2
    surface = fit_surface(z[near], y[near], w, min_scale=min_scale)
    eig = np.linalg.eigvalsh(surface.hessian)
    if not np.all(eig > 0):
        return fallback([Flag("not_convex", f"Hessian of the fitted surface is not positive definite "
                              f"(eigenvalues {np.array2string(eig, precision=4)}); the loss has no interior "
                              "minimum in the sampled region")], surface, len(near))
    z_default = surface.vertex()
    # Per-trial noise variance for the specification spread: the default fit's residual mean
    # square (unweighted: the trials' noise is one variance), floored at the measured seed noise.
    resid = y[near] - surface.predict(z[near])
    sigma2 = max(float(resid @ resid) / max(len(near) - n_coefficients(p), 1), min_scale or 0.0)
    spread = (_specification_spread(z, y, near_fraction, n_min, margin, z_default, sigma2, windows, forms)
              if windows and forms else None)
    hh = np.outer(half, half)
    if spread is None:                  # the default specification alone: its delta method
        zs, delta_u, spec_u = z_default, surface.vertex_cov() * hh, np.zeros((p, p))
    else:
        zs, delta_u, spec_u = spread.mean, spread.noise_cov * hh, spread.spec_cov * hh
    us = center + half * zs
    u_default = center + half * z_default
    # Edge: the reported vertex and the default surface's own must lie inside the sampled range,
    # away from its ends (a default vertex at the edge means the surface runs into the box even
    # where the specifications' average is pulled inside it).
    lo_s, hi_s = u.min(axis=0), u.max(axis=0)
    for j, s in enumerate(conts):
        width = hi_s[j] - lo_s[j]
        margin_u = edge_fraction * width
        for what, at in (("vertex", us[j]), ("default surface's vertex", u_default[j])):
            if width <= 0 or not (lo_s[j] + margin_u <= at <= hi_s[j] - margin_u):
                where = "outside" if (at < lo_s[j] or at > hi_s[j]) else "within edge margin of"
                flags.append(Flag("edge", f"{what} {s.name}={float(s.untransform(at)):.6g} lies {where} the sampled "
                                  f"range [{float(s.untransform(lo_s[j])):.6g}, {float(s.untransform(hi_s[j])):.6g}] "
                                  f"(edge margin {edge_fraction:.0%} of its width); widen or move the box"))
                break
    l_star = surface.min_value()
    band = _band(conts, us, half, surface.hessian, l_star, band_rel)
    fitted_all = surface.predict(z - (zs - z_default))   # the surface translated to the reported vertex
    band_trials = tuple(int(i) for i, f in zip(idx, fitted_all) if f <= l_star + band_rel * abs(l_star))

    draws = _seed_bootstrap(z, y, near_fraction, n_min, n_bootstrap, seed, p)
    if draws is not None:
        ok = draws[np.all(np.isfinite(draws), axis=1)]
        if len(ok) < len(draws):
            flags.append(Flag("bootstrap_not_convex", f"{len(draws) - len(ok)} of {len(draws)} seed-bootstrap "
                              "refits had no convex vertex; they are left out of the bootstrap interval"))
        # The refits redo the default specification only (the specification set for each of
        # hundreds of resamples would cost that many times more); their draws are shifted by
        # the reported vertex's offset from the default's, so they describe the noise about
        # the reported vertex.
        boot = tuple(tuple(float(v) for v in center + half * (d + zs - z_default)) for d in ok)
    else:
        boot = ()
    return RungOptimum(vertex=tuple(float(v) for v in us), vertex_cov=_tuples(delta_u + spec_u),
                       delta_cov=_tuples(delta_u), spec_cov=_tuples(spec_u),
                       spec_labels=() if spread is None else spread.labels,
                       spec_vertices=() if spread is None else tuple(tuple(float(x) for x in center + half * v)
                                                                      for v in spread.vertices),
                       n_spec_tried=0 if spread is None else spread.n_tried, noise_basis="residuals",
                       default_vertex=tuple(float(v) for v in u_default),
                       fitted_min_loss=float(l_star), flags=tuple(flags), band=band, band_trials=band_trials,
                       band_basis="fitted", n_fitted=len(near), bootstrap_vertices=boot if len(boot) >= 2 else (),
                       surface=surface, **geometry, **common)


def _tuples(m: np.ndarray) -> tuple[tuple[float, ...], ...]:
    return tuple(tuple(float(v) for v in r) for r in np.atleast_2d(m))


def _band(conts: Sequence[KnobSpec], us: np.ndarray, half: np.ndarray, hess: np.ndarray, l_star: float,
          band_rel: float) -> dict[str, ConfidenceInterval]:
    """Near-optimal band along each knob: |t_j| <= sqrt(2 band_rel L* / H_jj) (scaled units)."""
    band = {}
    for j, s in enumerate(conts):
        t = math.sqrt(2.0 * band_rel * abs(l_star) / hess[j, j]) * half[j]
        band[s.name] = ConfidenceInterval(float(s.untransform(us[j] - t)), float(s.untransform(us[j] + t)))
    return band


@dataclass(frozen=True)
class _Spread:
    mean: np.ndarray                    # the specifications' average vertex, scaled coordinates
    noise_cov: np.ndarray               # its covariance from the trials' noise, scaled coordinates
    spec_cov: np.ndarray                # the specification spread about it, scaled coordinates
    labels: tuple[str, ...]
    vertices: tuple[np.ndarray, ...]    # scaled coordinates
    n_tried: int


def _specification_spread(z: np.ndarray, y: np.ndarray, near_fraction: float, n_min: int, margin: int,
                          v0: np.ndarray, sigma2: float, windows: tuple[float, ...],
                          forms: tuple[str, ...]) -> _Spread | None:
    """The specifications' average vertex, its noise covariance and the specification spread
    (module docstring, step 6), in scaled coordinates; None when fewer than two specifications
    could be fitted (then the default fit stands alone).

    Every (window, form) is refitted by ``fits.quadratic.fit_form`` (numpy, as
    ``fit_surface_fast``); windows whose near sets coincide (small rungs, where the floor n_min
    binds) count once, and a form is tried only with ``margin`` points beyond its coefficients.
    A specification counts when it has a convex minimum inside the sampled range. With x*_s its
    vertex and G_s = dx*_s/dy its influence on the trials' losses (zero off its window):

        x_bar     = mean_s x*_s                                  (equal-weight average)
        noise_cov = sigma^2 G_bar G_bar',  G_bar = mean_s G_s    (delta method of x_bar)
        spec_cov  = mean_s (x*_s - x_bar)(x*_s - x_bar)'         (between specifications)

    noise_cov + spec_cov is the variance of a model average (Buckland, Burnham & Augustin 1997,
    eq. 9, equal weights: the within-model part as the average's own delta method, since the
    specifications share their trials). The between part is not reduced by the share of it the
    trials' noise would make on its own: on asymmetric basins the specifications disagree in
    ways that share a direction, and removing that share (a Hausman-type correction) left 95%
    intervals covering the truth in only 83-85% of simulated rungs at asymmetry 3 (docs/fits.md)."""
    n, p = z.shape
    lo, hi = z.min(axis=0), z.max(axis=0)
    labels: list[str] = []
    vertices: list[np.ndarray] = []
    influences: list[np.ndarray] = []
    n_tried = 0
    seen: set[int] = set()
    for frac in (near_fraction,) + tuple(sorted(set(windows) - {near_fraction})):
        near, w = _near_and_weights(y, frac, n_min)
        if len(near) in seen:                               # the same near set: the same fits
            continue
        seen.add(len(near))
        quad = fit_form(z[near], y[near], w, "quadratic")
        for form in forms if frac != near_fraction or "quadratic" in forms else ("quadratic",) + forms:
            if len(near) < n_form_coefficients(p, form) + margin:
                continue
            n_tried += 1
            fit = quad if form == "quadratic" else fit_form(z[near], y[near], w, form,
                                                            start=v0 if quad is None else quad[0])
            if fit is None or np.any(fit[0] < lo) or np.any(fit[0] > hi):
                continue
            full = np.zeros((p, n))
            full[:, near] = fit[1]
            labels.append(f"{form}@{frac:g}")
            vertices.append(v0 if frac == near_fraction and form == "quadratic" else np.asarray(fit[0], dtype=float))
            influences.append(full)
    if len(vertices) < 2:
        return None
    arr, infl = np.asarray(vertices), np.asarray(influences)
    mean, g_bar = arr.mean(axis=0), infl.mean(axis=0)
    dev = arr - mean
    return _Spread(mean=mean, noise_cov=sigma2 * g_bar @ g_bar.T, spec_cov=dev.T @ dev / len(arr),
                   labels=tuple(labels), vertices=tuple(vertices), n_tried=n_tried)


def _coarse_optimum(coarse: _Coarse, conts: Sequence[KnobSpec], center: np.ndarray, half: np.ndarray,
                    flags: list[Flag], band_rel: float, idx: np.ndarray, z: np.ndarray, common: dict,
                    geometry: dict) -> RungOptimum:
    """The RungOptimum of an interior three-point parabola (``_coarse_parabola``)."""
    # The middle point is the first lowest of the three means (argmin), so its left neighbour is
    # strictly higher and its right one no lower: the second divided difference, the curvature,
    # is positive and the parabola has a minimum.
    surface = coarse.surface
    zs = surface.vertex()
    us = center + half * zs
    cov_u = surface.vertex_cov() * np.outer(half, half)
    l_star = surface.min_value()
    span = (z[:, 0] >= coarse.points[0] - 1e-12) & (z[:, 0] <= coarse.points[-1] + 1e-12)
    fitted = surface.predict(z)
    band_trials = tuple(int(i) for i, f, ok in zip(idx, fitted, span) if ok and f <= l_star + band_rel * abs(l_star))
    return RungOptimum(vertex=tuple(float(v) for v in us), vertex_cov=_tuples(cov_u), delta_cov=_tuples(cov_u),
                       spec_cov=_tuples(np.zeros_like(cov_u)), noise_basis=coarse.basis,
                       fitted_min_loss=float(l_star), flags=tuple(flags),
                       band=_band(conts, us, half, surface.hessian, l_star, band_rel), band_trials=band_trials,
                       band_basis="fitted", n_fitted=surface.n, surface=surface, **geometry, **common)


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
