"""Parameter table, counts and FLOPs against a hand calculation; the lr schedule at chosen steps."""

from __future__ import annotations

import math

import pytest

from proxy.config import ModelConfig
from proxy.flops import (attention_flops_per_token, forward_flops_per_token, param_counts,
                         train_flops, train_flops_per_token)
from proxy.hparams import TrainHParams, divergence_threshold, lr_at
from proxy.naming import buffer_specs, parameter_specs

# A small model with one dense leading layer and a shared expert beside the routed ones:
# d = 8, 2 layers, 2 heads of 4 (d_attn = 8), 4 experts of width 6, top-2, 1 shared expert,
# dense MLP width 4 d = 32, vocabulary 16, context 10.
SMALL = ModelConfig(d_model=8, n_layers=2, n_heads=2, head_dim=4, n_experts=4, top_k=2,
                    d_expert=6, n_shared_experts=1, n_dense_layers=1, vocab_size=16, seq_len=10)

# By hand:
#   embed.tokens                  16 x 8                              = 128
#   block 0 (dense): 2 norms 2*8 = 16; q, k, v 3*8*8 = 192; o 8*8 = 64;
#                    mlp 8*32 + 32*8 = 512                            -> 784
#   block 1 (MoE):   norms 16; attention 256; router 8*4 = 32;
#                    routed w_in 4*8*6 = 192, w_out 4*6*8 = 192;
#                    shared w_in 1*8*6 = 48, w_out 48                 -> 784
#   final_norm 8; readout 8 x 16 = 128
#   total  = 128 + 784 + 784 + 8 + 128                                = 1832
#   active = total - routed experts not chosen = 1832 - (384 - 384*2/4) = 1640
#   active non-embedding = 1640 - 128                                 = 1512
#   attention FLOPs per token, forward: 2 * n_layers * seq_len * d_attn = 2*2*10*8 = 320
#   forward FLOPs per token: 2 * 1512 + 320 = 3344; training: 3 * 3344 = 10032
HAND_TOTAL, HAND_ACTIVE, HAND_EMBED = 1832, 1640, 128
HAND_FORWARD, HAND_TRAIN = 3344.0, 10032.0


def test_parameter_table_names_shapes_roles():
    specs = {s.name: s for s in parameter_specs(SMALL)}
    expected = {
        "embed.tokens": ((16, 8), "embedding", 16),
        "blocks.0.attn_norm.scale": ((8,), "norm", 1),
        "blocks.0.attn.w_q": ((8, 8), "attention", 8),
        "blocks.0.attn.w_o": ((8, 8), "attention", 8),
        "blocks.0.mlp.w_in": ((8, 32), "mlp", 8),
        "blocks.0.mlp.w_out": ((32, 8), "mlp", 32),
        "blocks.1.moe.router": ((8, 4), "router", 8),
        "blocks.1.moe.w_in": ((4, 8, 6), "expert", 8),
        "blocks.1.moe.w_out": ((4, 6, 8), "expert", 6),
        "blocks.1.moe.shared_w_in": ((1, 8, 6), "expert", 8),
        "blocks.1.moe.shared_w_out": ((1, 6, 8), "expert", 6),
        "final_norm.scale": ((8,), "norm", 1),
        "readout.w": ((8, 16), "readout", 8),
    }
    for name, (shape, role, fan_in) in expected.items():
        assert (specs[name].shape, specs[name].role, specs[name].fan_in) == (shape, role, fan_in), name
    assert "blocks.0.moe.router" not in specs and "blocks.1.mlp.w_in" not in specs
    assert len(specs) == 1 + 8 + 11 + 2  # embed, dense block, MoE block, final norm + readout
    assert sum(s.size for s in parameter_specs(SMALL)) == HAND_TOTAL


def test_counts_match_hand_calculation():
    counts = param_counts(SMALL)
    assert (counts.total, counts.active, counts.embedding) == (HAND_TOTAL, HAND_ACTIVE, HAND_EMBED)
    assert counts.active_non_embedding == HAND_ACTIVE - HAND_EMBED
    assert counts.total_non_embedding == HAND_TOTAL - HAND_EMBED


