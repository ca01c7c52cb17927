"""The per-rung optimum's interval held to known truth (simulated asymmetric basins) and to
published data (split halves of the Step Law dense cells).

Measured figures (quoted in docs/fits.md, "How wide the per-rung interval is, and why"):

* Asymmetric basins (``fits.calibration.simulate_ladder(basin="asymmetric")``, asymmetry 2.5,
  divergence wall at 4 lr*, 24 trials per rung, 60 ladders of 5 rungs): the 95% interval covers
  the true argmin in 97.6% of the 296 usable rungs at this test's seed (97.2% and 97.2% at two
  other seeds, 247 and 249 rungs); the default quadratic alone (``spec_forms=()``, the fit before
  the specification spread) in 26% (25%, 26%). At asymmetry 2 / 3 / 4: 98.7% / 94.9% / 93.9%.
* Symmetric quadratic basins (199 rungs): 100% (the noise part alone 94.0%; before: 97.0%).
* Step Law dense cells, 20 random half splits per cell: |z| <= 1.96 for the difference of the
  two halves' log lr optima in 100% of 339 splits, against 78.5% with the delta method of the
  default quadratic alone (``spec_forms=()``, the fit before the specification spread).
"""

from __future__ import annotations

import csv
import math
from collections import defaultdict

import numpy as np
import pytest
from scipy.optimize import minimize_scalar

from fits import KnobSpec, Observation, fit_optimum, simulate_ladder
from fits.calibration import basin_excess


def test_the_asymmetric_basin_is_steeper_above_and_its_argmin_is_the_stated_optimum():
    """The truth the coverage test scores against is the argmin of the expected loss; for the
    asymmetric basin it is x = 0 exactly (both branches >= 0, zero only there), checked here by
    a numerical minimiser from both sides, and the backend's SimulatedTruth uses the same curve."""
    from proxy.backends.simulated import SimulatedTruth

    for asym in (1.0, 2.5, 4.0):
        for bounds in ((-2.0, 0.3), (-0.3, 1.3)):
            res = minimize_scalar(lambda x: basin_excess(x, 0.03, "asymmetric", asym, 4.0), bounds=bounds,
                                  method="bounded", options={"xatol": 1e-10})
            assert abs(res.x) < 1e-5
    x = np.array([0.5, 1.0])
    up, down = basin_excess(x, 0.03, "asymmetric", 2.5, 4.0), basin_excess(-x, 0.03, "asymmetric", 2.5, 4.0)
    np.testing.assert_allclose(up, 2.5 * 0.03 * (x ** 2 + x ** 3 / math.log(4.0)))
    np.testing.assert_allclose(down, 0.03 * x ** 2)
    truth = SimulatedTruth(lr_basin="asymmetric", lr_asymmetry=2.5)
    assert truth._lr_excess(0.7) == pytest.approx(basin_excess(0.7, truth.lr_curvature, "asymmetric", 2.5,
                                                               truth.wall_factor))
    assert SimulatedTruth()._lr_excess(0.7) == pytest.approx(0.08 * 0.49)      # the default stays quadratic
    with pytest.raises(ValueError, match="lr_basin"):
        SimulatedTruth(lr_basin="cubic")
    with pytest.raises(ValueError, match="lr_asymmetry"):
        SimulatedTruth(lr_basin="asymmetric", lr_asymmetry=0.5)
    with pytest.raises(ValueError, match="basin"):
        simulate_ladder(np.random.default_rng(0), basin="flat")
    with pytest.raises(ValueError, match="asymmetry"):
        simulate_ladder(np.random.default_rng(0), basin="asymmetric", asymmetry=math.nan)


