"""Figures of the report: one function per figure, each taking plain data or fits results and
returning a matplotlib ``Figure`` on the Agg canvas (never pyplot, so no global figure state
leaks between calls or tests; a caller that is done with a figure may ``close(fig)``).

Sizes are for print: A4 portrait pages (``PAGE``), text at 8 pt or more, every axis labelled
with its unit. Losses are evaluation cross-entropies in nats per token (byte-level tokens on
the built-in data); sizes are parameter counts (active: touched per token).
"""

from __future__ import annotations

import math
import textwrap
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from fits.loss_law import LossLawFit
from fits.observation import Observation
from fits.optimum import RungOptimum
from fits.power_law import Backtest, TrendFit

PAGE = (8.27, 11.69)            # A4 portrait, inches (fits on Letter with the default margins)
FONT = 9                         # base text size, points
SMALL = 8                        # the smallest text on any page
LOSS_LABEL = "eval loss (nats/token)"
SIZE_LABEL = "active parameters (count)"
KNOB_LABELS = {
    "lr": "peak learning rate (AdamW)",
    "aux_loss_coef": "load-balancing coefficient",
    "z_loss_coef": "router z-loss coefficient",
    "init_scale": "init scale (x default std)",
    "warmup_frac": "warmup (fraction of steps)",
    "weight_decay": "weight decay (decoupled)",
    "batch_size": "batch size (sequences/step)",
    "n_experts": "experts per layer (count)",
    "top_k": "experts per token (count)",
}
COLORS = {"trial": "#1f77b4", "other": "#b0b0b0", "diverged": "#d62728", "fit": "#222222",
          "opt": "#2ca02c", "band": "#ffbf00", "box": "#555555", "human": "#9467bd",
          "target": "#d62728", "backtest": "#ff7f0e", "mean": "#1f77b4", "pred": "#aec7e8"}


def knob_label(name: str) -> str:
    """Axis label of a knob with its unit (dimensionless knobs say what they scale)."""
    return KNOB_LABELS.get(name, name)


def new_figure(size: tuple[float, float] = PAGE) -> Figure:
    """A figure on its own Agg canvas, outside pyplot's global state."""
    fig = Figure(figsize=size)
    FigureCanvasAgg(fig)
    return fig


def save_png_and_pdf(fig: Figure, png: Any, pdf: Any, dpi: int = 120) -> None:
    """Lay the figure out and write it twice: a PNG to look at and a one-page PDF for a report."""
    from matplotlib.backends.backend_pdf import PdfPages

    fig.tight_layout()
    fig.savefig(png, dpi=dpi)
    with PdfPages(pdf) as pages:
        pages.savefig(fig)


def close(fig: Figure) -> None:
    """Release a figure's artists (figures made here are not registered with pyplot)."""
    fig.clear()


def _no_data(ax: Any, title: str, why: str) -> None:
    ax.set_title(title, fontsize=FONT + 1)
    ax.text(0.5, 0.5, why, ha="center", va="center", fontsize=FONT, wrap=True, transform=ax.transAxes)
    ax.set_xticks([])
    ax.set_yticks([])


# --- Per-rung sweep curves -------------------------------------------------------------------
@dataclass(frozen=True)
class SweepPanel:
    """One (rung, knob) panel: the rung's trials, its optimum (None: no fit), the box the rung
    was searched in and the human's box, both (low, high) in the knob's units."""

    rung: str
    knob: str
    log: bool
    observations: tuple[Observation, ...]
    optimum: RungOptimum | None
    box: tuple[float, float] | None
    human_box: tuple[float, float] | None
    note: str = ""


