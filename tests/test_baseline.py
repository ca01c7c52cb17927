"""The hand-set baseline (``[baseline]``, proxy.sweep.baseline): validated like the box, trained
once on every rung, kept through a resume, counted by the ledger."""

from __future__ import annotations

import math

import optuna
import pytest

from proxy.sweep.baseline import BASELINE_ATTR, centre, model_sizes, setting
from proxy.sweep.experiment import ExperimentError, parse_experiment
from proxy.sweep.ledger import ledger
from proxy.sweep.runner import run_sweep
from sweep_toml import TARGET, rung

BASE = """[experiment]
name = "bl"
backend = "simulated"
storage = "sqlite:///{db}"

[ladder]
{rungs}
{target}
{baseline}
[search]
sampler = "random"
trials_per_rung = 5

[search.box]
lr = {{ low = 1e-4, high = 1e-1, log = true }}
n_experts = {{ choices = [2, 4, 8] }}

[simulated]
noise_sd = 0.001
"""


def _doc(tmp_path, baseline: str) -> dict:
    import tomllib

    text = BASE.format(db=tmp_path / "t.db", rungs=rung("r0") + rung("r1", d_model=128, n_heads=4, d_expert=256),
                       target=TARGET, baseline=baseline)
    return tomllib.loads(text)


def _exp(tmp_path, baseline: str):
    return parse_experiment(_doc(tmp_path, baseline), check_storage=False)


def test_the_rule_and_the_box_centre_give_the_baseline_setting(tmp_path):
    exp = _exp(tmp_path, "[baseline]\nlr = { value = 3e-3, reference = 64, exponent = -1.0 }\n")
    r1 = exp.rung("r1")
    got = setting(exp.baseline, exp.search.box, exp.data.domains, model_sizes(r1.config, r1.tokens))
    # d_model 128 is twice the reference: 3e-3 / 2; n_experts not named: the middle choice.
    assert got == {"lr": pytest.approx(1.5e-3), "n_experts": 4}
    lr_box = next(k for k in exp.search.box if k.name == "lr")
    assert centre(lr_box) == pytest.approx(math.sqrt(1e-4 * 1e-1))


@pytest.mark.parametrize("table,key,needle", [
    ("[baseline]\nwarmup_frac = 0.1\n", "baseline.warmup_frac", "is not a searched knob"),
    ("[baseline]\nlr = { value = 3e-3, reference = 64, exponent = nan }\n", "baseline.lr.exponent", "finite"),
    ("[baseline]\nlr = { value = 3e-3, reference = 64, exponent = 40 }\n", "baseline.lr.exponent", "[-10, 10]"),
    ("[baseline]\nlr = { value = 3e-3, reference = 0, exponent = -1 }\n", "baseline.lr.reference", "> 0"),
    ("[baseline]\nlr = 0.5\n", "baseline.lr", "outside the box"),
    ("[baseline]\nn_experts = 3\n", "baseline.n_experts", "choices"),
    ("[baseline]\nlr = { value = 3e-3, size = \"width\" }\n", "baseline.lr.size", "must be one of"),
])
def test_a_bad_baseline_is_one_line_naming_its_key(tmp_path, table, key, needle):
    with pytest.raises(ExperimentError) as info:
        _exp(tmp_path, table)
    message = str(info.value)
    assert message.startswith(key) and needle in message and "\n" not in message


def test_the_baseline_trains_once_a_rung_survives_a_resume_and_is_in_the_ledger(tmp_path):
    exp = _exp(tmp_path, "[baseline]\nlr = 3e-3\nn_experts = 8\n")
    run_sweep(exp)
    url = exp.storage
    per_rung = {}
    for r in ("r0", "r1"):
        trials = optuna.load_study(study_name=f"bl/{r}", storage=url).trials
        marked = [t for t in trials if t.user_attrs.get(BASELINE_ATTR)]
        assert len(marked) == 1 and marked[0].params == {"lr": 3e-3, "n_experts": 8}
        assert marked[0].state.name == "COMPLETE"
        # Extra to the rung's five searched trials (search.trials_per_rung), not one of them.
        assert sum(t.state.name == "COMPLETE" for t in trials) == 6
        per_rung[r] = len(trials)
        flops = marked[0].user_attrs["flops"]
    book = ledger(url, exp)
    assert any(t.rung == "r1" and t.flops == pytest.approx(flops) for t in book.trials)
    run_sweep(exp)   # resumed: nothing is trained again, the baseline included
    for r in ("r0", "r1"):
        assert len(optuna.load_study(study_name=f"bl/{r}", storage=url).trials) == per_rung[r]


def test_a_baseline_that_counts_is_one_of_the_rungs_trials(tmp_path):
    exp = _exp(tmp_path, "[baseline]\ncounts = true\n")
    run_sweep(exp, rungs=("r0",))
    trials = optuna.load_study(study_name="bl/r0", storage=exp.storage).trials
    assert sum(t.state.name == "COMPLETE" for t in trials) == 5
    assert sum(bool(t.user_attrs.get(BASELINE_ATTR)) for t in trials) == 1


def test_a_ladder_run_prices_the_baseline_in_plan_review_and_cover(tmp_path):
    """`ladder run` on a four-rung simulated ladder with a [baseline] off the true lr: plan.json
    carries the multiplier, its intervals and the break-even; review.json has `search_pays`; the
    cover says whether the search paid."""
    import json
    import tomllib

    from reports.cli import main
    from test_report import pdf_pages

    rungs = (rung("r0") + rung("r1", d_model=128, n_heads=4, d_expert=256)
             + rung("r2", d_model=256, n_heads=8, d_expert=512, tokens=800_000)
             + rung("r3", d_model=512, n_heads=16, d_expert=1024, tokens=3_200_000))
    text = BASE.format(db=tmp_path / "t.db", rungs=rungs, target=TARGET, baseline="[baseline]\nlr = 3e-2\n")
    text = text.replace("trials_per_rung = 5", "trials_per_rung = 14")
    path = tmp_path / "bl.toml"
    path.write_text(text)
    assert tomllib.loads(text)["baseline"] == {"lr": 3e-2}
    assert main(["run", str(path), "--no-progress", "--out", str(tmp_path / "out")]) == 0
    plan = json.loads((tmp_path / "out" / "plan.json").read_text())
    v = plan["search_value"]
    assert v is not None and plan["baseline"].startswith("lr = 0.03")
    assert v["m_ci95"]["low"] <= v["m"] <= v["m_ci95"]["high"] and v["break_even"] == pytest.approx(1 / (1 - v["fraction"]))
    review = json.loads((tmp_path / "out" / "review.json").read_text())
    check = next(c for c in review["checks"] if c["name"] == "search_pays")
    assert check["status"] == v["status"] and check["hard"] is False
    cover = pdf_pages(tmp_path / "out" / "report.pdf")[0]
    assert "Did the search pay?" in cover
