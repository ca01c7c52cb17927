"""Several local workers share one store: no duplicate and no lost trial."""

from __future__ import annotations

import dataclasses
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


# --- The default: one worker per `threads` cores ------------------------------------------------
LADDER_TEXT = """
[experiment]
name = "pool"
backend = "{backend}"
threads = 1
{workers}

[ladder]
""" + rung("r0", d_model=32, n_heads=1) + rung("r1", d_model=64, n_heads=2) + """
[search]
sampler = "tpe"
trials_per_rung = 6
startup_trials = 3
replicates = 2
[search.box]
lr = {{ low = 1e-4, high = 1e-2, log = true }}

[data]
domains = ["code"]

[simulated]
sleep_s = 0.2
"""


def _exp(tmp_path: Path, backend: str = "simulated", workers: str = ""):
    path = tmp_path / "exp.toml"
    path.write_text(LADDER_TEXT.format(backend=backend, workers=workers))
    return load_experiment(path)


def test_auto_workers_is_one_per_thread_budget_of_the_cores(tmp_path):
    from proxy.sweep.experiment import resolve_workers

    torch_exp = _exp(tmp_path, "torch")
    assert torch_exp.workers == "auto"
    assert resolve_workers(torch_exp, cores=2) == 2          # two cores, one thread a trial
    assert resolve_workers(torch_exp, cores=1) == 1
    assert resolve_workers(torch_exp, 1, cores=2) == 1       # --workers 1: serial
    two_threads = dataclasses.replace(torch_exp, threads=2)
    assert resolve_workers(two_threads, cores=2) == 1
    assert resolve_workers(_exp(tmp_path, "torch", "workers = 1"), cores=8) == 1
    assert resolve_workers(_exp(tmp_path, "simulated"), cores=8) == 1   # microsecond trials
    with pytest.raises(ValueError, match="experiment.workers"):
        _exp(tmp_path, "torch", "workers = 0")


def _ladder_trials(exp):
    out = {}
    for r in exp.rungs:
        study = optuna.load_study(study_name=f"{exp.name}/{r.name}", storage=exp.storage)
        out[r.name] = study.get_trials(deepcopy=False)
    return out


@pytest.mark.parametrize("workers", [1, 2])
def test_ladder_pool_runs_every_trial_once(tmp_path, workers):
    """run_ladder with a pool of two processes (and serially): each rung has exactly its trials
    plus two replicates (one a seed), no duplicate and no lost trial, and two processes trained them."""
    from transfer.ladder import run_ladder

    exp = _exp(tmp_path, "simulated")
    result = run_ladder(exp, workers=workers)
    trials = _ladder_trials(exp)
    pids = set()
    for rec in result.records:
        ts = trials[rec.rung]
        complete = [t for t in ts if t.state == TrialState.COMPLETE]
        assert len(complete) == rec.requested
        assert len({t.number for t in ts}) == len(ts)
        assert all(t.user_attrs.get("surplus") for t in ts if t.state != TrialState.COMPLETE)
        reps = [t for t in complete if "replicate_of" in t.user_attrs]
        assert sorted(t.user_attrs["seed"] for t in reps) == [1, 2]   # one trial a further seed
        assert len({t.user_attrs["replicate_of"] for t in reps}) == 1
        original = next(t for t in complete if t.number == reps[0].user_attrs["replicate_of"])
        assert all(original.params == t.params for t in reps) and original.user_attrs["seed"] == 0
        pids |= {t.user_attrs["worker"] for t in complete}
    assert len(pids) == workers
    # Resuming a finished ladder adds nothing (the replicate is not trained twice).
    again = run_ladder(exp, workers=workers)
    assert {r: len(ts) for r, ts in _ladder_trials(exp).items()} == {r: len(ts) for r, ts in trials.items()}
    assert [r.requested for r in again.records] == [r.requested for r in result.records]
