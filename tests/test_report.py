"""The PDF report: pages, and the verdict and plan as printed, from simulated ladders with known
truth (fast) and from a tiny real torch sweep run by `ladder demo` (slow).

The PDF's text is read back with pdftotext (poppler-utils; installed in CI); the plan's numbers
are looked for in the format the report documents (4 significant digits), read from plan.json.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest

from fits import ConfidenceInterval as CI
from fits import fit_loss_law_n, fit_optimum, simulate_ladder, trend_from_optima
from proxy.sweep.experiment import REVIEW_DEFAULTS
from reports.pdf import ReportData, write_pdf
from reports.review import review
from transfer.extrapolate import Fits
from transfer.observations import RungFit
from transfer.plan import KnobPlan, LedgerSummary, LossPrediction, Plan, Provenance, TargetInfo

REPO = Path(__file__).resolve().parents[1]
TARGET = 3e9


def _tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        if os.environ.get("CI"):
            pytest.fail(f"{name} (poppler-utils) must be installed in CI")
        pytest.skip(f"{name} (poppler-utils) is not installed")
    return path


def pdf_pages(pdf: Path) -> list[str]:
    """The text of every page (pdftotext, layout kept so table rows stay on one line)."""
    info = subprocess.run([_tool("pdfinfo"), str(pdf)], capture_output=True, text=True, check=True).stdout
    n = int(next(line.split()[1] for line in info.splitlines() if line.startswith("Pages:")))
    return [subprocess.run([_tool("pdftotext"), "-layout", "-f", str(i), "-l", str(i), str(pdf), "-"],
                           capture_output=True, text=True, check=True).stdout for i in range(1, n + 1)]


def g4(x: float) -> str:
    return format(float(x), ".4g")


def assert_plan_printed(cover: str, plan_json: dict, verdict: str) -> None:
    """The cover shows the verdict, and each knob with its value and 80% / 95% intervals."""
    assert verdict in cover
    for k in plan_json["knobs"]:
        row = next((line for line in cover.splitlines() if line.strip().startswith(k["name"] + " ")), None)
        assert row is not None, f"no plan row for {k['name']!r} on the cover:\n{cover}"
        for text in (g4(k["value"]), f"[{g4(k['ci80']['low'])}, {g4(k['ci80']['high'])}]",
                     f"[{g4(k['ci95']['low'])}, {g4(k['ci95']['high'])}]"):
            assert text in row, f"{text!r} missing from the plan row {row!r}"
    if plan_json["loss"] is not None:
        assert g4(plan_json["loss"]["value"]) in cover


# --- Simulated ladders (fast) ---------------------------------------------------------------------
def _simulated(seed: int, *, target: float = TARGET, with_law: bool = True):
    """Fits, a hand-built plan and the real review of a simulated ladder (fits.calibration) for
    a target of ``target`` active parameters (over 1000x the largest rung fails the review)."""
    ladder = simulate_ladder(np.random.default_rng(seed), n_trials=16, rung_scatter=0.02, box_offset=0.3)
    rungs, obs_by_rung = [], {}
    for obs, box in zip(ladder.observations, ladder.boxes):
        opt = fit_optimum(obs, [box], n_bootstrap=0)
        rungs.append(RungFit(opt.rung, opt, len(obs)))
        obs_by_rung[opt.rung] = list(obs)
    optima = [r.optimum for r in rungs]
    trend = trend_from_optima(optima, "lr", n_bootstrap=200)
    law = None
    if with_law:
        law = fit_loss_law_n([o.params_active for o in optima], [o.fitted_min_loss for o in optima],
                             n_bootstrap=20, workers=1)
    fits = Fits(rungs=tuple(rungs), trends={"lr": trend}, trend_errors={}, loss_law=law,
                loss_error="" if with_law else "switched off in this test", observations=obs_by_rung)
    i80, i95 = trend.interval(target, 0.20), trend.interval(target, 0.05)
    curv = 0.03     # the simulator's basin curvature (nats per squared e-fold of lr)

    def penalty(ci):
        ends = sorted(curv * math.log(x / i95.estimate) ** 2 for x in (ci.low, ci.high))
        return CI(*ends)
    knob = KnobPlan(name="lr", value=i95.estimate, log=True, ci80=i80.interval, ci95=i95.interval, kind80=i80.kind,
                    kind95=i95.kind, method="trend", exponent=trend.exponent, n_rungs=trend.n, curvature=curv,
                    penalty80=penalty(i80.interval), penalty95=penalty(i95.interval))
    loss = None
    if law is not None:
        v = float(law.predict(target))
        loss = LossPrediction(form="N", value=v, ci80=None, ci95=None, params=dict(law.params), n_rungs=len(optima),
                              converged=law.converged)
    prov = Provenance(toolkit_version="0.1.0", git_commit=None, experiment_sha256="0" * 64,
                      experiment_path="simulated.toml", experiment_name="sim", backend="simulated", seeds=(0,),
                      created_utc="2026-01-01T00:00:00Z", command="test")
    target_info = TargetInfo(name="big", params_total=target, params_active=target, tokens=6e10,
                             flops=6 * target * 6e10, config={"d_model": 4096})
    n_trials = sum(len(o) for o in obs_by_rung.values())
    ledger = LedgerSummary(total_flops=1e18, target_flops=target_info.flops, fraction_of_target=1e18 / target_info.flops,
                           budget_flops=None, fraction_of_budget=None,
                           per_rung_flops={r: 2e17 for r in obs_by_rung},
                           trials_per_rung={r: len(o) for r, o in obs_by_rung.items()}, n_trials=n_trials)
    plan = Plan(experiment="sim", target=target_info, largest_rung=optima[-1].rung,
                largest_params_active=optima[-1].params_active, extrapolation_factor=target / optima[-1].params_active,
                config={"model": {"d_model": 4096}, "hparams": {"lr": knob.value}, "tokens": 6e10}, knobs=(knob,),
                categorical=(), loss=loss, ledger=ledger, provenance=prov)
    verdict = review(plan, fits, dict(REVIEW_DEFAULTS), prov)
    data = ReportData(plan=plan, verdict=verdict, observations=obs_by_rung, optima={o.rung: o for o in optima},
                      human_box={"lr": (ladder.boxes[0].low, ladder.boxes[-1].high, True)},
                      trends=fits.trends, loss_law=law, loss_error=fits.loss_error,
                      boxes={o.rung: {"lr": (b.low, b.high)} for o, b in zip(optima, ladder.boxes)})
    return data


@pytest.mark.parametrize("target, with_law", [(TARGET, True), (1e12, False)])
def test_report_of_a_simulated_ladder(tmp_path, target, with_law):
    data = _simulated(5, target=target, with_law=with_law)
    verdict = data.verdict.verdict               # the review decides; the report must print it
    if target > 1000 * data.plan.largest_params_active:
        assert verdict == "NO-GO"                # extrapolating over 1000x fails a hard check
    pdf = write_pdf(data, tmp_path / "report.pdf")
    pages = pdf_pages(pdf)
    # cover, one sweep page (5 rungs x 1 knob), trend + loss law, checks, diagnostics, provenance + 80 trials
    n_trials = sum(len(o) for o in data.observations.values())
    assert n_trials == 80
    titles = ["Plan review", "Per-rung sweeps", "Trends", "Review checks", "Diagnostics", "Appendix: provenance"]
    assert len(pages) >= len(titles) + 1          # the trial table spills over to at least one more page
    for page, title in zip(pages, titles):
        assert title in page, f"page starting {page[:60]!r} should be the {title!r} page"
    assert_plan_printed(pages[0], json.loads(json.dumps(data.plan.to_dict())), verdict)
    # Every check is in the table with its status.
    for c in data.verdict.checks:
        assert c.title.split()[0] in pages[3] and c.status in pages[3]
    # The trial table lists every trial, diverged ones flagged.
    table = "\n".join(pages[5:])
    rows = [line for line in table.splitlines() if line.strip().startswith(("r0 ", "r1 ", "r2 ", "r3 ", "r4 "))]
    assert len(rows) == n_trials
    if not with_law:
        assert "no loss law fitted" in pages[2]
    # Fonts are embedded as TrueType (pdf.fonttype 42), so the text is searchable and prints as drawn.
    fonts = subprocess.run([_tool("pdffonts"), str(pdf)], capture_output=True, text=True, check=True).stdout
    font_rows = fonts.splitlines()[2:]
    assert font_rows and all("TrueType" in r and " yes " in r for r in font_rows), fonts
    # A4 pages.
    info = subprocess.run([_tool("pdfinfo"), str(pdf)], capture_output=True, text=True, check=True).stdout
    assert "(A4)" in info


def test_figures_do_not_touch_pyplot_state(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figures, fonttype = plt.get_fignums(), matplotlib.rcParams["pdf.fonttype"]
    write_pdf(_simulated(6), tmp_path / "r.pdf")
    assert plt.get_fignums() == figures                      # no figure registered with pyplot
    assert matplotlib.rcParams["pdf.fonttype"] == fonttype   # the report's settings do not leak


# --- The demo experiment (fast) ---------------------------------------------------------------------
def test_builtin_demo_experiment_equals_the_example_and_is_sized_for_the_demo():
    from proxy.flops import param_counts
    from proxy.sweep.experiment import load_experiment
    from reports.commands.demo import demo_experiment_path

    builtin = demo_experiment_path()
    assert builtin.read_bytes() == (REPO / "examples" / "demo.toml").read_bytes()
    exp = load_experiment(builtin, check_storage=False)
    assert exp.backend == "torch" and len(exp.data.domains) >= 2
    # every rung must be able to count toward the review's interior optima, and the per-rung
    # quadratic in lr needs 3 coefficients and 3 more points
    assert len(exp.rungs) >= exp.review["min_interior_rungs"] and 6 <= exp.search.trials_per_rung <= 12
    assert exp.search.replicates >= 1   # the scaling_regime check needs the seed noise
    largest = max(param_counts(r.config).active for r in exp.rungs)
    assert param_counts(exp.target.config).active >= 4 * largest


# --- A tiny real sweep through `ladder demo` and `ladder report` (slow) ----------------------------
TINY = """
[experiment]
name = "demo"
backend = "torch"
seeds = [0]
threads = 1

