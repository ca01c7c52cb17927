"""The PDF report: ``runs/<name>/report.pdf`` from the trial store and the JSON beside it.

``write_report(run_dir)`` reads ``plan.json``, ``review.json`` and ``fits.json`` from
``run_dir``, the experiment file named in the plan's provenance, and the trial store; it
refits the per-rung optima and trends from the store (pure maths, seconds; nothing is
trained) because the figures need the fitted surfaces, which the JSON does not carry. ``build_pages(ReportData)``
turns plain inputs into pages, so a report can also be drawn from hand-built or simulated
fits. Pages, in order:

1. cover: the verdict in large type, its reasons, the plan table (each knob with its 80% and
   95% intervals), the predicted loss, the budget ledger, the target config;
2. per-rung sweep curves, six (rung, knob) panels a page;
3. trends: each planned knob against size (log-log), with the backtest; then the loss law
   and its extrapolation to the target (two panels a page);
4. diagnostics: the review checks as a table, then expert load, divergences, search boxes,
   data mix;
5. appendix: provenance and the trial table.

Fonts are embedded as TrueType (``pdf.fonttype = 42``) so the text can be searched and copied.
"""

from __future__ import annotations

import datetime as _dt
import json
import math
import os
import platform
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import matplotlib
from matplotlib.backends.backend_pdf import PdfPages

from fits.loss_law import LossLawFit
from fits.observation import Observation
from fits.optimum import RungOptimum
from fits.power_law import Backtest, TrendFit, backtest_leave_largest_out
from reports import figures as F
from reports import pages as P
from reports.review import Verdict
from transfer.extrapolate import target_point
from transfer.plan import Plan

RC = {"pdf.fonttype": 42, "ps.fonttype": 42, "font.size": F.FONT, "axes.titlesize": F.FONT + 1,
      "axes.labelsize": F.FONT, "xtick.labelsize": F.SMALL, "ytick.labelsize": F.SMALL,
      "legend.fontsize": F.SMALL, "font.family": "DejaVu Sans"}
PANELS_PER_PAGE = 6


@dataclass(frozen=True)
class ReportData:
    """Everything a report draws, as plain values and fits results.

    ``observations`` and ``optima`` are keyed by rung in ascending size; ``human_box`` maps a
    continuous knob to its (low, high, log) as the human drew it; ``boxes`` maps rung -> knob
    -> (low, high) as the rung was searched (the ladder may have moved it); ``mix`` maps rung
    -> domain -> training weight of the rung's best trial (empty when the mix was fixed,
    ``mix_note`` says how)."""

    plan: Plan
    verdict: Verdict
    observations: Mapping[str, Sequence[Observation]]
    optima: Mapping[str, RungOptimum]
    human_box: Mapping[str, tuple[float, float, bool]]
    trends: Mapping[str, TrendFit] = field(default_factory=dict)
    trend_errors: Mapping[str, str] = field(default_factory=dict)
    rung_errors: Mapping[str, str] = field(default_factory=dict)
    loss_law: LossLawFit | None = None
    loss_error: str = ""
    boxes: Mapping[str, Mapping[str, tuple[float, float]]] = field(default_factory=dict)
    categorical: tuple[str, ...] = ()
    mix: Mapping[str, Mapping[str, float]] = field(default_factory=dict)
    mix_note: str = ""
    notes: tuple[str, ...] = ()
    compute_optimal: Any = None      # fits.compute_optimal.ComputeOptimalFit, when the rungs form isoFLOP curves


# --- Pages ----------------------------------------------------------------------------------
def _sweep_pages(d: ReportData) -> list[Any]:
    panels = []
    for rung, obs in d.observations.items():
        opt = d.optima.get(rung)
        for knob, (lo, hi, log) in d.human_box.items():
            if not all(knob in o.knobs for o in obs):
                continue
            panels.append(F.SweepPanel(rung=rung, knob=knob, log=log, observations=tuple(obs), optimum=opt,
                                       box=d.boxes.get(rung, {}).get(knob), human_box=(lo, hi),
                                       note="" if opt is not None else d.rung_errors.get(rung, "no optimum")[:90]))
    chunks = [panels[i:i + PANELS_PER_PAGE] for i in range(0, len(panels), PANELS_PER_PAGE)]
    return [F.sweep_page(c, f"Per-rung sweeps ({i + 1} of {len(chunks)}): loss against each searched knob")
            for i, c in enumerate(chunks)]


