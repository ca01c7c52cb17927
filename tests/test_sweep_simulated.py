"""The simulated backend against its own documented truth."""

from __future__ import annotations

import math

import numpy as np
import pytest

from proxy.backends import load_backend
from proxy.config import ModelConfig
from proxy.flops import param_counts, train_flops
from proxy.hparams import TrainHParams
from proxy.backends.simulated import KnobTruth, SimulatedTruth

SMALL = ModelConfig(d_model=64, n_layers=2, n_heads=2, head_dim=32, n_experts=4, top_k=1, d_expert=128)
LARGE = ModelConfig(d_model=256, n_layers=4, n_heads=8, head_dim=32, n_experts=4, top_k=1, d_expert=512)
sim = load_backend("simulated")


def _loss(config, truth, **hp):
    r = sim.train(config, TrainHParams(tokens=200_000, **hp), None, 0, truth=truth)
    return r


@pytest.mark.parametrize("config", [SMALL, LARGE])
def test_lr_optimum_follows_the_power_law(config):
    truth = SimulatedTruth(lr=3e-3, lr_gamma=-0.4, n0=1e5)
    n = param_counts(config).active
    expected = 3e-3 * (n / 1e5) ** -0.4
    grid = np.geomspace(expected / 8, expected * 3.9, 301)
    losses = [_loss(config, truth, lr=float(lr)).final_loss for lr in grid]
    best = grid[int(np.argmin(losses))]
    assert abs(math.log(best / expected)) < math.log(grid[1] / grid[0])
    # Basin curvature: a factor e off costs exactly lr_curvature nats.
    at_opt = truth.loss(config, TrainHParams(lr=expected, tokens=200_000))
    off = truth.loss(config, TrainHParams(lr=expected / math.e, tokens=200_000))
    assert off - at_opt == pytest.approx(truth.lr_curvature, rel=1e-9)


def test_floor_is_the_power_law_in_size():
    truth = SimulatedTruth(floor_e=1.2, floor_a=30.0, floor_alpha=0.25)
    for config in (SMALL, LARGE):
        n = param_counts(config).active
        r = _loss(config, truth, lr=truth.optimum("lr", n))
        assert r.final_loss == pytest.approx(1.2 + 30.0 * n ** -0.25, rel=1e-12)


def test_divergence_wall_and_step():
    truth = SimulatedTruth(wall_factor=4.0)
    opt = truth.optimum("lr", param_counts(SMALL).active)
    assert not _loss(SMALL, truth, lr=opt * 3.99).diverged
    a = _loss(SMALL, truth, lr=opt * 4.01)
    b = _loss(SMALL, truth, lr=opt * 40)
    assert a.diverged and b.diverged and math.isnan(a.final_loss)
    assert 1 <= b.diverged_step < a.diverged_step <= a.steps


def test_other_knob_optimum_and_bend():
    truth = SimulatedTruth(knobs={"aux_loss_coef": KnobTruth(optimum=1e-2, gamma=0.5, curvature=0.05)},
                           bend_params=1e5, bend_gamma=-0.5, n0=1e4)
    n = param_counts(LARGE).active
    opt = 1e-2 * (n / 1e4) ** 0.5
    lr = truth.optimum("lr", n)
    base = _loss(LARGE, truth, lr=lr, aux_loss_coef=opt).final_loss
    assert _loss(LARGE, truth, lr=lr, aux_loss_coef=opt * 2).final_loss > base
    assert _loss(LARGE, truth, lr=lr, aux_loss_coef=opt / 2).final_loss > base
    # Above the bend the optimum leaves the straight power law by (N / bend)^bend_gamma.
    straight = truth.lr * (n / truth.n0) ** truth.lr_gamma
    assert lr == pytest.approx(straight * (n / 1e5) ** -0.5, rel=1e-12)


def test_noise_is_deterministic_per_seed_and_has_the_set_sd():
    truth = SimulatedTruth(noise_sd=0.02)
    hp = TrainHParams(lr=1e-3, tokens=200_000)
    a = sim.train(SMALL, hp, None, 3, truth=truth)
    b = sim.train(SMALL, hp, None, 3, truth=truth)
    assert a.final_loss == b.final_loss
    draws = np.array([sim.train(SMALL, hp, None, s, truth=truth).final_loss for s in range(400)])
    clean = truth.loss(SMALL, hp)
    assert abs(draws.mean() - clean) < 4 * 0.02 / math.sqrt(400)
    assert draws.std() == pytest.approx(0.02, rel=0.15)


def test_result_fields_and_truth_via_data():
    truth = SimulatedTruth(floor_e=2.0)
    r = sim.train(SMALL, TrainHParams(lr=1e-3, tokens=100_000), truth, 1)
    assert r.backend == "simulated" and r.seed == 1
    assert r.flops == pytest.approx(train_flops(SMALL, r.tokens))
    assert r.params_active == param_counts(SMALL).active
    assert r.final_loss > 2.0
    assert sum(r.expert_load.fractions[0]) == pytest.approx(1.0)


def test_eval_mix_and_mix_penalty():
    class Weights:
        train_mix = {"code": 0.5, "prose": 0.5}
        eval_mix = {"code": 0.25, "prose": 0.75}

    truth = SimulatedTruth(domain_offsets={"code": 0.1}, mix_optimum={"code": 1.0, "prose": 1.0},
                           mix_curvature=1.0)
    r = sim.train(SMALL, TrainHParams(lr=1e-3, tokens=100_000), Weights(), 0, truth=truth)
    assert r.eval_loss_by_domain["code"] - r.eval_loss_by_domain["prose"] == pytest.approx(0.1)
    assert r.final_loss == pytest.approx(0.25 * r.eval_loss_by_domain["code"] + 0.75 * r.eval_loss_by_domain["prose"])

    class Skewed(Weights):
        train_mix = {"code": 0.9, "prose": 0.1}

    skew = sim.train(SMALL, TrainHParams(lr=1e-3, tokens=100_000), Skewed(), 0, truth=truth)
    kl = 0.5 * math.log(0.5 / 0.9) + 0.5 * math.log(0.5 / 0.1)
    assert skew.final_loss - r.final_loss == pytest.approx(kl, rel=1e-9)


def test_bad_truth_is_rejected():
    with pytest.raises(ValueError, match="wall_factor"):
        SimulatedTruth(wall_factor=0.5)
    with pytest.raises(ValueError, match="unknown knob"):
        SimulatedTruth(knobs={"bogus": KnobTruth(optimum=1.0)})
