"""Pieces of the plan against known truth: the muP zero-slope test and the plan's JSON contract."""

from __future__ import annotations

import json

import numpy as np
import pytest

from fits import ConfidenceInterval as CI
from fits import fit_trend
from transfer.extrapolate import _flatness
from transfer.plan import (BoxAdjustment, CategoricalPlan, KnobPlan, LedgerSummary, LossPrediction, Plan, Provenance,
                           RungWinner, TargetInfo)

SIZES = np.geomspace(5e4, 2e6, 7)


@pytest.mark.parametrize("gamma,flat", [(0.0, True), (-0.35, False)])
def test_zero_slope_test_recovers_the_truth(gamma, flat):
    rng = np.random.default_rng(0)
    values = 3e-3 * (SIZES / 5e4) ** gamma * np.exp(rng.normal(0, 0.03, SIZES.size))
    f = _flatness(fit_trend(SIZES, values, value_se=[0.03] * SIZES.size, n_bootstrap=0))
    assert f.flat is flat and f.df == SIZES.size - 2
    assert ("not rejected" in f.statement) is flat
    assert (f.p_value >= 0.05) is flat


def test_plan_json_round_trip():
    prov = Provenance("0.1.0", "a" * 40, "b" * 64, "/e.toml", "e", "simulated", (0,), "2025-01-01T00:00:00Z", "ladder plan")
    knob = KnobPlan(name="lr", value=1e-3, log=True, ci80=CI(8e-4, 1.2e-3), ci95=CI(7e-4, 1.4e-3), kind80="bootstrap",
                    kind95="prediction", method="trend", exponent=-0.3, exponent_ci95=CI(-0.4, -0.2), curvature=0.08,
                    band=CI(9e-4, 1.1e-3), penalty80=CI(0.001, 0.002), penalty95=CI(0.003, 0.004), n_rungs=5,
                    excluded=(("w32", "edge"),), box=CI(1e-4, 1e-1))
    cat = CategoricalPlan("n_experts", 8, (RungWinner("w32", 5e4, 8, 0.01, {"8": 0.0, "16": 0.01}),), 1.0, 0.01, "s")
    plan = Plan(experiment="e", target=TargetInfo("t", 2e7, 8e6, 1e9, 5e16, {"d_model": 512}), largest_rung="w256",
                largest_params_active=2e6, extrapolation_factor=4.0, config={"hparams": {"lr": 1e-3}},
                knobs=(knob,), categorical=(cat,),
                loss=LossPrediction("N", 2.0, CI(1.9, 2.1), CI(1.8, 2.2), {"E": 1.5, "A": 40.0, "alpha": 0.3}, 7, True),
                ledger=LedgerSummary(1e13, 5e16, 2e-4, None, None, {"w32": 1e12}, {"w32": 16}, 16), provenance=prov,
                box_adjustments=(BoxAdjustment("w64", "lr", "recentred", CI(1e-4, 1e-1), CI(1e-3, 1e-2), 3e-3, 1.0,
                                               False, "centred"),), notes=("n",))
    back = Plan.from_dict(json.loads(json.dumps(plan.to_dict(), allow_nan=False)))
    assert back == plan
    assert back.knob("lr").ratio95 == pytest.approx(2.0) and back.knob("lr").max_penalty95 == 0.004
    with pytest.raises(ValueError, match="method"):
        KnobPlan(name="lr", value=1.0, log=True, ci80=CI(1, 1), ci95=CI(1, 1), kind80="mean", kind95="mean",
                 method="guess")
