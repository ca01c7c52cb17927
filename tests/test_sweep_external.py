"""CSV import/export: a published sweep goes in and comes out unchanged; a bad CSV names its row
and column and leaves the store untouched."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import optuna
import pytest

from proxy.sweep.external import import_csv, parse_mapping, read_runs
from proxy.sweep.runner import observations
from reports.cli import main

STEPLAW = "steplaw_dense_lr_bs_loss.csv"
MAP = ["--map", "bs=batch_size", "--map", "N=params_total", "--map", "D=tokens"]


def _rows(path: Path) -> tuple[list[str], list[list[str]]]:
    with path.open(newline="") as fh:
        rows = list(csv.reader(fh))
    return rows[0], rows[1:]


def _as_floats(row: list[str]) -> list[object]:
    out: list[object] = []
    for cell in row:
        try:
            out.append(float(cell))
        except ValueError:
            out.append(cell)
    return out


@pytest.mark.slow
def test_steplaw_round_trip(tmp_path, published_data, monkeypatch):
    monkeypatch.chdir(tmp_path)
    src = published_data / STEPLAW
    assert main(["import", str(src), "--experiment", "steplaw", *MAP]) == 0
    out = tmp_path / "out.csv"
    assert main(["export", "--experiment", "steplaw", "--out", str(out)]) == 0
    head_in, rows_in = _rows(src)
    head_out, rows_out = _rows(out)
    assert head_out == head_in
    assert len(rows_out) == len(rows_in)
    assert [_as_floats(r) for r in rows_out] == [_as_floats(r) for r in rows_in]
    # The store holds them as trials the fits can read, one rung per (N, D) cell.
    url = f"sqlite:///{tmp_path / 'runs' / 'steplaw' / 'trials.db'}"
    obs = observations(url, "steplaw")
    assert len(obs) == len(rows_in)
    cells = {(float(r[head_in.index("N")]), float(r[head_in.index("D")])) for r in rows_in}
    assert len({o.rung for o in obs}) == len(cells)
    first = rows_in[0]
    match = [o for o in obs if o.loss == float(first[head_in.index("loss")])
             and o.knobs["lr"] == float(first[head_in.index("lr")])]
    assert match and match[0].params_total == float(first[head_in.index("N")])
    assert match[0].knobs["batch_size"] == int(first[head_in.index("bs")])
    study = optuna.load_study(study_name=f"steplaw/{match[0].rung}", storage=url)
    assert study.best_value == min(o.loss for o in obs if o.rung == match[0].rung)
    # Importing the same file twice is refused.
    assert main(["import", str(src), "--experiment", "steplaw", *MAP]) == 2


GOOD = "lr,bs,loss,N,D\n0.001,64,2.5,1000000,20000000\n0.002,64,2.4,1000000,20000000\n"


@pytest.mark.parametrize("text,mapping,needle", [
    (GOOD, ["bs=batch_size", "N=params_total", "D=tokens", "steps=seed"], "mapped column 'steps'"),
    (GOOD.replace("0.002,64,2.4", "0.002,sixty,2.4"), ["bs=batch_size", "N=params_total", "D=tokens"],
     "row 2, column 'bs': 'sixty' is not a number"),
    (GOOD.replace("2.4,", "nan,"), ["bs=batch_size", "N=params_total", "D=tokens"],
     "row 2, column 'loss': loss is 'nan'"),
    (GOOD, ["bs=batch_size", "N=params_total"], "required field 'tokens'"),
    (GOOD.replace("0.002,64", "0.002,64.5"), ["bs=batch_size", "N=params_total", "D=tokens"],
     "row 2, column 'bs': batch_size must be an integer"),
])
def test_malformed_csv_names_row_and_column_and_touches_nothing(tmp_path, capsys, monkeypatch,
                                                                 text, mapping, needle):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "runs.csv"
    path.write_text(text)
    with pytest.raises(ValueError) as info:
        read_runs(path, parse_mapping(mapping))
    assert needle in str(info.value)
    argv = ["import", str(path), "--experiment", "bad"]
    for m in mapping:
        argv += ["--map", m]
    assert main(argv) == 2
    assert needle in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()


def test_mapping_errors():
    with pytest.raises(ValueError, match="unknown field 'size'"):
        parse_mapping(["N=size"])
    with pytest.raises(ValueError, match="column=field"):
        parse_mapping(["N"])


def test_rung_column_and_diverged_rows(tmp_path):
    path = tmp_path / "runs.csv"
    path.write_text("lr,loss,N,D,cell,div\n0.001,2.5,1e6,2e7,small,0\n0.1,nan,1e6,2e7,small,1\n"
                    "0.3,,1e6,2e7,small,true\n0.001,2.2,4e6,8e7,big,false\n")
    url = f"sqlite:///{tmp_path / 'db' / 't.db'}"
    plan = import_csv(path, "ext", url, parse_mapping(["N=params_total", "D=tokens", "cell=rung",
                                                       "div=diverged"]))
    assert plan.rungs == ("small", "big")
    obs = {(o.rung, o.diverged): o for o in observations(url, "ext")}
    assert math.isnan(obs[("small", True)].loss) and obs[("small", False)].loss == 2.5
    assert sum(o.diverged for o in observations(url, "ext")) == 2  # an empty loss is fine when diverged
    study = optuna.load_study(study_name="ext/small", storage=url)
    assert study.best_value == 2.5 and max(t.value for t in study.trials) > 2.5
