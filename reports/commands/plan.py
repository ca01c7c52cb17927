"""``ladder plan EXPERIMENT.toml``: the config for the full-size run, with intervals; writes plan.json."""

from __future__ import annotations

import argparse
from typing import Any

from reports.commands.fit import add_common, fit_and_write, load, open_store, run_dir, write_json


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("plan", help="extrapolate the target config; write plan.json (and fits.json)",
                              description="Fit the store's trials and extrapolate every searched knob to the "
                                          "target, with 80% and 95% intervals, the predicted loss and the sweep's "
                                          "cost; write fits.json and plan.json.")
    add_common(p)
    p.add_argument("--budget-split", nargs="?", const="default", default=None, metavar="N,N,...",
                   help="also tabulate what the search would be worth with N trials per rung (default "
                        "3,4,6,8,12,16,24,32,48), from the fitted surfaces, the trends and the hand-set baseline; "
                        "writes it into plan.json as budget_split (fits.budget_split states its assumptions)")
    p.set_defaults(func=run)


def parse_grid(text: str) -> tuple[int, ...] | None:
    """``--budget-split``'s value: None for the default grid, else positive integers."""
    if text == "default":
        return None
    try:
        grid = tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise ValueError(f"--budget-split takes trial counts separated by commas, got {text!r}") from None
    if not grid or min(grid) < 1 or max(grid) > 100_000:
        raise ValueError(f"--budget-split takes trial counts from 1 to 100000, got {text!r}")
    return grid


def plan_summary(plan: Any) -> str:
    from fits.axes import axes_label

    lines = [f"Plan for {plan.target.name} ({plan.target.params_active:.4g} active parameters, "
             f"{plan.extrapolation_factor:.3g}x the largest rung {plan.largest_rung})"]
    for k in plan.knobs:
        pen = "" if k.penalty95 is None else f"  penalty at 95% ends <= {k.max_penalty95:.3g} nats"
        lines.append(f"  {k.name:<14} {k.value:.4g}  80% [{k.ci80.low:.4g}, {k.ci80.high:.4g}]  95% "
                     f"[{k.ci95.low:.4g}, {k.ci95.high:.4g}] ({k.kind95}, {k.method} on {axes_label(k.axes)}){pen}")
        if k.flatness is not None:
            lines.append(f"  {'':<14} muP: {k.flatness.statement}")
    for c in plan.categorical:
        lines.append(f"  {c.name:<14} {c.value!r}: {c.statement}")
    if plan.loss is not None:
        ci = "" if plan.loss.ci95 is None else f"  95% [{plan.loss.ci95.low:.4g}, {plan.loss.ci95.high:.4g}]"
        lines.append(f"  predicted loss {plan.loss.value:.4g} nats (L({plan.loss.form})){ci}")
    if plan.compute_optimal is not None:
        lines.append(f"  compute-optimal: {plan.compute_optimal.statement}")
    frac = plan.ledger.fraction_of_target
    lines.append(f"  sweep cost {plan.ledger.total_flops:.3g} FLOPs"
                 + ("" if frac is None else f" = {frac:.2%} of the target run"))
    lines += [f"  note: {n}" for n in plan.notes]
    return "\n".join(lines)


def plan_and_write(experiment: Any, storage: Any, out: str | None, command: str) -> tuple[Any, Any]:
    from transfer.extrapolate import ledger_summary, make_plan

    fits = fit_and_write(experiment, storage, out, command, reuse=True)
    plan = make_plan(experiment, fits, ledger_summary(experiment, storage), command)
    write_json(run_dir(experiment, out) / "plan.json", plan.to_dict())
    return fits, plan


def run(args: argparse.Namespace) -> int:
    from transfer.extrapolate import plan_budget_split

    grid = parse_grid(args.budget_split) if args.budget_split is not None else None
    exp = load(args)
    fits, plan = plan_and_write(exp, open_store(exp), args.out, "ladder plan")
    print(plan_summary(plan))
    path = run_dir(exp, args.out) / "plan.json"
    if args.budget_split is not None:
        split = plan_budget_split(exp, fits, plan, grid)
        print("\nBudget split: the search's expected worth with n trials per rung (point estimates)")
        print(split.table())
        print("assumes: " + "; ".join(split.assumptions))
        write_json(path, plan.to_dict() | {"budget_split": split.to_dict()})
    print(f"wrote {path}")
    return 0
