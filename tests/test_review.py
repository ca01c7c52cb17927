"""The review: each check against a ladder with known truth, the verdict rule, the JSON contract."""

from __future__ import annotations

import dataclasses
import json
import math
from types import SimpleNamespace

import numpy as np
import pytest

from fits import ConfidenceInterval as CI
from fits import KnobSpec, fit_optimum, simulate_ladder, trend_from_optima
from proxy.sweep.experiment import REVIEW_DEFAULTS
from reports.review import (FAIL, GO, HARD_CHECKS, INCONCLUSIVE, NO_GO, PASS, WARN, Check, Verdict, check_backtest,
                            check_edge_largest, check_extrapolation, check_interior_rungs, check_loss_penalty, decide)
from transfer.extrapolate import Fits
from transfer.observations import RungFit
from transfer.plan import KnobPlan, Provenance

POLICY = dict(REVIEW_DEFAULTS)


def _fits(ladder, shift_last: float = 0.0) -> Fits:
    """Fits of a simulated ladder (fits.calibration); ``shift_last`` moves the largest rung's
    true optimum by that many e-folds (a bend at the top)."""
    rungs = []
    for i, (obs, box) in enumerate(zip(ladder.observations, ladder.boxes)):
        if i == len(ladder.observations) - 1 and shift_last:
            obs = [dataclasses.replace(o, knobs={"lr": o.knobs["lr"] * math.exp(shift_last)}) for o in obs]
            box = KnobSpec("lr", box.low * math.exp(shift_last), box.high * math.exp(shift_last), log=True)
        opt = fit_optimum(obs, [box])
        rungs.append(RungFit(opt.rung, opt, len(obs)))
    optima = [r.optimum for r in rungs]
    trends = {"lr": trend_from_optima(optima, "lr")}
    return Fits(rungs=tuple(rungs), trends=trends, trend_errors={}, loss_law=None, loss_error="",
                observations={r.rung: list(o) for r, o in zip(rungs, ladder.observations)})


def test_backtest_passes_on_a_power_law_and_fails_on_a_bend():
    rng = np.random.default_rng(3)
    ladder = simulate_ladder(rng, n_trials=32, rung_scatter=0.02, box_offset=0.3)
    good = check_backtest(_fits(ladder), POLICY)
    assert good.status == PASS and good.hard and abs(good.figure) < 3
    # A bend of 0.7 e-folds at the top (2x in lr): far outside the prediction interval.
    bad = check_backtest(_fits(ladder, shift_last=-0.7), POLICY)
    assert bad.status == FAIL and "bends away" in bad.reason and bad.figure < -3


def test_interior_rungs_and_edges():
    rng = np.random.default_rng(4)
    ladder = simulate_ladder(rng, n_trials=32, sizes=(2e6, 6e6, 2e7))
    fits = _fits(ladder)
    few = check_interior_rungs(fits, POLICY)
    assert few.status == INCONCLUSIVE and few.figure == 3 and "at least 4" in few.reason
    assert check_interior_rungs(fits, POLICY | {"min_interior_rungs": 3}).status == PASS
    assert check_backtest(fits, POLICY).status == INCONCLUSIVE
    assert check_edge_largest(fits).status == PASS
    # The largest rung searched a box whose top is below its optimum: the optimum is on the edge.
    truth = ladder.true_log_lr[-1]
    first = ladder.observations[-1][0]
    log_lr = np.linspace(truth - 3.0, truth - 0.3, 24)
    kept = [dataclasses.replace(first, knobs={"lr": float(math.exp(u))}, loss=2.0 + 0.03 * (u - truth) ** 2)
            for u in log_lr]
    opt = fit_optimum(kept, [KnobSpec("lr", math.exp(log_lr[0]), math.exp(log_lr[-1]), log=True)])
    assert "edge" in opt.flag_codes
    edged = dataclasses.replace(fits, rungs=fits.rungs[:-1] + (RungFit(opt.rung, opt, len(kept)),))
    e = check_edge_largest(edged)
    assert e.status == INCONCLUSIVE and "edge" in e.reason and e.figure == 1


@pytest.mark.parametrize("factor,status", [(15.0, PASS), (100.0, PASS), (150.0, WARN), (1000.0, WARN), (1500.0, FAIL)])
def test_extrapolation_thresholds(factor, status):
    plan = SimpleNamespace(extrapolation_factor=factor, largest_rung="r4", knobs=())
    c = check_extrapolation(plan, POLICY)
    assert c.status == status and c.figure == factor and "100x" in c.threshold


def test_loss_penalty_adds_over_knobs_and_needs_curvature():
    def kp(name, pen):
        return KnobPlan(name=name, value=1.0, log=True, ci80=CI(0.9, 1.1), ci95=CI(0.8, 1.2), kind80="prediction",
                        kind95="prediction", method="trend", penalty95=None if pen is None else CI(pen / 2, pen))
    ok = check_loss_penalty(SimpleNamespace(knobs=(kp("lr", 0.004), kp("aux_loss_coef", 0.005))), POLICY)
    assert ok.status == PASS and ok.figure == pytest.approx(0.009)
    over = check_loss_penalty(SimpleNamespace(knobs=(kp("lr", 0.006), kp("aux_loss_coef", 0.005))), POLICY)
    assert over.status == INCONCLUSIVE and over.figure == pytest.approx(0.011)
    assert check_loss_penalty(SimpleNamespace(knobs=(kp("lr", None),)), POLICY).status == INCONCLUSIVE


