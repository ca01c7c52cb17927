"""Many processes on one store: distinct points, exactly one retry per stale trial, a concurrent
start on a new store, reads during writes and the grid sampler's end of rung. Each runs on SQLite
and, where the CI's server is there (PROXY_TRANSFER_PG_URL), on PostgreSQL."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from optuna.trial import TrialState

from proxy.sweep.experiment import load_experiment
from proxy.sweep.store import close_all, open_storage, study_name
from sweep_toml import TARGET, rung

TEXT = """
[experiment]
name = "many"
backend = "simulated"
heartbeat_interval = 2
storage = "{url}"
workers = 1

[ladder]
""" + rung("r0") + rung("r1", d_model=128, n_heads=4, d_expert=256) + """
[search]
sampler = "{sampler}"
trials_per_rung = {n}
startup_trials = 3
{extra}
[search.box]
lr = {{ low = 1e-4, high = 1e-2, log = true }}

[data]
domains = ["code"]

[simulated]
sleep_s = {sleep}
"""


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def store_url(request, tmp_path):
    """A store that does not exist yet: a SQLite file, or a fresh PostgreSQL database."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'store' / 'trials.db'}"
        close_all()
        return
    yield request.getfixturevalue("pg_url")


def _write(tmp_path: Path, url: str, *, sampler: str = "tpe", n: int = 8, sleep: float = 0.2,
           extra: str = "", name: str = "exp.toml") -> Path:
    path = tmp_path / name
    path.write_text(TEXT.format(url=url, sampler=sampler, n=n, sleep=sleep, extra=extra))
    return path


