"""The runner on the simulated backend: trial counts, attributes, divergence clipping, samplers,
enqueue, budget stop, ledger and the status command."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from proxy.flops import param_counts, train_flops
from proxy.sweep.experiment import load_experiment
from proxy.sweep.ledger import ledger
from proxy.sweep.runner import enqueue, observations, run_sweep
from proxy.sweep.spec import BudgetSpec
from reports.cli import main
from sweep_toml import TARGET, rung

TEXT = """
[experiment]
name = "{name}"
backend = "simulated"
heartbeat_interval = 1

[ladder]
""" + rung() + """
""" + rung("r1", d_model=128, n_heads=4, d_expert=256, tokens=400_000) + """
""" + TARGET + """
[search]
sampler = "{sampler}"
trials_per_rung = {n}
startup_trials = {startup}
[search.box]
lr = {{ low = 1e-4, high = 3e-1, log = true }}
{extra_box}

[data]
domains = ["code", "prose"]

[simulated]
lr = 3e-3
lr_gamma = -0.3
wall_factor = 4.0
"""


def make(tmp_path: Path, name="t", sampler="tpe", n=16, startup=6, extra_box=""):
    path = tmp_path / f"{name}.toml"
    path.write_text(TEXT.format(name=name, sampler=sampler, n=n, startup=startup, extra_box=extra_box))
    return load_experiment(path)


def test_sweep_completes_exactly_n_with_attributes(tmp_path):
    exp = make(tmp_path)
    summary = run_sweep(exp)
    assert [p.complete for p in summary.rungs] == [16, 16]
    storage = optuna.storages.RDBStorage(exp.storage)
    for rung in exp.rungs:
        study = optuna.load_study(study_name=f"t/{rung.name}", storage=storage)
        done = study.get_trials(states=(TrialState.COMPLETE,))
        assert len(done) == 16 and len(study.trials) == 16
        finite = [t.value for t in done if not t.user_attrs["diverged"]]
        diverged = [t for t in done if t.user_attrs["diverged"]]
        assert diverged, "the box reaches past the wall; some trials must diverge"
        for t in diverged:
            # clipped objective: above every finite loss and ln V, the sampler sees the wall
            assert t.value >= math.log(256) + 0.1 - 1e-12 and t.value > max(finite)
            assert t.user_attrs["diverged_step"] >= 1 and t.user_attrs["final_loss"] is None
        t = done[0]
        a = t.user_attrs
        assert a["params_active"] == param_counts(rung.config).active
        assert a["tokens"] == rung.tokens and a["backend"] == "simulated" and a["seed"] == 0
        assert set(a["knobs"]) >= {"lr", "aux_loss_coef", "batch_size", "n_experts", "top_k",
                                   "mix_weight.code", "mix_weight.prose"}
        assert set(a["eval_loss_by_domain"]) == {"code", "prose"}
        assert "max_over_mean" in a["expert_load"] and a["toolkit_version"]
        # TPE gets near the true optimum of lr on this 1-D problem.
        best = study.best_trial.params["lr"]
        truth = exp.simulated.optimum("lr", param_counts(rung.config).active)
        assert abs(math.log(best / truth)) < math.log(2.0)
    obs = observations(exp.storage, exp)
    assert len(obs) == 32 and {o.rung for o in obs} == {"r0", "r1"}
    assert sum(o.diverged for o in obs) == sum(
        1 for o in obs if math.isnan(o.loss))
    book = ledger(exp.storage, exp)
    assert book.total_flops == pytest.approx(sum(o.extra["flops"] for o in obs))
    assert book.fraction_of_target == pytest.approx(book.total_flops / train_flops(exp.target.config, exp.target.tokens))
    # Running again does nothing: the rungs are complete.
    again = run_sweep(exp)
    assert [p.complete for p in again.rungs] == [16, 16]
    assert len(optuna.load_study(study_name="t/r0", storage=storage).trials) == 16


@pytest.mark.parametrize("sampler", ["random", "grid", "qmc", "gp"])
def test_other_samplers(tmp_path, sampler):
    exp = make(tmp_path, name=f"s{sampler}", sampler=sampler, n=5, startup=2,
               extra_box='n_experts = { choices = [4, 8] }')
    exp = dataclasses.replace(exp, rungs=exp.rungs[:1])
    summary = run_sweep(exp)
    assert summary.rungs[0].complete == 5
    params = [o.knobs["lr"] for o in observations(exp.storage, exp)]
    assert len(set(params)) >= 2


def test_enqueued_point_runs_first(tmp_path):
    exp = make(tmp_path, n=3, startup=3)
    exp = dataclasses.replace(exp, rungs=exp.rungs[:1])
    enqueue(exp, "r0", {"lr": 1.234e-3})
    run_sweep(exp)
    study = optuna.load_study(study_name="t/r0", storage=exp.storage)
    assert study.trials[0].params["lr"] == pytest.approx(1.234e-3)
    with pytest.raises(ValueError, match="not searched"):
        enqueue(exp, "r0", {"bogus": 1.0})


def test_budget_stops_before_it_is_exceeded(tmp_path, capsys):
    exp = make(tmp_path, n=10, startup=3)
    per_trial = train_flops(exp.rungs[0].config, exp.rungs[0].tokens)
    exp = dataclasses.replace(exp, budget=BudgetSpec(max_flops=3.5 * per_trial))
    summary = run_sweep(exp)
    assert summary.stopped_by_budget and "budget" in summary.message
    book = ledger(exp.storage, exp)
    assert book.total_flops <= exp.budget_flops
    done = sum(p.complete for p in summary.rungs)
    assert done >= 2  # diverged trials cost less than a full trial, so at least 3 fit
    assert book.total_flops + per_trial > exp.budget_flops


def test_status_and_sweep_commands(tmp_path, capsys):
    exp = make(tmp_path, n=3, startup=2)
    path = Path(exp.path)
    assert main(["status", str(path)]) == 0
    assert "no trials yet" in capsys.readouterr().out
    assert main(["sweep", str(path), "--rung", "r0"]) == 0
    out = capsys.readouterr()
    assert "t/r0: 3/3 complete" in out.out
    assert main(["status", str(path)]) == 0
    out = capsys.readouterr().out
    lines = {line.split()[0]: line for line in out.splitlines() if line.startswith("r")}
    assert lines["r0"].split()[1] == "3/3" and lines["r1"].split()[1] == "0/3"
    assert "of the target run" in out
    assert main(["sweep", str(path), "--rung", "nope"]) == 2
