"""How a rung's training step fits in one device's memory: gradient accumulation and activation
checkpointing chosen from the memory the device has (framework-free; the trainers ask their
framework for the device's memory and call ``plan_memory``).

Memory of a step, in bytes:

- static: master weights, gradients and AdamW's two moments in float32 (16 bytes a parameter),
  plus a bfloat16 copy of the weights under ``bf16`` (2 bytes a parameter);
- activations: what autograd keeps for the backward, per token of a micro-batch
  (``activation_bytes_per_token``): for each block the tensors its backward reads (the norms'
  inputs and outputs, q, k, v and the attention output with its log-sum-exp, the router's
  float32 input and probabilities, the k expert inputs, hidden pre- and post-activations and
  outputs), and the cross-entropy's float32 log-softmax; with checkpointing, each
  block keeps only its input and one block's activations are live again during its backward.
  The logits themselves are not kept: the readout's backward reads its input, the
  cross-entropy's its float32 log-softmax.

The estimate is held to the bytes torch's autograd actually saves (``tests/test_memory.py``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

from proxy.config import ModelConfig
from proxy.flops import param_counts

STATIC_BYTES_PER_PARAM = 16       # float32 weight, gradient, Adam m and v
BF16_COPY_BYTES_PER_PARAM = 2
MEMORY_FRACTION = 0.85            # of the device's memory, the rest for the allocator and workspaces
_COMPUTE_BYTES = {"fp32": 4, "tf32": 4, "bf16": 2}


def _block_elements(config: ModelConfig, layer: int) -> tuple[float, float]:
    """(compute-dtype elements, float32-or-index elements) a block keeps per token."""
    d, da, h = config.d_model, config.d_attn, config.n_heads
    attention = 2 * d + 5 * da                             # the two norms' outputs, q k v o, o again
    wide = 2 * (2 * d + 1) + h                             # the norms' float32 statistics; log-sum-exp
    if config.is_moe_layer(layer):
        k, e, de = config.top_k, config.n_experts, config.d_expert
        ffn = k * (2 * d + 2 * de) + config.n_shared_experts * (d + 2 * de)
        wide += d + 4 * e + 8 * k                          # router input, logits, probs; indices and gates
    else:
        ffn = d + 2 * config.dense_ff
    return attention + ffn, wide


def activation_bytes_per_token(config: ModelConfig, precision: str = "fp32", *, checkpoint: bool = False,
                               dtype_bytes: int | None = None) -> float:
    """Bytes autograd keeps per token of a micro-batch (see the module docstring).
    ``dtype_bytes`` overrides the compute dtype's size (8 for a float64 model)."""
    kept, blocks = checkpoint_parts(config, precision, dtype_bytes=dtype_bytes)
    return kept + max(blocks) if checkpoint else kept - config.n_layers * config.d_model * _bytes(
        precision, dtype_bytes) + sum(blocks)


def _bytes(precision: str, dtype_bytes: int | None) -> int:
    return dtype_bytes or _COMPUTE_BYTES[precision]


def checkpoint_parts(config: ModelConfig, precision: str = "fp32", *,
                     dtype_bytes: int | None = None) -> tuple[float, list[float]]:
    """(bytes a checkpointed forward keeps per token: every block's input, the final norm and
    the cross-entropy's float32 log-softmax; bytes each block keeps per token when it is not
    checkpointed)."""
    a, wide = _bytes(precision, dtype_bytes), max(4, dtype_bytes or 4)
    blocks = [c * a + w * wide for c, w in (_block_elements(config, i) for i in range(config.n_layers))]
    v = config.vocab_size
    head = (3 * config.d_model + 1 + v) * wide   # the final norm, the readout's input, CE's log-softmax
    return config.n_layers * config.d_model * a + head, blocks


def static_bytes(config: ModelConfig, precision: str = "fp32") -> float:
    """Weights, gradients and optimiser state (see the module docstring)."""
    per = STATIC_BYTES_PER_PARAM + (BF16_COPY_BYTES_PER_PARAM if precision == "bf16" else 0)
    return float(param_counts(config).total) * per


