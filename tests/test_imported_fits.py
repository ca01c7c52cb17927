"""Fits on sweeps made elsewhere: size axes, rungs kept apart, a plan from `ladder import` with no
experiment file, and review checks that pass nothing without evidence.

References: the published Step Law laws (Li et al. 2025; tests/data/README.md: lr 9.35e-4 and a
batch of 5.0M tokens at N = 7e9, D = 1.4e12), and synthetic sweeps with a known optimum.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import math
from types import SimpleNamespace

import numpy as np
import pytest

from fits import KnobSpec, Observation, fit_loss_law_n, fit_optimum, trend_from_optima
from fits.power_law import backtest_leave_largest_out, fit_trend
from reports.cli import main
from reports.review import FAIL, INCONCLUSIVE, PASS, WARN, check_backtest, check_edge_largest, check_extrapolation

STEPLAW = "steplaw_dense_lr_bs_loss.csv"


def _lr_star(n: float) -> float:
    return 0.5 * n ** -0.3


def _write_sweep(path, sizes, lrs_per_rung, *, name=None, active=None, seed=0):
    """A CSV of lr sweeps on quadratic basins in log lr (curvature 0.05 nats per e-fold^2) about
    lr* = 0.5 N^-0.3, floor 1.7 + 400 N^-0.34, noise 0.002 nats; tokens 20 N."""
    rng = np.random.default_rng(seed)
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["name", "N", "N_act", "D", "lr", "bs", "loss"])
        for i, (n, k) in enumerate(zip(sizes, lrs_per_rung)):
            a = n if active is None else active[i]
            star = _lr_star(a)
            for x in np.linspace(-1.5, 1.5, k) if k > 1 else [0.0]:
                lr = star * math.exp(x)
                loss = 1.7 + 400 * a ** -0.34 + 0.05 * x ** 2 + rng.normal(0, 0.002)
                w.writerow([name[i] if name else f"m{i}", n, a, 20 * n, lr, 64, loss])
    return path


def _import(tmp_path, monkeypatch, csv_path, *maps, experiment="ext"):
    monkeypatch.chdir(tmp_path)
    base = ["--map", "N=params_total", "--map", "N_act=params_active", "--map", "D=tokens"]
    return main(["import", str(csv_path), "--experiment", experiment, *base, *maps])


def test_two_moe_configs_that_share_a_total_stay_two_rungs(tmp_path, monkeypatch, capsys):
    """Rungs are keyed by total and active counts and tokens: two MoE configs with one total but
    different active counts import as two rungs, not one merged rung."""
    src = _write_sweep(tmp_path / "moe.csv", [1e9, 1e9], [7, 7], active=[1e8, 2e8])
    assert _import(tmp_path, monkeypatch, src) == 0
    assert "into 2 rungs" in capsys.readouterr().out
    assert main(["status", "--experiment", "ext"]) == 0
    out = capsys.readouterr().out
    assert "N1e+09-A1e+08-D2e+10" in out and "N1e+09-A2e+08-D2e+10" in out


def test_a_rung_column_that_merges_different_sizes_is_refused_in_one_line(tmp_path, monkeypatch, capsys):
    src = _write_sweep(tmp_path / "moe.csv", [1e9, 1e9], [4, 4], name=["moe", "moe"], active=[1e8, 2e8])
    assert _import(tmp_path, monkeypatch, src, "--map", "name=rung") == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "rung 'moe' holds rows of different sizes" in err and "--map rung=" in err
    assert not (tmp_path / "runs" / "ext" / "trials.db").exists()


def test_map_joins_columns_into_rung_names_and_converts_units(tmp_path, monkeypatch, capsys):
    from proxy.sweep.runner import observations

    src = _write_sweep(tmp_path / "s.csv", [1e8, 2e8], [5, 5], name=["alpha", "beta"])
    assert _import(tmp_path, monkeypatch, src, "--map", "rung=name+D", "--map", "batch_size=bs*2048") == 0
    obs = observations(f"sqlite:///{tmp_path / 'runs' / 'ext' / 'trials.db'}", "ext")
    assert {o.rung for o in obs} == {"alpha-2000000000.0", "beta-4000000000.0"}
    assert {o.knobs["batch_size"] for o in obs} == {64 * 2048}
    # A conversion needs a column and a positive number; a joined name is for rungs only.
    for bad, needle in (("batch_size=bs*0", "finite positive number"), ("batch_size=nope*2", "'nope' is not in"),
                        ("lr=name+D", "name a rung or a config only")):
        assert _import(tmp_path, monkeypatch, src, "--map", bad, experiment="other") == 2
        assert needle in capsys.readouterr().err


def _moe_optima(totals, actives):
    optima = []
    for i, (t, a) in enumerate(zip(totals, actives)):
        obs = [Observation(params_total=t, params_active=a, tokens=20 * a, knobs={"lr": _lr_star(a) * math.exp(x)},
                           loss=1.7 + 0.05 * x ** 2, rung=f"r{i}") for x in np.linspace(-1.5, 1.5, 9)]
        optima.append(fit_optimum(obs, [KnobSpec("lr", 1e-5, 1.0, log=True)], n_bootstrap=0))
    return optima


def test_a_size_axis_that_barely_varies_is_refused_by_name():
    """Totals that move by 0.26% across rungs cannot carry an exponent: refused, naming the axis
    and its spread; the active axis of the same rungs fits the known exponent."""
    totals = [1e9 * (1 + 0.0026 * i / 4) for i in range(5)]
    actives = [1e7, 3e7, 1e8, 3e8, 9e8]
    optima = _moe_optima(totals, actives)
    with pytest.raises(ValueError, match=r"the 'lr' trend: params_total varies only 0\.26% across its 5 rungs"):
        trend_from_optima(optima, "lr", axes=("params_total",), n_bootstrap=0)
    fit = trend_from_optima(optima, "lr", axes=("params_active",), n_bootstrap=0)
    assert fit.exponent == pytest.approx(-0.3, abs=1e-6)
    # A wild exponent on large sizes reports an infinite prefactor rather than raising.
    wild = dataclasses.replace(fit, coef=(0.0, -100.0), log_size_mean=20.0)
    assert wild.prefactor == math.inf and "inf" in wild.summary()


def test_fit_on_a_refused_axis_is_a_trend_error_not_a_traceback(tmp_path, monkeypatch, capsys):
    src = _write_sweep(tmp_path / "moe.csv", [1e9 * (1 + 0.0005 * i) for i in range(5)], [7] * 5,
                       active=[1e7, 3e7, 1e8, 3e8, 9e8])
    assert _import(tmp_path, monkeypatch, src) == 0
    assert main(["fit", "--experiment", "ext", "--axes", "lr=params_total"]) == 0
    out = capsys.readouterr()
    assert "[lr] no trend: the 'lr' trend: params_total varies only" in out.out and "Traceback" not in out.err
    assert main(["fit", "--experiment", "ext", "--axes", "lr=params_total+nope"]) == 2
    assert "unknown size axis 'nope'" in capsys.readouterr().err


def test_the_largest_rung_without_a_fitted_optimum_is_no_evidence(tmp_path, monkeypatch):
    """Six rungs, the largest with two trials (no fitted optimum): edge_largest is INCONCLUSIVE,
    the lr extrapolation is measured from the largest rung that entered the trend (not the one
    with no optimum), and the loss law is fitted on the five usable rungs only."""
    from proxy.sweep.imported import experiment_from_store
    from proxy.sweep.store import open_storage
    from transfer.extrapolate import fit_all, ledger_summary, make_plan
    from fits.axes import SizePoint

    sizes = [1e7, 3e7, 1e8, 3e8, 1e9, 3e9]
    src = _write_sweep(tmp_path / "s.csv", sizes, [9, 9, 9, 9, 9, 2])
    assert _import(tmp_path, monkeypatch, src) == 0
    url = f"sqlite:///{tmp_path / 'runs' / 'ext' / 'trials.db'}"
    exp = experiment_from_store("ext", url).with_target_sizes(SizePoint(params_total=1e11, params_active=1e11,
                                                                       tokens=2e12))
    storage = open_storage(url, read_only=True)
    fits = fit_all(exp, storage)
    edge = check_edge_largest(fits)
    assert edge.status == INCONCLUSIVE and "no fitted optimum" in edge.reason and "N3e+09" in edge.reason
    assert fits.loss_law is not None and fits.loss_law.n == 5
    plan = make_plan(exp, fits, ledger_summary(exp, storage))
    lr = plan.knob("lr")
    assert lr.source_rung.startswith("N1e+09") and lr.extrapolation["params_active"] == pytest.approx(100.0)
    assert plan.extrapolation_factor == pytest.approx(1e11 / 3e9)   # the largest rung with any optimum
    # The true law lies inside the planned 95% interval (synthetic truth lr* = 0.5 N^-0.3).
    assert lr.ci95.contains(_lr_star(1e11))


@pytest.mark.parametrize("tokens,status", [(5.0, PASS), (50.0, WARN), (500.0, FAIL)])
def test_extrapolation_is_checked_on_every_axis_a_trend_uses(tokens, status):
    from transfer.plan import KnobPlan
    from proxy.sweep.experiment import REVIEW_DEFAULTS
    from fits.intervals import ConfidenceInterval as CI

    k = KnobPlan(name="lr", value=1e-3, log=True, ci80=CI(9e-4, 1.1e-3), ci95=CI(8e-4, 1.2e-3), kind80="prediction",
                 kind95="prediction", method="trend", axes=("params_active", "tokens"),
                 extrapolation={"params_active": 5.0, "tokens": tokens}, source_rung="r4")
    c = check_extrapolation(SimpleNamespace(knobs=(k,), extrapolation_factor=5.0, largest_rung="r4"), REVIEW_DEFAULTS)
    assert c.status == status and c.figure == pytest.approx(5.0 if status == PASS else tokens)
    if status != PASS:
        assert "tokens" in c.reason and "r4" in c.reason


def test_the_backtest_leaves_out_every_rung_at_the_largest_size():
    sizes = [1e6, 1e7, 1e8, 1e9, 1e10, 1e10]
    law = [0.5 * s ** -0.3 for s in sizes]
    labels = [f"r{i}" for i in range(6)]
    ok = backtest_leave_largest_out(sizes, law, value_se=[0.05] * 6, labels=labels)
    assert ok.n_left_out == 2 and ok.inside and ok.alpha == pytest.approx(0.025) and ok.sizes_left == 4
    off = list(law)
    off[4] *= 3.0   # one of the two largest rungs off the law
    bad = backtest_leave_largest_out(sizes, off, value_se=[0.05] * 6, labels=labels)
    assert not bad.inside and bad.rung == "r4"
    with pytest.raises(ValueError, match="leaves 2 size"):
        backtest_leave_largest_out([1e7, 1e8, 1e10, 1e10], law[:4], value_se=[0.05] * 4)
    # The review: a trend on three distinct sizes (six rungs) cannot be backtested.
    tr = fit_trend([1e7, 1e7, 1e8, 1e8, 1e9, 1e9], [0.5 * s ** -0.3 for s in [1e7, 1e7, 1e8, 1e8, 1e9, 1e9]],
                   value_se=[0.05] * 6, n_bootstrap=0)
    c = check_backtest(SimpleNamespace(trends={"lr": tr}, usable=[]), {"backtest_alpha": 0.05, "max_loss_penalty": 0.01})
    assert c.status == INCONCLUSIVE and "fewer than three sizes remain" in c.reason


def test_a_loss_law_with_its_floor_at_zero_is_not_usable():
    n = np.geomspace(1e6, 1e9, 8)
    law = fit_loss_law_n(n, 400 * n ** -0.3, n_bootstrap=40, seed=0, workers=1)
    problems = law.problems(400 * n ** -0.3)
    assert any("at 0" in p or "collapsed" in p for p in problems), problems


@pytest.mark.slow
def test_steplaw_from_import_to_a_plan_at_7b_with_no_experiment_file(tmp_path, monkeypatch, published_data, capsys):
    """`ladder import` of the shared Step Law dense sweep, then `ladder review --experiment steplaw
    --at params_total=7e9,tokens=1.4e12`: the default axes put lr on N and D and the batch size on
    D, and both published values lie inside the planned 95% intervals (measured: lr 7.9e-4 in
    [6.0e-4, 1.04e-3] against 9.35e-4; batch 4.9M in [3.4M, 7.1M] tokens against 5.0M)."""
    monkeypatch.chdir(tmp_path)
    assert main(["import", str(published_data / STEPLAW), "--experiment", "steplaw", "--map", "N=params_total",
                 "--map", "D=tokens", "--map", "smooth loss=loss", "--map", "batch_size=bs*2048"]) == 0
    assert main(["review", "--experiment", "steplaw", "--at", "params_total=7e9,tokens=1.4e12"]) == 0
    plan = json.loads((tmp_path / "runs" / "steplaw" / "plan.json").read_text())
    knobs = {k["name"]: k for k in plan["knobs"]}
    assert knobs["lr"]["axes"] == ["params_active", "tokens"] and knobs["batch_size"]["axes"] == ["tokens"]
    lr, bs = knobs["lr"]["ci95"], knobs["batch_size"]["ci95"]
    assert lr["low"] <= 9.35e-4 <= lr["high"], lr
    assert bs["low"] <= 5.0e6 <= bs["high"], bs
    assert plan["config"]["model"] is None and plan["target"]["tokens"] == 1.4e12
    review = json.loads((tmp_path / "runs" / "steplaw" / "review.json").read_text())
    ext = next(c for c in review["checks"] if c["name"] == "extrapolation")
    assert "tokens" in ext["reason"]   # 1.4T is 14x the largest swept D: the tokens axis is checked


def test_rungs_on_isoflop_curves_give_the_plan_a_compute_optimal_size(tmp_path, monkeypatch):
    """Rungs laid out on four compute budgets (five sizes each) of a known L(N, D) = 1.7 +
    400 N^-0.34 + 410 D^-0.28: the plan's compute-optimal exponent covers beta / (alpha + beta)
    and its N_opt at the target's FLOPs covers the closed form of Hoffmann et al. (2022), eq. 4."""
    from fits.axes import SizePoint
    from fits.compute_optimal import true_compute_optimal
    from proxy.sweep.imported import experiment_from_store
    from proxy.sweep.store import open_storage
    from transfer.extrapolate import fit_all, ledger_summary, make_plan

    law = dict(A=400.0, alpha=0.34, B=410.0, beta=0.28)
    rng = np.random.default_rng(3)
    with open(tmp_path / "iso.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["N", "D", "lr", "loss"])
        for c in (1e17, 1e18, 1e19, 1e20):
            n_opt = float(true_compute_optimal(c, **law))
            for n in n_opt * np.exp(np.linspace(-1.6, 1.6, 5)):
                d = c / (6 * n)
                floor = 1.7 + law["A"] * n ** -law["alpha"] + law["B"] * d ** -law["beta"]
                for x in np.linspace(-1.5, 1.5, 7):
                    w.writerow([n, d, _lr_star(n) * math.exp(x), floor + 0.05 * x ** 2 + rng.normal(0, 0.001)])
    monkeypatch.chdir(tmp_path)
    assert main(["import", "iso.csv", "--experiment", "iso", "--map", "N=params_total", "--map", "D=tokens"]) == 0
    url = f"sqlite:///{tmp_path / 'runs' / 'iso' / 'trials.db'}"
    target = 1e22
    n_true = float(true_compute_optimal(target, **law))
    exp = experiment_from_store("iso", url).with_target_sizes(SizePoint(params_total=n_true, params_active=n_true,
                                                                       tokens=target / (6 * n_true)))
    storage = open_storage(url, read_only=True)
    fits = fit_all(exp, storage)
    assert fits.compute_optimal is not None, fits.compute_error
    co = make_plan(exp, fits, ledger_summary(exp, storage)).compute_optimal
    assert co.n_budgets == 4 and co.a_ci95.contains(0.28 / 0.62)
    assert co.n_opt_ci95.contains(n_true) and "inside the interval" in co.statement
    # The same from the command line, and the report draws the isoFLOP page with that statement.
    at = f"params_total={n_true:.6g},tokens={target / (6 * n_true):.6g}"
    assert main(["review", "--experiment", "iso", "--at", at]) == 0
    assert main(["report", "--experiment", "iso", "--at", at]) == 0
    from test_report import pdf_pages

    pages = pdf_pages(tmp_path / "runs" / "iso" / "report.pdf")
    page = next(p for p in pages if "Compute-optimal size (isoFLOP curves" in p)
    assert "compute-optimal size" in pages[0] and "inside the interval" in page


def test_plan_and_review_reuse_fits_json_while_it_matches_the_store(tmp_path, monkeypatch, capsys):
    """The Fits rebuilt from fits.json equal a fresh fit (optima, trends with their bootstrap,
    the loss law); plan reuses them while the store holds the same trials and refits once a run
    is added."""
    from proxy.sweep.imported import experiment_from_store
    from proxy.sweep.store import open_storage
    from transfer.extrapolate import fit_all
    from transfer.fits_cache import cached_fits

    sizes = [1e7, 3e7, 1e8, 3e8, 1e9]
    assert _import(tmp_path, monkeypatch, _write_sweep(tmp_path / "a.csv", sizes, [9] * 5)) == 0
    at = ["--at", "params_total=1e10,tokens=2e11"]
    assert main(["plan", "--experiment", "ext", *at]) == 0
    assert "reused" not in capsys.readouterr().err
    folder = tmp_path / "runs" / "ext"
    first = json.loads((folder / "plan.json").read_text())
    exp = experiment_from_store("ext", f"sqlite:///{folder / 'trials.db'}")
    storage = open_storage(exp.storage, read_only=True)
    cached, reused = cached_fits(exp, storage, folder)
    fresh = fit_all(exp, storage)
    assert reused and [f.optimum for f in cached.rungs] == [f.optimum for f in fresh.rungs]
    assert cached.trends["lr"].interval(1e10, 0.05) == fresh.trends["lr"].interval(1e10, 0.05)
    assert np.array_equal(cached.loss_law.boot, fresh.loss_law.boot) and cached.loss_law.params == fresh.loss_law.params
    assert main(["plan", "--experiment", "ext", *at]) == 0
    assert "fits.json matches the store's trials: reused" in capsys.readouterr().err
    again = json.loads((folder / "plan.json").read_text())
    assert again["knobs"] == first["knobs"] and again["loss"] == first["loss"]
    # One more rung in the store: the digest changes and everything is refitted.
    assert _import(tmp_path, monkeypatch, _write_sweep(tmp_path / "b.csv", [3e9], [9], seed=1)) == 0
    assert main(["plan", "--experiment", "ext", *at]) == 0
    assert "reused" not in capsys.readouterr().err
    assert json.loads((folder / "fits.json").read_text())["rungs"][-1]["rung"].startswith("N3e+09")
