"""Ladder presets: valid, growing, in the stated ranges, budgets by the documented token rule,
and the CPU rungs' estimated training time within minutes."""

from __future__ import annotations

import math

import pytest

from proxy import ladder as L
from proxy.config import ModelConfig
from proxy.flops import param_counts, train_flops_per_token
from proxy.parametrization import forward_multipliers, param_rules

# A conservative model of the torch fast path on two CPU cores (measured with `ladder bench`
# and `ladder train`: the largest rung's step sustains ~100 GFLOP/s of model FLOPs at best and
# a step of the smallest, overhead-bound rung takes ~0.03-0.06 s):
#   time = FIXED_S + steps * STEP_OVERHEAD_S + tokens * train_flops_per_token / FLOP_S
FLOP_S = 60e9          # model FLOP/s, ~60% of the best measured, 25% of the 2-core matmul peak
STEP_OVERHEAD_S = 0.06  # per-step Python/dispatch/data overhead
FIXED_S = 8.0           # start-up, model build, data loading, evaluation
CPU_LIMIT_S = 420.0     # seven minutes a trial: the largest rung, at >= 1024 steps


def _rule(n: int) -> int:
    """The token rule, written out independently of proxy.ladder's code."""
    if n >= 20_000_000:
        raw = 20.0 * n
    else:
        raw = max(1_048_576, 1_240_000 * (n / 1_000_000) ** 0.1)
    return math.ceil(raw / 8192) * 8192


def test_every_ladder_and_target_is_valid():
    assert set(L.ladder_names()) >= {"cpu", "cpu-mup", "gpu", "gpu-mup"}
    for name in L.ladder_names():
        ladder = L.get_ladder(name)
        assert ladder.name == name and ladder.description
        for rung in ladder.rungs:
            assert ModelConfig.from_dict(rung.config.to_dict()) == rung.config
            assert rung.tokens > 0 and rung.batch_size > 0 and rung.steps >= 100
    for name in L.target_names():
        target = L.get_target(name)
        assert ModelConfig.from_dict(target.config.to_dict()) == target.config


def test_unknown_names_are_refused_by_name():
    with pytest.raises(ValueError, match="'tpu'"):
        L.get_ladder("tpu")
    with pytest.raises(ValueError, match="'moe-1t'"):
        L.get_target("moe-1t")
    with pytest.raises(ValueError, match="'w1024'.*w32"):
        L.get_ladder("cpu").rung("w1024")
    with pytest.raises(ValueError, match="Rung.tokens"):
        L.Rung("x", L.get_ladder("cpu").rungs[0].config, 0, 8)


@pytest.mark.parametrize("name", ["cpu", "gpu"])
def test_rungs_grow_in_every_size_measure(name):
    rungs = L.get_ladder(name).rungs
    for small, big in zip(rungs, rungs[1:]):
        a, b = param_counts(small.config), param_counts(big.config)
        assert b.total > a.total and b.active > a.active
        assert train_flops_per_token(big.config) > train_flops_per_token(small.config)
        assert big.tokens >= small.tokens