def _draw_sweep(ax: Any, p: SweepPanel) -> None:
    obs = p.observations
    opt = p.optimum
    xs = np.asarray([float(o.knobs[p.knob]) for o in obs], dtype=float)
    if p.log:
        ax.set_xscale("log")
    # Trials at other categorical levels than the optimum's are drawn grey: the surface is not theirs.
    same = np.ones(len(obs), dtype=bool)
    if opt is not None:
        for name, choice in opt.categorical.items():
            same &= np.asarray([o.knobs.get(name) == choice.best for o in obs])
    ok = np.asarray([o.usable for o in obs], dtype=bool)
    losses = np.asarray([o.loss if o.usable else np.nan for o in obs])
    ax.scatter(xs[ok & same], losses[ok & same], s=22, color=COLORS["trial"], zorder=3, label="trial")
    if np.any(ok & ~same):
        ax.scatter(xs[ok & ~same], losses[ok & ~same], s=18, color=COLORS["other"], zorder=2,
                   label="trial, other level")
    finite = losses[ok]
    lo_y = float(np.nanmin(finite)) if finite.size else 0.0
    hi_y = float(np.nanmax(finite)) if finite.size else 1.0
    # Zoom on the basin: a few runs far above it (unstable settings) would flatten it to a line.
    # The top is four times the median's gap to the best; trials above it are drawn at the top.
    if finite.size >= 4:
        cap = lo_y + 4.0 * (float(np.nanmedian(finite)) - lo_y)
        hi_y = min(hi_y, cap) if cap > lo_y else hi_y
    pad = max(0.05 * (hi_y - lo_y), 1e-3)
    top = hi_y + 4 * pad
    above = ok & (losses > hi_y + pad)
    if np.any(above):
        ax.scatter(xs[above], np.full(int(above.sum()), top - 2 * pad), marker="^", s=22, color=COLORS["other"],
                   zorder=3, label="trial above the axis (loss off scale)")
    if np.any(~ok):
        ax.scatter(xs[~ok], np.full(int((~ok).sum()), top - pad), marker="x", s=40, color=COLORS["diverged"],
                   zorder=4, label="diverged (drawn at the top)")
    if p.human_box is not None:
        ax.axvspan(*p.human_box, color=COLORS["human"], alpha=0.1, lw=0, label="human's box")
    if p.box is not None:
        for edge in p.box:
            ax.axvline(edge, color=COLORS["box"], ls="--", lw=1)
        ax.plot([], [], color=COLORS["box"], ls="--", lw=1, label="searched box")
    if opt is not None and p.knob in opt.continuous:
        x_opt = float(opt.value(p.knob))
        if opt.surface is not None and opt.fitted_min_loss is not None:
            lo, hi = float(np.nanmin(xs)), float(np.nanmax(xs))
            grid = np.geomspace(lo, hi, 200) if p.log else np.linspace(lo, hi, 200)
            base = {k: float(opt.value(k)) for k in opt.continuous}
            curve = [opt.predict(base | {p.knob: float(g)}) for g in grid]
            ax.plot(grid, curve, color=COLORS["fit"], lw=1.5, label="fitted surface (others at optimum)")
        band = opt.band.get(p.knob)
        if band is not None:
            ax.axvspan(band.low, band.high, color=COLORS["band"], alpha=0.25, lw=0,
                       label=f"near-optimal band ({opt.band_basis})")
        ci = opt.conf_int(0.05).get(p.knob)
        ax.axvline(x_opt, color=COLORS["opt"], lw=1.5, label="optimum")
        if ci is not None and math.isfinite(ci.low) and math.isfinite(ci.high):
            y = lo_y - pad
            ax.errorbar([x_opt], [y], xerr=[[max(x_opt - ci.low, 0)], [max(ci.high - x_opt, 0)]], fmt="o",
                        color=COLORS["opt"], capsize=3, ms=4, label="optimum, 95% interval")
    ax.set_ylim(lo_y - 3 * pad, top)
    ax.set_xlabel(knob_label(p.knob), fontsize=FONT)
    ax.set_ylabel(LOSS_LABEL, fontsize=FONT)
    status = "no optimum" if opt is None else ("usable" if opt.usable else
                                              "not used: " + ", ".join(c for c in opt.flag_codes
                                                                       if c != "diverged_excluded"))
    n_div = int((~ok).sum())
    n_rep = sum(1 for o in obs if "replicate_of" in o.extra)   # the incumbent again, other seeds
    ax.set_title(f"rung {p.rung}\n{len(obs) - n_rep} trials" + (f" + {n_rep} replicate" if n_rep else "")
                 + (f" ({n_div} diverged)" if n_div else "") + f", {status}",
                 fontsize=FONT)
    if p.note:
        ax.text(0.02, 0.02, p.note, transform=ax.transAxes, fontsize=SMALL, va="bottom")
    ax.tick_params(labelsize=SMALL)
    ax.grid(alpha=0.3, lw=0.5)