def _coverage(basin: str, n_ladders: int, seed: int) -> dict[str, float]:
    """Over n_ladders simulated ladders of 5 rungs, the share of usable rungs whose 95% interval
    covers the true optimum: ``reported`` (conf_int), ``noise`` (its delta-method part alone,
    about the same vertex) and ``plain`` (the default quadratic alone, spec_forms=(): the fit
    before the specification spread); with the counts ``n`` (usable rungs) and ``diverged``."""
    rng = np.random.default_rng(seed)
    hits: dict[str, list[bool]] = {"reported": [], "noise": [], "plain": []}
    n_div = 0
    for _ in range(n_ladders):
        ladder = simulate_ladder(rng, basin=basin)
        for obs, box, truth in zip(ladder.observations, ladder.boxes, ladder.true_log_lr):
            n_div += sum(o.diverged for o in obs)
            opt, plain = fit_optimum(obs, [box], n_bootstrap=0), fit_optimum(obs, [box], n_bootstrap=0, spec_forms=())
            if not opt.usable:
                continue
            hits["reported"].append(opt.conf_int(0.05)["lr"].contains(math.exp(truth)))
            hits["noise"].append(opt.conf_int(0.05, method="noise")["lr"].contains(math.exp(truth)))
            hits["plain"].append(plain.usable and plain.conf_int(0.05)["lr"].contains(math.exp(truth)))
    return {k: float(np.mean(v)) for k, v in hits.items()} | {"n": len(hits["reported"]), "diverged": n_div}


def test_per_rung_interval_covers_the_true_argmin_on_asymmetric_basins():
    """300 rungs with a gentle low side, a steep high side and a divergence wall: the quadratic
    alone is biased towards the gentle side, and its delta-method interval misses the argmin in
    most rungs; with the specification spread the 95% interval covers it at close to the
    nominal rate (measured 97.6% here, the default quadratic alone 26%; 90-99% asserted: about
    4 and 3 binomial standard errors, 1.3% at n = 296, below and above the nominal 95%)."""
    cov = _coverage("asymmetric", 60, seed=11)
    assert cov["n"] >= 290 and cov["diverged"] > 0            # the wall is hit, and excluded
    assert 0.90 <= cov["reported"] <= 0.99, cov
    assert cov["plain"] < 0.6, cov                             # the fit before the spread


def test_per_rung_interval_still_covers_a_correct_quadratic():
    """On the symmetric quadratic the specifications agree up to noise; the average's own delta
    method is close to nominal and the spread makes the interval conservative (measured 100%, and
    94.0% for the noise part, at this seed: docs/fits.md says what that costs the trends)."""
    cov = _coverage("quadratic", 40, seed=12)
    assert cov["n"] >= 190
    assert cov["reported"] >= 0.95, cov
    assert 0.88 <= cov["noise"] <= 0.99, cov


def _steplaw_cells(published_data):
    cells = defaultdict(list)
    with open(published_data / "steplaw_dense_lr_bs_loss.csv") as f:
        for r in csv.DictReader(f):
            n, d = float(r["N"]), float(r["D"])
            # batch size in tokens: bs sequences of 2048 tokens
            cells[(n, d)].append(Observation(n, n, d, {"lr": float(r["lr"]), "bs": float(r["bs"]) * 2048},
                                             float(r["smooth loss"])))
    return cells