[ladder]
{rungs}

[target]
name = "target"
d_model = 128
n_layers = 1
n_heads = 8
head_dim = 16
n_experts = 4
top_k = 1
d_expert = 128
seq_len = 32
tokens = 1_000_000

[search]
trials_per_rung = 7
startup_trials = 3

[search.box]
lr = {{ low = 1e-3, high = 1e-1, log = true }}

[search.fixed]
warmup_frac = 0.1

[budget]
max_fraction_of_target = 1.0
"""
RUNG = """[[ladder.rungs]]
name = "w{w}"
d_model = {w}
n_layers = 1
n_heads = {h}
head_dim = 16
n_experts = 4
top_k = 1
d_expert = {w}
seq_len = 32
tokens = 8_192
batch_size = 8
"""


@pytest.mark.slow
def test_demo_and_report_on_a_tiny_torch_sweep(tmp_path, monkeypatch, capsys):
    """Three tiny rungs (the loss law needs four, so its page says why there is none)."""
    from reports import cli
    from reports.commands import demo

    exp_file = tmp_path / "tiny.toml"
    exp_file.write_text(TINY.format(rungs="\n".join(RUNG.format(w=w, h=w // 16) for w in (16, 32, 48))))
    monkeypatch.setattr(demo, "demo_experiment_path", lambda: exp_file)
    monkeypatch.chdir(tmp_path)
    assert cli.main(["demo", "--no-progress"]) == 0
    out = capsys.readouterr().out
    folder = tmp_path / "runs" / "demo"
    plan = json.loads((folder / "plan.json").read_text())
    verdict = json.loads((folder / "review.json").read_text())["verdict"]
    assert f"VERDICT: {verdict}" in out and f"report: {folder / 'report.pdf'}" in out
    pages = pdf_pages(folder / "report.pdf")
    assert_plan_printed(pages[0], plan, verdict)
    assert plan["loss"] is None and "no loss law fitted" in pages[2]
    assert "Per-rung sweeps" in pages[1] and "rung w48" in pages[1] and "7 trials" in pages[1]
    # Run again: nothing is retrained and the artifacts are reused, in seconds.
    t0 = time.time()
    assert cli.main(["demo", "--no-progress"]) == 0
    assert time.time() - t0 < 20
    assert "VERDICT" in capsys.readouterr().out
    # `ladder report` redraws it from the store and the JSON alone.
    (folder / "report.pdf").unlink()
    assert cli.main(["report", str(exp_file), "--storage", f"sqlite:///{folder / 'trials.db'}", "--out",
                     str(folder)]) == 0
    assert_plan_printed(pdf_pages(folder / "report.pdf")[0], plan, verdict)


def test_gpu_example_parses_with_its_data_folders(tmp_path):
    from proxy.flops import param_counts
    from proxy.sweep.experiment import load_experiment

    (tmp_path / "data" / "web").mkdir(parents=True)
    (tmp_path / "data" / "code").mkdir()
    (tmp_path / "data" / "web" / "a.txt").write_text("a web page")
    (tmp_path / "data" / "code" / "a.py").write_text("def f():\n    return 1\n")
    (tmp_path / "data" / "math.bin").write_bytes(b"1 + 1 = 2\x002 + 2 = 4\x00")
    shutil.copy(REPO / "examples" / "gpu_ladder.toml", tmp_path / "gpu_ladder.toml")
    exp = load_experiment(tmp_path / "gpu_ladder.toml", check_storage=False)
    assert exp.storage.startswith("postgresql") and set(exp.data.user_domains) == {"web", "code", "math"}
    largest = max(param_counts(r.config).active for r in exp.rungs)
    assert param_counts(exp.target.config).active > 2 * largest


def test_steplaw_import_example_parses():
    from proxy.sweep.experiment import load_experiment

    exp = load_experiment(REPO / "examples" / "steplaw_import.toml", check_storage=False)
    assert {k.name for k in exp.search.box} == {"lr", "batch_size"} and exp.target.config.n_experts == 1