def sweep_page(panels: Sequence[SweepPanel], title: str = "Per-rung sweeps") -> Figure:
    """Up to six (rung, knob) panels on one page, three rows of two, one shared legend."""
    if not panels:
        raise ValueError("sweep_page needs at least one panel")
    if len(panels) > 6:
        raise ValueError(f"sweep_page takes at most 6 panels, got {len(panels)}")
    fig = new_figure()
    fig.suptitle(title, fontsize=FONT + 4)
    axes = fig.subplots(3, 2).ravel()
    handles: dict[str, Any] = {}
    for ax, panel in zip(axes, panels):
        _draw_sweep(ax, panel)
        for h, lab in zip(*ax.get_legend_handles_labels()):
            handles.setdefault(lab, h)
    for ax in axes[len(panels):]:
        ax.set_visible(False)
    fig.legend(list(handles.values()), list(handles.keys()), loc="lower center", ncol=3, fontsize=SMALL,
               frameon=False)
    fig.subplots_adjust(left=0.1, right=0.97, top=0.93, bottom=0.12, hspace=0.45, wspace=0.3)
    return fig


# --- Trends ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class TrendPanel:
    """One knob's trend: the fit (None: no trend, ``why`` says why), the rungs left out
    (label, size, value), the plan at the target and the leave-largest-out backtest."""

    knob: str
    trend: TrendFit | None
    target_size: float
    target_name: str
    estimate: float | None
    ci80: tuple[float, float] | None
    ci95: tuple[float, float] | None
    excluded: tuple[tuple[str, float, float], ...] = ()
    backtest: Backtest | None = None
    why: str = ""
    target_tokens: float | None = None   # for a trend on (N, D): the line runs to the target's tokens


AXIS_TITLES = {"params_active": "active parameters", "params_total": "total parameters",
               "tokens": "training tokens", "flops": "training compute (FLOPs)"}


def _draw_trend(ax: Any, p: TrendPanel) -> None:
    title = f"{p.knob}: optimum against size"
    tr = p.trend
    if tr is None:
        _no_data(ax, title, p.why or "no trend fitted")
        return
    ax.set_xscale("log")
    ax.set_yscale("log")
    sizes = np.asarray(tr.sizes)
    grid = np.geomspace(sizes.min() / 1.3, max(p.target_size, sizes.max()) * 1.3, 120)
    mean_lo, mean_hi, pred_lo, pred_hi, line = [], [], [], [], []
    tokens = None
    # A tokens term: the line runs log-linearly from the rungs' geometric-mean (N, D) to the
    # target's, so it passes through the target; the rungs are a projection on the N axis.
    log_n0, log_d0 = float(np.mean(np.log(sizes))), float(tr.log_tokens_mean or 0.0)
    d_slope = 0.0
    if tr.tokens is not None and p.target_tokens and abs(math.log(p.target_size) - log_n0) > 1e-12:
        d_slope = (math.log(p.target_tokens) - log_d0) / (math.log(p.target_size) - log_n0)
    for s in grid:
        if tr.tokens is not None:
            tokens = float(np.exp(log_d0 + d_slope * (math.log(s) - log_n0)))
        iv = tr.log_intervals(float(s), 0.05, tokens)
        mean_lo.append(iv["mean"].low)
        mean_hi.append(iv["mean"].high)
        pred_lo.append(iv["prediction"].low)
        pred_hi.append(iv["prediction"].high)
        line.append(tr.predict_log(float(s), tokens))
    ax.fill_between(grid, np.exp(pred_lo), np.exp(pred_hi), color=COLORS["pred"], alpha=0.5, lw=0,
                    label="95% prediction band")
    ax.fill_between(grid, np.exp(mean_lo), np.exp(mean_hi), color=COLORS["mean"], alpha=0.35, lw=0,
                    label="95% band of the mean")
    law = f"{tr.prefactor:.3g} N^{tr.exponent:.3f}"
    ax.plot(grid, np.exp(line), color=COLORS["fit"], lw=1.5, label=f"fit: {law}")
    vals = np.asarray(tr.values)
    if tr.value_se is not None:
        se = np.asarray(tr.value_se)
        err = [vals - vals * np.exp(-1.96 * se), vals * np.exp(1.96 * se) - vals]
        ax.errorbar(sizes, vals, yerr=err, fmt="o", color=COLORS["trial"], capsize=3, ms=5,
                    label="rung optimum, 95% interval")
    else:
        ax.plot(sizes, vals, "o", color=COLORS["trial"], ms=5, label="rung optimum")
    for lab, s, v in p.excluded:
        ax.plot([s], [v], "o", mfc="none", color=COLORS["other"], ms=6)
        ax.annotate(f"{lab} (left out)", (s, v), fontsize=SMALL, xytext=(4, 4), textcoords="offset points")
    if p.excluded:
        ax.plot([], [], "o", mfc="none", color=COLORS["other"], label="rung left out of the fit")
    if p.estimate is not None and p.ci95 is not None:
        e = p.estimate
        ax.errorbar([p.target_size], [e], yerr=[[e - p.ci95[0]], [p.ci95[1] - e]], fmt="none",
                    color=COLORS["target"], capsize=4, lw=1)
        if p.ci80 is not None:
            ax.errorbar([p.target_size], [e], yerr=[[e - p.ci80[0]], [p.ci80[1] - e]], fmt="s",
                        color=COLORS["target"], lw=3, ms=6, label=f"target {p.target_name}: 80% / 95%")
    bt = p.backtest
    if bt is not None:
        pr = bt.predicted
        ax.errorbar([bt.size * 1.08], [pr], yerr=[[pr - bt.interval.low], [bt.interval.high - pr]], fmt="D",
                    color=COLORS["backtest"], capsize=3, ms=4,
                    label=f"backtest: largest rung predicted without it ({'inside' if bt.inside else 'MISSED'})")
    ax.set_xlabel(AXIS_TITLES.get(tr.axes[0], SIZE_LABEL) if tr.axes else SIZE_LABEL, fontsize=FONT)
    ax.set_ylabel(knob_label(p.knob), fontsize=FONT)
    ax.set_title(title + f" (exponent {tr.exponent:+.3f}, {tr.n} rungs)", fontsize=FONT + 1)
    ax.tick_params(labelsize=SMALL)
    ax.grid(alpha=0.3, lw=0.5, which="both")
    ax.legend(fontsize=SMALL, loc="best", framealpha=0.85)


