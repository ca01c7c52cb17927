"""The SP / muP table: its rules by hand, both frameworks applying it alike, and m = 1 identity."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest

from proxy.config import ModelConfig
from proxy.init import init_params
from proxy.naming import parameter_specs
from proxy.parametrization import forward_multipliers, param_rules


def _config(width: int, parametrization: str, base: int = 32, **kw) -> ModelConfig:
    return ModelConfig(d_model=width, n_layers=2, n_heads=width // 16, head_dim=16, n_experts=4, top_k=2,
                       d_expert=width, seq_len=8, parametrization=parametrization, base_d_model=base,
                       base_head_dim=16, **kw)


# Every role: a dense first layer (mlp), MoE with a shared expert (router, expert), attention,
# norms, embedding and readout.
ALL_ROLES = dict(n_dense_layers=1, n_shared_experts=1)


def test_m1_mup_equals_sp_in_the_table():
    sp, mup = _config(32, "sp", **ALL_ROLES), _config(32, "mup", **ALL_ROLES)
    assert mup.width_multiplier == 1.0
    assert param_rules(sp, 1.7) == param_rules(mup, 1.7)
    assert forward_multipliers(sp) == forward_multipliers(mup)


def test_mup_rules_by_hand_at_m4():
    """Tensor Programs V, Table 3 / the mup package: hidden init prop. to 1/sqrt(fan_in) and Adam
    lr 1/m (the router too, as the coordinate check decides); embedding as SP; readout std sigma,
    lr 1, forward multiplier 1/m; router logits unscaled."""
    cfg, sigma, m = _config(128, "mup", **ALL_ROLES), 0.02, 4.0
    rules = param_rules(cfg)
    base_fan_in = {"attention": 32, "expert": 32, "mlp": 32, "router": 32}
    for spec in parameter_specs(cfg):
        rule = rules[spec.name]
        if spec.role == "norm":
            assert (rule.init_std, rule.lr_mult, rule.weight_decay) == (0.0, 1.0, False)
        elif spec.role in ("attention", "expert", "mlp", "router"):
            assert rule.lr_mult == pytest.approx(1 / m)
            # std * sqrt(fan_in) is the same as at the base width (fan_in = base width there);
            # mlp.w_out has fan_in 4d, at base 4 * 32.
            base = base_fan_in[spec.role] * (spec.fan_in // cfg.d_model)
            assert rule.init_std * math.sqrt(spec.fan_in) == pytest.approx(sigma * math.sqrt(base))
        elif spec.role == "readout":
            assert (rule.init_std, rule.lr_mult, rule.weight_decay) == (sigma, 1.0, True)
        else:
            assert (spec.role, rule.init_std, rule.lr_mult, rule.weight_decay) == ("embedding", sigma, 1.0, False)
    fm = forward_multipliers(cfg)
    assert (fm.readout, fm.router, fm.residual) == (1 / m, 1.0, 1.0)
    assert fm.attention == pytest.approx(math.sqrt(16) / 16)


def test_sp_rules_do_not_depend_on_width():
    small, large = param_rules(_config(32, "sp")), param_rules(_config(128, "sp"))
    for name, rule in large.items():
        if name in small:
            assert rule == small[name]
    assert forward_multipliers(_config(128, "sp")).readout == 1.0


@pytest.mark.parametrize("parametrization", ["sp", "mup"])
def test_readout_zero_init_zeroes_the_readout_only(parametrization):
    plain = _config(128, parametrization, **ALL_ROLES)
    zero = plain.replace(readout_zero_init=True)
    rules, zero_rules = param_rules(plain), param_rules(zero)
    for name, rule in zero_rules.items():
        if name == "readout.w":
            assert rule == dataclasses.replace(rules[name], init_std=0.0)
        else:
            assert rule == rules[name]
    assert not init_params(zero, seed=0)["readout.w"].any()
    assert init_params(plain, seed=0)["readout.w"].std() > 0
    # At m = 1 the flag keeps muP and SP the same model.
    assert param_rules(_config(32, "sp", readout_zero_init=True)) == param_rules(
        _config(32, "mup", readout_zero_init=True))


def test_depth_rule_scales_residual_branches():
    cfg = _config(64, "mup").replace(n_layers=8, base_n_layers=2, depth_scaling=True)
    assert forward_multipliers(cfg).residual == pytest.approx(2 / 8)


def _torch_group_rules(cfg: ModelConfig) -> dict[str, tuple[float, bool]]:
    torch = pytest.importorskip("torch")
    from proxy.hparams import TrainHParams
    from proxy.backends.torch.model import TorchMoEModel
    from proxy.backends.torch.trainer import build_optimizer

    model = TorchMoEModel(cfg, dtype=torch.float64)
    hp = TrainHParams(weight_decay=0.1)
    opt = build_optimizer(model, hp)
    by_id = {id(p): n for n, p in model.named_parameters()}
    out = {}
    for group in opt.param_groups:
        for p in group["params"]:
            out[by_id[id(p)]] = (group["lr_mult"], group["weight_decay"] > 0)
    return out


def _jax_label_rules(cfg: ModelConfig) -> dict[str, tuple[float, bool]]:
    pytest.importorskip("jax")
    from proxy.backends.jax.model import flatten_named
    from proxy.backends.jax.trainer import optimizer_labels

    labels, groups = optimizer_labels(cfg)
    return {name: groups[label] for name, label in flatten_named(labels).items()}


@pytest.mark.parametrize("parametrization", ["sp", "mup"])
def test_frameworks_apply_the_same_multipliers(parametrization):
    cfg = _config(64, parametrization, **ALL_ROLES)
    names = {s.name for s in parameter_specs(cfg)}
    torch_rules, jax_rules = _torch_group_rules(cfg), _jax_label_rules(cfg)
    assert set(torch_rules) == set(jax_rules) == names
    table = param_rules(cfg)
    for name in names:
        expected = (table[name].lr_mult, table[name].weight_decay)
        assert torch_rules[name] == expected, name
        assert jax_rules[name] == expected, name
    if parametrization == "mup":  # the test can fail: muP really has two lr multipliers here
        assert {v[0] for v in torch_rules.values()} == {1.0, 0.5}


def _batches(n: int, cfg: ModelConfig, batch: int = 2) -> list[np.ndarray]:
    rng = np.random.default_rng(7)
    return [rng.integers(0, cfg.vocab_size, (batch, cfg.seq_len + 1)) for _ in range(n)]


def _torch_params_after(cfg: ModelConfig, batches: list[np.ndarray]) -> dict[str, np.ndarray]:
    torch = pytest.importorskip("torch")
    from proxy.hparams import TrainHParams
    from proxy.backends.torch.model import TorchMoEModel
    from proxy.backends.torch.trainer import build_optimizer, training_loss, update

    hp = TrainHParams(lr=1e-2, batch_size=batches[0].shape[0], schedule="constant", warmup_frac=0.0)
    model = TorchMoEModel(cfg, dtype=torch.float64, params=init_params(cfg, 3))
    opt = build_optimizer(model, hp)
    for step, b in enumerate(batches):
        loss, aux = training_loss(model, torch.as_tensor(b), hp)
        update(model, opt, loss, aux, step, len(batches), hp)
    return {n: p.detach().numpy().copy() for n, p in model.named_parameters()}


def _jax_params_after(cfg: ModelConfig, batches: list[np.ndarray]) -> dict[str, np.ndarray]:
    pytest.importorskip("jax")
    from proxy.hparams import TrainHParams, lr_at
    from proxy.backends.jax.model import flatten_named
    from proxy.backends.jax.trainer import compiled_step, hp_inputs, init_state

    hp = TrainHParams(lr=1e-2, batch_size=batches[0].shape[0], schedule="constant", warmup_frac=0.0)
    params, buffers, opt_state = init_state(cfg, hp, 3, "float64")
    step_fn = compiled_step(cfg, "fast")
    for step, b in enumerate(batches):
        out = step_fn(params, buffers, opt_state, np.asarray(b, np.int32),
                      hp_inputs(hp, cfg, lr_at(step, len(batches), hp)))
        params, buffers, opt_state = out[0], out[1], out[2]
    return {n: np.asarray(a) for n, a in flatten_named(params).items()}


@pytest.mark.parametrize("framework", ["torch", "jax"])
def test_m1_gives_identical_models_and_updates(framework):
    """At m = 1 muP and SP are the same model: same initial weights and, after three AdamW
    steps on the same batches, bit-identical weights. At m = 2 they differ (the test can fail)."""
    run = _torch_params_after if framework == "torch" else _jax_params_after
    sp, mup = _config(32, "sp", **ALL_ROLES), _config(32, "mup", **ALL_ROLES)
    for name, a in init_params(sp, 3).items():
        np.testing.assert_array_equal(a, init_params(mup, 3)[name])
    batches = _batches(3, sp)
    after_sp, after_mup = run(sp, batches), run(mup, batches)
    assert set(after_sp) == set(after_mup)
    for name in after_sp:
        np.testing.assert_array_equal(after_sp[name], after_mup[name], err_msg=name)
    wide_sp, wide_mup = (_config(32, p, base=16, **ALL_ROLES) for p in ("sp", "mup"))
    after_sp2, after_mup2 = run(wide_sp, batches), run(wide_mup, batches)
    assert not np.array_equal(after_sp2["blocks.1.moe.w_in"], after_mup2["blocks.1.moe.w_in"])
