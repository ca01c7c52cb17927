"""Several local workers share one store: no duplicate and no lost trial."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from proxy.sweep.experiment import load_experiment
from proxy.sweep.runner import run_sweep
from sweep_toml import rung

TEXT = """
[experiment]
name = "workers"
backend = "simulated"
threads = 2
heartbeat_interval = 2
{storage}

[ladder]
""" + rung() + """
[search]
sampler = "tpe"
trials_per_rung = 10
startup_trials = 4
[search.box]
lr = {{ low = 1e-4, high = 1e-2, log = true }}

[data]
domains = ["code"]

[simulated]
sleep_s = 0.05
"""


def check_workers(tmp_path: Path, storage_line: str = "") -> None:
    path = tmp_path / "exp.toml"
    path.write_text(TEXT.format(storage=storage_line))
    exp = load_experiment(path)
    seen = []
    summary = run_sweep(exp, workers=2, progress=seen.append)
    assert summary.rungs[0].complete == 10 and seen
    study = optuna.load_study(study_name="workers/r0", storage=exp.storage)
    trials = study.get_trials(deepcopy=False)
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    assert len(complete) == 10
    numbers = [t.number for t in trials]
    assert len(set(numbers)) == len(numbers)
    # Any trial beyond N lost the race before training and is marked as surplus, never run.
    extra = [t for t in trials if t.state != TrialState.COMPLETE]
    assert all(t.user_attrs.get("surplus") for t in extra)
    assert all("flops" not in t.user_attrs for t in extra)


@pytest.mark.slow
def test_two_workers_sqlite(tmp_path):
    check_workers(tmp_path)