# --- Loss law -------------------------------------------------------------------------------
@dataclass(frozen=True)
class LossPanel:
    """The loss law fitted on the per-rung losses (``sizes`` active parameters, ``losses``
    nats) and its extrapolation to the target; ``prediction`` is the plan's ``LossPrediction``
    (its 80% and 95% intervals are drawn at the target). An L(N, D) law is drawn at the
    target's tokens per parameter. ``law`` None: ``why`` says why."""

    law: LossLawFit | None
    sizes: tuple[float, ...]
    losses: tuple[float, ...]
    target_size: float
    target_name: str
    prediction: Any = None
    why: str = ""
    target_tokens: float | None = None


def _draw_loss_law(ax: Any, p: LossPanel) -> None:
    title = "Loss law: best loss per rung, extrapolated to the target"
    n = np.asarray(p.sizes, dtype=float)
    y = np.asarray(p.losses, dtype=float)
    ax.set_xscale("log")
    ax.set_xlabel(SIZE_LABEL, fontsize=FONT)
    ax.set_ylabel(LOSS_LABEL, fontsize=FONT)
    ax.set_title(title, fontsize=FONT + 1)
    ax.tick_params(labelsize=SMALL)
    if n.size:
        ax.plot(n, y, "o", color=COLORS["trial"], ms=6, label="rung (fitted minimum loss)", zorder=3)
    law = p.law
    if law is None:
        ax.text(0.5, 0.5, textwrap.fill(f"no loss law fitted: {p.why}", 70), ha="center", va="center",
                transform=ax.transAxes, fontsize=FONT)
        return
    problems = law.problems(p.losses)
    if problems:
        # A non-converged or degenerate law is named as such, its parameters are not printed (a
        # runaway fit reads A = 1e147) and nothing is extrapolated from it.
        ax.text(0.5, 0.5, textwrap.fill(f"loss law L({law.form}) not usable, not extrapolated: "
                                        + "; ".join(problems), 70),
                ha="center", va="center", transform=ax.transAxes, fontsize=FONT, color=COLORS["target"])
        ax.grid(alpha=0.3, lw=0.5, which="both")
        return
    grid = np.geomspace(n.min() / 1.3, max(p.target_size, n.max()) * 1.3, 150)
    tok = None
    form = "E + A N^-alpha"
    if law.form != "N" and p.target_tokens is not None:
        # L(N, D) is drawn along the target's tokens per parameter; rungs trained at other
        # ratios sit off this curve by their own D term.
        ratio = p.target_tokens / p.target_size
        tok = ratio * grid
        form = f"E + A N^-alpha + B D^-beta at D = {ratio:.3g} N"
    curve = np.asarray(law.predict(grid, tok) if tok is not None else law.predict(grid), dtype=float)
    if law.boot.size:
        draws = []
        for row in law.boot:
            q = dict(zip(law.names, row))
            val = q["E"] + q["A"] * grid ** (-q["alpha"])
            if "B" in q and tok is not None:
                val = val + q["B"] * tok ** (-q["beta"])
            draws.append(val)
        lo, hi = np.nanpercentile(np.asarray(draws), [2.5, 97.5], axis=0)
        ax.fill_between(grid, lo, hi, color=COLORS["pred"], alpha=0.5, lw=0, label="95% bootstrap band")
    par = ", ".join(f"{k}={v:.3g}" for k, v in law.params.items())
    ax.plot(grid, curve, color=COLORS["fit"], lw=1.5,
            label=f"L = {form} ({par})" + ("" if law.converged else ", NOT converged"))
    pr = p.prediction
    if pr is not None:
        v = pr.value
        for ci, lw, cap in ((pr.ci95, 1, 4), (pr.ci80, 3, 0)):
            if ci is not None:
                ax.errorbar([p.target_size], [v], yerr=[[v - ci.low], [ci.high - v]], fmt="none",
                            color=COLORS["target"], capsize=cap, lw=lw)
        ax.plot([p.target_size], [v], "s", color=COLORS["target"], ms=7,
                label=f"target {p.target_name}: {v:.4g} nats (80% / 95%)")
    ax.axvline(n.max(), color=COLORS["box"], ls=":", lw=1, label="largest rung")
    # Frame the rungs and the prediction: a poorly determined law can shoot off at small sizes.
    ys = list(y) + ([] if pr is None else [pr.value] + [c for ci in (pr.ci95, pr.ci80) if ci is not None
                                                          for c in (ci.low, ci.high)])
    span = max(max(ys) - min(ys), 1e-3)
    ax.set_ylim(min(ys) - 0.25 * span, max(ys) + 0.25 * span)
    ax.grid(alpha=0.3, lw=0.5, which="both")
    ax.legend(fontsize=SMALL, loc="lower left", framealpha=0.85)


