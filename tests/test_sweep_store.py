"""The store on a real PostgreSQL server (PROXY_TRANSFER_PG_URL), one fresh database per test."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from proxy.sweep.experiment import ExperimentError, load_experiment
from proxy.sweep.runner import observations, run_sweep
from proxy.sweep.store import check_reachable
from sweep_toml import rung

pytestmark = pytest.mark.postgres


TEXT = """
[experiment]
name = "pg"
backend = "simulated"
heartbeat_interval = 2
storage = "{url}"

[ladder]
""" + rung() + """
[search]
trials_per_rung = 6
startup_trials = 3
[search.box]
lr = {{ low = 1e-4, high = 1e-2, log = true }}

[data]
domains = ["code"]
"""


def test_sweep_on_postgresql(tmp_path: Path, pg_url):
    check_reachable(pg_url)
    path = tmp_path / "exp.toml"
    path.write_text(TEXT.format(url=pg_url))
    exp = load_experiment(path)
    assert exp.storage.startswith("postgresql+psycopg2://")
    summary = run_sweep(exp)
    assert summary.rungs[0].complete == 6
    obs = observations(pg_url, "pg")
    assert len(obs) == 6 and all(o.rung == "r0" for o in obs)


@pytest.mark.slow
def test_two_workers_on_postgresql(tmp_path: Path, pg_url):
    import importlib.util

    spec = importlib.util.spec_from_file_location("wk", Path(__file__).with_name("test_sweep_workers.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.check_workers(tmp_path, f'storage = "{pg_url}"')


def test_missing_database_is_unreachable(tmp_path: Path, pg_url):
    bad = pg_url.rsplit("/", 1)[0] + "/no_such_database_" + uuid.uuid4().hex[:6]
    path = tmp_path / "exp.toml"
    path.write_text(TEXT.format(url=bad))
    with pytest.raises(ExperimentError, match="^experiment.storage: .*unreachable"):
        load_experiment(path)
