"""The prepared accelerator check (``benchmarks/accelerator_check.py``) in its reduced mode on the
CPU: it runs every part and writes one JSON whose figures are consistent with each other."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("jax")

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "accelerator_check.py"


@pytest.mark.slow
def test_the_reduced_check_runs_every_part_and_writes_its_figures(tmp_path):
    spec = importlib.util.spec_from_file_location("accelerator_check", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.main(["--out", str(tmp_path), "--reduced", "--steps", "3"])
    doc = json.loads((tmp_path / "accelerator_check.json").read_text())
    assert doc["reduced"] and doc["torch"] and doc["jax"]
    # bf16 in the two frameworks from the same weights and batches (tests/test_precision_devices)
    assert len(doc["parity"]["torch_losses"]) == len(doc["parity"]["jax_losses"]) == 3
    assert doc["parity"]["max_rel_diff"] <= 2e-2
    assert doc["peak"]["torch_bf16_flops"] > 0 and doc["peak"]["jax_bf16_flops"] > 0
    assert [r["rung"] for r in doc["steps"]] == ["w16", "w24"]
    for row in doc["steps"]:
        for fw in ("torch", "jax"):
            tokens = row["batch_size"] * 128
            assert row[f"{fw}_tokens_per_s"] == pytest.approx(tokens / row[f"{fw}_step_s"])
            assert 0 < row[f"{fw}_mfu"] < 1
        assert row["micro_batches"] == 1 and row["checkpoint"] is False   # the host: no plan
    g = doc["grouped_vs_loop"]
    assert g["loop_over_fast"] > 0 and g["fast_step_s"] > 0
