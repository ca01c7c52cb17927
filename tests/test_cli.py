"""The `ladder` command line: help for every command and flag; `ladder train` end to end."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest

from proxy import TrainResult
from reports import cli
from reports.commands.train import read_result_json


def _subparsers() -> dict[str, argparse.ArgumentParser]:
    parser = cli.build_parser()
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


def _ladder_cmd() -> list[str]:
    exe = shutil.which("ladder", path=os.path.dirname(sys.executable))
    return [exe] if exe else [sys.executable, "-m", "reports.cli"]


def test_commands_are_registered():
    assert {"train", "bench", "demo"} <= set(cli.COMMAND_MODULES)
    assert {"train", "bench", "demo"} <= set(_subparsers())


def test_top_level_help_lists_every_command():
    out = subprocess.run(_ladder_cmd() + ["--help"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    for name in _subparsers():
        assert name in out.stdout


@pytest.mark.parametrize("command", ["train", "bench", "demo"])
def test_subcommand_help_mentions_every_flag(command, capsys):
    with pytest.raises(SystemExit) as info:
        cli.main([command, "--help"])
    assert info.value.code == 0
    text = capsys.readouterr().out
    parser = _subparsers()[command]
    flags = [s for a in parser._actions for s in a.option_strings]
    assert flags
    for flag in flags:
        assert flag in text, (command, flag)
    for action in parser._actions:
        # Every flag carries help text, not just a name.
        assert action.help and action.help != argparse.SUPPRESS, (command, action.dest)


def test_train_flags_are_those_documented():
    flags = {s for a in _subparsers()["train"]._actions for s in a.option_strings}
    assert {"--rung", "--lr", "--backend", "--ladder", "--tokens", "--batch-size", "--seed", "--json",
            "--dtype", "--aux-loss-coef", "--z-loss-coef", "--schedule", "--threads"} <= flags
    flags = {s for a in _subparsers()["bench"]._actions for s in a.option_strings}
    assert {"--backend", "--ladder", "--rungs", "--steps", "--batch-size", "--json"} <= flags


def test_bad_rung_is_a_clear_error(capsys):
    assert cli.main(["train", "--rung", "w7", "--lr", "1e-3"]) == 2
    err = capsys.readouterr().err
    assert "'w7'" in err and "w32" in err


def test_bad_tokens_is_a_clear_error(capsys):
    assert cli.main(["train", "--rung", "w32", "--lr", "1e-3", "--tokens", "-5"]) == 2
    assert "--tokens" in capsys.readouterr().err


@pytest.mark.slow
def test_train_end_to_end_writes_a_result_that_round_trips(tmp_path):
    path = tmp_path / "out" / "w32.json"
    cmd = _ladder_cmd() + ["train", "--rung", "w32", "--lr", "3e-3", "--tokens", "2048",
                           "--batch-size", "2", "--seed", "3", "--threads", "1", "--json", str(path)]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    for word in ("cpu/w32", "99,616 total", "eval loss", "code", "prose", "notes", "max/mean",
                 "tokens/s", "wall time", "diverged"):
        assert word in out.stdout, word
    data = json.loads(path.read_text())
    assert data["ladder"] == "cpu" and data["rung"] == "w32"
    prov = data["provenance"]
    assert prov["backend"] == "torch" and prov["seed"] == 3 and prov["toolkit_version"]
    assert "git_commit" in prov
    result = TrainResult.from_dict(data["result"])
    assert result.to_dict() == data["result"]
    assert (result.tokens, result.steps, result.seed, result.backend) == (2048, 8, 3, "torch")
    assert result.params_total == 99_616 and not result.diverged
    assert set(result.eval_loss_by_domain) == {"code", "prose", "notes"}
    # After 8 steps the model is still near the uniform predictor, ln 256 = 5.55 nats.
    assert 3.0 < result.final_loss < 6.5
    again, prov2 = read_result_json(path)
    assert again == result and prov2 == prov


_SIGTERM_PARENT = r"""
import argparse, multiprocessing as mp, sys, time
from reports import cli

def spawn_and_wait(args):
    child = mp.get_context("spawn").Process(target=time.sleep, args=(120,))
    child.start()
    print(child.pid, flush=True)
    time.sleep(120)
    return 0

def parser():
    p = argparse.ArgumentParser(prog="ladder")
    sub = p.add_subparsers(dest="command")
    sub.add_parser("work").set_defaults(func=spawn_and_wait)
    return p

if __name__ == "__main__":  # a spawned child imports this file too
    cli.build_parser = parser
    sys.exit(cli.main(["work"]))
"""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_sigterm_stops_the_worker_processes_too(tmp_path):
    # A SIGTERM reaches only the parent; without the handler its spawned workers would run on.
    script = tmp_path / "parent.py"
    script.write_text(_SIGTERM_PARENT)
    with subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True) as parent:
        child = None
        try:
            child = int(parent.stdout.readline())
            time.sleep(1.0)
            assert _alive(child)  # the child is up and sleeping, not dying on its own
            parent.send_signal(signal.SIGTERM)
            status = parent.wait(timeout=30)
            deadline = time.monotonic() + 10
            while _alive(child) and time.monotonic() < deadline:
                time.sleep(0.1)
            assert not _alive(child)
            assert status == 128 + signal.SIGTERM
            assert "terminated; worker processes stopped" in parent.stderr.read()
        finally:
            parent.kill()
            if child is not None and _alive(child):
                os.kill(child, signal.SIGKILL)  # never leave a sleeper behind, even on failure