def _backtest(d: ReportData, knob: str, trend: TrendFit | None) -> Backtest | None:
    """The review's backtest of ``knob`` (review.json details), so the figure shows the numbers
    the verdict used; computed from the trend when the review has none (hand-built verdicts)."""
    for c in d.verdict.checks:
        b = c.details.get("knobs", {}).get(knob) if c.name == "backtest" else None
        if b:
            return Backtest.from_dict(b)
    if trend is None or trend.n < 4:   # leaving one out must leave a residual degree of freedom
        return None
    try:
        return backtest_leave_largest_out(trend.sizes, trend.values, value_se=trend.value_se, tokens=trend.tokens,
                                          axes=trend.axes or None, labels=trend.labels,
                                          alpha=float(d.verdict.policy.get("backtest_alpha", 0.05)))
    except ValueError:
        return None


def _analysis_pages(d: ReportData) -> list[Any]:
    """Each planned knob's trend, then the loss law: two panels a page."""
    panels: list[F.TrendPanel | F.LossPanel] = []
    for k in d.plan.knobs:
        tr = d.trends.get(k.name)
        excluded = tuple((r, o.params_active, float(o.value(k.name))) for r, o in d.optima.items()
                         if not o.usable and k.name in o.continuous and float(o.value(k.name)) > 0)
        point = target_point(d.plan.target)
        size, tokens = tr.regressors_of(point) if tr is not None else (d.plan.target.params_active, None)
        panels.append(F.TrendPanel(knob=k.name, trend=tr, target_size=size, target_tokens=tokens,
                                   target_name=d.plan.target.name, estimate=k.value,
                                   ci80=(k.ci80.low, k.ci80.high), ci95=(k.ci95.low, k.ci95.high),
                                   excluded=excluded, backtest=_backtest(d, k.name, tr),
                                   why=d.trend_errors.get(k.name, f"method {k.method}: no trend")))
    rungs = list(d.optima.values())
    # The loss of a rung as the loss law is fitted on it (transfer.extrapolate): the fitted
    # minimum of its surface, else its best trial.
    panels.append(F.LossPanel(
        law=d.loss_law, sizes=tuple(o.params_active for o in rungs),
        losses=tuple(o.fitted_min_loss if o.fitted_min_loss is not None and o.fitted_min_loss > 0 else o.best_loss
                     for o in rungs),
        target_size=d.plan.target.params_active, target_name=d.plan.target.name, prediction=d.plan.loss,
        why=d.loss_error or "too few rungs", target_tokens=d.plan.target.tokens))
    return [F.analysis_page(panels[i:i + 2]) for i in range(0, len(panels), 2)]


def _compute_page(d: ReportData) -> Any:
    """The rungs' isoFLOP curves and the N_opt(C) law with the target's budget
    (``reports.compute_figure``), titled with the plan's statement."""
    from reports.compute_figure import isoflop_figure
    from transfer.extrapolate import isoflop_points

    co, target = d.compute_optimal, d.plan.target
    c, n, _, loss = isoflop_points([o for o in d.optima.values() if o.usable])
    fig = isoflop_figure(co, c, n, loss, at=target.flops, at_interval=co.predict(target.flops).n_opt)
    fig.set_size_inches(F.PAGE[1], F.PAGE[0])   # landscape: the two panels side by side
    statement = d.plan.compute_optimal.statement if d.plan.compute_optimal is not None else ""
    import textwrap

    fig.suptitle("Compute-optimal size (isoFLOP curves, Hoffmann et al. 2022 Approach 2)\n"
                 + "\n".join(textwrap.wrap(statement, 150)), fontsize=F.SMALL + 1)
    fig.subplots_adjust(left=0.08, right=0.97, top=0.86, bottom=0.1, wspace=0.3)
    return fig


