"""Text pages of the report: the cover (verdict, reasons, plan, loss, ledger, target), the
review checks as a table, provenance and the trial table. Each function returns an A4
``Figure`` (``reports.figures.new_figure``); text is laid out in figure coordinates, at 8 pt
or more, wrapped to the page.

Numbers of the plan are printed with ``fmt`` (4 significant digits), the format a reader
compares with plan.json.
"""

from __future__ import annotations

import math
import textwrap
from typing import Any, Mapping, Sequence

from matplotlib.figure import Figure

from fits.axes import axes_label
from reports.figures import FONT, SMALL, new_figure

VERDICT_COLORS = {"GO": "#1a7f37", "NO-GO": "#cf222e", "INCONCLUSIVE": "#bf8700"}
STATUS_COLORS = {"PASS": "#1a7f37", "WARN": "#bf8700", "FAIL": "#cf222e", "INCONCLUSIVE": "#8250df"}
LINE = 0.0165        # one 9-pt line on an A4 page, in figure-height units
TRIAL_ROWS = 52      # trial-table rows per appendix page


def fmt(x: Any) -> str:
    """A plan number as printed in the report: 4 significant digits (ints and text as they are)."""
    if isinstance(x, bool) or x is None:
        return str(x)
    if isinstance(x, int):
        return str(x)
    if isinstance(x, float):
        return "n/a" if not math.isfinite(x) else format(x, ".4g")
    return str(x)


def fmt_count(x: float) -> str:
    """A parameter, token or FLOP count with an SI suffix: 8.67M, 2.1G."""
    for div, suffix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(x) >= div:
            return f"{x / div:.3g}{suffix}"
    return f"{x:.3g}"


def fmt_interval(ci: Any) -> str:
    return "n/a" if ci is None else f"[{fmt(ci.low)}, {fmt(ci.high)}]"


class _Writer:
    """Writes lines top-down on a page; ``y`` is the next baseline (figure coordinates)."""

    def __init__(self, fig: Figure, top: float = 0.95, left: float = 0.07) -> None:
        self.fig, self.y, self.left = fig, top, left

    def text(self, s: str, size: float = FONT, *, x: float | None = None, weight: str = "normal",
             color: str = "black", family: str = "sans-serif", width: int = 105, gap: float = 1.0) -> None:
        for line in (textwrap.wrap(s, width) or [""]):
            self.fig.text(self.left if x is None else x, self.y, line, fontsize=size, weight=weight, color=color,
                          family=family, va="top")
            self.y -= LINE * size / FONT * gap

    def row(self, cells: Sequence[str], xs: Sequence[float], size: float = FONT, weight: str = "normal",
            colors: Sequence[str] | None = None, family: str = "sans-serif") -> None:
        for i, (c, x) in enumerate(zip(cells, xs)):
            self.fig.text(x, self.y, c, fontsize=size, weight=weight, family=family, va="top",
                          color=colors[i] if colors else "black")
        self.y -= LINE * size / FONT * 1.15

    def wrapped_row(self, cells: Sequence[str], xs: Sequence[float], widths: Sequence[int], size: float = FONT,
                    colors: Sequence[str] | None = None) -> None:
        """A table row whose cells wrap within their columns (``widths`` in characters)."""
        lines = [textwrap.wrap(c, w) or [""] for c, w in zip(cells, widths)]
        for i, (cell, x) in enumerate(zip(lines, xs)):
            self.fig.text(x, self.y, "\n".join(cell), fontsize=size, va="top", linespacing=1.25,
                          color=colors[i] if colors else "black")
        self.y -= LINE * size / FONT * (1.3 * max(len(c) for c in lines) - 0.15)

    def space(self, lines: float = 0.6) -> None:
        self.y -= LINE * lines

    def rule(self) -> None:
        self.fig.add_artist(_hline(self.left, 0.95, self.y + LINE * 0.35))
        self.space(0.3)


def _hline(x0: float, x1: float, y: float) -> Any:
    from matplotlib.lines import Line2D

    return Line2D([x0, x1], [y, y], color="#888888", lw=0.6)


CONTENTS = {
    "sweeps": "each rung's trials, fitted surface, optimum with its interval, near-optimal band, boxes",
    "trends and loss law": "each planned knob against size with bands, the backtest, the target; the loss law",
    "compute-optimal size": "the rungs' isoFLOP curves and N_opt(C) with its bands, at the target's FLOPs",
    "checks": "every review check: status, measured figure, threshold, reason",
    "diagnostics": "expert load, divergences, how the ladder moved the human's box, data mix",
    "appendix": "provenance and every trial",
}


