"""Learning-rate transfer: the sweep's maths against known truth, and the real CPU sweep (slow)."""

from __future__ import annotations

import json
import math
from types import SimpleNamespace

import numpy as np
import pytest

from proxy.diagnostics.lr_transfer import LrTransferResult, best_log_lr, sweep

LRS = tuple(float(x) for x in np.geomspace(1e-3, 6.4e-2, 7))


def test_best_log_lr_is_the_vertex_of_a_parabola_in_log_lr():
    true = math.log(7.3e-3)
    losses = [2.0 + 0.3 * (math.log(lr) - true) ** 2 for lr in LRS]
    assert best_log_lr(LRS, losses) == pytest.approx(true, abs=1e-9)


def test_best_log_lr_stays_on_the_grid_at_an_edge_and_ignores_diverged_points():
    rising = [1.0 + i for i in range(len(LRS))]
    assert best_log_lr(LRS, rising) == pytest.approx(math.log(LRS[0]))
    falling_then_nan = [5.0 - i for i in range(len(LRS) - 1)] + [float("nan")]
    assert best_log_lr(LRS, falling_then_nan) == pytest.approx(math.log(LRS[-2]))


def _known_truth_train(optimum):
    """A stand-in backend: loss is a parabola in log lr around ``optimum(parametrization, width)``."""
    calls = []

    def train(config, hparams, data, seed):
        calls.append((config.parametrization, config.d_model, hparams.lr, seed))
        best = optimum(config.parametrization, config.d_model)
        noise = 1e-4 * seed          # the same for every lr, so it cannot move the vertex
        diverged = hparams.lr > 10 * best
        return SimpleNamespace(diverged=diverged,
                               final_loss=float("nan") if diverged else
                               3.0 + 0.2 * (math.log(hparams.lr) - math.log(best)) ** 2 + noise)

    return train, calls


def test_sweep_recovers_known_optima_and_their_shift():
    # SP: optimum proportional to 1/width (Adam hidden-weight rule); muP: constant.
    def optimum(p, w):
        return 0.02 * 32 / w if p == "sp" else 0.01

    train, calls = _known_truth_train(optimum)
    result = sweep(train, LRS, (32, 64, 128), seeds=(0, 1), data=object())
    assert len(calls) == 2 * 3 * len(LRS) * 2
    for w in (32, 64, 128):
        assert result.best_lr("sp", w) == pytest.approx(optimum("sp", w), rel=1e-6)
        assert result.best_lr("mup", w) == pytest.approx(0.01, rel=1e-6)
    assert result.shift("sp") == pytest.approx(4.0, rel=1e-6)
    assert result.shift("mup") == pytest.approx(1.0, rel=1e-6)
    assert result.seed_shifts("sp") == pytest.approx((4.0, 4.0), rel=1e-6)


def test_a_diverged_run_scores_its_threshold_and_never_looks_best():
    train, _ = _known_truth_train(lambda p, w: 2e-3)
    result = sweep(train, LRS, (32,), parametrizations=("sp",), data=object())
    losses = result.losses["sp"][32]
    assert all(math.isfinite(v) for v in losses)
    assert max(losses) > 5.0          # 1.5 ln(256) + 1 = 9.3 for the diverged ones
    assert result.best_lr("sp", 32) == pytest.approx(2e-3, rel=1e-6)


def test_result_round_trips_through_json():
    train, _ = _known_truth_train(lambda p, w: 0.004 * 64 / w)
    result = sweep(train, LRS, (32, 64), seeds=(0, 1), data=object())
    back = LrTransferResult.from_dict(json.loads(json.dumps(result.to_dict())))
    assert back == result


@pytest.mark.parametrize("kwargs, message", [
    (dict(widths=(40,)), "not rungs of the cpu ladder"),
    (dict(lrs=(1e-3, -1.0)), "positive and finite"),
    (dict(workers=0), "workers must be >= 1"),
    (dict(workers=2), "pass train=None"),
])
def test_bad_sweep_arguments_are_named(kwargs, message):
    train, _ = _known_truth_train(lambda p, w: 1e-3)
    args = dict(lrs=LRS, widths=(32,)) | kwargs
    with pytest.raises(ValueError, match=message):
        sweep(train, args.pop("lrs"), args.pop("widths"), data=object(), **args)


def _pdf_pages(path) -> int:
    import re
    return len(re.findall(rb"/Type\s*/Page\b", path.read_bytes()))


