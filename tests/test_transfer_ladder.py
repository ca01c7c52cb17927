"""``ladder run`` end to end on simulated ladders with known truth (proxy.backends.simulated).

Each case runs an example experiment file (12 trials per rung; the bend case the file's 16) into a temporary store:
a well-behaved ladder gives GO and a plan whose intervals hold the true optimum; an optimum
that bends at the top fails the backtest (NO-GO); optima on the edge of a box that may not be
widened give INCONCLUSIVE with that reason; three rungs give INCONCLUSIVE.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from proxy.sweep.experiment import load_experiment
from proxy.sweep.store import open_storage
from reports.cli import main
from reports.review import Verdict
from transfer.ladder import human_boxes, read_records
from transfer.plan import Plan

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def _experiment_file(tmp_path: Path, name: str, subset: list[str] | None = None, full: bool = False) -> Path:
    text = (EXAMPLES / name).read_text()
    if not full:
        text = text.replace("trials_per_rung = 16", "trials_per_rung = 12").replace("startup_trials = 6",
                                                                                "startup_trials = 5")
    text = text.replace("[experiment]\n", f'[experiment]\nstorage = "sqlite:///{tmp_path}/run/trials.db"\n', 1)
    if subset:
        text = text.replace('preset = "cpu" ', f'subset = {json.dumps(subset)}\npreset = "cpu" ', 1)
    path = tmp_path / name
    path.write_text(text)
    return path


def _run(path: Path, capsys) -> tuple[Plan, Verdict, str]:
    assert main(["run", str(path), "--no-progress", "--no-report"]) == 0
    out = capsys.readouterr().out
    run = path.parent / "run"
    plan = Plan.from_dict(json.loads((run / "plan.json").read_text()))
    verdict = Verdict.from_dict(json.loads((run / "review.json").read_text()))
    fits = json.loads((run / "fits.json").read_text())
    assert fits["provenance"]["experiment_sha256"] == plan.provenance.experiment_sha256 != ""
    assert plan.provenance.backend == "simulated" and plan.provenance.seeds == (0,)
    return plan, verdict, out


@pytest.mark.slow
def test_well_behaved_ladder_is_go_and_the_plan_holds_the_truth(tmp_path, capsys):
    path = _experiment_file(tmp_path, "simulated_go.toml")
    plan, verdict, out = _run(path, capsys)
    assert verdict.verdict == "GO", verdict.summary()
    exp = load_experiment(path)
    truth = exp.simulated
    lr = plan.knob("lr")
    true_lr = truth.optimum("lr", plan.target.params_active)
    assert lr.ci95.contains(true_lr), (lr.ci95, true_lr)
    aux = plan.knob("aux_loss_coef")
    assert aux.ci95.contains(truth.optimum("aux_loss_coef", plan.target.params_active))
    assert lr.ci80.width <= lr.ci95.width and lr.kind95 in ("prediction", "bootstrap", "mean")
    # The exponent of the trend holds the true one (lr* ~ N^-0.35).
    assert lr.exponent_ci95.contains(truth.lr_gamma)
    # Predicted loss: the simulated floor at the target (noise-free) lies in the 95% interval.
    floor = truth.floor(plan.target.params_active, plan.target.params_total, plan.target.tokens)
    assert plan.loss is not None and plan.loss.ci95.contains(floor)
    assert plan.config["hparams"]["lr"] == pytest.approx(lr.value)
    # The human boxes on the two lowest rungs; re-centred boxes from the third rung on, each
    # starting at the extrapolation.
    records = read_records(exp, open_storage(exp.storage))
    first, second = (r.name for r in exp.rungs[:2])
    assert records[first].box == human_boxes(exp) == records[second].box
    recentred = [r for r in records.values() if any(a.action == "recentred" for a in r.adjustments)]
    assert len(recentred) == len(exp.rungs) - 2 and all(r.enqueued for r in recentred)
    # Resume: a second run sweeps nothing new and gives the same plan values.
    n_before = plan.ledger.n_trials
    plan2, verdict2, _ = _run(path, capsys)
    assert plan2.ledger.n_trials == n_before and verdict2.verdict == "GO"
    assert plan2.knob("lr").value == pytest.approx(lr.value, rel=1e-12)


@pytest.mark.slow
def test_bend_at_the_top_fails_the_backtest(tmp_path, capsys):
    plan, verdict, _ = _run(_experiment_file(tmp_path, "simulated_bend.toml", full=True), capsys)
    assert verdict.verdict == "NO-GO", verdict.summary()
    bt = verdict.check("backtest")
    assert bt.status == "FAIL" and "bends away" in bt.reason
    assert any("Backtest" in r for r in verdict.reasons)


@pytest.mark.slow
def test_optima_on_the_box_edge_are_inconclusive_and_the_box_never_leaves_the_human_box(tmp_path, capsys):
    path = _experiment_file(tmp_path, "simulated_edge.toml")
    plan, verdict, _ = _run(path, capsys)
    assert verdict.verdict == "INCONCLUSIVE", verdict.summary()
    edge = verdict.check("edge_largest")
    assert edge.status == "INCONCLUSIVE" and "edge" in edge.reason
    assert any("edge" in r for r in verdict.reasons)
    exp = load_experiment(path)
    human = human_boxes(exp)
    for rec in read_records(exp, open_storage(exp.storage)).values():
        for knob, box in rec.box.items():
            assert human[knob].low * (1 - 1e-12) <= box.low < box.high <= human[knob].high * (1 + 1e-12)
    # The widening that was refused is stated in the plan.
    assert any("widening forbidden" in n for n in plan.notes)


@pytest.mark.slow
def test_too_few_rungs_are_inconclusive(tmp_path, capsys):
    _, verdict, _ = _run(_experiment_file(tmp_path, "simulated_go.toml", subset=["w32", "w64", "w128"]), capsys)
    assert verdict.verdict == "INCONCLUSIVE", verdict.summary()
    assert verdict.check("interior_rungs").status == "INCONCLUSIVE"
    assert verdict.check("backtest").status == "INCONCLUSIVE"
    assert not math.isnan(verdict.check("interior_rungs").figure)
