"""ModelConfig and TrainHParams: every bad field is refused with its name and value; the
dict forms round-trip exactly and refuse unknown fields."""

from __future__ import annotations

import dataclasses
import json
import math

import pytest

from proxy.config import ModelConfig
from proxy.hparams import TrainHParams

BASE = dict(d_model=32, n_layers=2, n_heads=2, head_dim=16, n_experts=4, top_k=2, d_expert=32)

# (field, bad value): one or more per field; every field of both dataclasses that can be bad.
BAD_CONFIG = [
    ("d_model", 0), ("d_model", -8), ("d_model", 32.0), ("d_model", True),
    ("n_layers", 0), ("n_heads", 0), ("head_dim", 0), ("head_dim", 7), ("n_experts", 0),
    ("top_k", 0), ("top_k", 5), ("d_expert", 0), ("seq_len", 0), ("vocab_size", 0),
    ("vocab_size", "256"), ("name", 3),
    ("n_shared_experts", -1), ("n_dense_layers", -1), ("n_dense_layers", 3), ("d_dense_ff", -1),
    ("renormalize", 1), ("capacity_factor", 0.0), ("capacity_factor", -1.0),
    ("capacity_factor", math.inf), ("capacity_factor", math.nan), ("capacity_factor", "1.25"),
    ("bias_balancing", "yes"), ("bias_update_rate", 0.0), ("bias_update_rate", math.nan),
    ("norm_eps", 0.0), ("norm_eps", -1e-6), ("rope_theta", 0.0), ("rope_theta", math.inf),
    ("init_std", 0.0), ("init_std", True), ("parametrization", "ntk"), ("parametrization", "SP"),
    ("base_d_model", -1), ("base_head_dim", -2), ("depth_scaling", None), ("readout_zero_init", 1), ("base_n_layers", -1),
]

BAD_HPARAMS = [
    ("lr", 0.0), ("lr", -1e-3), ("lr", math.nan), ("lr", math.inf), ("lr", "3e-3"),
    ("aux_loss_coef", -0.1), ("aux_loss_coef", math.nan), ("z_loss_coef", -1e-3),
    ("init_scale", 0.0), ("init_scale", -1.0), ("warmup_frac", -0.1), ("warmup_frac", 1.5),
    ("weight_decay", -0.1), ("batch_size", 0), ("batch_size", 4.0), ("batch_size", True),
    ("tokens", -1), ("tokens", 1.5), ("schedule", "linear"), ("decay_frac", 1.1),
    ("min_lr_frac", -0.5), ("grad_clip", -1.0), ("clip_eps", 0.0), ("beta1", 1.5),
    ("beta2", -0.1), ("adam_eps", 0.0), ("divergence_loss", -1.0), ("eval_batches", 0),
    ("log_points", 1), ("log_points", 64.0),
]


def _message_names(exc: Exception, owner: str, field: str, value: object) -> None:
    text = str(exc)
    assert f"{owner}.{field}" in text, text
    assert repr(value) in text, text


@pytest.mark.parametrize(("field", "value"), BAD_CONFIG)
def test_bad_model_config_field_is_named_with_its_value(field, value):
    with pytest.raises((ValueError, TypeError)) as info:
        ModelConfig(**{**BASE, field: value})
    _message_names(info.value, "ModelConfig", field, value)


@pytest.mark.parametrize(("field", "value"), BAD_HPARAMS)
def test_bad_hparams_field_is_named_with_its_value(field, value):
    with pytest.raises((ValueError, TypeError)) as info:
        TrainHParams(**{field: value})
    _message_names(info.value, "TrainHParams", field, value)


def test_every_field_has_a_bad_value_case():
    # Guards the tables above: a field added later must get its refusal case here too.
    config_fields = {f.name for f in dataclasses.fields(ModelConfig)}
    assert config_fields == {f for f, _ in BAD_CONFIG}
    hparams_fields = {f.name for f in dataclasses.fields(TrainHParams)}
    assert hparams_fields == {f for f, _ in BAD_HPARAMS}


def test_valid_edge_values_are_accepted():
    ModelConfig(**{**BASE, "top_k": 4, "n_dense_layers": 2, "capacity_factor": 1, "head_dim": 2})
    TrainHParams(warmup_frac=0.0, weight_decay=0.0, grad_clip=0.0, min_lr_frac=1.0, beta1=0.0)


def test_model_config_round_trips_through_dict_and_json():
    config = ModelConfig(**BASE, seq_len=64, name="x", n_shared_experts=1, n_dense_layers=1,
                         d_dense_ff=48, renormalize=False, capacity_factor=1.25, bias_balancing=True,
                         parametrization="mup", base_d_model=16, depth_scaling=True, base_n_layers=1)
    assert ModelConfig.from_dict(config.to_dict()) == config
    assert ModelConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config
    assert ModelConfig.from_dict(ModelConfig(**BASE).to_dict()).capacity_factor is None


def test_hparams_round_trip_through_dict_and_json():
    hp = TrainHParams(lr=1.5e-3, schedule="wsd", tokens=12_288, batch_size=4, decay_frac=0.3)
    assert TrainHParams.from_dict(hp.to_dict()) == hp
    assert TrainHParams.from_dict(json.loads(json.dumps(hp.to_dict()))) == hp


@pytest.mark.parametrize("cls, data", [(ModelConfig, {**BASE, "n_expert": 8}),
                                       (TrainHParams, {"lr": 1e-3, "learning_rate": 1e-3})])
def test_unknown_field_is_rejected_by_name(cls, data):
    with pytest.raises(ValueError, match=r"unknown .* field\(s\): (n_expert|learning_rate)"):
        cls.from_dict(data)


def test_replace_validates_again():
    with pytest.raises(ValueError, match="ModelConfig.top_k"):
        ModelConfig(**BASE).replace(top_k=9)
    with pytest.raises(ValueError, match="TrainHParams.lr"):
        TrainHParams().replace(lr=-1.0)


def test_moe_layers_are_the_blocks_after_the_dense_ones():
    cfg = ModelConfig(d_model=32, n_layers=4, n_heads=2, head_dim=16, n_experts=4, top_k=2, d_expert=32,
                      n_dense_layers=1)
    assert cfg.moe_layers == (1, 2, 3) == tuple(i for i in range(4) if cfg.is_moe_layer(i))
    assert cfg.replace(n_dense_layers=0).moe_layers == (0, 1, 2, 3)
