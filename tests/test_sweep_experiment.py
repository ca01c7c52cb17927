"""Experiment files: a valid file parses; every kind of error names its key and value, the
command exits non-zero and the store is never created."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from proxy.sweep.experiment import REVIEW_DEFAULTS, ExperimentError, load_experiment
from proxy.sweep.knobs import materialize, mix_from_logits, setup_trial
from reports.cli import main
from sweep_toml import TARGET, rung

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"

BASE = """
[experiment]
name = "t"
backend = "simulated"
{storage}

[ladder]
""" + rung(tokens=100_000) + """
""" + TARGET + """
[search]
trials_per_rung = 4
startup_trials = 2
[search.box]
lr = {{ low = 1e-4, high = 1e-1, log = true }}
n_experts = {{ choices = [4, 8] }}
mix = {{ low = -2.0, high = 2.0 }}
[search.fixed]
warmup_frac = 0.05

[data]
domains = ["code", "prose", "notes"]
eval_mix = {{ code = 1, prose = 1, notes = 2 }}

[budget]
max_fraction_of_target = 0.5
"""


def write(tmp_path: Path, text: str = BASE, storage: str = "") -> Path:
    path = tmp_path / "exp.toml"
    path.write_text(text.format(storage=storage))
    return path


def test_valid_file_and_defaults(tmp_path):
    exp = load_experiment(write(tmp_path))
    assert exp.storage == f"sqlite:///{(tmp_path / 'runs' / 't' / 'trials.db').resolve()}"
    assert not (tmp_path / "runs").exists()  # validation creates nothing
    assert exp.seeds == (0,) and exp.dtype == "float32" and exp.search.sampler == "tpe"
    assert [k.name for k in exp.search.box] == ["lr", "n_experts", "mix"]
    assert exp.review == REVIEW_DEFAULTS
    assert exp.budget_flops == pytest.approx(0.5 * exp.target_flops)
    assert exp.simulated is not None


@pytest.mark.parametrize("name", ["simulated.toml", "cpu_small.toml"])
def test_example_files_parse(name):
    exp = load_experiment(EXAMPLES / name, check_storage=False)
    assert exp.rungs and exp.search.box


def test_mix_parametrisation_and_materialize(tmp_path):
    exp = load_experiment(write(tmp_path))
    rung = exp.rungs[0]
    weights = mix_from_logits(("code", "prose", "notes"), {"mix.prose": math.log(2), "mix.notes": 0.0})
    assert weights == pytest.approx({"code": 0.25, "prose": 0.5, "notes": 0.25})
    config, hp, data = materialize(rung, {"lr": 1e-3, "n_experts": 8, "mix.prose": math.log(2),
                                          "mix.notes": 0.0}, exp.search.fixed, exp.data, load=False)
    assert config.n_experts == 8 and hp.lr == 1e-3 and hp.warmup_frac == 0.05
    assert hp.tokens == 100000 and hp.batch_size == 8
    assert dict(data.train_mix) == pytest.approx(weights)
    assert dict(data.eval_mix) == pytest.approx({"code": 0.25, "prose": 0.25, "notes": 0.5})
    fixed = setup_trial(rung, {"lr": 1e-3}, {"mix": {"code": 3, "prose": 1}}, exp.data)
    assert dict(fixed.train_mix) == {"code": 0.75, "prose": 0.25}


def test_materialize_loads_the_mixture(tmp_path):
    exp = load_experiment(write(tmp_path))
    _, _, data = materialize(exp.rungs[0], {"lr": 1e-3, "mix.prose": 0.0, "mix.notes": 0.0},
                             {}, exp.data.__class__(domains=("notes",)), load=True)
    assert type(data).__name__ == "MixtureData" and set(data.train_mix) == {"notes"}


BAD = [
    # (replace this, with this, key expected in the message, value expected in the message)
    ('[budget]', '[budgett]', "budgett", None),
    ('lr = {{ low = 1e-4,', 'lr = {{ lo = 1e-4, low = 1e-4,', "search.box.lr.lo", None),
    ('lr = {{ low = 1e-4, high = 1e-1, log = true }}', 'lr = {{ low = 0.1, high = 0.01, log = true }}',
     "search.box.lr.low", "0.1"),
    ('lr = {{ low = 1e-4, high = 1e-1, log = true }}', 'lr = {{ low = 0.0, high = 0.1, log = true }}',
     "search.box.lr.low", "0.0"),
    ('n_experts = {{ choices = [4, 8] }}', 'n_exprts = {{ choices = [4, 8] }}', "search.box.n_exprts", "n_exprts"),
    ('warmup_frac = 0.05', 'warmup_fraction = 0.05', "search.fixed.warmup_fraction", "warmup_fraction"),
    ('domains = ["code", "prose", "notes"]', 'domains = ["code", "poetry"]', "data.domains[1]", "poetry"),
    ('[[ladder.rungs]]\nname = "r0"', 'preset = "no-such-ladder"\n[[ladder.rungz]]\nname = "r0"',
     "ladder", None),
    ('sampler = "tpe"', 'sampler = "tpe"', None, None),  # placeholder, replaced below
]


def _cases():
    cases = [c for c in BAD if c[2] is not None]
    cases.append(('trials_per_rung = 4', 'trials_per_rung = 4\nsampler = "cmaes"', "search.sampler", "cmaes"))
    cases.append(('[ladder]\n[[ladder.rungs]]', '[ladder]\npreset = "nope"\nsubset = ["w32"]\n[[ladder.rungs]]',
                  "ladder", None))
    cases.append(('warmup_frac = 0.05', 'warmup_frac = 1.5', "search.fixed", "warmup_frac"))
    cases.append(('top_k = 1', 'top_k = 6', "ladder.rungs[0]", "top_k"))
    return cases


@pytest.mark.parametrize("old,new,key,value", _cases())
def test_bad_file_names_key_and_value_and_creates_nothing(tmp_path, capsys, old, new, key, value):
    text = BASE
    assert old in text, old
    path = write(tmp_path, text.replace(old, new, 1))
    with pytest.raises(ExperimentError) as info:
        load_experiment(path)
    message = str(info.value)
    assert message.startswith(key), message
    if value is not None:
        assert value in message, message
    assert main(["sweep", str(path), "--no-progress"]) != 0
    assert key in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()


def test_bad_preset_names_the_preset(tmp_path):
    text = BASE.replace('[ladder]\n[[ladder.rungs]]', '[ladder]\npreset = "no-such-ladder"\n[[ladder.rungs_unused]]')
    path = write(tmp_path, text.split("[[ladder.rungs_unused]]")[0] + "[target]" + text.split("[target]")[1])
    with pytest.raises(ExperimentError, match=r"^ladder.preset: .*no-such-ladder"):
        load_experiment(path)


@pytest.mark.parametrize("storage,needle", [
    ('storage = "postgresql://nobody@127.0.0.1:1/none"', "unreachable"),
    ('storage = "sqlite:///exp.toml/trials.db"', "writable folder"),
    ('storage = "mongodb://x"', "not supported"),
])
def test_unreachable_storage(tmp_path, capsys, storage, needle):
    path = write(tmp_path, storage=storage)
    with pytest.raises(ExperimentError, match=rf"^experiment.storage: .*{needle}"):
        load_experiment(path)
    assert main(["sweep", str(path), "--no-progress"]) == 2
    assert "experiment.storage" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()


def test_existing_non_database_is_refused(tmp_path):
    (tmp_path / "junk.db").write_text("not a database" * 100)
    path = write(tmp_path, storage='storage = "sqlite:///junk.db"')
    with pytest.raises(ExperimentError, match="experiment.storage"):
        load_experiment(path)
    assert (tmp_path / "junk.db").read_text().startswith("not a database")


def test_invalid_toml(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text("[experiment\nname=1")
    with pytest.raises(ExperimentError, match="not valid TOML"):
        load_experiment(path)