def test_cpu_ladder_shape_and_range():
    rungs = L.get_ladder("cpu").rungs
    assert len(rungs) >= 5
    totals = [param_counts(r.config).total for r in rungs]
    assert 0.02e6 <= totals[0] <= 0.04e6       # about 0.03M
    assert 4.0e6 <= totals[-1] <= 6.0e6        # about 5M
    for r in rungs:
        c = r.config
        assert (c.n_layers, c.head_dim, c.n_experts, c.top_k, c.seq_len) == (4, 16, 8, 2, 128)
        # head size 16 throughout: the narrowest rungs (w16, w20, w24) have one head, the rest d/16
        assert c.n_heads == max(1, c.d_model // 16) and c.d_expert == c.d_model
        assert c.n_heads * c.head_dim == c.d_model or c.d_model < 32
        assert c.parametrization == "sp" and c.base_d_model == 32
    # Hand check of w32: 4 blocks of (4 d^2 attention + 2 d norms + 8 d router
    # + 8 experts * 2 d^2) plus embedding, final norm and readout, d = 32, V = 256:
    assert param_counts(L.get_ladder("cpu").rung("w32").config).total == 4 * (4 * 32**2 + 2 * 32 + 8 * 32 + 16 * 32**2) + 256 * 32 + 32 + 32 * 256


def test_mup_ladders_are_the_same_rungs_under_mup():
    for base in ("cpu", "gpu"):
        sp, mup = L.get_ladder(base), L.get_ladder(f"{base}-mup")
        assert sp.rung_names() == mup.rung_names()
        for a, b in zip(sp.rungs, mup.rungs):
            assert b.config == a.config.replace(parametrization="mup")
            assert (a.tokens, a.batch_size) == (b.tokens, b.batch_size)
    # At the base width muP is exactly SP (width multiplier 1, attention scale 1/sqrt(16)).
    sp0, mup0 = L.get_ladder("cpu").rung("w32").config, L.get_ladder("cpu-mup").rung("w32").config
    assert forward_multipliers(sp0) == forward_multipliers(mup0)
    assert param_rules(sp0) == param_rules(mup0)
    assert forward_multipliers(L.get_ladder("cpu-mup").rungs[-1].config).readout == 32 / 256


@pytest.mark.parametrize("name", ["cpu", "cpu-mup", "gpu", "gpu-mup"])
def test_budgets_obey_the_token_rule(name):
    for rung in L.get_ladder(name).rungs:
        n = param_counts(rung.config).active_non_embedding
        assert rung.tokens == _rule(n) == L.default_tokens(rung.config), rung.name
    for target in map(L.get_target, L.target_names()):
        assert target.tokens == _rule(param_counts(target.config).active_non_embedding)


def test_token_rule_values_by_hand():
    cpu = L.get_ladder("cpu")
    # w32: N = 42,272; 1,240,000 * 0.042272^0.1 = 903,706 < floor -> 1,048,576 (128 x 8192)
    assert cpu.rung("w32").tokens == 1_048_576
    # w256: N = 2,173,184; 1,240,000 * 2.173184^0.1 = 1,340,082 -> 164 x 8192 = 1,343,488
    assert param_counts(cpu.rung("w256").config).active_non_embedding == 2_173_184
    assert cpu.rung("w256").tokens == 1_343_488
    # gpu rungs: 20 tokens per active non-embedding parameter, rounded up to 8192.
    for rung in L.get_ladder("gpu").rungs:
        n = param_counts(rung.config).active_non_embedding
        assert 20 * n <= rung.tokens < 20 * n + 8192


def test_cpu_rungs_fit_minutes_on_the_cpu():
    for rung in L.get_ladder("cpu").rungs:
        estimate = (FIXED_S + rung.steps * STEP_OVERHEAD_S
                    + rung.tokens * train_flops_per_token(rung.config) / FLOP_S)
        assert estimate <= CPU_LIMIT_S, (rung.name, estimate)


def test_gpu_ladder_and_targets_span_the_stated_sizes():
    gpu = [param_counts(r.config).active for r in L.get_ladder("gpu").rungs]
    assert 10e6 <= gpu[0] <= 100e6 and 0.5e9 <= gpu[-1] <= 1.5e9
    cpu_largest = param_counts(L.get_ladder("cpu").rungs[-1].config)
    cpu_target = param_counts(L.get_target("cpu-target").config)
    assert cpu_target.total >= 3 * cpu_largest.total
    moe7 = param_counts(L.get_target("moe-7b").config)
    assert 1e9 <= moe7.active <= 2e9 and 6e9 <= moe7.total <= 8e9
    moe30 = param_counts(L.get_target("moe-30b").config)
    assert 2e9 <= moe30.active <= 4e9 and 25e9 <= moe30.total <= 35e9


def test_middle_rung():
    assert L.get_ladder("cpu").middle.name == "w48"   # the lower middle of ten
