"""The compute-optimal figure: isoFLOP curves (loss against size per budget, with the fitted
parabolas and their vertices) beside the N_opt(C) law with its bands and the target; drawn by
``ladder isoflop`` and by the report when the plan carries a compute-optimal analysis."""

from __future__ import annotations

import math
from typing import Any, Sequence


def isoflop_figure(fit: Any, flops: Sequence[float], params: Sequence[float], loss: Sequence[float], *,
                   at: float | None = None, at_interval: Any = None) -> Any:
    """Two panels on one Agg figure: loss against N per budget with the fitted parabolas and
    vertices; N_opt against C with the law, its 95% bands, and the target (``at``)."""
    import numpy as np
    from matplotlib import colormaps
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import LogNorm

    from reports.figures import COLORS, FONT, LOSS_LABEL, SMALL, new_figure

    fig = new_figure((12.0, 5.0))
    ax_l, ax_r = fig.subplots(1, 2)
    labels = np.asarray([("" if g is None else g) for g in fit.run_labels], dtype=object)
    n_all = np.asarray(params, dtype=float)
    l_all = np.asarray(loss, dtype=float)
    curves = [b for b in fit.budgets if len(b.coef) == 3]
    in_curves = np.isin(labels, [b.label for b in curves])
    # Colour by budget on a log scale, with a colour bar: a legend entry per budget would not fit
    # a file with dozens of (mostly left-out) budgets.
    used_c = [b.flops for b in curves if b.usable] or [b.flops for b in curves] or [1.0]
    norm = LogNorm(vmin=min(used_c), vmax=max(used_c) * (1.0 + 1e-9))
    cmap = colormaps["viridis"]
    # Zoom on the basins: a few runs far up a curve's side (a huge model on a small budget) would
    # flatten every curve; runs above the top are drawn there as triangles.
    shown = l_all[in_curves] if in_curves.any() else l_all
    low = float(shown.min())
    top = float(np.quantile(shown, 0.97))
    pad = 0.05 * max(top - low, 1e-3)
    if (~in_curves).any():
        ax_l.scatter(n_all[~in_curves], np.minimum(l_all[~in_curves], top + 2 * pad), s=8, color=COLORS["other"],
                     zorder=1, label="run in no fitted budget")
    for b in curves:
        color = cmap(norm(b.flops)) if b.usable else COLORS["other"]
        m = labels == b.label
        above = l_all[m] > top + 2 * pad
        ax_l.scatter(n_all[m][~above], l_all[m][~above], s=14, zorder=3, edgecolors=color,
                     facecolors=color if b.usable else "none")
        if above.any():
            ax_l.scatter(n_all[m][above], np.full(int(above.sum()), top + 2 * pad), marker="^", s=18,
                         color=color, zorder=3)
        grid = np.geomspace(math.exp(b.log_n_range[0]), math.exp(b.log_n_range[1]), 100)
        ax_l.plot(grid, b.fitted_loss(grid), color=color, lw=1.2, ls="-" if b.usable else "--")
        if b.n_opt is not None and b.fitted_min_loss is not None:
            ax_l.plot([b.n_opt], [b.fitted_min_loss], marker="*", ms=9, color=color, mec="black", mew=0.5,
                      zorder=4)
    ax_l.plot([], [], "o-", color=cmap(0.5), ms=4, label="run and parabola of a budget used")
    if any(not b.usable for b in curves):
        ax_l.plot([], [], "o--", mfc="none", color=COLORS["other"], ms=4, label="budget left out (flagged)")
    ax_l.plot([], [], "*", color=cmap(0.5), mec="black", mew=0.5, ms=9, label="vertex N_opt")
    ax_l.plot([], [], "^", color=cmap(0.5), ms=5, label="run above the axis (drawn at the top)")
    ax_l.set_xscale("log")
    ax_l.set_ylim(low - 2 * pad, top + 3 * pad)
    ax_l.set_xlabel("parameters N (count)", fontsize=FONT)
    ax_l.set_ylabel(LOSS_LABEL, fontsize=FONT)
    ax_l.set_title("isoFLOP curves: loss against size per budget", fontsize=FONT + 1)
    bar = fig.colorbar(ScalarMappable(norm=norm, cmap=cmap), ax=ax_l, pad=0.02)
    bar.set_label("budget C (FLOPs)", fontsize=FONT)
    bar.ax.tick_params(labelsize=SMALL)
    ax_l.legend(fontsize=SMALL, frameon=False, loc="lower left")   # the corner the curves leave empty

    tr = fit.n_trend
    sizes = np.asarray(tr.sizes)
    hi = max(sizes.max(), at or 0.0) * 1.5
    grid = np.geomspace(sizes.min() / 1.5, hi, 120)
    bands = [tr.log_intervals(float(c), 0.05) for c in grid]
    ax_r.fill_between(grid, [math.exp(b["prediction"].low) for b in bands],
                      [math.exp(b["prediction"].high) for b in bands], color=COLORS["pred"], alpha=0.5, lw=0,
                      label="95% prediction band")
    ax_r.fill_between(grid, [math.exp(b["mean"].low) for b in bands], [math.exp(b["mean"].high) for b in bands],
                      color=COLORS["mean"], alpha=0.35, lw=0, label="95% band of the mean")
    ci = fit.conf_int(0.05)["a"]
    ax_r.plot(grid, [tr.predict(float(c)) for c in grid], color=COLORS["fit"], lw=1.5,
              label=f"N_opt = {fit.k_n:.3g} C^{fit.a:.3f} (a 95% [{ci.low:.3f}, {ci.high:.3f}])")
    vals = np.asarray(tr.values)
    se = np.asarray(tr.value_se)
    ax_r.errorbar(sizes, vals, yerr=[vals - vals * np.exp(-1.96 * se), vals * np.exp(1.96 * se) - vals], fmt="o",
                  color=COLORS["trial"], capsize=3, ms=5, label="budget vertex, 95% interval")
    for b in fit.excluded:
        if b.n_opt is not None:
            ax_r.plot([b.flops], [b.n_opt], "o", mfc="none", color=COLORS["other"], ms=6)
    if any(b.n_opt is not None for b in fit.excluded):
        ax_r.plot([], [], "o", mfc="none", color=COLORS["other"], label="budget left out (flagged)")
    if at is not None and at_interval is not None:
        est = at_interval.estimate
        ax_r.errorbar([at], [est], yerr=[[est - at_interval.interval.low], [at_interval.interval.high - est]],
                      fmt="D", color=COLORS["target"], capsize=4, ms=6,
                      label=f"C = {at:.3g}: {est:.3g} ({at_interval.kind} 95%)")
    ax_r.set_xscale("log")
    ax_r.set_yscale("log")
    ax_r.set_xlabel("training compute C (FLOPs)", fontsize=FONT)
    ax_r.set_ylabel("compute-optimal parameters N_opt (count)", fontsize=FONT)
    ax_r.set_title("compute-optimal size against compute", fontsize=FONT + 1)
    ax_r.legend(fontsize=SMALL, frameon=False, loc="upper left")
    for ax in (ax_l, ax_r):
        ax.tick_params(labelsize=SMALL)
        ax.grid(alpha=0.3, lw=0.5)
    return fig