def test_lr_transfer_figure_is_written_as_png_and_one_pdf_page(tmp_path):
    from reports.commands.lr_transfer import plot

    train, _ = _known_truth_train(lambda p, w: 0.02 * 32 / w if p == "sp" else 0.01)
    result = sweep(train, LRS, (32, 64, 128), data=object())
    plot(result, tmp_path / "f.png", tmp_path / "f.pdf")
    assert (tmp_path / "f.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert _pdf_pages(tmp_path / "f.pdf") == 1


def test_coordcheck_figure_is_written_as_png_and_one_pdf_page(tmp_path):
    from proxy.diagnostics.coordcheck import CoordCheckResult, CoordCheckSettings, module_names
    from reports.commands.coordcheck import plot

    settings = CoordCheckSettings(parametrization="sp", n_widths=3, steps=3, seeds=(0,))
    widths = np.asarray(settings.widths, dtype=float)
    modules = module_names(settings.config(settings.widths[0]))
    # Every module grows as width^0.5 at every step: the fitted slopes must come back as 0.5.
    records = {m: np.broadcast_to((widths ** 0.5)[None, :, None], (1, 3, 3)).copy() for m in modules}
    result = CoordCheckResult.from_records(settings, "torch", records)
    assert all(s == pytest.approx(0.5) for m in modules for s in result.slopes[m])
    plot(result, tmp_path / "c.png", tmp_path / "c.pdf")
    assert (tmp_path / "c.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert _pdf_pages(tmp_path / "c.pdf") == 1


@pytest.mark.slow
def test_ladder_lr_transfer_trains_real_rungs_and_mup_equals_sp_at_the_base_width(tmp_path):
    """The command end to end on real torch training (2 worker processes, 32 steps a run).

    Reference: at m = 1 muP is SP (same init, multipliers 1), so every w32 loss must be
    bit-identical between the two; at w64 the table changes training, so they must differ.
    """
    from reports.cli import main

    code = main(["lr-transfer", "--widths", "32", "64", "--lr-min", "2e-3", "--lr-max", "8e-3",
                 "--points", "3", "--tokens", "32768", "--seeds", "1", "--workers", "2",
                 "--out", str(tmp_path)])
    assert code in (0, 1)                  # 1 = muP's best lr moved 2x or more (reported, not raised)
    data = json.loads((tmp_path / "lr_transfer_torch.json").read_text())
    result = LrTransferResult.from_dict(data)
    assert result.lrs == pytest.approx((2e-3, 4e-3, 8e-3))
    assert result.losses["mup"][32] == result.losses["sp"][32]
    assert result.losses["mup"][64] != result.losses["sp"][64]
    for p in ("sp", "mup"):
        for w in (32, 64):
            assert all(2.0 < v < math.log(256) for v in result.losses[p][w])   # trained, not diverged
    assert (tmp_path / "lr_transfer_torch.png").stat().st_size > 10_000
    assert _pdf_pages(tmp_path / "lr_transfer_torch.pdf") == 1


@pytest.mark.slow
def test_the_sweep_gives_the_same_losses_in_torch_and_jax():
    """Reference: the other framework. 16 steps a run, both parametrizations, widths 32 and 64."""
    kwargs = dict(tokens=16_384, seeds=(0,), workers=1)
    torch_run = sweep(None, (2e-3, 8e-3), (32, 64), backend="torch", **kwargs)
    jax_run = sweep(None, (2e-3, 8e-3), (32, 64), backend="jax", **kwargs)
    for p in ("sp", "mup"):
        for w in (32, 64):
            assert jax_run.losses[p][w] == pytest.approx(torch_run.losses[p][w], rel=1e-4), (p, w)


@pytest.mark.slow
def test_mup_keeps_the_best_lr_within_2x_where_sp_moves_further():
    """Issue acceptance on real training, the README figure's sweep: widths 32/64/128 of the cpu
    ladder at 128 steps of 8 x 128 tokens (the ladder's budget when the figure was made; its
    default is now 8x longer), 8 learning rates 5e-4..6.4e-2, 2 seeds, 2 worker processes of one
    thread each (about 15 minutes on two cores). The best lr (seed mean) moves less than 2x
    under muP and further under SP. Single seeds move more (docs, "Learning-rate transfer"):
    the claim is about the seed mean, and the test holds it to that."""
    lrs = tuple(float(x) for x in np.geomspace(5e-4, 6.4e-2, 8))
    result = sweep(None, lrs, (32, 64, 128), tokens=131_072, seeds=(0, 1), backend="torch", workers=2,
                   threads=1)
    assert result.shift("mup") < 2.0, result.to_dict()["best_lr"]
    assert result.shift("sp") > result.shift("mup"), result.to_dict()["best_lr"]
