"""fits.budget_split: the search's worth against the number of trials per rung, on simulated
ladders with known truth (``fits.calibration.simulate_ladder``), and ``ladder plan --budget-split``."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from fits import fit_optimum, simulate_ladder, trend_from_optima
from fits.axes import SizePoint
from fits.budget_split import _target_sd, budget_split
from fits.search_value import compute_multiplier
from test_fits_search_value import _ladder, _value


def _split(sim, value, grid=(3, 6, 12, 24, 48, 96)):
    labels = [o.rung for o in sim["optima"]]
    sampled = {r: 24.0 for r in labels}                       # simulate_ladder's trials per rung
    counts = {r: 26.0 for r in labels}                        # + the baseline's two seeds
    flops = {r: 26.0 * 1e12 * (k + 1) for k, r in enumerate(labels)}
    return budget_split(value, sim["trends"], sim["target"], sampled_trials=sampled, rung_trials=counts,
                        rung_flops=flops, grid=grid), flops


def test_at_todays_trials_the_split_is_the_search_value_and_more_trials_buy_less_and_less():
    sim = _ladder(4, 2.0)
    value = _value(sim, seed=4)
    split, flops = _split(sim, value)
    knob = value.curvature.knobs[0]
    today = split.row(24)
    assert split.current == 24
    # At today's trials: the plug-in curvature gap and its multiplier, as the search value reports.
    assert today.gain == pytest.approx(value.curvature.estimate, rel=1e-9)
    assert today.m == pytest.approx(float(compute_multiplier(today.gain, value.law.A, value.law.alpha,
                                                             value.target_flops)), rel=1e-9)
    # The planned optimum's sd: shrinking with more trials, never below the trend's scatter floor.
    sds = [r.u_sd["lr"] for r in split.rows]
    assert all(a > b for a, b in zip(sds, sds[1:]))
    gains = [r.gain for r in split.rows]
    assert all(a < b for a, b in zip(gains, gains[1:]))
    # G(n) = c [(u_b - u_opt)^2 + s_now^2 - s(n)^2]: its increments are the curvature times the drop in variance.
    for a, b in zip(split.rows, split.rows[1:]):
        assert b.gain - a.gain == pytest.approx(knob.curvature * (a.u_sd["lr"] ** 2 - b.u_sd["lr"] ** 2), rel=1e-9)
    # Cost: linear in n, the baseline's two trials a rung kept; break-even and net as the search value's.
    per_trial = sum(f / 26.0 for f in flops.values()) / value.target_flops
    for r in split.rows:
        assert r.fraction == pytest.approx(per_trial * (r.trials_per_rung + 2), rel=1e-9)
        assert r.break_even == pytest.approx(1 / (1 - r.fraction)) and r.net == pytest.approx(r.m * (1 - r.fraction) - 1)
    assert split.best == max(split.rows, key=lambda r: r.net).trials_per_rung
    assert json.loads(json.dumps(split.to_dict()))["rows"][0]["trials_per_rung"] == 3
    assert "today" in split.table() and len(split.assumptions) >= 4


def test_the_sd_scaling_it_assumes_matches_ladders_swept_with_four_times_the_trials():
    """The aid's assumption 1-2, held to simulation: 60 ladders swept with 24 and with 96 trials a
    rung (the same truth, no rung scatter). The trend's actual error at the target (known law)
    shrinks by 0.57 in rms (measured); the aid, from the 24-trial ladders alone, predicts 0.50
    (median). Required: within 20%."""
    target = SizePoint(2e9, 2e9, 4e10)
    errors = {24: [], 96: []}
    predicted = []
    for i in range(60):
        for n in (24, 96):
            rng = np.random.default_rng(500 + i)
            lad = simulate_ladder(rng, n_trials=n, rung_scatter=0.0)
            optima = [fit_optimum(o, [b], n_bootstrap=0) for o, b in zip(lad.observations, lad.boxes)]
            try:
                trend = trend_from_optima(optima, "lr", n_bootstrap=0)
            except ValueError:
                errors[n].append(math.nan)
                continue
            errors[n].append(trend.predict_log(2e9) - lad.law_log_lr(2e9))
            if n == 24:
                quarter = {lb: math.sqrt(24 / 96) for lb in trend.labels}
                predicted.append(_target_sd(trend, target, quarter) / _target_sd(trend, target, {}))
    e24, e96 = np.asarray(errors[24]), np.asarray(errors[96])
    ok = np.isfinite(e24) & np.isfinite(e96)
    assert ok.sum() >= 55
    measured = math.sqrt(np.mean(e96[ok] ** 2)) / math.sqrt(np.mean(e24[ok] ** 2))
    assert np.median(predicted) == pytest.approx(measured, rel=0.2), (np.median(predicted), measured)


def test_bad_input_is_one_clear_error():
    sim = _ladder(1, 2.0)
    value = _value(sim, seed=1)
    with pytest.raises(ValueError, match="grid"):
        _split(sim, value, grid=(0, 4))
    with pytest.raises(ValueError, match="SearchValue"):
        budget_split(None, sim["trends"], sim["target"], sampled_trials={"r0": 1}, rung_trials={"r0": 1},
                     rung_flops={"r0": 1.0})
    with pytest.raises(ValueError, match="same rungs"):
        budget_split(value, sim["trends"], sim["target"], sampled_trials={"r0": 1}, rung_trials={"r0": 1},
                     rung_flops={"r1": 1.0})
    with pytest.raises(ValueError, match=r"rung_trials\['r0'\]"):
        budget_split(value, sim["trends"], sim["target"], sampled_trials={"r0": 1}, rung_trials={"r0": math.nan},
                     rung_flops={"r0": 1.0})


def test_ladder_plan_budget_split_on_a_simulated_sweep(tmp_path):
    """The command: a simulated sweep with a [baseline] table, then
    ``ladder plan --budget-split 4,16,64``: the table on stdout, budget_split in plan.json, and
    its row at today's trials equal to the plan's own search value."""
    import contextlib
    import io
    from pathlib import Path

    from proxy.sweep.store import close_all
    from reports.cli import main

    root = Path(__file__).resolve().parents[1]
    text = (root / "examples" / "simulated_go.toml").read_text()
    # Five of its ten rungs, one knob: the same law in a few seconds.
    text = text.replace('preset = "cpu" ', 'preset = "cpu"\nsubset = ["w16", "w32", "w64", "w128", "w256"]\n#', 1)
    text = text.replace("aux_loss_coef = { low", "# aux_loss_coef = { low", 1)
    assert 'subset = ["w16"' in text and "# aux_loss_coef" in text
    path = tmp_path / "exp.toml"
    path.write_text(text + '\n[baseline]\nlr = { value = 3e-3, reference = 256, exponent = -1.0 }\n')
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(io.StringIO()):
        assert main(["run", str(path), "--no-progress"]) == 0
        assert main(["plan", str(path), "--budget-split", "4,16,64"]) == 0
        assert main(["plan", str(path), "--budget-split", "4,x"]) == 2
    close_all()
    printed = out.getvalue()
    assert "Budget split" in printed and "<- today" in printed and "assumes:" in printed
    plan = json.loads((tmp_path / "runs" / "simulated-go" / "plan.json").read_text())
    rows = {r["trials_per_rung"]: r for r in plan["budget_split"]["rows"]}
    assert sorted(rows) == [4, 16, 64] and plan["budget_split"]["current"] == 16
    assert rows[16]["gain"] == pytest.approx(plan["search_value"]["curvature"]["estimate"], rel=1e-9)
    assert rows[4]["gain"] < rows[16]["gain"] < rows[64]["gain"]
    assert rows[4]["fraction"] < rows[16]["fraction"] < rows[64]["fraction"]
