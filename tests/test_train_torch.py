"""The PyTorch trainer against references: a hand-written AdamW + clipping + bias update, the
built-in data (the loss falls), reproducibility, divergence reporting, the token budget rule."""

from __future__ import annotations

import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from proxy.backends.torch import bench as TB  # noqa: E402
from proxy.backends.torch import trainer as T  # noqa: E402
from proxy.config import ModelConfig  # noqa: E402
from proxy.data import load_data  # noqa: E402
from proxy.flops import param_counts, train_flops  # noqa: E402
from proxy.hparams import TrainHParams, lr_at  # noqa: E402
from proxy.init import init_params  # noqa: E402
from proxy.ladder import default_tokens  # noqa: E402
from proxy.backends.torch.model import TorchMoEModel  # noqa: E402
from proxy.parametrization import param_rules  # noqa: E402
from proxy.result import TrainResult  # noqa: E402

torch.set_num_threads(1)

TINY = ModelConfig(d_model=32, n_layers=2, n_heads=2, head_dim=16, n_experts=4, top_k=2, d_expert=32,
                   seq_len=32)


def _hp(steps: int, **changes) -> TrainHParams:
    base = dict(lr=1e-2, batch_size=8, tokens=steps * 8 * TINY.seq_len, eval_batches=2, warmup_frac=0.05)
    return TrainHParams(**base | changes)


@pytest.fixture(scope="module")
def data():
    return load_data()


def test_loss_falls_on_builtin_data_and_the_result_is_complete(data):
    steps = 150
    result = T.train(TINY, _hp(steps), data, seed=0)
    assert not result.diverged and result.steps == steps
    first = result.loss_curve[0][1]
    assert first == pytest.approx(math.log(256), abs=0.1)           # uniform predictor at init
    assert result.final_train_loss < first - 1.5
    assert result.final_loss < 4.0
    domains = set(data.corpus.domains)
    assert set(result.eval_loss_by_domain) == domains
    assert result.final_loss == pytest.approx(data.overall_eval_loss(result.eval_loss_by_domain), rel=1e-12)
    assert result.tokens == steps * 8 * TINY.seq_len
    assert result.flops == train_flops(TINY, result.tokens)
    counts = param_counts(TINY)
    assert (result.params_total, result.params_active) == (counts.total, counts.active)
    assert result.backend == "torch" and result.tokens_per_s > 0 and result.wall_time_s > 0
    load = result.expert_load
    assert len(load.fractions) == TINY.n_layers
    assert all(sum(row) == pytest.approx(1.0) for row in load.fractions)
    assert load.max_over_mean == pytest.approx(max(max(r) for r in load.fractions) * TINY.n_experts)
    assert len(result.loss_curve) <= _hp(steps).log_points
    assert result.loss_curve[-1][0] == steps - 1
    assert TrainResult.from_dict(result.to_dict()) == result
    assert result.config == TINY.to_dict() and result.hparams == _hp(steps).to_dict()


def test_same_seed_same_result_and_another_seed_differs(data):
    hp = _hp(12)
    a, b = T.train(TINY, hp, data, seed=3), T.train(TINY, hp, data, seed=3)
    c = T.train(TINY, hp, data, seed=4)
    assert a.loss_curve == b.loss_curve and a.final_loss == b.final_loss
    assert a.eval_loss_by_domain == b.eval_loss_by_domain and a.expert_load == b.expert_load
    assert a.loss_curve != c.loss_curve


def test_forced_divergence_is_reported_not_raised(data):
    hp = _hp(60, lr=10.0, warmup_frac=0.0, schedule="constant", grad_clip=0.0)
    result = T.train(TINY, hp, data, seed=0)
    assert result.diverged and isinstance(result.diverged_step, int) and 0 < result.diverged_step < 60
    assert result.final_loss == math.inf and result.eval_loss_by_domain == {}
    assert result.steps == result.diverged_step + 1 and result.tokens == result.steps * 8 * TINY.seq_len
    assert result.divergence_reason and f"step {result.diverged_step}" in result.divergence_reason
    assert TrainResult.from_dict(result.to_dict()).final_loss == math.inf


def test_nan_in_the_weights_diverges_at_step_zero(data):
    weights = init_params(TINY, 0)
    weights["readout.w"] = weights["readout.w"].copy()
    weights["readout.w"][0, 0] = np.nan
    calls = []
    result = T.train(TINY, _hp(5), data, seed=0, init_params=weights,
                     progress=lambda *args: calls.append(args))
    assert result.diverged and result.diverged_step == 0 and "non-finite" in result.divergence_reason
    assert math.isnan(result.final_train_loss) and result.final_loss == math.inf and calls == []