def analysis_page(panels: Sequence[TrendPanel | LossPanel],
                  title: str = "Trends: optimal settings against size, and the loss law") -> Figure:
    """One or two panels (knob trends and/or the loss law), stacked on one page."""
    if not 1 <= len(panels) <= 2:
        raise ValueError(f"analysis_page takes 1 or 2 panels, got {len(panels)}")
    fig = new_figure()
    fig.suptitle(title, fontsize=FONT + 4)
    axes = fig.subplots(2, 1)
    for ax, panel in zip(axes, panels):
        (_draw_loss_law if isinstance(panel, LossPanel) else _draw_trend)(ax, panel)
    if len(panels) == 1:
        axes[1].set_visible(False)
    fig.subplots_adjust(left=0.12, right=0.96, top=0.93, bottom=0.07, hspace=0.3)
    return fig


# --- Diagnostics ----------------------------------------------------------------------------
@dataclass(frozen=True)
class BoxRow:
    """One rung's box for one knob (natural units), the human's box, and the rung's optimum
    with its 95% interval (None when the rung has no fitted optimum)."""

    rung: str
    box: tuple[float, float]
    human: tuple[float, float]
    action: str = "kept"
    optimum: float | None = None
    ci95: tuple[float, float] | None = None


def diagnostics_figure(*, load_x: Sequence[float], load_y: Sequence[float], load_knob: str, load_rung: str,
                       load_limit: float | None, rungs: Sequence[str], n_trials: Sequence[int],
                       n_diverged: Sequence[int], box_knob: str, box_rows: Sequence[BoxRow], box_log: bool,
                       mix: Mapping[str, Mapping[str, float]], mix_note: str = "") -> Figure:
    """Four panels: expert load on the largest rung (max/mean per trial against a knob), the
    divergences per rung, the search box the human drew and how the ladder moved it, and the
    data mix of each rung's best trial (weights per domain)."""
    fig = new_figure()
    fig.suptitle("Diagnostics: expert load, divergences, search box, data mix", fontsize=FONT + 4)
    (a1, a2), (a3, a4) = fig.subplots(2, 2)
    # Expert load: max over mean tokens per expert (1 = perfect balance).
    if len(load_y):
        if box_log:
            a1.set_xscale("log")
        a1.scatter(load_x, load_y, s=22, color=COLORS["trial"], label="trial")
        if load_limit is not None:
            a1.axhline(load_limit, color=COLORS["diverged"], ls="--", lw=1, label=f"review limit {load_limit:g}")
        a1.axhline(1.0, color=COLORS["opt"], ls=":", lw=1, label="perfect balance")
        a1.set_xlabel(knob_label(load_knob), fontsize=FONT)
        a1.set_ylabel("expert load, max/mean (ratio)", fontsize=FONT)
        a1.set_title(f"expert load on the largest rung ({load_rung})", fontsize=FONT + 1)
        a1.legend(fontsize=SMALL)
        a1.tick_params(labelsize=SMALL)
        a1.grid(alpha=0.3, lw=0.5)
    else:
        _no_data(a1, f"expert load on the largest rung ({load_rung})", "no expert-load figures in the store\n"
                 "(imported runs carry none)")
    # Divergences.
    x = np.arange(len(rungs))
    done = np.asarray(n_trials) - np.asarray(n_diverged)
    a2.bar(x, done, color=COLORS["trial"], label="finished")
    a2.bar(x, n_diverged, bottom=done, color=COLORS["diverged"], label="diverged")
    a2.set_xticks(x, list(rungs), fontsize=SMALL, rotation=30 if len(rungs) > 5 else 0)
    a2.set_xlabel("rung (ascending size)", fontsize=FONT)
    a2.set_ylabel("trials (count)", fontsize=FONT)
    a2.set_title(f"divergences: {int(np.sum(n_diverged))} of {int(np.sum(n_trials))} trials", fontsize=FONT + 1)
    a2.set_ylim(0, max(1, int(np.max(n_trials, initial=1))) * 1.3)
    a2.legend(fontsize=SMALL, loc="upper right", ncol=2)
    a2.tick_params(labelsize=SMALL)
    # Boxes: the human's box as a shaded band, each rung's searched box as a bar.
    if box_rows:
        if box_log:
            a3.set_xscale("log")
        hl, hh = box_rows[0].human
        a3.axvspan(hl, hh, color=COLORS["human"], alpha=0.12, lw=0, label="human's box")
        for i, r in enumerate(box_rows):
            a3.plot(r.box, [i, i], color=COLORS["box"], lw=6, solid_capstyle="butt",
                    label="searched box" if i == 0 else None)
            if r.optimum is not None:
                err = None if r.ci95 is None else [[r.optimum - r.ci95[0]], [r.ci95[1] - r.optimum]]
                a3.errorbar([r.optimum], [i], xerr=err, fmt="o", color=COLORS["opt"], capsize=3, ms=4,
                            label="optimum, 95%" if i == 0 else None)
        a3.set_yticks(range(len(box_rows)), [r.rung if r.action == "kept" else f"{r.rung}\n{r.action}"
                                             for r in box_rows], fontsize=SMALL)
        a3.set_ylim(-0.7, len(box_rows) - 0.1)
        a3.set_xlabel(knob_label(box_knob), fontsize=FONT)
        a3.set_ylabel("rung", fontsize=FONT)
        a3.set_title(f"search box of {box_knob}: human's and the ladder's", fontsize=FONT + 1)
        a3.legend(fontsize=SMALL, loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=3, frameon=False)
        a3.tick_params(labelsize=SMALL)
        a3.grid(alpha=0.3, lw=0.5, axis="x")
    else:
        _no_data(a3, "search box", "no continuous knob was searched")
    # Data mix.
    if mix:
        names = list(mix)
        domains = sorted({d for m in mix.values() for d in m})
        left = np.zeros(len(names))
        for j, d in enumerate(domains):
            w = np.asarray([mix[r].get(d, 0.0) for r in names])
            a4.barh(range(len(names)), w, left=left, label=d, color=f"C{j}")
            left += w
        a4.set_yticks(range(len(names)), names, fontsize=SMALL)
        a4.set_xlim(0, 1)
        a4.set_xlabel("training-mix weight (fraction of tokens)", fontsize=FONT)
        a4.set_ylabel("rung", fontsize=FONT)
        a4.legend(fontsize=SMALL, ncol=min(3, len(domains)), loc="upper center", bbox_to_anchor=(0.5, -0.15),
                  frameon=False)
        a4.tick_params(labelsize=SMALL)
    else:
        a4.set_xticks([])
        a4.set_yticks([])
    a4.set_title(textwrap.fill("data mix" + (f": {mix_note}" if mix_note else ""), 48), fontsize=FONT + 1)
    fig.subplots_adjust(left=0.1, right=0.97, top=0.92, bottom=0.1, hspace=0.4, wspace=0.35)
    return fig
