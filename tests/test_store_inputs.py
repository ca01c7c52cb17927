"""Bad input meets the store: an edited experiment file, values that passed validation and
failed later, corrupt, foreign and empty stores. Each is one line naming what is wrong, and
nothing is created or written where nothing should be."""

from __future__ import annotations

import contextlib
import io
import sqlite3
import subprocess
from pathlib import Path

import pytest
from proxy.sweep.experiment import ExperimentError, load_experiment
from proxy.sweep.store import close_all, open_storage
from sweep_toml import rung

BASE = """
[experiment]
name = "{name}"
backend = "simulated"
heartbeat_interval = 2
storage = "sqlite:///trials.db"
seeds = [0]

[ladder]
""" + rung("r0") + rung("r1", d_model=128, n_heads=4, d_expert=256) + """
[search]
sampler = "tpe"
trials_per_rung = 4
startup_trials = 2
[search.box]
lr = {{ low = 1e-4, high = 1e-2, log = true }}
[search.fixed]
warmup_frac = 0.1

[data]
domains = ["code"]

[simulated]
lr_gamma = -0.3

[review]
backtest_alpha = 0.05
"""


def _base(tmp_path: Path, name: str = "base") -> Path:
    path = tmp_path / "exp.toml"
    path.write_text(BASE.format(name=name))
    return path


