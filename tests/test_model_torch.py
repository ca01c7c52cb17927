"""The PyTorch model against references: the naming table, an independent NumPy forward of the
pinned math, the dense oracle (every dispatch mode, values and all gradients, float64), and
constructed routing examples with known answers (uniform load, capacity drops, gates)."""

from __future__ import annotations

import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from proxy.backends.torch import model as M  # noqa: E402
from proxy.config import ModelConfig  # noqa: E402
from proxy.init import init_params  # noqa: E402
from proxy.naming import buffer_specs, parameter_specs  # noqa: E402
from proxy.parametrization import forward_multipliers  # noqa: E402

torch.set_num_threads(1)

BASE = dict(d_model=16, n_layers=2, n_heads=2, head_dim=8, n_experts=4, top_k=2, d_expert=12,
            seq_len=16, init_std=0.1)
CONFIGS = {
    "dropless": ModelConfig(**BASE),
    "capacity": ModelConfig(**BASE, capacity_factor=0.75),
    "shared_dense_bias": ModelConfig(**BASE | dict(n_layers=3), n_shared_experts=1, n_dense_layers=1,
                                     bias_balancing=True, capacity_factor=1.0),
    "no_renorm": ModelConfig(**BASE, renormalize=False),
    "top1_mup_depth": ModelConfig(**BASE | dict(top_k=1, n_experts=6), parametrization="mup",
                                  base_d_model=8, depth_scaling=True, base_n_layers=1,
                                  capacity_factor=1.5),
}
EXACT_MODES = ("loop", "fast")   # float64: "fast" runs its sorted per-block schedule


def _tokens(config: ModelConfig, batch: int = 3, seed: int = 0) -> torch.Tensor:
    rng = np.random.default_rng(seed)
    return torch.as_tensor(rng.integers(0, config.vocab_size, (batch, config.seq_len)))


def _model(config: ModelConfig, dispatch: str, dtype=torch.float64, seed: int = 1) -> M.TorchMoEModel:
    model = M.TorchMoEModel(config, dispatch=dispatch, dtype=dtype, init_seed=seed)
    rng = np.random.default_rng(7)
    for moe in model.moe_blocks():   # nonzero biases: the test must see them move choices
        if moe.expert_bias is not None:
            moe.expert_bias.copy_(torch.as_tensor(rng.normal(0, 0.05, config.n_experts)))
    return model


def _run(model: M.TorchMoEModel, tokens: torch.Tensor):
    logits, aux = model(tokens)
    # A loss touching every output and both aux losses, so every gradient path is exercised.
    weights = torch.linspace(-1, 1, logits.shape[-1], dtype=logits.dtype)
    loss = (logits * weights).square().mean() + 0.3 * aux["balance_loss"] + 0.2 * aux["z_loss"]
    loss.backward()
    grads = {n: p.grad.detach().clone() for n, p in model.named_parameters()}
    return logits.detach(), {k: v.detach() for k, v in aux.items()}, grads


def _close(actual: torch.Tensor, expected: torch.Tensor, rel: float, what: str) -> None:
    """Norm-wise relative agreement: max|a - e| <= rel * max|e| (exact zeros must stay zero)."""
    actual, expected = torch.as_tensor(actual).double(), torch.as_tensor(expected).double()
    assert actual.shape == expected.shape, what
    scale = expected.abs().max().item()
    err = (actual - expected).abs().max().item() if expected.numel() else 0.0
    assert err <= rel * scale or (scale == 0 and err == 0), f"{what}: error {err:.3g} vs scale {scale:.3g}"


# --- names and shapes ------------------------------------------------------------------------
@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_parameter_names_shapes_and_buffers_equal_the_table(name):
    config = CONFIGS[name]
    model = M.TorchMoEModel(config, dtype=torch.float32)
    specs = parameter_specs(config)
    assert [(n, tuple(p.shape)) for n, p in model.named_parameters()] == [(s.name, s.shape) for s in specs]
    assert [(n, tuple(b.shape)) for n, b in model.named_buffers()] == [
        (b.name, b.shape) for b in buffer_specs(config)]
    assert all(p.dtype == torch.float32 for p in model.parameters())
    weights = init_params(config, 0)
    for n, p in model.named_parameters():
        np.testing.assert_array_equal(p.detach().numpy(), weights[n].astype(np.float32))


