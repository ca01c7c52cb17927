"""Trend fits: recovery of a known law, calibration by simulation, backtest, loss law L(N)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from fits import (backtest_leave_largest_out, fit_loss_law_n, fit_optimum, fit_trend, simulate_ladder,
                  target_truth, trend_from_optima)


def test_trend_recovers_a_known_law_and_wls_matches_closed_form():
    sizes = np.array([1e6, 4e6, 1.6e7, 6.4e7, 2.56e8])
    rng = np.random.default_rng(0)
    se = np.full(5, 0.05)
    y = math.log(2.0) - 0.4 * np.log(sizes) + rng.normal(0, 0.05, 5)
    fit = fit_trend(sizes, np.exp(y), value_se=se, n_bootstrap=0)
    x = np.column_stack([np.ones(5), np.log(sizes) - np.log(sizes).mean()])
    w = 1.0 / (se**2 + fit.tau2)
    closed = np.linalg.solve(x.T @ (w[:, None] * x), x.T @ (w * y))
    np.testing.assert_allclose(fit.coef, closed, rtol=1e-10)
    assert fit.conf_int(0.05)["size_exponent"].contains(-0.4)
    assert fit.prefactor == pytest.approx(2.0, rel=0.5)
    assert fit.predict(1e9) == pytest.approx(math.exp(fit.coef[0] + fit.coef[1] * (math.log(1e9) - fit.log_size_mean)))
    assert fit.summary() and fit.to_dict()["df"] == 3


def _simulated_coverage(n_ladders: int, target: float):
    rng = np.random.default_rng(2024)
    hits = {0.05: [], 0.20: []}
    widths = []
    for i in range(n_ladders):
        ladder = simulate_ladder(rng)
        optima = [fit_optimum(o, [box], n_bootstrap=0) for o, box in zip(ladder.observations, ladder.boxes)]
        trend = trend_from_optima(optima, "lr", n_bootstrap=200, seed=i)
        truth = target_truth(ladder, target, rng)
        for alpha in hits:
            hits[alpha].append(trend.interval(target, alpha).log_interval.contains(truth))
        widths.append([trend.interval(s, 0.05).log_interval.width for s in (2e8, 2e9, 2e10, 2e11)])
    return {a: float(np.mean(h)) for a, h in hits.items()}, np.asarray(widths)


def test_reported_intervals_cover_the_truth_in_simulated_ladders():
    # 600 ladders of 5 rungs (2e6..2e8 parameters) with known optimum lr = 3 N^-0.45 (plus rung
    # scatter); the target is 100x the largest rung. Measured: 95% 0.983, 80% 0.832 (the per-rung
    # fit before the specification spread: 0.977, 0.823). 600 ladders, not 200: a binomial sd of
    # 0.6% at 97.5%, so the band tests the method and not the draw (at 200 ladders this seed gave
    # 199 of 200, 0.995, beside 0.985 at another seed).
    coverage, widths = _simulated_coverage(600, 2e10)
    assert 0.90 <= coverage[0.05] <= 0.99, coverage
    assert 0.72 <= coverage[0.20] <= 0.88, coverage
    assert np.all(np.diff(widths.mean(axis=0)) > 0)            # wider the further from the ladder
    assert np.mean(np.all(np.diff(widths, axis=1) > 0, axis=1)) > 0.95


def test_backtest_leave_largest_out():
    sizes = [1e6, 4e6, 1.6e7, 6.4e7, 2.56e8]
    law = [2.0 * s**-0.4 for s in sizes]
    rng = np.random.default_rng(3)
    noisy = [v * math.exp(rng.normal(0, 0.05)) for v in law]
    ok = backtest_leave_largest_out(sizes, noisy, value_se=[0.05] * 5)
    assert ok.inside and abs(ok.z) < 2.5
    broken = noisy[:-1] + [noisy[-1] * 4.0]                      # the largest rung off the law
    bad = backtest_leave_largest_out(sizes, broken, value_se=[0.05] * 5)
    assert not bad.inside and bad.log_ratio == pytest.approx(math.log(4.0) + ok.log_ratio, abs=1e-9) and bad.z > 2


def test_loss_law_in_n_recovers_known_truth():
    rng = np.random.default_rng(5)
    n = np.geomspace(1e6, 1e10, 30)
    loss = (1.7 + 400 * n**-0.34) * np.exp(rng.normal(0, 0.003, n.size))
    fit = fit_loss_law_n(n, loss, n_bootstrap=60, workers=1, seed=1)
    assert fit.converged
    ci = fit.conf_int(0.05)
    assert fit.params["alpha"] == pytest.approx(0.34, abs=0.03) and ci["alpha"].contains(0.34)
    assert ci["E"].contains(1.7)
    assert fit.predict(1e8) == pytest.approx(1.7 + 400 * 1e8**-0.34, rel=0.01)
    with pytest.raises(ValueError, match="N must be finite and positive"):
        fit_loss_law_n([1.0, -2.0, 3.0, 4.0, 5.0], [1.0] * 5)


def test_loss_law_summary_survives_degenerate_bootstrap_refits():
    # A poorly pinned prefactor can land at A ~ 1e132 (or underflow to 0) in a refit; its spread is reported on the log
    # scale (as fitted) instead of overflowing, and the other parameters keep their plain sd.
    from fits.loss_law import LossLawFit

    boot = np.array([[1.8, 1e132, 0.3], [1.9, 5.0, 0.35], [1.7, 50.0, 0.32], [1.8, 0.0, 0.9]])
    fit = LossLawFit(form="N", params={"E": 1.8, "A": 10.0, "alpha": 0.33}, objective=0.0,
                     grad_norm=0.0, converged=True, n=5, huber_delta=1e-3, boot=boot)
    out = fit.to_dict()
    ln_a = np.log([1e132, 5.0, 50.0, np.finfo(float).tiny])  # an underflowed A counts as the smallest float
    assert np.isclose(out["sd"]["ln_A"], np.std(ln_a, ddof=1))
    assert np.isclose(out["sd"]["alpha"], np.std(boot[:, 2], ddof=1))
    assert "A" not in out["sd"]


def test_backtest_round_trips_through_its_dict():
    import json

    from fits.power_law import Backtest, backtest_leave_largest_out

    sizes = [1e6, 2e6, 4e6, 8e6, 1.6e7]
    values = [0.01 * (s / 1e6) ** -0.3 * f for s, f in zip(sizes, (1.02, 0.97, 1.01, 0.99, 1.03))]
    b = backtest_leave_largest_out(sizes, values)
    assert Backtest.from_dict(json.loads(json.dumps(b.to_dict()))) == b


def test_rungs_on_a_line_do_not_shrink_the_intervals_below_their_own_standard_errors():
    """Modified Knapp-Hartung (Roever, Knapp & Friede 2015): when the rungs scatter less about the
    law than their standard errors say (q < 1), the coefficient covariance is that of the
    standard errors alone, (X'WX)^-1 with w = 1 / se^2 (tau^2 = 0), not q times it."""
    sizes = np.array([1e4, 2e4, 4e4, 8e4, 1.6e5])
    values = 0.02 * (sizes / 1e4) ** -0.3 * np.exp([1e-4, -1e-4, 0.0, 1e-4, -1e-4])   # nearly exact
    se = np.full(5, 0.2)
    fit = fit_trend(sizes, values, value_se=se)
    assert fit.scale == 1.0 and fit.tau2 == 0.0
    lx = np.log(sizes)
    x = np.column_stack([np.ones(5), lx - lx.mean()])
    np.testing.assert_allclose(np.asarray(fit.cov), np.linalg.inv(x.T @ (x / se[:, None] ** 2)), rtol=1e-9, atol=1e-15)
    # Rungs that scatter more than their errors keep the ordinary Knapp-Hartung factor q > 1.
    rough = values * np.exp([0.5, -0.5, 0.4, -0.4, 0.5])
    assert fit_trend(sizes, rough, value_se=se).scale > 1.0
