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


BAD_MAP = ["bs=batch_size", "N=params_total", "D=tokens"]


@pytest.mark.parametrize("text,needle", [
    (GOOD.replace("0.002,64,2.4", "0,64,2.4"), "row 2, column 'lr': lr must be positive, got '0'"),
    (GOOD.replace("0.002,64,2.4", "-0.002,64,2.4"), "row 2, column 'lr': lr must be positive"),
    (GOOD.replace("0.002,64,2.4", "0.002,0,2.4"), "row 2, column 'bs': batch_size must be positive"),
    (GOOD.replace("0.002,64,2.4", "0.002,64,-2.4"), "row 2, column 'loss': loss must be positive"),
    (GOOD.replace("0.002,64,2.4", "0.002,64,0"), "row 2, column 'loss': loss must be positive"),
    (GOOD.replace("2.5,1000000", "2.5,-1000000"), "row 1, column 'N': params_total must be positive"),
    (GOOD.replace("2.4,1000000,20000000", "2.4,1000000,0"), "row 2, column 'D': tokens must be positive"),
    ("lr,bs,loss,N,D,flops\n0.001,64,2.5,1e6,2e7,-5\n", "row 1, column 'flops': flops must be positive"),
    ("lr,bs,loss,N,D,lr\n0.001,64,2.5,1e6,2e7,0.1\n", "names column 'lr' twice (columns 1 and 6)"),
    (GOOD + "0.002,64,2.4,1000000,20000000\n", "row 3 repeats row 2"),
    (GOOD.replace("0.002,", '"0.002,'), "row 2"),                       # unterminated quote
    ("lr,bs,loss,N,D\n" + "x" * 131_073 + ",64,2.5,1e6,2e7\n", "field larger than field limit"),
])
def test_bad_values_and_layouts_are_one_line_and_touch_nothing(tmp_path, capsys, monkeypatch, text, needle):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "runs.csv"
    path.write_text(text)
    argv = ["import", str(path), "--experiment", "bad"] + [a for m in BAD_MAP for a in ("--map", m)]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert needle in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "runs").exists()


def test_cells_with_newlines_form_feeds_and_line_separators_round_trip(tmp_path, monkeypatch):
    # A quoted cell may hold a newline (RFC 4180); \x0c and U+2028 are ordinary characters to
    # the csv module, and line breaks to str.splitlines.
    monkeypatch.chdir(tmp_path)
    rows = [["lr", "loss", "N", "D", "note"],
            ["0.001", "2.5", "1e6", "2e7", "line1\nline2"],
            ["0.002", "2.4", "1e6", "2e7", "page\x0cbreak"],
            ["0.004", "2.6", "1e6", "2e7", "para\u2028graph"]]
    src = tmp_path / "runs.csv"
    with src.open("w", newline="") as fh:
        csv.writer(fh).writerows(rows)
    assert main(["import", str(src), "--experiment", "notes", "--map", "N=params_total", "--map", "D=tokens"]) == 0
    out = tmp_path / "out.csv"
    assert main(["export", "--experiment", "notes", "--out", str(out)]) == 0
    with out.open(newline="") as fh:
        assert list(csv.reader(fh)) == rows


