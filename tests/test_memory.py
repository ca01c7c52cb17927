"""The memory plan (``proxy.backends.memory``) against what torch's autograd actually keeps, and
the plan's choices on a device of known size."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from proxy.backends.memory import (MEMORY_FRACTION, DoesNotFit, activation_bytes_per_token,  # noqa: E402
                                   checkpoint_parts, plan_memory, resolve_accumulation, static_bytes)
from proxy.backends.torch import trainer as TT  # noqa: E402
from proxy.backends.torch.model import TorchMoEModel  # noqa: E402
from proxy.config import ModelConfig  # noqa: E402
from proxy.hparams import TrainHParams  # noqa: E402
from proxy.ladder import get_ladder  # noqa: E402

GIB = 2 ** 30
SHARED = ModelConfig(d_model=64, n_layers=3, n_heads=4, head_dim=16, n_experts=8, top_k=2, d_expert=128,
                     seq_len=64, n_dense_layers=1, n_shared_experts=1)


def _kept_bytes(config: ModelConfig, precision: str, checkpoint: bool, batch: int = 4) -> int:
    """Bytes of the non-parameter tensors autograd keeps for the backward of one training loss
    (each storage once), measured with saved-tensor hooks."""
    model = TorchMoEModel(config, compute_dtype=torch.bfloat16 if precision == "bf16" else None,
                          checkpoint=checkpoint)
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    seen, total = set(), 0

    def pack(t):
        nonlocal total
        key = (t.untyped_storage().data_ptr(), t.storage_offset(), tuple(t.shape), t.dtype)
        if key not in seen and key[0] not in params:
            seen.add(key)
            total += t.numel() * t.element_size()
        return t

    tokens = torch.as_tensor(np.random.default_rng(0).integers(0, 256, (batch, config.seq_len + 1)))
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        TT.training_loss(model, tokens, TrainHParams(lr=1e-3, batch_size=batch))
    return total


@pytest.mark.parametrize("config", [get_ladder("cpu").rung(n).config for n in ("w16", "w128")] + [SHARED],
                         ids=["w16", "w128", "shared+dense"])
@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_the_activation_estimate_matches_what_autograd_keeps(config, precision):
    tokens = 4 * config.seq_len
    measured = _kept_bytes(config, precision, checkpoint=False)
    estimate = activation_bytes_per_token(config, precision) * tokens
    # measured 0.92-0.98 (fp32) and 0.86-1.01 (bf16; autograd also keeps some bfloat16 weight
    # copies, which the plan counts as static memory)
    assert 0.8 <= estimate / measured <= 1.1
    if precision == "fp32":
        kept = _kept_bytes(config, precision, checkpoint=True)
        assert 0.9 <= checkpoint_parts(config, precision)[0] * tokens / kept <= 1.1
        assert kept < measured / 3


def test_the_plan_takes_the_fewest_micro_batches_that_fit_then_checkpoints():
    config = get_ladder("gpu").rung("w1024-l12").config
    per_seq = activation_bytes_per_token(config, "bf16") * config.seq_len
    static = static_bytes(config, "bf16")
    # A device that holds exactly 16 sequences' activations: 256 / 16 = 16 micro-batches would
    # be needed without checkpointing, more than the plan accepts, so it checkpoints instead.
    device = (static + 16.5 * per_seq) / MEMORY_FRACTION
    plan = plan_memory(config, 256, device, "bf16")
    assert plan.checkpoint and plan.total_bytes <= MEMORY_FRACTION * device
    ckpt_seq = activation_bytes_per_token(config, "bf16", checkpoint=True) * config.seq_len
    fewer = [k for k in range(1, plan.micro_batches) if 256 % k == 0]
    assert all(static + ckpt_seq * 256 / k > MEMORY_FRACTION * device for k in fewer)
    # More memory: plain micro-batches, the fewest that fit.
    device = (static + 64.5 * per_seq) / MEMORY_FRACTION
    plan = plan_memory(config, 256, device, "bf16")
    assert (plan.micro_batches, plan.checkpoint) == (4, False)
    assert plan_memory(config, 256, 1e15, "bf16").micro_batches == 1
    assert "micro-batch" in plan.summary() and "GiB" in plan.summary()


def test_the_gpu_presets_fit_one_80_gb_gpu_up_to_the_rung_whose_state_alone_does_not():
    fits = {}
    for rung in get_ladder("gpu").rungs:
        try:
            fits[rung.name] = plan_memory(rung.config, rung.batch_size, 80e9, "bf16")
        except DoesNotFit as exc:
            assert "needs more than one device" in str(exc)
            fits[rung.name] = None
    assert fits["w2048-l16"] is None   # 4.6e9 parameters x 18 bytes > 80 GB
    assert static_bytes(get_ladder("gpu").rung("w2048-l16").config, "bf16") > 0.85 * 80e9
    assert all(fits[n] is not None for n in fits if n != "w2048-l16")


def test_auto_accumulation_is_one_micro_batch_on_the_host_and_planned_on_a_device():
    config = get_ladder("gpu").rung("w512-l8").config
    assert resolve_accumulation(config, 256, "bf16", "auto", "auto", None) == (1, False)
    assert resolve_accumulation(config, 256, "bf16", 4, True, 80e9) == (4, True)
    k, ckpt = resolve_accumulation(config, 256, "bf16", "auto", "auto", 80 * GIB)
    plan = plan_memory(config, 256, 80 * GIB, "bf16")
    assert (k, ckpt) == (plan.micro_batches, plan.checkpoint) and k > 1