def _diagnostics_page(d: ReportData) -> Any:
    rungs = list(d.observations)
    knob = next(iter(d.human_box), "")
    largest = rungs[-1] if rungs else ""
    obs_l = [o for o in d.observations.get(largest, ()) if "expert_max_over_mean" in o.extra and knob in o.knobs]
    rows = []
    adjust = {(a.rung, a.knob): a.action for a in d.plan.box_adjustments}
    if knob:
        lo, hi, log = d.human_box[knob]
        for r in rungs:
            opt = d.optima.get(r)
            val = ci = None
            if opt is not None and knob in opt.continuous:
                val = float(opt.value(knob))
                c = opt.conf_int(0.05)[knob]
                ci = (c.low, c.high) if math.isfinite(c.low) and math.isfinite(c.high) else None
            rows.append(F.BoxRow(rung=r, box=d.boxes.get(r, {}).get(knob, (lo, hi)), human=(lo, hi),
                                 action=adjust.get((r, knob), "kept"), optimum=val, ci95=ci))
    limit = d.verdict.policy.get("max_expert_load")
    return F.diagnostics_figure(
        load_x=[float(o.knobs[knob]) for o in obs_l], load_y=[o.extra["expert_max_over_mean"] for o in obs_l],
        load_knob=knob, load_rung=largest, load_limit=None if limit is None else float(limit), rungs=rungs,
        n_trials=[len(d.observations[r]) for r in rungs],
        n_diverged=[sum(1 for o in d.observations[r] if not o.usable) for r in rungs], box_knob=knob,
        box_rows=rows, box_log=bool(knob and d.human_box[knob][2]), mix=d.mix, mix_note=d.mix_note)


def trial_table(d: ReportData) -> tuple[list[str], list[list[str]]]:
    """Header and rows of the appendix trial table (one row per finished trial)."""
    knobs = list(d.human_box) + list(d.categorical)
    header = ["rung", "trial"] + knobs + ["loss (nats)", "diverged", "load max/mean", "FLOPs"]
    rows = []
    for rung, obs in d.observations.items():
        for i, o in enumerate(obs):
            num = o.extra.get("trial_number", i)
            load = o.extra.get("expert_max_over_mean")
            rows.append([rung, str(int(num))] + [P.fmt(o.knobs.get(k, "")) for k in knobs]
                        + ["-" if not o.usable else f"{o.loss:.4f}", "yes" if o.diverged else "no",
                           "-" if load is None else f"{load:.3f}",
                           "-" if "flops" not in o.extra else f"{o.extra['flops']:.3g}"])
    return header, rows