def cover_page(plan: Any, verdict: Any, contents: Sequence[tuple[str, int]] = ()) -> Figure:
    """The verdict in large type, its reasons, the plan table (each knob with its 80% and 95%
    intervals), the predicted loss, the budget ledger, the target config and, when given,
    ``contents``: (section, first page) pairs, each with a line on what it shows."""
    fig = new_figure()
    w = _Writer(fig)
    w.text(f"Plan review: experiment {plan.experiment!r}", FONT + 5, weight="bold")
    w.text(f"full-size run {plan.target.name}: {fmt_count(plan.target.params_active)} active / "
           f"{fmt_count(plan.target.params_total)} total parameters, {fmt_count(plan.target.tokens)} tokens, "
           f"{fmt_count(plan.target.flops)} FLOPs; {plan.extrapolation_factor:.3g}x the active parameters of "
           f"the largest rung ({plan.largest_rung})", FONT)
    w.space(0.8)
    w.text("Verdict", FONT + 1, weight="bold")
    w.space(0.4)
    w.text(verdict.verdict, 44, weight="bold", color=VERDICT_COLORS.get(verdict.verdict, "black"), gap=1.05)
    w.space(0.4)
    for r in verdict.reasons or ("no check decided the verdict",):
        w.text("- " + r, FONT, width=100)
    w.text("Rule: " + verdict.rule, SMALL, color="#555555", width=115)
    value = getattr(plan, "search_value", None)
    w.space(0.4)
    if value is not None:
        w.text("Did the search pay? " + value.statement, FONT, width=100)
        w.text(f"Against the hand-set config: {plan.baseline}", SMALL, color="#555555", width=115)
    else:
        why = next((n.split(": ", 1)[1] for n in plan.notes if n.startswith("search value not priced: ")),
                   "no baseline was priced")
        w.text(f"Did the search pay? Not priced: {why}", FONT, width=100)
    w.space(0.8)
    w.text("The plan", FONT + 3, weight="bold")
    xs = (0.07, 0.19, 0.31, 0.51, 0.71)
    w.row(("knob", "value", "80% interval", "95% interval", "how"), xs, weight="bold")
    w.rule()
    for k in plan.knobs:
        how = k.method if k.exponent is None else f"trend on {axes_label(k.axes)}, exponent {k.exponent:+.3f}"
        w.row((k.name, fmt(k.value), fmt_interval(k.ci80), fmt_interval(k.ci95), f"{how}, {k.kind95}"), xs)
    for c in plan.categorical:
        w.row((c.name, fmt(c.value), "categorical", f"agreement {100 * c.agreement:.0f}% of rungs", ""), xs)
    if not plan.knobs and not plan.categorical:
        w.text("the plan has no searched knob", FONT)
    w.space(0.6)
    w.text("Predicted loss of the full-size run", FONT + 1, weight="bold")
    if plan.loss is None:
        why = next((n.split(": ", 1)[1] for n in plan.notes if n.startswith("no loss prediction: ")),
                   "no loss law could be fitted")
        w.text(f"not predicted: {why} (see the loss-law page)", FONT)
    else:
        lp = plan.loss
        w.text(f"{fmt(lp.value)} nats/token; 80% {fmt_interval(lp.ci80)}, 95% {fmt_interval(lp.ci95)} "
               f"(law L({lp.form}) on {lp.n_rungs} rungs{'' if lp.converged else ', NOT converged'})", FONT)
    w.space(0.6)
    w.text("Budget ledger (training FLOPs)", FONT + 1, weight="bold")
    led = plan.ledger
    pct = "n/a" if led.fraction_of_target is None else f"{100 * led.fraction_of_target:.3g}%"
    line = f"sweep {fmt_count(led.total_flops)} FLOPs in {led.n_trials} trials = {pct} of the full run"
    if led.target_flops is not None:
        line += f" ({fmt_count(led.target_flops)} FLOPs)"
    if led.budget_flops is not None:
        line += f"; budget {fmt_count(led.budget_flops)} FLOPs ({100 * (led.fraction_of_budget or 0):.3g}% spent)"
    w.text(line, FONT)
    per = [f"{r}: {fmt_count(f)} ({led.trials_per_rung.get(r, 0)} trials)" for r, f in led.per_rung_flops.items()]
    if 0 < len(per) <= 8:
        w.text("per rung: " + ", ".join(per), SMALL, width=112)
    elif per:
        flops = sorted(led.per_rung_flops.values())
        w.text(f"{len(per)} rungs, {fmt_count(flops[0])} to {fmt_count(flops[-1])} FLOPs each (trial table in the "
               "appendix)", SMALL, width=112)
    w.space(0.6)
    w.text("Target config (what the training script reads)", FONT + 1, weight="bold")
    model = dict(plan.config.get("model") or {})
    keys = ("d_model", "n_layers", "n_heads", "head_dim", "n_experts", "top_k", "d_expert", "seq_len",
            "vocab_size", "parametrization")
    w.text("model: " + (", ".join(f"{k}={model[k]}" for k in keys if k in model) if model else
                        "none (the target is given by its sizes)"), FONT, family="monospace", width=88)
    hp = plan.config.get("hparams", {})
    w.text("hparams: " + ", ".join(f"{k}={fmt(v)}" for k, v in hp.items()), FONT, family="monospace", width=88)
    w.text(f"tokens: {plan.config.get('tokens', fmt(plan.target.tokens))}", FONT, family="monospace")
    if plan.notes:
        w.space(0.6)
        w.text("Notes", FONT + 1, weight="bold")
        for n in plan.notes:
            w.text("- " + n, SMALL, width=112)
    if contents:
        w.space(0.6)
        w.text("In this report", FONT + 1, weight="bold")
        for section, page in contents:
            w.row((f"p. {page}", section, CONTENTS.get(section, "")), (0.07, 0.13, 0.34), size=SMALL)
    return fig