def _ladder(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    """``ladder ARGS`` in this process (as the command line runs it: errors caught and printed),
    with its own store handles, so no command sees another's cached connection."""
    from reports.cli import main

    close_all()
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(list(args))
    close_all()
    return subprocess.CompletedProcess(list(args), code, out.getvalue(), err.getvalue())


def _export_args(tmp_path: Path, db: Path) -> tuple[str, ...]:
    """``ladder export`` of experiment "base" from the SQLite store ``db`` to ``x.csv``."""
    return ("export", "--storage", f"sqlite:///{db}", "--experiment", "base", "--out", str(tmp_path / "x.csv"))


def _export(tmp_path: Path, db: Path) -> subprocess.CompletedProcess:
    return _ladder(tmp_path, *_export_args(tmp_path, db))


def _one_line_error(out: subprocess.CompletedProcess, *needles: str) -> None:
    assert out.returncode == 2, out.stderr[-2000:]
    assert "Traceback" not in out.stderr
    lines = [line for line in out.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("ladder "), out.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]


# --- the experiment's identity ----------------------------------------------------------------

def test_an_edited_experiment_does_not_reuse_old_trials(tmp_path):
    """Change a rung's d_model and the lr box after a finished sweep: the rerun stops, naming the
    changed keys, and trains nothing; --new-name sweeps the edit as a new experiment in the same
    store; --force keeps the old trials and records the settings they replaced."""
    path = _base(tmp_path)
    assert _ladder(tmp_path, "sweep", str(path), "--no-progress").returncode == 0
    edited = path.read_text().replace("d_model = 64", "d_model = 96", 1).replace("high = 1e-2", "high = 3e-2")
    path.write_text(edited)
    out = _ladder(tmp_path, "sweep", str(path), "--no-progress")
    _one_line_error(out, "'r0'", "box.lr.high", "rung.d_model", "--new-name", "--force")
    for command in ("status", "fit", "plan", "review", "report"):   # nor do the reading commands use them
        _one_line_error(_ladder(tmp_path, command, str(path)), "'r0'", "rung.d_model", "--new-name")
    out = _ladder(tmp_path, "run", str(path), "--no-progress")
    _one_line_error(out, "'r0'", "rung.d_model", "--force")
    storage = open_storage(f"sqlite:///{tmp_path / 'trials.db'}")
    assert len(storage.get_all_trials(storage.get_study_id_from_name("base/r0"))) == 4
    out = _ladder(tmp_path, "sweep", str(path), "--no-progress", "--new-name", "base-2")
    assert out.returncode == 0, out.stderr
    names = sorted(s.study_name for s in storage.get_all_studies())
    assert names == ["base-2/r0", "base-2/r1", "base/r0", "base/r1"]
    new = storage.get_all_trials(storage.get_study_id_from_name("base-2/r0"))
    assert len(new) == 4 and all(t.params["lr"] <= 3e-2 for t in new)
    out = _ladder(tmp_path, "sweep", str(path), "--no-progress", "--force")
    assert out.returncode == 0, out.stderr
    attrs = storage.get_study_user_attrs(storage.get_study_id_from_name("base/r0"))
    assert attrs["fingerprint"]["rung.d_model"] == 96
    assert attrs["fingerprint_forced"][0]["rung.d_model"] == 64
    assert _ladder(tmp_path, "sweep", str(path), "--no-progress").returncode == 0   # now it matches
    close_all()


def test_what_does_not_change_a_trial_does_not_change_the_fingerprint(tmp_path):
    from proxy.sweep.identity import changed_keys, fingerprint

    base = load_experiment(_base(tmp_path), check_storage=False)
    path = tmp_path / "exp.toml"
    path.write_text(path.read_text().replace("trials_per_rung = 4", "trials_per_rung = 8")
                    .replace('sampler = "tpe"', 'sampler = "random"')
                    .replace("lr_gamma = -0.3", "lr_gamma = -0.3\nsleep_s = 0.5"))
    more = load_experiment(path, check_storage=False)
    for r, same in zip(base.rungs, more.rungs):
        assert changed_keys(fingerprint(base, r), fingerprint(more, same)) == []
    path.write_text(path.read_text().replace("warmup_frac = 0.1", "warmup_frac = 0.2")
                    .replace("lr_gamma = -0.3", "lr_gamma = -0.4"))
    edited = load_experiment(path, check_storage=False)
    assert changed_keys(fingerprint(base, base.rungs[0]), fingerprint(edited, edited.rungs[0])) == [
        "fixed.warmup_frac", "simulated.lr_gamma"]


# --- values that passed validation and failed later ------------------------------------------

BAD_EDITS = [
    ("warmup_frac = 0.1", "warmup_frac = 0.1\nn_experts = inf", "search.fixed"),
    ("warmup_frac = 0.1", "warmup_frac = 0.1\nbatch_size = inf", "search.fixed"),
    ("warmup_frac = 0.1", "warmup_frac = 0.1\nn_experts = 4.7", "n_experts must be an integer"),
    ("lr_gamma = -0.3", 'lr_gamma = "steep"', "lr_gamma"),
    ("lr_gamma = -0.3", "lr_gamma = nan", "lr_gamma"),
    ("lr_gamma = -0.3", 'lr_gamma = -0.3\ndomain_offsets = { code = "a" }', "domain_offsets.code"),
    ("seeds = [0]", "seeds = [4294967296]", "experiment.seeds[0]"),
    ('sampler = "tpe"', 'sampler = "grid"\ngrid_points = 10000000', "search.grid_points"),
    ("heartbeat_interval = 2", "heartbeat_interval = 100000000000", "experiment.heartbeat_interval"),
    ("heartbeat_interval = 2", "heartbeat_interval = 1e11", "experiment.heartbeat_interval"),
    ('storage = "sqlite:///trials.db"', 'storage = "sqlite:////dev/null"', "not a regular file"),
    ('storage = "sqlite:///trials.db"', 'storage = "sqlite:///:memory:"', "in memory"),
    ("backtest_alpha = 0.05", "backtest_alpha = 5.0", "review.backtest_alpha"),
    ('name = "base"', 'name = ".."', "experiment.name"),
    ('name = "base"', 'name = "."', "experiment.name"),
    ('name = "base"', 'name = "a/b"', "experiment.name"),
    ('name = "r0"', 'name = "../r0"', "name"),
    ('name = "r0"', 'name = ".."', "name"),
    ('name = "r0"', 'name = "."', "name"),
    ("trials_per_rung = 4", "trials_per_rung = 1000000000", "search.trials_per_rung"),
    ("startup_trials = 2", "startup_trials = 1000000000", "search.startup_trials"),
    ("backtest_alpha = 0.05", "backtest_alpha = 0.05\nextrapolation_fail = 1e300", "review.extrapolation_fail"),
    ("batch_size = 8", "batch_size = 1000000000", "batch_size"),
]


@pytest.mark.parametrize("old,new,needle", BAD_EDITS, ids=[e[1].splitlines()[-1] for e in BAD_EDITS])
def test_a_value_that_would_fail_later_is_refused_up_front(tmp_path, old, new, needle):
    path = _base(tmp_path)
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new, 1))
    with pytest.raises(ExperimentError, match=None) as info:
        load_experiment(path)
    assert needle in str(info.value) and "\n" not in str(info.value)
    assert not (tmp_path / "trials.db").exists() and not (tmp_path / "runs").exists()