def _split_half_rate(cells, n_splits: int, **fit_kwargs) -> tuple[float, int]:
    """Fraction of random half splits whose two log lr optima differ by at most 1.96 standard
    errors of the difference, z = (v1 - v2) / sqrt(se1^2 + se2^2)."""
    rng = np.random.default_rng(0)
    inside = []
    for obs in cells.values():
        lrs, bss = [o.knobs["lr"] for o in obs], [o.knobs["bs"] for o in obs]
        knobs = [KnobSpec("lr", min(lrs), max(lrs), log=True), KnobSpec("bs", min(bss), max(bss), log=True)]
        for _ in range(n_splits):
            perm = rng.permutation(len(obs))
            halves = [fit_optimum([obs[i] for i in part], knobs, n_bootstrap=0, **fit_kwargs)
                      for part in (perm[:len(obs) // 2], perm[len(obs) // 2:])]
            if not all(h.usable for h in halves):
                continue
            (v1, s1), (v2, s2) = (h.log_value("lr") for h in halves)
            inside.append(abs(v1 - v2) / math.hypot(s1, s2) <= 1.96)
    return float(np.mean(inside)), len(inside)


def test_split_halves_of_the_published_cells_agree_within_their_intervals(published_data):
    """Each Step Law dense cell (17 cells, ~118 runs each) split 20 times into random halves: the
    halves' optima should differ by more than 1.96 standard errors of the difference in about 5%
    of splits if the standard errors are right. The delta method of the quadratic alone passes
    78.5% (too narrow: it omits the window and form the vertex depends on); with the spread,
    100% (measured, 339 splits both). The band is one-sided (>= 85%): the specification spread is
    largely common to two halves of one cell (both see the same asymmetric curve), so it widens
    both intervals without moving their difference, and a split-half test can only show an
    interval too narrow. 85% is 10 points below nominal, about two binomial standard errors at the
    17 cells that are the independent units here (sd about 5%), and above the 78.5% of the plain
    fit, which the test checks fails it."""
    cells = _steplaw_cells(published_data)
    before, n_before = _split_half_rate(cells, 20, spec_forms=())
    after, n_after = _split_half_rate(cells, 20)
    assert n_before >= 330 and n_after >= 330
    assert before < 0.85, before
    assert after >= 0.85, after



def _trend_calibration(n_ladders: int, seed: int, target: float = 2e10, **fit_kwargs) -> dict[str, float]:
    """Over simulated ladders with asymmetric basins (5 rungs, 2e6..2e8 parameters, the law
    lr* = 3 N^-0.45 plus rung scatter): the share of ladders whose trend's 95% and 80% intervals
    at ``target`` (100x the largest rung) cover the true optimum, and the share whose
    leave-largest-out backtest at alpha 0.05 reports a miss although the ladder is on its law."""
    from fits import backtest_leave_largest_out, target_truth, trend_from_optima

    rng = np.random.default_rng(seed)
    hits: dict[str, list[bool]] = {"ci95": [], "ci80": [], "false_miss": []}
    for i in range(n_ladders):
        ladder = simulate_ladder(rng, basin="asymmetric")
        optima = [fit_optimum(o, [box], n_bootstrap=0, **fit_kwargs) for o, box in zip(ladder.observations, ladder.boxes)]
        truth = target_truth(ladder, target, rng)
        try:
            trend = trend_from_optima(optima, "lr", n_bootstrap=200, seed=i)
        except ValueError:              # fewer than 3 usable rungs
            continue
        hits["ci95"].append(trend.interval(target, 0.05).log_interval.contains(truth))
        hits["ci80"].append(trend.interval(target, 0.20).log_interval.contains(truth))
        if len(trend.sizes) >= 4:
            back = backtest_leave_largest_out(trend.sizes, trend.values, value_se=trend.value_se, alpha=0.05)
            hits["false_miss"].append(not back.inside)
    return {k: float(np.mean(v)) for k, v in hits.items()} | {"n": len(hits["ci95"])}


def test_the_trend_on_asymmetric_basins_covers_the_target_at_its_level():
    """The trends weight each rung by the noise part of its interval (fits.trend): the
    specification spread, a bias the rungs' basins share, stays out of the weights. On 600
    ladders of asymmetric basins the target's intervals are near nominal (measured 95.5% and
    75.3%; with the per-rung fit before the spread, the quadratic alone: 90.5% and 67.3%, the 80%
    interval too narrow), and a backtest of a ladder on its law reports a miss at about its
    level. Bands as in tests/test_fits_power_law.py (0.90-0.99 and 0.72-0.88)."""
    cal = _trend_calibration(600, seed=2024)
    assert cal["n"] >= 590, cal
    assert 0.90 <= cal["ci95"] <= 0.99, cal
    assert 0.72 <= cal["ci80"] <= 0.88, cal
    assert cal["false_miss"] <= 0.10, cal