def test_bad_arguments_raise_naming_the_value():
    config = CONFIGS["dropless"]
    with pytest.raises(ValueError, match="dispatch"):
        M.TorchMoEModel(config, dispatch="magic")
    with pytest.raises(ValueError, match="dtype"):
        M.TorchMoEModel(config, dtype=torch.float16)
    with pytest.raises(ValueError, match="bmm"):   # removed schedules are not selectable
        M.TorchMoEModel(config, dispatch="bmm", dtype=torch.float64)
    params = init_params(config, 0)
    bad = dict(params, **{"readout.w": np.zeros((3, 3))})
    with pytest.raises(ValueError, match="readout.w"):
        M.TorchMoEModel(config, params=bad)
    missing = {k: v for k, v in params.items() if k != "embed.tokens"}
    with pytest.raises(ValueError, match="embed.tokens"):
        M.TorchMoEModel(config, params=missing)
    with pytest.raises(TypeError, match="ModelConfig"):
        M.TorchMoEModel({"d_model": 16})


# --- an independent NumPy forward of model_spec.md ---------------------------------------------
def _numpy_forward(config: ModelConfig, w: dict[str, np.ndarray], tokens: np.ndarray,
                   biases: list[np.ndarray]) -> tuple[np.ndarray, float, float, float]:
    """Logits, balance loss, z-loss and dropped fraction, by plain loops over tokens and slots."""
    fm = forward_multipliers(config)
    b, t = tokens.shape
    nh, hd, half = config.n_heads, config.head_dim, config.head_dim // 2

    def rms(x, s):
        return x / np.sqrt((x ** 2).mean(-1, keepdims=True) + config.norm_eps) * s

    def gelu(x):
        return 0.5 * x * (1 + np.tanh(np.sqrt(2 / np.pi) * (x + 0.044715 * x ** 3)))

    def softmax(x, axis=-1):
        e = np.exp(x - x.max(axis, keepdims=True))
        return e / e.sum(axis, keepdims=True)

    angle = np.arange(t)[:, None] * config.rope_theta ** (-2.0 * np.arange(half) / hd)
    cos, sin = np.cos(angle)[:, None], np.sin(angle)[:, None]

    def rope(q):
        x1, x2 = q[..., :half], q[..., half:]
        return np.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], -1)

    x = w["embed.tokens"][tokens]
    lbs, zs, drops = [], [], []
    for i in range(config.n_layers):
        p = f"blocks.{i}."
        h = rms(x, w[p + "attn_norm.scale"])
        q = rope((h @ w[p + "attn.w_q"]).reshape(b, t, nh, hd))
        k = rope((h @ w[p + "attn.w_k"]).reshape(b, t, nh, hd))
        v = (h @ w[p + "attn.w_v"]).reshape(b, t, nh, hd)
        s = np.einsum("bqhd,bkhd->bhqk", q, k) * fm.attention
        s = np.where(np.tril(np.ones((t, t), bool)), s, -np.inf)
        o = np.einsum("bhqk,bkhd->bqhd", softmax(s), v).reshape(b, t, -1)
        x = x + fm.residual * (o @ w[p + "attn.w_o"])
        h = rms(x, w[p + "ffn_norm.scale"]).reshape(b * t, -1)
        if not config.is_moe_layer(i):
            out = gelu(h @ w[p + "mlp.w_in"]) @ w[p + "mlp.w_out"]
        else:
            n, e_n, k_n = b * t, config.n_experts, config.top_k
            z = fm.router * (h @ w[p + "moe.router"])
            pr = softmax(z)
            bias = biases.pop(0) if config.bias_balancing else np.zeros(e_n)
            choice = np.argsort(-(pr + bias), axis=1, kind="stable")[:, :k_n]
            gates = np.take_along_axis(pr, choice, 1)
            if config.renormalize:
                gates = gates / gates.sum(1, keepdims=True)
            cap = math.inf if config.capacity_factor is None else math.ceil(config.capacity_factor * n * k_n / e_n)
            used, kept = np.zeros(e_n), np.zeros((n, k_n), bool)
            for j in range(k_n):                 # choice-major admission
                for tok in range(n):
                    e = choice[tok, j]
                    if used[e] < cap:
                        used[e] += 1
                        kept[tok, j] = True
            out = np.zeros_like(h)
            for tok in range(n):
                for j in range(k_n):
                    if kept[tok, j]:
                        e = choice[tok, j]
                        out[tok] += gates[tok, j] * (gelu(h[tok] @ w[p + "moe.w_in"][e]) @ w[p + "moe.w_out"][e])
            for s_i in range(config.n_shared_experts):
                out += gelu(h @ w[p + "moe.shared_w_in"][s_i]) @ w[p + "moe.shared_w_out"][s_i]
            f = np.bincount(choice.ravel(), minlength=e_n) / (n * k_n)
            lbs.append(e_n * np.sum(f * pr.mean(0)))
            zm = z.max(1)
            zs.append(np.mean((zm + np.log(np.exp(z - zm[:, None]).sum(1))) ** 2))
            drops.append(1 - kept.mean())
        x = x + fm.residual * out.reshape(b, t, -1)
    logits = fm.readout * (rms(x, w["final_norm.scale"]) @ w["readout.w"])
    if not lbs:
        return logits, 1.0, 0.0, 0.0
    return logits, float(np.mean(lbs)), float(np.mean(zs)), float(np.mean(drops))


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_forward_equals_an_independent_numpy_forward(name):
    config = CONFIGS[name]
    model = _model(config, "fast")
    tokens = _tokens(config, batch=2)
    weights = {n: p.detach().numpy() for n, p in model.named_parameters()}
    biases = [m.expert_bias.numpy() for m in model.moe_blocks() if m.expert_bias is not None]
    logits, lb, zl, dropped = _numpy_forward(config, weights, tokens.numpy(), biases)
    with torch.no_grad():
        got, aux = model(tokens)
    _close(got, logits, 1e-10, "logits")
    assert aux["balance_loss"].item() == pytest.approx(lb, rel=1e-10)
    assert aux["z_loss"].item() == pytest.approx(zl, rel=1e-10)
    assert aux["dropped_fraction"].item() == pytest.approx(dropped, abs=1e-15)
    if config.capacity_factor is not None and name == "capacity":
        assert dropped > 0, "the capacity case must actually drop slots"