def test_a_deeply_nested_file_is_one_line(tmp_path):
    path = tmp_path / "exp.toml"
    path.write_text("x = " + "[" * 5000 + "]" * 5000 + "\n")
    with pytest.raises(ExperimentError) as info:
        load_experiment(path)
    assert "\n" not in str(info.value)


def test_a_rung_too_big_to_build_is_refused_before_any_trial(tmp_path):
    """A rung with a billion experts: one line from the sweep, no trial in the store."""
    path = _base(tmp_path)
    path.write_text(path.read_text().replace("n_experts = 4", "n_experts = 1000000000", 1))
    out = _ladder(tmp_path, "sweep", str(path), "--no-progress")
    _one_line_error(out, "r0", "experts")
    assert not (tmp_path / "trials.db").exists()              # checked before the store is created
    out = _ladder(tmp_path, "run", str(path), "--no-progress")
    _one_line_error(out, "r0", "experts")
    assert not (tmp_path / "trials.db").exists()


def test_the_host_memory_check_names_the_rung(tmp_path):
    from proxy.backends.memory import DoesNotFit, check_host_memory, host_bytes

    exp = load_experiment(_base(tmp_path), check_storage=False)
    config = exp.rungs[0].config
    check_host_memory({"r0": config})
    huge = config.replace(n_experts=int(host_bytes() / 16 / (3 * config.d_model * config.d_expert)) * 2)
    with pytest.raises(DoesNotFit, match="rung big needs"):
        check_host_memory({"big": huge})


def test_a_grid_holding_fewer_cells_than_trials_is_refused(tmp_path):
    path = _base(tmp_path)
    path.write_text(path.read_text().replace('sampler = "tpe"', 'sampler = "grid"\ngrid_points = 2'))
    with pytest.raises(ExperimentError, match="search.trials_per_rung: exceeds the grid's 2 cells"):
        load_experiment(path)


# --- corrupt, foreign, empty stores ------------------------------------------------------------

def _swept(tmp_path: Path) -> Path:
    path = _base(tmp_path)
    assert _ladder(tmp_path, "sweep", str(path), "--no-progress").returncode == 0
    close_all()
    return path


def test_read_only_commands_never_create_a_store(tmp_path):
    path = _base(tmp_path)
    # The store in a folder of its own: no command may create the folder either.
    path.write_text(path.read_text().replace('storage = "sqlite:///trials.db"',
                                             'storage = "sqlite:///sub/trials.db"'))
    assert "sub/trials.db" in path.read_text()
    for command in ("fit", "plan", "review", "status", "report"):
        out = _ladder(tmp_path, command, str(path))
        if command == "status":
            assert out.returncode == 0 and "no trials yet" in out.stdout
        else:
            _one_line_error(out, "no trial store")
    out = _ladder(tmp_path, "export", "--storage", f"sqlite:///{tmp_path / 'other' / 'x.db'}",
                  "--experiment", "base", "--out", str(tmp_path / "x.csv"))
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["exp.toml"]


def test_read_only_commands_leave_the_store_as_it_was(tmp_path):
    """A store that is not in WAL mode (say, copied from a backup): reading it changes no byte
    and leaves no journal beside it."""
    path = _swept(tmp_path)
    db = tmp_path / "trials.db"
    con = sqlite3.connect(db)
    con.execute("pragma journal_mode=delete")
    con.close()
    before = db.read_bytes()
    for args in (("status", str(path)), ("fit", str(path)), ("plan", str(path)), ("review", str(path)),
                 _export_args(tmp_path, db)):
        out = _ladder(tmp_path, *args)
        assert "Traceback" not in out.stderr, out.stderr[-2000:]
        assert db.read_bytes() == before, args
        assert not [p.name for p in tmp_path.iterdir() if p.name.startswith("trials.db-")], args


