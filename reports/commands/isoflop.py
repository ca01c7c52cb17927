"""``ladder isoflop FILE.csv``: compute-optimal model size and tokens from isoFLOP curves.

Reads runs (compute, parameters, loss; optionally tokens, a budget label and per-run loss
standard errors) from a CSV, fits a parabola of loss in log N per compute budget and the laws
N_opt(C) = k_N C^a and D_opt(C) = k_D C^b across budgets (``fits.compute_optimal``: Approach 2
of Hoffmann et al. 2022), prints the per-budget table, the laws and, with ``--at``, the
prediction at a budget; writes ``compute_optimal.json`` and ``compute_optimal.png`` into
``--out``. Trains nothing; needs no store.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import math
from pathlib import Path
from typing import Any, Sequence

FIELDS: dict[str, tuple[str, ...]] = {   # field -> the column names read without a --map
    "flops": ("flops", "C"),
    "params": ("params", "N"),
    "loss": ("loss",),
    "tokens": ("tokens", "D"),
    "budget": ("budget",),
    "loss_se": ("loss_se",),
}
REQUIRED = ("params", "loss")
LEVELS = (0.80, 0.95)


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "isoflop", help="compute-optimal N and D from isoFLOP curves (CSV); writes compute_optimal.json",
        description=("Fit a parabola of loss in log N at each compute budget and the power laws N_opt(C) "
                     "and D_opt(C) across budgets (Hoffmann et al. 2022, Approach 2), with intervals; "
                     "print them and write compute_optimal.json and compute_optimal.png."))
    p.add_argument("csv", help="CSV file with a header row: columns flops (or C), params (or N), loss; "
                               "optionally tokens (or D; default C / 6N), budget (a label per run), loss_se")
    p.add_argument("--map", action="append", default=[], metavar="COLUMN=FIELD",
                   help="read CSV column COLUMN as FIELD (flops, params, loss, tokens, budget, loss_se); "
                        "repeatable, e.g. --map 'Training FLOP=flops'")
    p.add_argument("--at", default=None, metavar="FLOPS",
                   help="also predict N_opt and D_opt, with 80%% and 95%% intervals, at this budget (FLOPs)")
    p.add_argument("--budgets", default=None, metavar="C1,C2,...",
                   help="nominal budgets (FLOPs, comma-separated): each takes the largest group of runs "
                        "within --nominal-rtol of it; the other runs are left out")
    p.add_argument("--budget-rtol", default="0.05", metavar="R",
                   help="runs whose sorted compute differs by at most a factor 1 + R share a budget "
                        "(default 0.05; 0: exact)")
    p.add_argument("--nominal-rtol", default="0.15", metavar="R",
                   help="how far (a factor 1 + R) a group may lie from its nominal budget (default 0.15)")
    p.add_argument("--bootstrap", default="1000", metavar="B",
                   help="two-level bootstrap draws of the laws (default 1000; 0 for none)")
    p.add_argument("--seed", default="0", help="bootstrap seed (default 0)")
    p.add_argument("--out", default=".", help="folder for compute_optimal.json and .png (default: here)")
    p.set_defaults(func=run)


def _number(text: str, what: str, *, positive: bool = False, minimum: float | None = None) -> float:
    try:
        value = float(text)
    except (TypeError, ValueError):
        raise ValueError(f"{what}: {text!r} is not a number") from None
    if not math.isfinite(value) or (positive and value <= 0) or (minimum is not None and value < minimum):
        need = "a finite positive number" if positive else f"a finite number >= {minimum}"
        raise ValueError(f"{what} must be {need}, got {text!r}")
    return value


def _count(text: str, what: str) -> int:
    value = _number(text, what, minimum=0)
    if value != int(value):
        raise ValueError(f"{what} must be a whole number, got {text!r}")
    return int(value)


def parse_mapping(pairs: Sequence[str]) -> dict[str, str]:
    """``["Training FLOP=flops", ...]`` -> {field: column}; one-line errors for a bad pair."""
    out: dict[str, str] = {}
    for pair in pairs:
        if "=" not in pair:
            raise ValueError(f"--map {pair!r}: expected COLUMN=FIELD")
        column, field = (s.strip() for s in pair.rsplit("=", 1))
        if field not in FIELDS:
            raise ValueError(f"--map {pair!r}: unknown field {field!r}; fields: {', '.join(FIELDS)}")
        if field in out:
            raise ValueError(f"--map {pair!r}: field {field!r} is mapped twice")
        out[field] = column
    return out


def read_runs(path: Path, mapping: dict[str, str]) -> tuple[dict[str, list[Any]], dict[str, str]]:
    """The CSV's columns per field (numbers; budget labels as text, '' read as None) and the
    column each field was read from."""
    if not path.is_file():
        raise ValueError(f"{path}: file not found" if not path.exists() else f"{path}: not a file")
    try:
        with path.open(newline="", encoding="utf-8-sig") as fh:
            rows = list(csv.reader(fh, strict=True))
    except UnicodeDecodeError:
        raise ValueError(f"{path}: not UTF-8 text") from None
    except csv.Error as exc:
        raise ValueError(f"{path}: {exc}") from None
    if not rows:
        raise ValueError(f"{path}: empty file (no header row)")
    header = [h.strip() for h in rows[0]]
    columns: dict[str, str] = {}
    for field, names in FIELDS.items():
        if field in mapping:
            if mapping[field] not in header:
                raise ValueError(f"{path}: mapped column {mapping[field]!r} (for {field}) is not in the header "
                                 f"({', '.join(header)})")
            columns[field] = mapping[field]
        else:
            found = [n for n in names if n in header]
            if found:
                columns[field] = found[0]
    for field in REQUIRED:
        if field not in columns:
            raise ValueError(f"{path}: no column for {field} (looked for {', '.join(FIELDS[field])}); "
                             f"map one with --map COLUMN={field}")
    if "flops" not in columns and "tokens" not in columns:
        raise ValueError(f"{path}: no column for flops (looked for {', '.join(FIELDS['flops'])}) and none for "
                         f"tokens to count it from (C = 6 N D); map one with --map COLUMN=flops")
    data: dict[str, list[Any]] = {f: [] for f in columns}
    index = {f: header.index(c) for f, c in columns.items()}
    for row_no, row in enumerate(rows[1:], start=2):
        if not any(cell.strip() for cell in row):
            continue   # a blank line
        for field, col in index.items():
            cell = row[col].strip() if col < len(row) else ""
            if field == "budget":
                data[field].append(cell or None)
            elif not cell:
                raise ValueError(f"{path}: row {row_no}, column {columns[field]!r}: empty ({field})")
            else:
                data[field].append(_number(cell, f"{path}: row {row_no}, column {columns[field]!r}"))
    if not data["loss"]:
        raise ValueError(f"{path}: no data rows under the header")
    if "flops" not in data:
        data["flops"] = [6.0 * n * d for n, d in zip(data["params"], data["tokens"])]
        columns["flops"] = f"6 * {columns['params']} * {columns['tokens']}"
    return data, columns


def run(args: argparse.Namespace) -> int:
    from fits.compute_optimal import fit_compute_optimal

    path = Path(args.csv)
    at = None if args.at is None else _number(args.at, "--at", positive=True)
    nominal = None
    if args.budgets is not None:
        nominal = [_number(s.strip(), "--budgets", positive=True) for s in args.budgets.split(",") if s.strip()]
        if not nominal:
            raise ValueError("--budgets: give at least one budget, e.g. --budgets 6e18,1e19,3e19")
    data, columns = read_runs(path, parse_mapping(args.map))
    fit = fit_compute_optimal(
        data["flops"], data["params"], data["loss"], tokens=data.get("tokens"), loss_se=data.get("loss_se"),
        groups=data.get("budget"), budget_rtol=_number(args.budget_rtol, "--budget-rtol", minimum=0),
        budgets=nominal, nominal_rtol=_number(args.nominal_rtol, "--nominal-rtol", minimum=0),
        n_bootstrap=_count(args.bootstrap, "--bootstrap"), seed=_count(args.seed, "--seed"))
    print(f"{path}: {fit.n_runs} runs; columns: " + ", ".join(f"{f}={c!r}" for f, c in columns.items()))
    print(fit.summary())
    predictions = {}
    if at is not None:
        predictions = {level: fit.predict(at, 1.0 - level) for level in LEVELS}
        print(f"\nAt C = {at:.4g} FLOPs:")
        for name, key in (("N_opt", "n_opt"), ("D_opt", "d_opt")):
            first = getattr(predictions[LEVELS[0]], key)
            parts = [f"{name} = {first.estimate:.4g}"]
            for level in LEVELS:
                iv = getattr(predictions[level], key)
                parts.append(f"{level:.0%} [{iv.interval.low:.4g}, {iv.interval.high:.4g}] ({iv.kind})")
            print("  " + "   ".join(parts))
        print(f"  tokens per parameter D/N = {predictions[LEVELS[0]].tokens_per_param:.3g}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    doc = {"schema_version": 1, "command": "ladder isoflop", "input": str(path), "columns": columns,
           "fit": fit.to_dict(),
           "prediction": None if at is None else
           {"flops": at, **{f"ci{round(level * 100)}": p.to_dict() for level, p in predictions.items()}}}
    json_path = out / "compute_optimal.json"
    tmp = json_path.with_name(f"{json_path.name}.{os.getpid()}.tmp")   # written whole, then renamed: no reader sees half a file
    tmp.write_text(json.dumps(doc, indent=2, allow_nan=False) + "\n")
    tmp.replace(json_path)
    png = out / "compute_optimal.png"
    from reports.compute_figure import isoflop_figure

    fig = isoflop_figure(fit, data["flops"], data["params"], data["loss"], at=at,
                         at_interval=None if at is None else predictions[0.95].n_opt)
    fig.tight_layout()
    fig.savefig(png, dpi=120)
    fig.clear()
    print(f"\nwrote {json_path}\nwrote {png}")
    return 0
