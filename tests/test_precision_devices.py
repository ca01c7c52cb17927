"""Mixed precision and device selection, on the CPU (``proxy.backends.placement``).

bf16 is held to float32's losses over 20 steps within 2% (bfloat16 keeps 8 bits of mantissa,
0.4% a rounding; measured 0.7% for torch and 0.3% for JAX on this model) and to more than
float32 rounding (so the step really ran in bfloat16); torch's bf16 to JAX's within 2%
(measured 0.5%: the two round in different places, float32 keeps them to 2e-7)."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("jax")

import jax.numpy as jnp  # noqa: E402

from proxy.backends.jax import device as DJ  # noqa: E402
from proxy.backends.jax import model as MJ  # noqa: E402
from proxy.backends.jax import trainer as TJ  # noqa: E402
from proxy.backends.placement import DeviceUnavailable, check_precision, parse_device  # noqa: E402
from proxy.backends.torch import device as DT  # noqa: E402
from proxy.backends.torch import trainer as TT  # noqa: E402
from proxy.backends.torch.model import TorchMoEModel  # noqa: E402
from proxy.config import ModelConfig  # noqa: E402
from proxy.hparams import TrainHParams  # noqa: E402
from proxy.init import init_params  # noqa: E402

CONFIG = ModelConfig(d_model=32, n_layers=2, n_heads=2, head_dim=16, n_experts=4, top_k=2, d_expert=32,
                     seq_len=32)
HPARAMS = TrainHParams(lr=1e-2, batch_size=4, tokens=20 * 4 * 32, warmup_frac=0.1, log_points=64)
TEXT = np.frombuffer(b"the quick brown fox jumps over the lazy dog; " * 60, dtype=np.uint8).astype(np.int64)
BF16_TOL = 2e-2


def _batches(n=20, seed=0):
    rng = np.random.default_rng(seed)
    return [np.stack([TEXT[s:s + CONFIG.seq_len + 1] for s in rng.integers(0, len(TEXT) - 34, 4)])
            for _ in range(n)]


def _rel(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.max(np.abs(a - b)) / np.max(np.abs(b)))


@pytest.fixture(scope="module")
def curves():
    weights, batches = init_params(CONFIG, 3), _batches()
    out = {}
    for name, trainer in (("torch", TT), ("jax", TJ)):
        for precision in ("fp32", "bf16"):
            r = trainer.train(CONFIG, HPARAMS, None, 0, init_params=weights, batches=batches,
                              precision=precision, device="cpu")
            out[name, precision] = np.array([v for _, v in r.loss_curve])
    return out


@pytest.mark.parametrize("backend", ["torch", "jax"])
def test_bf16_follows_float32_within_bf16_rounding(curves, backend):
    bf16, fp32 = curves[backend, "bf16"], curves[backend, "fp32"]
    assert len(bf16) == len(fp32) == 20
    assert 1e-5 < _rel(bf16, fp32) <= BF16_TOL
    assert fp32[-1] < fp32[0] - 1.0 and bf16[-1] < bf16[0] - 1.0   # both learned


def test_torch_bf16_and_jax_bf16_agree(curves):
    assert _rel(curves["torch", "bf16"], curves["jax", "bf16"]) <= BF16_TOL
    assert _rel(curves["torch", "fp32"], curves["jax", "fp32"]) <= 1e-5


def test_bf16_keeps_the_router_and_the_masters_in_float32_in_torch():
    model = TorchMoEModel(CONFIG, params=init_params(CONFIG, 1), compute_dtype=torch.bfloat16)
    seen = []
    hooks = [m.register_forward_hook(lambda mod, inp, out: seen.append((inp[0].dtype, out[0].dtype, out[1])))
             for m in model.moe_blocks()]
    tokens = torch.as_tensor(_batches(1)[0][:, :-1])
    logits, aux = model(tokens)
    for h in hooks:
        h.remove()
    loss, _ = TT.training_loss(model, torch.as_tensor(_batches(1)[0]), HPARAMS)
    loss.backward()
    assert logits.dtype == torch.bfloat16 and loss.dtype == torch.float32
    assert len(seen) == len(CONFIG.moe_layers)
    for h_dtype, out_dtype, routing in seen:
        assert (h_dtype, out_dtype) == (torch.bfloat16, torch.bfloat16)
        assert {routing.logits.dtype, routing.probs.dtype, routing.gates.dtype} == {torch.float32}
    assert aux["balance_loss"].dtype == aux["z_loss"].dtype == torch.float32
    for name, p in model.named_parameters():
        assert p.dtype == torch.float32 and p.grad.dtype == torch.float32, name


def test_bf16_keeps_the_router_in_float32_in_jax():
    params, buffers = MJ.init(CONFIG, 1, dtype=jnp.float32)
    low = MJ.cast_for_compute(params, jnp.bfloat16)
    flat = MJ.flatten_named(low)
    assert {str(w.dtype) for n, w in flat.items() if n.endswith(".router")} == {"float32"}
    assert {str(w.dtype) for n, w in flat.items() if not n.endswith(".router")} == {"bfloat16"}
    seen: dict = {}
    logits, aux = MJ.forward(low, buffers, jnp.asarray(_batches(1)[0][:, :-1]), CONFIG, collect=seen)
    assert logits.dtype == jnp.bfloat16
    for i in CONFIG.moe_layers:
        assert seen[f"blocks.{i}.router"].dtype == jnp.float32
        assert seen[f"blocks.{i}.experts"].dtype == jnp.bfloat16
    assert aux["balance_loss"].dtype == aux["z_loss"].dtype == jnp.float32


def test_precision_needs_float32_masters_and_a_known_name():
    assert check_precision("bf16", "float32") == "bf16"
    with pytest.raises(ValueError, match="float32 master weights.*float64"):
        check_precision("bf16", "float64")
    with pytest.raises(ValueError, match="'fp16' is not one of"):
        check_precision("fp16", "float32")


@pytest.mark.parametrize("text", ["gpu", "cuda:x", "cpu:1", "", "auto:0"])
def test_a_malformed_device_string_is_named(text):
    with pytest.raises(ValueError, match="is not one of: auto, cpu, cuda"):
        parse_device(text)


def test_torch_names_the_cuda_device_it_does_not_see(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert DT.resolve_device("auto").type == "cpu"
    with pytest.raises(DeviceUnavailable, match="'cuda:1'.*no CUDA GPU"):
        DT.resolve_device("cuda:1")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    assert DT.resolve_device("auto") == torch.device("cuda", 0)
    with pytest.raises(DeviceUnavailable, match="'cuda:3'.*sees 1 CUDA GPU"):
        DT.resolve_device("cuda:3")
    with pytest.raises(DeviceUnavailable, match="'tpu'.*does not train on TPUs"):
        DT.resolve_device("tpu")
    # And the trainer stops there, before any training.
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(DeviceUnavailable, match="'cuda'"):
        TT.train(CONFIG, HPARAMS, None, 0, batches=_batches(), device="cuda")


def test_jax_names_the_device_it_does_not_see():
    assert DJ.resolve_device("cpu").platform == "cpu"
    assert DJ.resolve_device("auto").platform == "cpu"      # this machine has no accelerator
    with pytest.raises(DeviceUnavailable, match="'tpu'.*no tpu backend"):
        DJ.resolve_device("tpu")
    with pytest.raises(DeviceUnavailable, match="'cuda:0'.*no gpu backend"):
        DJ.resolve_device("cuda:0")
    with pytest.raises(DeviceUnavailable, match="'tpu'"):
        TJ.train(CONFIG, HPARAMS, None, 0, batches=_batches(), device="tpu")


def test_float32_matmuls_are_pinned_to_full_float32_unless_tf32_is_asked_for():
    before = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision("medium")
    try:
        with DT.numerics(torch.device("cpu"), "fp32"):
            assert torch.get_float32_matmul_precision() == "highest"
            assert torch.are_deterministic_algorithms_enabled()
        with DT.numerics(torch.device("cpu"), "tf32"):
            assert torch.get_float32_matmul_precision() == "high"
        assert torch.get_float32_matmul_precision() == "medium"   # restored
    finally:
        torch.set_float32_matmul_precision(before)
    import jax

    cpu = DJ.resolve_device("cpu")
    for precision, expected in (("fp32", "highest"), ("tf32", "tensorfloat32"), ("bf16", "highest")):
        with DJ.placed(cpu, precision):
            assert jax.config.jax_default_matmul_precision == expected


def test_a_sweep_on_a_missing_device_stops_with_one_line_and_loses_no_trial(tmp_path, capsys):
    """``ladder sweep --device cuda`` on a machine without CUDA: the first trial stops before
    training, the CLI prints one line naming the device, and the trial's point is kept for the
    retry (nothing COMPLETE, nothing lost)."""
    import optuna

    from reports.cli import main
    from tests.sweep_toml import rung

    if torch.cuda.is_available():
        pytest.skip("this machine has a CUDA GPU")
    toml = tmp_path / "exp.toml"
    toml.write_text(f"""[experiment]
name = "dev"
backend = "torch"
storage = "sqlite:///{tmp_path}/trials.db"
workers = 1

{rung(d_model=32, d_expert=32, tokens=2048)}
[search]
trials_per_rung = 2
startup_trials = 2

[search.box]
lr = {{ low = 1e-3, high = 1e-2, log = true }}
""")
    rc = main(["sweep", str(toml), "--device", "cuda", "--no-progress"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2
    assert err[-1].startswith("ladder sweep: error: device 'cuda' was asked for, but torch sees no CUDA GPU")
    study = optuna.load_study(study_name="dev/r0", storage=f"sqlite:///{tmp_path}/trials.db")
    states = [t.state for t in study.get_trials()]
    assert optuna.trial.TrialState.COMPLETE not in states
    assert optuna.trial.TrialState.WAITING in states   # the point, queued again for the retry