def test_dense_only_model_reports_neutral_aux():
    config = ModelConfig(**BASE | dict(n_layers=2), n_dense_layers=2)
    model = M.TorchMoEModel(config, dtype=torch.float64)
    _, aux = model(_tokens(config))
    assert aux["balance_loss"].item() == 1.0 and aux["z_loss"].item() == 0.0
    assert aux["load_fractions"].shape == (0, config.n_experts)
    assert aux["dropped_fraction"].item() == 0.0


# --- every dispatch mode against the dense oracle -----------------------------------------------
@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_dispatch_modes_equal_the_dense_oracle_float64(name):
    config = CONFIGS[name]
    tokens = _tokens(config)
    ref_logits, ref_aux, ref_grads = _run(_model(config, "dense"), tokens)
    for mode in EXACT_MODES:
        logits, aux, grads = _run(_model(config, mode), tokens)
        _close(logits, ref_logits, 1e-10, f"{mode} logits")
        for key in ("balance_loss", "z_loss", "load_fractions", "dropped_fraction", "slot_counts"):
            _close(aux[key], ref_aux[key], 1e-10, f"{mode} aux {key}")
        assert set(grads) == set(ref_grads)
        for n in grads:
            _close(grads[n], ref_grads[n], 1e-10, f"{mode} grad {n}")
            assert ref_grads[n].abs().max() > 0, f"{n} received no gradient"