def test_progress_batches_override_and_no_eval_without_data(data):
    hp = _hp(6, log_points=64)
    calls = []
    base = T.train(TINY, hp, data, seed=5, progress=lambda *args: calls.append(args))
    assert [(s, n) for s, n, _ in calls] == [(s, 6) for s in range(6)]
    assert [loss for _, _, loss in calls] == [loss for _, loss in base.loss_curve]
    same = T.train(TINY, hp, data, seed=5, batches=data.batches(5, 8, TINY.seq_len))
    assert same.loss_curve == base.loss_curve and same.final_loss == base.final_loss
    no_eval = T.train(TINY, hp, None, seed=5, batches=data.batches(5, 8, TINY.seq_len))
    assert no_eval.loss_curve == base.loss_curve and math.isnan(no_eval.final_loss)
    with pytest.raises(ValueError, match="ended after 2 of 6"):
        T.train(TINY, hp, None, seed=5, batches=[np.zeros((8, 33), np.int64)] * 2)
    with pytest.raises(ValueError, match="shape"):
        T.train(TINY, hp, None, seed=5, batches=[np.zeros((8, 32), np.int64)] * 6)
    with pytest.raises(ValueError, match="dtype"):
        T.train(TINY, hp, data, seed=5, dtype="float16")
    with pytest.raises(TypeError, match="TrainHParams"):
        T.train(TINY, hp.to_dict(), data, seed=5)