def test_active_count_follows_top_k():
    # Each extra chosen expert adds one expert's w_in + w_out (2 * 8 * 6 = 96) per MoE layer.
    for k in range(1, 5):
        assert param_counts(SMALL.replace(top_k=k)).active == HAND_TOTAL - 384 + 96 * k
    assert param_counts(SMALL.replace(top_k=4)).active == HAND_TOTAL


def test_flops_match_hand_calculation():
    assert attention_flops_per_token(SMALL) == 320.0
    assert forward_flops_per_token(SMALL) == HAND_FORWARD
    assert train_flops_per_token(SMALL) == HAND_TRAIN
    assert train_flops(SMALL, 1000) == 1000 * HAND_TRAIN


def test_bias_buffers_only_on_moe_layers_when_enabled():
    assert buffer_specs(SMALL) == ()
    buffers = buffer_specs(SMALL.replace(bias_balancing=True))
    assert [(b.name, b.shape) for b in buffers] == [("blocks.1.moe.expert_bias", (4,))]


# lr schedule: lr = 1, floor 0.1, 100 steps, warmup round(0.1 * 100) = 10 steps.
HP = TrainHParams(lr=1.0, warmup_frac=0.1, min_lr_frac=0.1)


@pytest.mark.parametrize("schedule", ["constant", "cosine", "wsd"])
def test_warmup_is_linear_from_lr_over_warmup(schedule):
    hp = HP.replace(schedule=schedule)
    assert lr_at(0, 100, hp) == pytest.approx(0.1)   # (0 + 1) / 10
    assert lr_at(4, 100, hp) == pytest.approx(0.5)   # (4 + 1) / 10
    assert lr_at(9, 100, hp) == pytest.approx(1.0)   # end of warmup reaches the peak


def test_constant_schedule():
    assert lr_at(10, 100, HP.replace(schedule="constant")) == 1.0
    assert lr_at(99, 100, HP.replace(schedule="constant")) == 1.0


def test_cosine_schedule_by_hand():
    hp = HP.replace(schedule="cosine")
    assert lr_at(10, 100, hp) == pytest.approx(1.0)  # progress 0 just after warmup
    assert lr_at(99, 100, hp) == pytest.approx(0.1)  # last step = floor
    # 101 steps: warmup round(10.1) = 10, span 101 - 10 - 1 = 90; step 55 is progress 0.5:
    # 0.1 + 0.9 * 0.5 * (1 + cos(pi / 2)) = 0.55
    assert lr_at(55, 101, hp) == pytest.approx(0.55)
    # step 32 of 101: progress 22/90, 0.1 + 0.45 * (1 + cos(22 pi / 90))
    assert lr_at(32, 101, hp) == pytest.approx(0.1 + 0.45 * (1 + math.cos(22 * math.pi / 90)))


def test_wsd_schedule_by_hand():
    hp = HP.replace(schedule="wsd", decay_frac=0.2)  # decay over the last 20 steps: 80..99
    assert lr_at(10, 100, hp) == 1.0                 # plateau
    assert lr_at(50, 100, hp) == 1.0
    assert lr_at(79, 100, hp) == 1.0
    assert lr_at(80, 100, hp) == pytest.approx(1.0 - 0.9 * 1 / 20)   # 0.955
    assert lr_at(89, 100, hp) == pytest.approx(1.0 - 0.9 * 10 / 20)  # 0.55
    assert lr_at(99, 100, hp) == pytest.approx(0.1)                  # ends on the floor


def test_no_warmup_and_single_step():
    hp = HP.replace(warmup_frac=0.0, schedule="cosine")
    assert lr_at(0, 100, hp) == pytest.approx(1.0)
    assert lr_at(0, 1, HP) == pytest.approx(1.0)  # warmup round(0.1) = 0; a lone step is at the peak


def test_divergence_threshold():
    assert divergence_threshold(TrainHParams(), 256) == pytest.approx(1.5 * math.log(256) + 1)
    assert divergence_threshold(TrainHParams(divergence_loss=7.0), 256) == 7.0