def test_grouped_gemm_matches_the_oracle_in_float32():
    config = CONFIGS["capacity"].replace(d_expert=16)   # grouped GEMM needs 16-byte rows
    if not M.grouped_mm_available(torch.float32, config.d_model, config.d_expert):
        pytest.skip("this torch has no CPU grouped GEMM")
    assert M.resolve_dispatch("fast", torch.float32, 16, 16) == "grouped"
    assert M.resolve_dispatch("fast", torch.float64, 16, 16) == "sorted"
    assert M.resolve_dispatch("fast", torch.float32, 16, 14) == "sorted"
    tokens = _tokens(config)
    ref_logits, ref_aux, ref_grads = _run(_model(config, "dense", torch.float32), tokens)
    model = _model(config, "fast", torch.float32)
    assert model.dispatch == "grouped" and all(m.dispatch == "grouped" for m in model.moe_blocks())
    logits, aux, grads = _run(model, tokens)
    # float32 rounding (2^-24 ~ 6e-8 per operation, over sums of a few dozen terms).
    _close(logits, ref_logits, 1e-5, "logits")
    _close(aux["balance_loss"], ref_aux["balance_loss"], 1e-6, "balance")
    for n in grads:
        _close(grads[n], ref_grads[n], 1e-4, f"grad {n}")


# --- routing on constructed examples ---------------------------------------------------------
def _cyclic_router(n_experts: int, strengths: tuple[float, ...]) -> tuple[torch.Tensor, torch.Tensor]:
    """Tokens h_i = one-hot(i mod E); router logit of token i on expert (i + j) mod E = strengths[j].

    Every expert is the j-th choice of exactly one token in E, so the routing is uniform by symmetry.
    """
    h = torch.eye(n_experts, dtype=torch.float64).repeat(3, 1)
    router = torch.zeros(n_experts, n_experts, dtype=torch.float64)
    for i in range(n_experts):
        for j, s in enumerate(strengths):
            router[i, (i + j) % n_experts] = s
    return h, router


def test_balance_loss_is_one_at_uniform_load_and_grows_with_imbalance():
    config = ModelConfig(**BASE | dict(n_experts=4, top_k=2))
    h, router = _cyclic_router(4, (2.0, 1.0, 0.5))
    r = M.route(h, router, None, config, 1.0)
    np.testing.assert_allclose(r.load_fractions.numpy(), 0.25, rtol=0, atol=1e-15)
    assert r.balance_loss.item() == pytest.approx(1.0, abs=1e-14)
    # Imbalance: every token prefers expert 0 by a growing margin -> loss > 1, increasing.
    losses = []
    for margin in (1.3, 2.6, 5.2, 10.4):   # no ties with the cyclic logits 0, 0.5, 1, 2
        skewed = router.clone()
        skewed[:, 0] += margin
        r = M.route(h, skewed, None, config, 1.0)
        f = np.bincount(r.experts.numpy().ravel(), minlength=4) / r.experts.numel()
        expected = 4 * np.sum(f * r.probs.numpy().mean(0))
        assert r.balance_loss.item() == pytest.approx(expected, rel=1e-14)
        losses.append(r.balance_loss.item())
    assert losses[0] > 1.0 and all(a < b for a, b in zip(losses, losses[1:]))


def test_gates_renormalised_raw_and_top1():
    h, router = _cyclic_router(4, (2.0, 1.0, 0.5))
    renorm = M.route(h, router, None, ModelConfig(**BASE), 1.0)
    np.testing.assert_allclose(renorm.gates.sum(1).numpy(), 1.0, rtol=0, atol=1e-15)
    raw = M.route(h, router, None, ModelConfig(**BASE, renormalize=False), 1.0)
    np.testing.assert_array_equal(raw.gates.numpy(), torch.gather(raw.probs, 1, raw.experts).numpy())
    assert (raw.gates.sum(1) < 1).all()
    top1 = M.route(h, router, None, ModelConfig(**BASE | dict(top_k=1)), 1.0)
    assert (top1.gates == 1.0).all()           # k = 1 with renormalisation: the gate is exactly 1
    top1_raw = M.route(h, router, None, ModelConfig(**BASE | dict(top_k=1), renormalize=False), 1.0)
    np.testing.assert_array_equal(top1_raw.gates[:, 0].numpy(), top1_raw.probs.max(1).values.numpy())


