"""``ladder run`` on a real CPU ladder (torch backend): four small rungs x 6 trials, short budget."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from reports.cli import main
from reports.review import CHECK_NAMES, VERDICTS, Verdict
from transfer.plan import Plan

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "cpu_ladder.toml"


@pytest.mark.slow
def test_cpu_ladder_run_writes_plan_and_review(tmp_path, capsys):
    text = EXAMPLE.read_text().replace("[experiment]\n", f'[experiment]\nstorage = "sqlite:///{tmp_path}/run/trials.db"\n', 1)
    path = tmp_path / "cpu_ladder.toml"
    path.write_text(text)
    assert main(["run", str(path), "--no-progress", "--no-report"]) == 0
    run = tmp_path / "run"
    plan = Plan.from_dict(json.loads((run / "plan.json").read_text()))
    verdict = Verdict.from_dict(json.loads((run / "review.json").read_text()))
    assert plan.provenance.backend == "torch" and plan.ledger.n_trials >= 4 * 6
    assert set(plan.ledger.trials_per_rung) == {"w32", "w48", "w64", "w96"}
    assert plan.knob("lr").ci95.low <= plan.knob("lr").value <= plan.knob("lr").ci95.high
    assert plan.target.name == "cpu-target" and plan.extrapolation_factor > 1
    assert verdict.verdict in VERDICTS and len(verdict.checks) == len(CHECK_NAMES)
    assert all(c.reason for c in verdict.checks)
    # Resumable: a second run trains nothing new.
    assert main(["run", str(path), "--no-progress", "--no-report"]) == 0
    again = Plan.from_dict(json.loads((run / "plan.json").read_text()))
    assert again.ledger.n_trials == plan.ledger.n_trials
