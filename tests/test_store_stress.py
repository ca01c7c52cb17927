"""The several-machines recipe under fire: four `ladder sweep --workers 2` processes on one
PostgreSQL store, killed at random (SIGKILL) and restarted, as machines come and go. The store
must end with exactly N complete trials per rung, no parameter set completed twice, no killed
trial's point lost, and a ledger equal to the sum of every trial's FLOPs."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time

import pytest
from optuna.trial import TrialState

from proxy.flops import train_flops
from proxy.sweep.experiment import load_experiment
from proxy.sweep.ledger import ledger
from proxy.sweep.store import open_storage, study_name
from sweep_toml import rung

pytestmark = [pytest.mark.slow, pytest.mark.postgres]

TEXT = """
[experiment]
name = "stress"
backend = "simulated"
heartbeat_interval = 1
storage = "sqlite:///not-used.db"   # the recipe names the shared store on the command line

[ladder]
""" + rung("r0") + rung("r1", d_model=128, n_heads=4, d_expert=256) + """
[search]
sampler = "tpe"
trials_per_rung = 12
startup_trials = 4
[search.box]
lr = {{ low = 1e-4, high = 1e-2, log = true }}

[data]
domains = ["code"]

[simulated]
sleep_s = 1.0
"""

PROCESSES, WORKERS, KILLS = 4, 2, 4


def _sweep(path, url: str) -> subprocess.Popen:
    """The recipe's command: ``ladder sweep exp.toml --storage URL --workers K``."""
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    return subprocess.Popen([sys.executable, "-m", "reports.cli", "sweep", str(path), "--storage", url,
                             "--no-progress", "--workers", str(WORKERS)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True, env=env)


def _children(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as fh:
            return [int(c) for c in fh.read().split()]
    except OSError:
        return []


def test_four_machines_killed_at_random_lose_and_duplicate_nothing(tmp_path, pg_url):
    path = tmp_path / "exp.toml"
    path.write_text(TEXT.format())
    exp = load_experiment(path, storage=pg_url)
    rng = random.Random(0)
    procs = [_sweep(path, pg_url) for _ in range(PROCESSES)]
    killed = workers_killed = 0
    victims: list[subprocess.Popen] = []
    deadline = time.time() + 400
    try:
        while any(p.poll() is None for p in procs) and time.time() < deadline:
            time.sleep(rng.uniform(2.0, 5.0))
            alive = [p for p in procs if p.poll() is None]
            if killed < KILLS and alive:
                victim = rng.choice(alive)
                workers = _children(victim.pid)
                if killed % 2 and workers:           # a worker dies on its own (out of memory, a bad node)
                    os.kill(rng.choice(workers), signal.SIGKILL)
                    workers_killed += 1
                    time.sleep(0.5)
                victim.send_signal(signal.SIGKILL)   # the machine goes: its workers end with it (parent-death signal)
                victim.communicate()
                victims.append(victim)
                killed += 1
                procs.append(_sweep(path, pg_url))  # the machine comes back
        # communicate() also closes each survivor's pipe (the victims' were closed above).
        errors = {id(p): p.communicate(timeout=300)[1] for p in procs if p.stderr and not p.stderr.closed}
        # Every machine that was not killed ends cleanly; a killed one by the kill (or cleanly, when
        # its sweep finished in the moment after one of its workers was killed).
        assert all(p.returncode == 0 for p in procs if p not in victims), [e[-2000:] for e in errors.values()]
        assert all(p.returncode in (0, -signal.SIGKILL) for p in victims)
        assert sum(p.returncode == -signal.SIGKILL for p in victims) >= KILLS - 1
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.communicate()
    assert killed == KILLS and workers_killed >= 1
    storage = open_storage(pg_url)
    every = []
    for r in exp.rungs:
        trials = storage.get_all_trials(storage.get_study_id_from_name(study_name("stress", r.name)))
        every += trials
        complete = [t for t in trials if t.state == TrialState.COMPLETE]
        assert len(complete) == 12, r.name
        points = [t.params["lr"] for t in complete]
        assert len(set(points)) == len(points), f"{r.name}: a parameter set completed twice"
        # Every trial that died with its point has that point retried, and its last retry finished
        # (none lost, none left queued).
        for t in trials:
            if t.state == TrialState.FAIL and not t.user_attrs.get("surplus") and t.params:
                origin = t.system_attrs.get("failed_trial", t.number)
                retries = [x for x in trials if x.system_attrs.get("failed_trial") == origin
                           and x.number > t.number and x.params == t.params]
                assert retries, f"{r.name} trial {t.number}'s point was lost"
                assert any(x.state == TrialState.COMPLETE for x in retries), f"{r.name} trial {t.number}"
        assert not [t for t in trials if t.state in (TrialState.RUNNING, TrialState.WAITING)]
        # Every trial that ran to the end trained the rung's whole steps and counts their FLOPs;
        # a diverged one stops early and counts fewer.
        step_tokens = r.batch_size * r.config.seq_len
        full = train_flops(r.config, r.tokens // step_tokens * step_tokens)
        finished = [t for t in complete if not t.user_attrs["diverged"]]
        assert finished and all(t.user_attrs["flops"] == pytest.approx(full) for t in finished), r.name
        assert all(0 < t.user_attrs["flops"] <= full * 1.000001 for t in complete)
    spent = sum(t.user_attrs.get("flops", t.user_attrs.get("flops_spent", 0.0)) for t in every
                if t.state != TrialState.WAITING)
    assert ledger(storage, exp).total_flops == pytest.approx(spent)