def test_bias_moves_the_choice_but_never_the_gates():
    config = ModelConfig(**BASE | dict(top_k=1), bias_balancing=True, renormalize=False)
    h, router = _cyclic_router(4, (2.0, 1.0, 0.5))
    bias = torch.tensor([0.0, 0.0, 0.0, 5.0], dtype=torch.float64)
    r = M.route(h, router, bias, config, 1.0)
    assert (r.experts == 3).all()
    np.testing.assert_array_equal(r.gates[:, 0].numpy(), r.probs[:, 3].numpy())
    assert r.counts.tolist() == [0, 0, 0, 12]


def test_capacity_admits_choice_major():
    experts = torch.tensor([[0, 1], [1, 2], [2, 3], [3, 0]])
    # C = ceil(0.5 * 4 * 2 / 4) = 1: every first choice is admitted before any second choice
    # (a token-major order would keep token 0's second choice instead of token 1's first).
    assert M.expert_capacity(4, 2, 4, 0.5) == 1
    keep = M.capacity_keep(experts, 4, 1)
    assert keep.tolist() == [[True, False]] * 4
    assert M.capacity_keep(experts, 4, None).all()
    assert M.expert_capacity(4, 2, 4, None) is None


def test_capacity_drops_give_the_expected_fraction_and_zero_output():
    config = ModelConfig(**BASE | dict(n_experts=2, top_k=1, d_model=4, d_expert=4), capacity_factor=1.0)
    # Four tokens all prefer expert 0; C = ceil(1.0 * 4 * 1 / 2) = 2 keeps tokens 0 and 1 only.
    h = torch.tensor([[1.0, 0.2, 0.1, 0.3], [0.8, 0.1, 0.4, 0.2], [0.9, 0.3, 0.2, 0.1], [1.2, 0.1, 0.1, 0.2]],
                     dtype=torch.float64)
    router = torch.tensor([[3.0, -3.0], [0.1, 0.2], [0.0, 0.1], [0.2, 0.0]], dtype=torch.float64)
    for dispatch in ("dense", "loop", "fast"):   # float64: "fast" runs its sorted schedule
        moe = M.MoE(config, forward_multipliers(config), dispatch, torch.float64)
        with torch.no_grad():
            moe.router.copy_(router)
            moe.w_in.copy_(torch.linspace(-1, 1, moe.w_in.numel(), dtype=torch.float64).reshape(moe.w_in.shape))
            moe.w_out.copy_(torch.linspace(1, -0.5, moe.w_out.numel(), dtype=torch.float64).reshape(moe.w_out.shape))
            out, r = moe(h)
            expected = M.gelu_tanh(h[:2] @ moe.w_in[0]) @ moe.w_out[0]   # gate 1 (k = 1, renormalised)
        assert r.experts[:, 0].tolist() == [0, 0, 0, 0]
        assert r.keep[:, 0].tolist() == [True, True, False, False]
        assert r.dropped_fraction.item() == 0.5
        assert r.load_fractions.tolist() == [1.0, 0.0]     # f_e counts slots before the drops
        assert (out[2:] == 0).all() and (out[:2] != 0).all()
        np.testing.assert_allclose(out[:2].numpy(), expected.numpy(), rtol=1e-14)


def test_bias_update_is_the_sign_rule():
    config = ModelConfig(**BASE | dict(n_layers=2, n_experts=4), bias_balancing=True, bias_update_rate=0.01)
    model = M.TorchMoEModel(config, dtype=torch.float64)
    counts = torch.tensor([[5, 1, 2, 0], [2, 2, 2, 2]])
    model.update_expert_bias(counts, config.bias_update_rate)
    model.update_expert_bias(counts, config.bias_update_rate)
    got = [m.expert_bias.tolist() for m in model.moe_blocks()]
    # mean 2: sign(2 - c) = (-1, +1, 0, +1); balanced layer unchanged.
    assert got == [[-0.02, 0.02, 0.0, 0.02], [0.0, 0.0, 0.0, 0.0]]