def _c(name, status):
    return Check(name=name, title=name, status=status, figure=1.0, unit="", threshold="", reason=f"{name} {status}",
                 hard=name in HARD_CHECKS)


def test_verdict_rule():
    passing = tuple(_c(n, PASS) for n in HARD_CHECKS)
    assert decide(passing)[0] == GO
    assert decide(passing + (_c("sweep_cost", WARN),)) == (GO, ("warning - sweep_cost: sweep_cost WARN",))
    one_missing = passing[:-1] + (_c(HARD_CHECKS[-1], INCONCLUSIVE),)
    assert decide(one_missing)[0] == INCONCLUSIVE
    # A failed hard check outranks missing evidence.
    verdict, reasons = decide(one_missing + (_c("backtest", FAIL),))
    assert verdict == NO_GO and reasons[0].startswith("backtest:")
    # Soft checks never block.
    assert decide(passing + (_c("expert_load", WARN), _c("lr_interval", WARN)))[0] == GO


def test_check_and_verdict_json_round_trip():
    prov = Provenance("0.1.0", None, "ab" * 32, "/x.toml", "x", "simulated", (0, 1), "2025-01-01T00:00:00Z")
    checks = (_c("backtest", FAIL), Check("sweep_cost", "Sweep cost", WARN, math.nan, "fraction", "<= 0.2",
                                          "unknown", hard=False, details={"a": (1, 2)}))
    v = Verdict("x", NO_GO, checks, ("r",), "rule", {"min_interior_rungs": 4}, prov)
    d = json.loads(json.dumps(v.to_dict(), allow_nan=False))
    back = Verdict.from_dict(d)
    assert back.verdict == NO_GO and back.check("backtest") == checks[0] and back.provenance == prov
    assert back.check("sweep_cost").figure is None and back.check("sweep_cost").details == {"a": [1, 2]}
    with pytest.raises(ValueError, match="status"):
        Check("x", "x", "MAYBE", None, "", "", "")
    with pytest.raises(ValueError, match="verdict"):
        Verdict("x", "YES", (), (), "", {})


def test_backtest_is_inconclusive_when_the_largest_rung_is_too_imprecise():
    from fits import fit_trend

    rng = np.random.default_rng(3)
    fits = _fits(simulate_ladder(rng, n_trials=32, rung_scatter=0.02, box_offset=0.3))
    t = fits.trends["lr"]
    # The same optima, but the largest rung's own log standard error is 1.0 (a factor e): with the
    # ladder's curvature (0.03 nats per e-fold^2) that puts ~0.1 nats at stake, above 0.01.
    se = list(t.value_se[:-1]) + [1.0]
    vague = dataclasses.replace(fits, trends={"lr": fit_trend(t.sizes, t.values, value_se=se, n_bootstrap=0)})
    c = check_backtest(vague, POLICY)
    assert c.status == INCONCLUSIVE and "too imprecise" in c.reason
    # A looser loss limit makes the same rung precise enough to test.
    assert check_backtest(vague, POLICY | {"max_loss_penalty": 1.0}).status == PASS


def test_backtest_miss_is_inconclusive_when_the_box_censors_the_tested_rung():
    """The bend of the test above, with the tested rung's box cut just below its optimum, so
    the value the trend predicts lies beyond the box's lower edge and the optimum sits against
    it: the miss is the box's doing (INCONCLUSIVE: widen or move the box), not a bend. With the
    box's edge just above the prediction but the optimum far inside, the miss stays a FAIL."""
    rng = np.random.default_rng(3)
    fits = _fits(simulate_ladder(rng, n_trials=32, rung_scatter=0.02, box_offset=0.3), shift_last=0.7)
    bent = check_backtest(fits, POLICY)
    assert bent.status == FAIL
    lr = bent.details["knobs"]["lr"]
    assert lr["observed"] > lr["predicted"]

    def with_box(low: float):
        last = fits.rungs[-1]
        box = KnobSpec("lr", low, low * 20, log=True)
        return dataclasses.replace(fits, rungs=fits.rungs[:-1] + (
            dataclasses.replace(last, optimum=dataclasses.replace(last.optimum, knobs=(box,))),))

    censored = check_backtest(with_box(lr["observed"] * 0.97), POLICY)
    assert censored.status == INCONCLUSIVE and censored.hard
    assert "censors" in censored.reason and "widen or move the box" in censored.reason
    assert censored.figure == pytest.approx(bent.figure)
    inside = check_backtest(with_box(lr["predicted"] * 1.05), POLICY)
    assert inside.status == FAIL and "bends away" in inside.reason