def test_the_same_rows_import_once_whatever_their_bytes(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    argv = ["--experiment", "once"] + [a for m in BAD_MAP for a in ("--map", m)]
    first = tmp_path / "a.csv"
    first.write_text(GOOD)
    assert main(["import", str(first), *argv]) == 0
    header, *data = GOOD.splitlines()
    variants = {"blank.csv": GOOD + "\n\n",                                   # extra blank lines
                "crlf.csv": GOOD.replace("\n", "\r\n"),                        # other line endings
                "quoted.csv": GOOD.replace("0.001,", '"0.001",'),              # other quoting
                "reordered.csv": "\n".join([header, *reversed(data)]) + "\n"}  # other row order
    for name, text in variants.items():
        (tmp_path / name).write_text(text, newline="")
        assert main(["import", str(tmp_path / name), *argv]) == 2, name
        assert "already imported" in capsys.readouterr().err
    # New rows are new data.
    (tmp_path / "more.csv").write_text(GOOD.replace("2.4,", "2.3,"))
    assert main(["import", str(tmp_path / "more.csv"), *argv]) == 0
    assert len(observations(f"sqlite:///{tmp_path / 'runs' / 'once' / 'trials.db'}", "once")) == 4


@pytest.mark.parametrize("storage,needle", [
    ("mysql://x", "not supported"),
    ("postgresql://nobody@127.0.0.1:1/none", "unreachable"),
    ("sqlite:///:memory:", "in memory"),
])
def test_an_unusable_store_is_one_line_before_the_file_is_read(tmp_path, capsys, storage, needle):
    path = tmp_path / "runs.csv"
    path.write_text(GOOD)
    argv = ["import", str(path), "--experiment", "x", "--storage", storage]
    assert main(argv + [a for m in BAD_MAP for a in ("--map", m)]) == 2
    err = capsys.readouterr().err
    assert needle in err and len(err.strip().splitlines()) == 1, err


def test_names_that_would_leave_runs_are_refused(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "runs.csv"
    path.write_text(GOOD)
    for name in ("..", ".", "a/b"):
        assert main(["import", str(path), "--experiment", name] + [a for m in BAD_MAP for a in ("--map", m)]) == 2
        assert "cannot leave runs/" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["runs.csv"]


def test_export_to_a_folder_or_a_missing_folder_is_one_line(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "runs.csv"
    path.write_text(GOOD)
    assert main(["import", str(path), "--experiment", "x"] + [a for m in BAD_MAP for a in ("--map", m)]) == 0
    capsys.readouterr()
    for out, needle in ((tmp_path, "is a folder"), (tmp_path / "no" / "x.csv", "does not exist")):
        assert main(["export", "--experiment", "x", "--out", str(out)]) == 2
        err = capsys.readouterr().err
        assert needle in err and len(err.strip().splitlines()) == 1, err


ROWS_100K = """
import csv, random, sys
r = random.Random(0)
with open(sys.argv[1], "w", newline="") as fh:
    w = csv.writer(fh)
    w.writerow(["lr", "bs", "loss", "N", "D", "seed"])
    for i in range(100_000):
        w.writerow([f"{10 ** r.uniform(-4, -2):.6g}", r.choice([32, 64, 128]), f"{2 + r.random():.6f}",
                    [1e6, 4e6, 1.6e7, 6.4e7][i % 4], [2e7, 8e7, 3.2e8][i % 3], i])
"""

# The peak resident memory of this process alone (VmHWM: ru_maxrss would carry over the
# forking test process's own peak across exec).
PEAK = """
import sys
from reports.cli import main
code = main(sys.argv[1:])
print([line.split()[1] for line in open("/proc/self/status") if line.startswith("VmHWM")][0])  # KiB
sys.exit(code)
"""


@pytest.mark.slow
def test_100k_rows_import_and_export_in_bounded_memory(tmp_path):
    import subprocess
    import sys

    src, out = tmp_path / "big.csv", tmp_path / "out.csv"
    subprocess.run([sys.executable, "-c", ROWS_100K, str(src)], check=True)
    peaks = {}
    for command in (["import", str(src), "--experiment", "big", "--map", "bs=batch_size",
                     "--map", "N=params_total", "--map", "D=tokens"],
                    ["export", "--experiment", "big", "--out", str(out)]):
        done = subprocess.run([sys.executable, "-c", PEAK, *command], cwd=tmp_path, capture_output=True,
                              text=True, check=True)
        peaks[command[0]] = int(done.stdout.split()[-1]) / 1024
    assert all(mib < 200 for mib in peaks.values()), peaks
    with src.open(newline="") as a, out.open(newline="") as b:
        assert list(csv.reader(a)) == list(csv.reader(b))     # file order, every cell as written