def _ladder(*args: str) -> subprocess.Popen:
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    return subprocess.Popen([sys.executable, "-m", "reports.cli", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)


def _trials(url: str, rung_name: str):
    storage = open_storage(url)
    sid = storage.get_study_id_from_name(study_name("many", rung_name))
    return storage.get_all_trials(sid, deepcopy=False)


def test_two_sweeps_of_one_experiment_propose_distinct_points(tmp_path, store_url):
    """The several-machines recipe: two `ladder sweep` processes on one store, started together
    on a store that does not exist yet. Every rung ends with exactly N complete trials, all at
    distinct points, and both processes trained some."""
    exp = _write(tmp_path, store_url)
    procs = [_ladder("sweep", str(exp), "--no-progress") for _ in range(2)]
    outs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [o[1][-2000:] for o in outs]
    for name in ("r0", "r1"):
        complete = [t for t in _trials(store_url, name) if t.state == TrialState.COMPLETE]
        assert len(complete) == 8
        assert len({t.params["lr"] for t in complete}) == 8, sorted(t.params["lr"] for t in complete)
        assert len({t.user_attrs["worker"] for t in complete}) == 2



def test_two_ladder_runs_on_one_store_queue_each_point_once(tmp_path, store_url):
    """Two `ladder run`s of one experiment with a baseline and replicates, on one store, started
    together: each rung ends with its sampler's trials at distinct points, one baseline trial and
    one replicate (Optuna's skip_if_exists is a check-then-insert: both passed it), and both runs
    finish."""
    exp = _write(tmp_path, store_url, n=6, sleep=0.1, extra="replicates = 1\n")
    exp.write_text(exp.read_text() + "\n" + TARGET + "\n[baseline]\nlr = 1e-3\n")
    procs = [_ladder("run", str(exp), "--no-progress") for _ in range(2)]
    outs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [o[1][-2000:] for o in outs]
    for name in ("r0", "r1"):
        complete = [t for t in _trials(store_url, name) if t.state == TrialState.COMPLETE]
        baseline = [t for t in complete if t.user_attrs.get("baseline")]
        replicas = [t for t in complete if "replicate_of" in t.user_attrs]
        sampled = [t for t in complete if t not in baseline and t not in replicas]
        assert len(baseline) == 1 and baseline[0].params["lr"] == pytest.approx(1e-3), name
        assert len(replicas) == 1, [t.user_attrs for t in replicas]
        assert len(sampled) >= 6 and len({t.params["lr"] for t in sampled}) == len(sampled), name

RACE = """
import sys, time
import optuna
from proxy.sweep.store import fail_stale, open_storage
url, start, rounds = sys.argv[1], float(sys.argv[2]), int(sys.argv[3])
storage = open_storage(url, heartbeat_interval=2)
studies = [optuna.load_study(study_name=f"race/{r}", storage=storage) for r in range(rounds)]
for r, study in enumerate(studies):
    time.sleep(max(0.0, start + 0.15 * r - time.time()))   # both processes at the same moment
    fail_stale(study)
"""


def _python(code: str, *args: str) -> subprocess.Popen:
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    return subprocess.Popen([sys.executable, "-c", code, *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)


def test_a_stale_trial_is_retried_once_by_two_processes(tmp_path, store_url):
    """Two processes call fail_stale on one stale trial at the same moment, 20 times: each time
    exactly one retry is enqueued (Optuna's check-then-update let both enqueue one)."""
    import optuna
    import sqlalchemy

    from proxy.sweep.runner import quiet_optuna

    rounds = 20
    storage = open_storage(store_url, heartbeat_interval=2)
    dist = {"lr": optuna.distributions.FloatDistribution(1e-4, 1e-2, log=True)}
    for r in range(rounds):
        study = optuna.create_study(study_name=f"race/{r}", storage=storage)
        with quiet_optuna():
            trial = study.ask(dist)
        storage.record_heartbeat(trial._trial_id)
    with storage.engine.begin() as con:   # their workers died long ago
        con.execute(sqlalchemy.text("UPDATE trial_heartbeats SET heartbeat = :t"), {"t": "2000-01-01 00:00:00"})
    start = time.time() + 4.0   # both processes loaded and waiting by then
    procs = [_python(RACE, store_url, str(start), str(rounds)) for _ in range(2)]
    outs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [o[1][-2000:] for o in outs]
    for r in range(rounds):
        trials = optuna.load_study(study_name=f"race/{r}", storage=storage).get_trials(deepcopy=False)
        assert [t.state for t in trials] == [TrialState.FAIL, TrialState.WAITING], f"round {r}"
        assert trials[1].params == trials[0].params
        assert trials[1].system_attrs["failed_trial"] == trials[0].number



def test_a_retry_starts_with_clean_attributes(tmp_path):
    """A stale trial's retry keeps what names its point (a replicate's origin) and none of what
    its first run wrote: its error, its spent FLOPs, a surplus mark."""
    import optuna
    import sqlalchemy

    from proxy.sweep.runner import quiet_optuna
    from proxy.sweep.store import fail_stale

    storage = open_storage(f"sqlite:///{tmp_path / 'trials.db'}", heartbeat_interval=2)
    study = optuna.create_study(study_name="clean/r0", storage=storage)
    with quiet_optuna():
        trial = study.ask({"lr": optuna.distributions.FloatDistribution(1e-4, 1e-2, log=True)})
    for key, value in (("replicate_of", 3), ("error", "CUDA out of memory"), ("flops_spent", 1.5e12),
                       ("surplus", True)):
        trial.set_user_attr(key, value)
    storage.record_heartbeat(trial._trial_id)
    with storage.engine.begin() as con:   # its worker died long ago
        con.execute(sqlalchemy.text("UPDATE trial_heartbeats SET heartbeat = :t"), {"t": "2000-01-01 00:00:00"})
    fail_stale(study)
    failed, again = study.get_trials(deepcopy=False)
    assert failed.state == TrialState.FAIL and again.state == TrialState.WAITING
    assert failed.user_attrs["error"] == "CUDA out of memory"
    assert again.user_attrs == {"replicate_of": 3} and again.params == failed.params
    close_all()

POP = """
import sys, time
import optuna
from proxy.sweep.store import open_storage
from proxy.sweep.runner import quiet_optuna
url, start = sys.argv[1], float(sys.argv[2])
study = optuna.load_study(study_name="pop/r0", storage=open_storage(url, heartbeat_interval=2))
time.sleep(max(0.0, start - time.time()))
got = []
with quiet_optuna():
    for _ in range(15):
        trial = study.ask()
        got.append(trial.number)
        study.tell(trial, 1.0)
print(" ".join(map(str, got)))
"""


def test_two_workers_never_take_the_same_queued_trial(tmp_path, store_url):
    """30 queued trials, two processes asking at the same moment: every queued trial is taken by
    one of them (the driver's deferred transactions let both take one)."""
    import optuna

    storage = open_storage(store_url, heartbeat_interval=2)
    study = optuna.create_study(study_name="pop/r0", storage=storage)
    for i in range(30):
        study.enqueue_trial({"lr": 1e-4 * (1 + i)})
    start = time.time() + 4.0
    procs = [_python(POP, store_url, str(start)) for _ in range(2)]
    outs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [o[1][-2000:] for o in outs]
    taken = [set(map(int, o[0].split())) for o in outs]
    assert not taken[0] & taken[1], sorted(taken[0] & taken[1])
    assert len(taken[0] | taken[1]) == 30

OPEN = """
import sys, time
import optuna
from proxy.sweep.store import open_storage
url, start, name = sys.argv[1], float(sys.argv[2]), sys.argv[3]
time.sleep(max(0.0, start - time.time()))
optuna.create_study(study_name=name, storage=open_storage(url, heartbeat_interval=2), load_if_exists=True)
"""


def test_processes_starting_together_on_a_new_store_all_start(tmp_path, store_url):
    """Three processes open a store that does not exist yet at the same moment: all three
    open it (Optuna's schema creation is serialised), and their studies are all there."""
    start = time.time() + 4.0
    procs = [_python(OPEN, store_url, str(start), f"s{i}") for i in range(3)]
    outs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0], [o[1][-2000:] for o in outs]
    assert sorted(s.study_name for s in open_storage(store_url).get_all_studies()) == ["s0", "s1", "s2"]


def test_reads_during_a_sweep_never_fail(tmp_path, store_url):
    """fit, status, plan and review read the store while two workers write to it: every read
    succeeds or, before the first trial, says so in one line; none raises, and each sees every
    trial whole (its observation's loss is the trial's value)."""
    import contextlib
    import io

    from reports.cli import main
    from transfer.observations import fit_rungs, load_observations

    path = _write(tmp_path, store_url, n=10, sleep=0.05)
    path.write_text(path.read_text() + "\n" + TARGET)
    sweep = _ladder("sweep", str(path), "--no-progress", "--workers", "2")
    exp = load_experiment(path)
    reads = commands = 0
    try:
        while sweep.poll() is None:
            if not any(s.study_name.startswith("many/") for s in _studies(store_url)):
                time.sleep(0.05)   # the sweep has not created its rungs yet
                continue
            obs = load_observations(exp, open_storage(exp.storage))
            for rung_obs in obs.values():
                for o in rung_obs:
                    assert o.extra["objective"] == pytest.approx(o.loss)
            if obs:
                fit_rungs(exp, obs)
            reads += 1
            command = ("status", "fit", "plan", "review")[commands % 4]
            err = io.StringIO()
            with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(err):
                code = main([command, str(path), "--out", str(tmp_path / "out")] if command != "status"
                            else [command, str(path)])
            lines = [line for line in err.getvalue().splitlines() if line.strip() and "wrote" not in line]
            assert code == 0 or (code == 2 and len(lines) == 1 and ("no finished trial" in lines[0] or "usable" in
                                                                    lines[0] or "optimum" in lines[0])), \
                (command, err.getvalue()[-2000:])
            commands += 1
    finally:
        out = sweep.communicate(timeout=300)
    assert sweep.returncode == 0, out[1][-2000:]
    assert reads >= 3 and commands >= 3


def _studies(url: str):
    try:
        return open_storage(url).get_all_studies()
    except Exception:   # the store is being created
        return []


def test_grid_sampler_finishes_its_rungs(tmp_path, store_url):
    """The grid sampler visits its grid once per rung and ends the rung without error; a rerun
    adds nothing."""
    path = _write(tmp_path, store_url, sampler="grid", n=4, sleep=0.0, extra="grid_points = 4")
    for _ in range(2):
        proc = _ladder("sweep", str(path), "--no-progress")
        out = proc.communicate(timeout=300)
        assert proc.returncode == 0, out[1][-2000:]
    for name in ("r0", "r1"):
        trials = _trials(store_url, name)
        assert len(trials) == 4 and all(t.state == TrialState.COMPLETE for t in trials)
        assert len({t.params["lr"] for t in trials}) == 4


def test_a_grid_smaller_than_the_trials_is_refused(tmp_path):
    from proxy.sweep.experiment import ExperimentError

    path = _write(tmp_path, f"sqlite:///{tmp_path / 't.db'}", sampler="grid", n=4, extra="grid_points = 2")
    with pytest.raises(ExperimentError, match="grid"):
        load_experiment(path)
    assert not (tmp_path / "t.db").exists()


def _children(pid: int) -> list[int]:
    """The processes whose parent is ``pid`` (from /proc)."""
    out = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                out.append(int(entry.name))
    return out


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def _wait_running(url: str, rung_name: str, *, spent: bool = False, timeout: float = 60.0) -> list:
    """Poll until a trial of ``rung_name`` is RUNNING (and, with ``spent``, has stored its
    FLOPs so far); returns the running trials."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            running = [t for t in _trials(url, rung_name) if t.state == TrialState.RUNNING
                       and (not spent or t.user_attrs.get("flops_spent"))]
        except KeyError:
            running = []
        if running:
            return running
        time.sleep(0.2)
    pytest.fail(f"no trial of {rung_name} was running within {timeout} s")


@pytest.mark.slow
def test_a_killed_parent_takes_its_workers_and_its_spend_stays_counted(tmp_path):
    """SIGKILL of a `--workers 2` sweep: both workers end within seconds (no orphan trains on);
    the killed trials' FLOPs so far stay in the ledger; their retries start with clean
    attributes and the resumed sweep ends with exactly N complete trials."""
    from proxy.sweep.ledger import ledger

    url = f"sqlite:///{tmp_path / 'trials.db'}"
    path = _write(tmp_path, url, n=4, sleep=6.0)
    text = path.read_text().replace("heartbeat_interval = 2", "heartbeat_interval = 1")
    path.write_text(text)
    parent = _ladder("sweep", str(path), "--no-progress", "--workers", "2")
    try:
        _wait_running(url, "r0", spent=True)
        workers = _children(parent.pid)
        assert len(workers) >= 2
        parent.kill()
        parent.communicate()
        deadline = time.time() + 10
        while time.time() < deadline and any(_alive(p) for p in workers):
            time.sleep(0.2)
        assert not any(_alive(p) for p in workers), "a worker outlived its killed parent"
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.communicate()
    killed = [t for t in _trials(url, "r0") if t.state == TrialState.RUNNING]
    assert killed and any(t.user_attrs.get("flops_spent", 0) > 0 for t in killed)
    exp = load_experiment(path)
    book = ledger(open_storage(url), exp)
    assert book.total_flops == pytest.approx(sum(t.user_attrs.get("flops", t.user_attrs.get("flops_spent", 0))
                                                 for t in _trials(url, "r0")))
    assert book.total_flops > 0
    text = text.replace("sleep_s = 6.0", "sleep_s = 0.0")
    path.write_text(text)
    again = _ladder("sweep", str(path), "--no-progress")
    out = again.communicate(timeout=300)
    assert again.returncode == 0, out[1][-2000:]
    trials = _trials(url, "r0")
    assert sum(t.state == TrialState.COMPLETE for t in trials) == 4
    for t in killed:
        retry = [r for r in trials if r.system_attrs.get("failed_trial") == t.number]
        assert len(retry) == 1 and retry[0].state == TrialState.COMPLETE and retry[0].params == t.params
        assert "error" not in retry[0].user_attrs
    assert ledger(open_storage(url), exp).total_flops > book.total_flops


@pytest.mark.slow
def test_ctrl_c_stops_the_workers_without_tracebacks(tmp_path):
    """Ctrl-C (SIGINT to the terminal's process group) of a `--workers 2` sweep: one line, exit
    130, no traceback from any process, and no worker left running."""
    import signal

    url = f"sqlite:///{tmp_path / 'trials.db'}"
    path = _write(tmp_path, url, n=4, sleep=6.0)
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    # As from a terminal: a job started in the background of a script inherits SIGINT ignored,
    # and Python then never raises Ctrl-C. The shim restores the default and execs the sweep in
    # the same process (a preexec_fn would fork this multithreaded test process instead).
    shim = ("import os, signal, sys; signal.signal(signal.SIGINT, signal.SIG_DFL); "
            "os.execv(sys.executable, [sys.executable] + sys.argv[1:])")
    proc = subprocess.Popen([sys.executable, "-c", shim, "-m", "reports.cli", "sweep", str(path),
                             "--no-progress", "--workers", "2"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env, start_new_session=True)
    try:
        _wait_running(url, "r0")
        workers = _children(proc.pid)
        os.killpg(proc.pid, signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 130
    assert "Traceback" not in err and "KeyboardInterrupt" not in err, err
    assert "interrupted" in err
    time.sleep(1.0)
    assert not any(_alive(p) for p in workers)


@pytest.mark.slow
def test_a_paused_worker_drops_its_late_result_and_goes_on(tmp_path):
    """A worker paused past the grace period (SIGSTOP) while another process retries its trial:
    once resumed it drops its late result (the retry's stands) and finishes the rung; exactly N
    trials complete."""
    import signal

    url = f"sqlite:///{tmp_path / 'trials.db'}"
    path = _write(tmp_path, url, n=3, sleep=5.0)
    path.write_text(path.read_text().replace("heartbeat_interval = 2", "heartbeat_interval = 1"))
    first = _ladder("sweep", str(path), "--no-progress", "--rung", "r0")
    second = None
    try:
        paused = _wait_running(url, "r0")[0]
        first.send_signal(signal.SIGSTOP)
        time.sleep(4.0)   # past the grace period (3 s at a 1 s heartbeat)
        second = _ladder("sweep", str(path), "--no-progress", "--rung", "r0")
        deadline = time.time() + 60
        while time.time() < deadline:
            states = {t.number: t.state for t in _trials(url, "r0")}
            if states.get(paused.number) == TrialState.FAIL:
                break
            time.sleep(0.2)
        first.send_signal(signal.SIGCONT)
        outs = [p.communicate(timeout=300) for p in (first, second)]
    finally:
        for p in (first, second):
            if p is not None and p.poll() is None:
                p.kill()
                p.communicate()
    assert [first.returncode, second.returncode] == [0, 0], [o[1][-2000:] for o in outs]
    trials = _trials(url, "r0")
    assert trials[paused.number].state == TrialState.FAIL
    assert sum(t.state == TrialState.COMPLETE for t in trials) == 3