@dataclass(frozen=True)
class MemoryPlan:
    """How a step of ``batch_size`` sequences runs on a device of ``device_bytes``."""

    micro_batches: int
    checkpoint: bool
    static_bytes: float
    activation_bytes: float        # of one micro-batch
    device_bytes: float

    @property
    def total_bytes(self) -> float:
        return self.static_bytes + self.activation_bytes

    def summary(self) -> str:
        return (f"{self.micro_batches} micro-batch(es){', checkpointed blocks' if self.checkpoint else ''}: "
                f"{self.static_bytes / 2**30:.1f} GiB of weights and optimiser state + "
                f"{self.activation_bytes / 2**30:.1f} GiB of activations of {self.device_bytes / 2**30:.1f} GiB")


class DoesNotFit(ValueError):
    """A rung whose weights and optimiser state alone exceed one device."""


def host_bytes() -> float | None:
    """This machine's physical memory in bytes (None where the system does not say)."""
    import os

    try:
        return float(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (AttributeError, OSError, ValueError):
        return None


def check_host_memory(configs: Mapping[str, ModelConfig], precision: str = "fp32") -> None:
    """Raise ``DoesNotFit`` for the first config whose weights, gradients and optimiser state
    alone exceed this machine's memory: a sweep checks its rungs before it creates a trial, so a
    rung with a billion experts is one line, not a MemoryError in the middle of a trial."""
    limit = host_bytes()
    if limit is None:
        return
    for name, config in configs.items():
        need = static_bytes(config, precision)
        if need > limit:
            raise DoesNotFit(f"rung {name} needs {need / 2**30:,.1f} GiB for its weights, gradients and "
                             f"optimiser state alone; this machine has {limit / 2**30:,.1f} GiB")


def plan_memory(config: ModelConfig, batch_size: int, device_bytes: float, precision: str = "fp32", *,
                checkpoint: bool | None = None) -> MemoryPlan:
    """The fewest micro-batches (a divisor of ``batch_size``) whose step fits in
    ``MEMORY_FRACTION`` of ``device_bytes``, without checkpointing when that fits with at most
    eight micro-batches, else with it (``checkpoint`` True or False forces it). Raises
    ``DoesNotFit`` when even one sequence does not fit: the rung needs more than one device."""
    budget = MEMORY_FRACTION * device_bytes
    static = static_bytes(config, precision)
    options = [checkpoint] if checkpoint is not None else [False, True]
    divisors = [k for k in range(1, batch_size + 1) if batch_size % k == 0]
    for ckpt in options:
        per_seq = activation_bytes_per_token(config, precision, checkpoint=ckpt) * config.seq_len
        for k in divisors:
            if ckpt is False and checkpoint is None and k > 8:
                break   # many small micro-batches run slower than checkpointed large ones
            act = per_seq * batch_size / k
            if static + act <= budget:
                return MemoryPlan(k, ckpt, static, act, device_bytes)
    per_seq = activation_bytes_per_token(config, precision, checkpoint=True) * config.seq_len
    raise DoesNotFit(f"{config.name or 'the rung'} does not fit one device of {device_bytes / 2**30:.1f} GiB: "
                     f"{static / 2**30:.1f} GiB of weights and optimiser state + {per_seq / 2**30:.2f} GiB "
                     f"for one checkpointed sequence > {MEMORY_FRACTION:.0%} of it; it needs more than one device")


def resolve_accumulation(config: ModelConfig, batch_size: int, precision: str, micro_batches: int | str,
                         checkpoint: bool | str, device_bytes: float | None) -> tuple[int, bool]:
    """(micro-batches, checkpoint) of a run: what is set by hand stays; ``"auto"`` is planned
    from the device's memory (``plan_memory``), or is (1, False) where the memory is the
    host's (``device_bytes`` None: the CPU, whose batches of the CPU ladder are small)."""
    auto_k, auto_c = micro_batches == "auto", checkpoint == "auto"
    if not (auto_k or auto_c):
        return int(micro_batches), bool(checkpoint)
    if device_bytes is None:
        return (1 if auto_k else int(micro_batches)), (False if auto_c else bool(checkpoint))
    if not auto_k:   # micro-batches by hand: checkpoint only if they do not fit without it
        per_seq = activation_bytes_per_token(config, precision) * config.seq_len
        fits = static_bytes(config, precision) + per_seq * batch_size / int(micro_batches) \
            <= MEMORY_FRACTION * device_bytes
        return int(micro_batches), not fits
    plan = plan_memory(config, batch_size, device_bytes, precision, checkpoint=None if auto_c else bool(checkpoint))
    return plan.micro_batches, plan.checkpoint