def checks_page(verdict: Any) -> Figure:
    """The review checks as a table: status, check, measured figure, threshold, reason."""
    fig = new_figure()
    w = _Writer(fig)
    w.text(f"Review checks: verdict {verdict.verdict}", FONT + 4, weight="bold",
           color=VERDICT_COLORS.get(verdict.verdict, "black"))
    w.text("A FAIL of a hard check makes the verdict NO-GO; an INCONCLUSIVE check makes it INCONCLUSIVE; "
           "WARNs are listed but do not block.", SMALL, width=112)
    w.space(0.5)
    xs = (0.07, 0.2, 0.5, 0.67)
    w.row(("status", "check", "figure", "threshold"), xs, weight="bold")
    w.rule()
    for c in verdict.checks:
        fig_txt = "n/a" if c.figure is None else f"{fmt(float(c.figure))} {c.unit}"
        w.wrapped_row((c.status, c.title + ("" if c.hard else " (soft)"), fig_txt, c.threshold), xs, (12, 33, 21, 36),
                      colors=(STATUS_COLORS.get(c.status, "black"), "black", "black", "black"))
        w.text(c.reason, SMALL, x=0.2, width=112, color="#333333")
        w.space(0.5)
    policy = ", ".join(f"{k}={v}" for k, v in verdict.policy.items())
    if policy:
        w.space(0.5)
        w.text("Review policy: " + policy, SMALL, width=112, color="#555555")
    return fig


def appendix_pages(provenance: Mapping[str, Any], trial_rows: Sequence[Sequence[str]],
                   header: Sequence[str], machine: Mapping[str, str]) -> list[Figure]:
    """Provenance (toolkit version, commit, experiment file, backend, seeds, machine) and the
    trial table, ``TRIAL_ROWS`` rows per page."""
    pages = []
    fig = new_figure()
    w = _Writer(fig)
    w.text("Appendix: provenance", FONT + 4, weight="bold")
    w.space(0.5)
    for k, v in provenance.items():
        w.text(f"{k:<20} {v}", FONT, family="monospace", width=95)
    w.space(0.5)
    for k, v in machine.items():
        w.text(f"{k:<20} {v}", FONT, family="monospace", width=95)
    first_rows = max(0, int((w.y - 0.05) / (LINE * SMALL / FONT * 1.15)) - 4)
    rows = list(trial_rows)
    chunks = [rows[:first_rows]] + [rows[i:i + TRIAL_ROWS] for i in range(first_rows, len(rows), TRIAL_ROWS)]
    n = len(chunks)
    for i, chunk in enumerate(chunks):
        if i > 0:
            fig = new_figure()
            w = _Writer(fig)
        w.space(0.5)
        w.text(f"Trials ({len(rows)} in all; table {i + 1} of {n})", FONT + 2, weight="bold")
        width = 0.88 / max(1, len(header))
        xs = [0.07 + j * width for j in range(len(header))]
        w.row(header, xs, size=SMALL, weight="bold")
        w.rule()
        for r in chunk:
            w.row(r, xs, size=SMALL, family="monospace")
        pages.append(fig)
    return pages