def _machine() -> dict[str, str]:
    return {"report machine": f"{platform.node()} ({platform.platform()})",
            "report python": f"{platform.python_version()}, matplotlib {matplotlib.__version__}, "
                             f"{os.cpu_count()} CPUs",
            "report created": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")}


def build_pages(d: ReportData) -> list[tuple[str, Any]]:
    """(section, Figure) for every page, in report order (see the module docstring)."""
    pages: list[tuple[str, Any]] = [("sweeps", f) for f in _sweep_pages(d)]
    pages += [("trends and loss law", f) for f in _analysis_pages(d)]
    if d.compute_optimal is not None:
        pages.append(("compute-optimal size", _compute_page(d)))
    pages.append(("checks", P.checks_page(d.verdict)))
    pages.append(("diagnostics", _diagnostics_page(d)))
    prov = d.plan.provenance.to_dict()
    prov["seeds"] = ", ".join(str(s) for s in prov.get("seeds", ()))
    header, rows = trial_table(d)
    pages += [("appendix", f) for f in P.appendix_pages(prov, rows, header, _machine())]
    contents: dict[str, int] = {}
    for i, (section, _) in enumerate(pages):
        contents.setdefault(section, i + 2)     # page 1 is the cover
    return [("cover", P.cover_page(d.plan, d.verdict, tuple(contents.items())))] + pages


def write_pdf(d: ReportData, path: str | Path) -> Path:
    """Draw every page of ``d`` into the PDF at ``path`` (written to a temporary name first, so
    a reader never sees half a report); returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")   # one a process: two runs on one folder
    with matplotlib.rc_context(RC):
        pages = build_pages(d)
        with PdfPages(tmp, metadata={"Title": f"Plan review: {d.plan.experiment}",
                                     "Subject": f"verdict {d.verdict.verdict}", "Creator": "proxy-transfer"}) as pdf:
            for _, fig in pages:
                pdf.savefig(fig)
                F.close(fig)
    tmp.replace(path)
    return path


# --- From a run folder ------------------------------------------------------------------------
def _read_json(path: Path, what: str) -> dict:
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: run `ladder {what}` (or `ladder run`) first")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path} is not valid JSON: {exc}") from exc


def _mix(experiment: Any, observations: Mapping[str, Sequence[Observation]]) -> tuple[dict, str]:
    """Training-mix weights to draw: the best trial's per rung when the mix was searched, else
    the one fixed mix (or uniform) that every trial used."""
    from proxy.sweep import knobs as K

    if not any(k.name == K.MIX_KNOB for k in experiment.search.box):
        fixed = experiment.search.fixed.get(K.MIX_KNOB) or experiment.data.train_mix
        weights = K.normalise_mix(fixed) if fixed else {d: 1.0 / len(experiment.data.domains)
                                                        for d in experiment.data.domains}
        return {"all rungs": weights}, "not searched; " + ("fixed" if fixed else "uniform") + " for every trial"
    out = {}
    for rung, obs in observations.items():
        ok = [o for o in obs if o.usable]
        if ok:
            best = min(ok, key=lambda o: o.loss)
            out[rung] = {k.split(".", 1)[1]: float(v) for k, v in best.knobs.items() if k.startswith("mix_weight.")}
    return out, "searched; each rung's best trial"


def report_data(run_dir: str | Path, experiment: Any = None, storage: Any = None) -> ReportData:
    """Assemble ``ReportData`` from ``run_dir`` (plan.json, review.json, fits.json), the experiment file
    (default: the path in the plan's provenance) and its trial store (default: ``run_dir/trials.db``
    when the experiment is read from the provenance and that file exists, else its storage)."""
    from proxy.sweep import knobs as K
    from proxy.sweep.experiment import load_experiment
    from proxy.sweep.store import open_storage
    from transfer.ladder import read_records
    from transfer.fits_cache import cached_fits

    run_dir = Path(run_dir)
    plan = Plan.from_dict(_read_json(run_dir / "plan.json", "plan"))
    verdict = Verdict.from_dict(_read_json(run_dir / "review.json", "review"))
    if experiment is None:
        path = plan.provenance.experiment_path
        if not path or not Path(path).is_file():
            raise FileNotFoundError(f"the experiment file of the plan ({path or 'none recorded'}) is not found; "
                                    "pass the experiment file (`ladder report EXPERIMENT.toml`)")
        experiment = load_experiment(path, check_storage=False)
        if storage is None and (run_dir / "trials.db").is_file():
            # A SQLite store beside the artifacts is the one they were made from (it may have
            # been named with --storage rather than in the experiment file).
            storage = open_storage(f"sqlite:///{(run_dir / 'trials.db').resolve()}", read_only=True)
    if experiment.name != plan.experiment:
        raise ValueError(f"plan.json in {run_dir} is for experiment {plan.experiment!r}, not {experiment.name!r}")
    _read_json(run_dir / "fits.json", "fit")
    # The fits are read back from fits.json when it was fitted from the trials the store holds
    # now (transfer.fits_cache), else refitted, seeded as in transfer.extrapolate.fit_all.
    storage = storage or open_storage(experiment.storage, read_only=True)
    fits, _ = cached_fits(experiment, storage, run_dir)
    obs = fits.observations
    rungs = list(fits.rungs)
    optima = {f.rung: f.optimum for f in rungs if f.optimum is not None}
    trends: dict[str, TrendFit] = dict(fits.trends)
    trend_errors: dict[str, str] = dict(fits.trend_errors)
    human = {k.name: (float(k.low), float(k.high), bool(k.log)) for k in experiment.search.box
             if not k.categorical and k.name != K.MIX_KNOB}
    boxes = {r: {k: (b.low, b.high) for k, b in rec.box.items()} for r, rec in read_records(experiment, storage).items()}
    mix, mix_note = _mix(experiment, obs)
    return ReportData(plan=plan, verdict=verdict, observations=obs, optima=optima, human_box=human,
                      trends=trends, trend_errors=trend_errors, rung_errors={f.rung: f.error for f in rungs if f.error},
                      loss_law=fits.loss_law, loss_error=fits.loss_error,
                      boxes=boxes, categorical=tuple(k.name for k in experiment.search.box if k.categorical),
                      mix=mix, mix_note=mix_note, notes=tuple(fits.notes),
                      compute_optimal=fits.compute_optimal if plan.compute_optimal is not None else None)


def write_report(run_dir: str | Path, experiment: Any = None, storage: Any = None,
                 out: str | Path | None = None) -> Path:
    """Write ``report.pdf`` (or ``out``) for the run in ``run_dir``; returns its path."""
    data = report_data(run_dir, experiment, storage)
    return write_pdf(data, out or Path(run_dir) / "report.pdf")