def test_default_token_budget_comes_from_the_ladder_rule():
    hp = TrainHParams(batch_size=8, tokens=0)
    assert T.total_steps(TINY, hp) == max(1, default_tokens(TINY) // (8 * TINY.seq_len))
    assert T.total_steps(TINY, hp.replace(tokens=10)) == 1


def test_training_restores_the_callers_determinism_setting(data):
    before = torch.are_deterministic_algorithms_enabled()
    T.train(TINY, _hp(2), data, seed=0)
    assert torch.are_deterministic_algorithms_enabled() == before


def _reference_steps(config, hp, weights, batches, n_steps):
    """Clipping, AdamW and the bias update written out in NumPy float64 (model_spec.md)."""
    model = TorchMoEModel(config, dtype=torch.float64, params=weights)
    params = dict(model.named_parameters())
    rules = param_rules(config, hp.init_scale)
    m = {n: np.zeros(p.shape) for n, p in params.items()}
    v = {n: np.zeros(p.shape) for n, p in params.items()}
    norms = []
    for step, batch in enumerate(batches):
        loss, aux = T.training_loss(model, torch.as_tensor(batch), hp)
        grads = torch.autograd.grad(loss, list(params.values()))
        g = {n: gr.numpy().copy() for n, gr in zip(params, grads)}
        norm = math.sqrt(sum(float(np.sum(x ** 2)) for x in g.values()))
        norms.append(norm)
        factor = min(1.0, hp.grad_clip / (norm + hp.clip_eps))
        t = step + 1
        with torch.no_grad():
            for n, p in params.items():
                gn = g[n] * factor
                lr = lr_at(step, n_steps, hp) * rules[n].lr_mult
                x = p.numpy().copy()
                if rules[n].weight_decay:
                    x = x * (1 - lr * hp.weight_decay)
                m[n] = hp.beta1 * m[n] + (1 - hp.beta1) * gn
                v[n] = hp.beta2 * v[n] + (1 - hp.beta2) * gn ** 2
                m_hat, v_hat = m[n] / (1 - hp.beta1 ** t), v[n] / (1 - hp.beta2 ** t)
                p.copy_(torch.as_tensor(x - lr * m_hat / (np.sqrt(v_hat) + hp.adam_eps)))
            for moe, c in zip(model.moe_blocks(), aux["slot_counts"].numpy()):
                moe.expert_bias.add_(torch.as_tensor(config.bias_update_rate * np.sign(c.mean() - c)))
    return model, norms


def test_steps_equal_a_hand_written_adamw_with_clipping_and_bias_update():
    # muP with width ratio 2: hidden lr multipliers 1/2; weight decay on matrices only.
    config = TINY.replace(d_model=16, head_dim=8, d_expert=16, seq_len=16, parametrization="mup",
                          base_d_model=8, bias_balancing=True, bias_update_rate=0.01, n_dense_layers=1,
                          n_layers=3, n_shared_experts=1)
    hp = TrainHParams(lr=3e-2, batch_size=4, tokens=3 * 4 * 16, weight_decay=0.3, grad_clip=0.5,
                      warmup_frac=0.34, beta1=0.8, beta2=0.9)
    assert {r.lr_mult for r in param_rules(config).values()} == {1.0, 0.5}
    weights = init_params(config, 11)
    rng = np.random.default_rng(0)
    batches = [rng.integers(0, 256, (4, 17)) for _ in range(3)]
    ref, norms = _reference_steps(config, hp, weights, batches, 3)
    assert max(norms) > hp.grad_clip         # clipping is active in this test
    model = TorchMoEModel(config, dtype=torch.float64, params=weights)
    optimizer = T.build_optimizer(model, hp)
    for step, batch in enumerate(batches):
        loss, aux = T.training_loss(model, torch.as_tensor(batch), hp)
        T.update(model, optimizer, loss, aux, step, 3, hp)
    got, want = model.state_dict(), ref.state_dict()
    assert list(got) == list(want)
    for name in got:
        scale = want[name].abs().max().item()
        assert (got[name] - want[name]).abs().max().item() <= 1e-12 * max(scale, 1.0), name
    assert any(b.abs().max() > 0 for b in (m.expert_bias for m in model.moe_blocks()))


def test_clip_gradients_formula_and_disable():
    a = torch.nn.Parameter(torch.zeros(2, dtype=torch.float64))
    b = torch.nn.Parameter(torch.zeros(1, dtype=torch.float64))
    a.grad, b.grad = torch.tensor([3.0, 0.0], dtype=torch.float64), torch.tensor([4.0], dtype=torch.float64)
    norm = T.clip_gradients([a, b], 1.0, 1e-6)
    assert norm.item() == 5.0
    factor = 1.0 / (5.0 + 1e-6)
    assert a.grad.tolist() == [3.0 * factor, 0.0] and b.grad.tolist() == [4.0 * factor]
    a.grad = torch.tensor([3.0, 0.0], dtype=torch.float64)
    T.clip_gradients([a], 0.0, 1e-6)
    assert a.grad.tolist() == [3.0, 0.0]
    T.clip_gradients([a], 10.0, 1e-6)      # norm below the threshold: untouched
    assert a.grad.tolist() == [3.0, 0.0]


@pytest.mark.parametrize("dispatch", ["fast", "loop"])
def test_step_runner_warms_up_then_trains_one_step_per_call(dispatch, monkeypatch):
    updates = []
    real_update = TB.update                       # the trainer's update, as the runner calls it
    monkeypatch.setattr(TB, "update", lambda *a, **k: (updates.append(a[4]), real_update(*a, **k)))
    step, info = TB.step_runner(TINY, dispatch=dispatch, batch_size=2, warmup=2)
    assert updates == [0, 1]                      # the warm-up steps, done before it returns
    step()
    step()
    assert updates == [0, 1, 2, 3]                # one optimiser step per call
    assert info["resolved_dispatch"] == ("grouped" if dispatch == "fast" else "loop")
    assert info["compile_s"] is None and info["batch_size"] == 2
    for bad in ({"warmup": -1}, {"batch_size": 0}):
        with pytest.raises(ValueError, match="warmup|batch_size"):
            TB.step_runner(TINY, dispatch=dispatch, **{"batch_size": 2, **bad})


def test_moe_layer_runner_runs_a_forward_and_backward(monkeypatch):
    # Each call is one forward and one backward reaching the experts and the router; the
    # warm-up calls are done before the runner returns.
    backwards = []
    real_backward = T.torch.autograd.backward

    def counted(tensors, grads):
        real_backward(tensors, grads)
        backwards.append(tensors)

    monkeypatch.setattr(T.torch.autograd, "backward", counted)
    once = TB.moe_layer_runner(TINY, dispatch="fast", batch_size=2, warmup=2)
    assert len(backwards) == 2
    once()
    assert len(backwards) == 3
    out, logits = backwards[-1]
    assert out.shape == (2, TINY.seq_len, TINY.d_model) and logits.shape[-1] == TINY.n_experts
    for bad in ({"warmup": -1}, {"batch_size": 0}):
        with pytest.raises(ValueError, match="warmup|batch_size"):
            TB.moe_layer_runner(TINY, dispatch="fast", **{"batch_size": 2, **bad})
    with pytest.raises(ValueError, match="no MoE layer"):
        TB.moe_layer_runner(TINY.replace(n_dense_layers=TINY.n_layers, d_dense_ff=8), dispatch="loop",
                           batch_size=2)


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore::DeprecationWarning")   # torch.compile's own imports (torch.jit)
@pytest.mark.filterwarnings("ignore:The .grad attribute of a Tensor that is not a leaf")   # dynamo's tracing
def test_the_compiled_loss_trains_as_eager_does_to_float32_rounding():
    """``train(compile=True)``: 20 steps whose losses follow eager's within float32 rounding
    (the compiled graphs fuse and reorder float32 arithmetic: held to 1e-4 relative)."""
    from proxy.backends.torch import trainer as TT
    from proxy.config import ModelConfig
    from proxy.hparams import TrainHParams
    from proxy.init import init_params

    config = ModelConfig(d_model=32, n_layers=2, n_heads=2, head_dim=16, n_experts=4, top_k=2, d_expert=32,
                         seq_len=32)
    hp = TrainHParams(lr=1e-2, batch_size=4, tokens=20 * 4 * 32, log_points=64)
    rng = np.random.default_rng(0)
    batches = [rng.integers(0, 256, (4, 33)) for _ in range(20)]
    kwargs = dict(init_params=init_params(config, 2), batches=batches, device="cpu")
    eager = np.array([v for _, v in TT.train(config, hp, None, 0, **kwargs).loss_curve])
    compiled = np.array([v for _, v in TT.train(config, hp, None, 0, compile=True, **kwargs).loss_curve])
    assert len(eager) == len(compiled) == 20
    assert np.max(np.abs(compiled - eager)) / np.max(np.abs(eager)) <= 1e-4