def test_an_empty_file_is_not_taken_for_an_empty_store(tmp_path):
    path = _base(tmp_path)
    (tmp_path / "trials.db").write_bytes(b"")
    _one_line_error(_ladder(tmp_path, "fit", str(path)), "empty file")
    out = _ladder(tmp_path, "sweep", str(path), "--no-progress")
    _one_line_error(out, "empty file")
    _one_line_error(_export(tmp_path, tmp_path / 'trials.db'), "empty file")
    assert (tmp_path / "trials.db").stat().st_size == 0


def test_a_foreign_database_is_left_untouched(tmp_path):
    path = _base(tmp_path)
    db = tmp_path / "trials.db"
    con = sqlite3.connect(db)
    con.execute("create table accounts (id integer primary key, owner text)")
    con.commit()
    con.close()
    before = db.read_bytes()
    for command in ("fit", "status", "report"):
        _one_line_error(_ladder(tmp_path, command, str(path)), "not a trial store")
    out = _ladder(tmp_path, "sweep", str(path), "--no-progress")
    _one_line_error(out, "not a trial store")
    _one_line_error(_export(tmp_path, db), "not a trial store")
    assert db.read_bytes() == before


def _damage(db: Path) -> None:
    """Overwrite a page in the middle of the file (past the header page) with garbage."""
    con = sqlite3.connect(db)
    con.execute("pragma wal_checkpoint(truncate)")
    page = con.execute("pragma page_size").fetchone()[0]
    pages = con.execute("pragma page_count").fetchone()[0]
    con.close()
    assert pages > 3
    with open(db, "r+b") as fh:
        fh.seek(page * (pages // 2))
        fh.write(b"\xde\xad\xbe\xef" * (page // 4))


@pytest.mark.parametrize("command", ["status", "fit", "export", "sweep"])
def test_a_damaged_store_is_one_line(tmp_path, command):
    path = _swept(tmp_path)
    _damage(tmp_path / "trials.db")
    if command == "export":
        args = _export_args(tmp_path, tmp_path / 'trials.db')
    else:
        args = (command, str(path)) + (("--no-progress",) if command == "sweep" else ())
    out = _ladder(tmp_path, *args)
    assert out.returncode == 2 and "Traceback" not in out.stderr, out.stderr[-3000:]
    lines = [line for line in out.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and ("damaged" in lines[0] or "malformed" in lines[0] or "failed" in lines[0]), lines
    assert str(tmp_path / "trials.db") in lines[0], lines


def test_a_dropped_table_is_one_line(tmp_path):
    path = _swept(tmp_path)
    db = tmp_path / "trials.db"
    con = sqlite3.connect(db)
    con.execute("drop table trial_user_attributes")
    con.commit()
    con.execute("pragma wal_checkpoint(truncate)")
    con.close()
    before = db.read_bytes()
    _one_line_error(_ladder(tmp_path, "fit", str(path)), "trial_user_attributes")
    # A sweep must not re-create the table empty and start over.
    _one_line_error(_ladder(tmp_path, "sweep", str(path), "--no-progress"), "trial_user_attributes", str(db))
    _one_line_error(_export(tmp_path, db), "trial_user_attributes")
    assert db.read_bytes() == before


@pytest.mark.parametrize("command", ["fit", "status", "export"])
def test_a_null_in_the_store_is_one_line_naming_it(tmp_path, command):
    path = _swept(tmp_path)
    db = tmp_path / "trials.db"
    con = sqlite3.connect(db)
    con.execute("update trial_user_attributes set value_json = NULL")
    con.commit()
    con.close()
    if command == "export":
        args = _export_args(tmp_path, db)
    else:
        args = (command, str(path))
    _one_line_error(_ladder(tmp_path, *args), "malformed", str(db))


def test_a_store_with_a_newer_schema_is_one_line(tmp_path):
    path = _swept(tmp_path)
    con = sqlite3.connect(tmp_path / "trials.db")
    con.execute("update alembic_version set version_num = 'v99.0.0.z'")
    con.commit()
    con.close()
    for command in ("fit", "sweep"):
        out = _ladder(tmp_path, command, str(path), *(("--no-progress",) if command == "sweep" else ()))
        _one_line_error(out, "cannot be used")
    out = _export(tmp_path, tmp_path / 'trials.db')
    _one_line_error(out, "cannot be used")
