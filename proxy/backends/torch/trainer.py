"""Train one MoE proxy in PyTorch: the ``torch`` backend of ``proxy.backends``.

The training recipe, step by step (the same on the JAX twin):

1. Weights from ``proxy.init.init_params(config, seed, hparams.init_scale)`` (or ``init_params``),
   batches from ``data.batches(seed, batch_size, seq_len)`` (or ``batches``): int arrays
   (B, seq_len + 1); inputs ``batch[:, :-1]``, targets ``batch[:, 1:]``.
2. Loss = mean token cross-entropy + ``aux_loss_coef`` * Switch balancing loss (Fedus et al. 2021,
   eq. 4) + ``z_loss_coef`` * router z-loss (Zoph et al. 2022, eq. 5). This total is the
   "training loss" of the loss curve, the progress callback and the divergence test.
3. Divergence: a non-finite training loss, or one above ``proxy.hparams.divergence_threshold``,
   stops training at that step (before its update); the result says so, nothing is raised.
4. Gradient clipping by global norm, written out so both frameworks share the epsilon:
   ``g <- g * min(1, grad_clip / (||g||_2 + clip_eps))`` (Pascanu et al. 2013); 0 disables it.
5. AdamW (Loshchilov & Hutter 2019, torch convention): per parameter ``lr = lr_at(step) * lr_mult``
   with ``lr_mult`` and the weight-decay flag from ``proxy.parametrization.param_rules``;
   decay first ``p *= 1 - lr * wd``, then ``p -= lr * m_hat / (sqrt(v_hat) + eps)``.
6. Aux-loss-free balancing (DeepSeek-V3; Wang et al. 2024), after the optimiser step:
   ``b_e += bias_update_rate * sign(mean(c) - c_e)`` with c the step's token-slots per expert.
7. At the end: evaluation on ``data.eval_sets`` per domain, the mix-weighted overall loss
   (``data.overall_eval_loss``) and the expert load of the evaluation batches.

Total steps = max(1, tokens // (batch_size * seq_len)), tokens = ``hparams.tokens`` or the rung's
default budget (``proxy.ladder.default_tokens``). Threads: whatever ``torch.get_num_threads()``
the caller set.
"""

from __future__ import annotations

import time
from typing import Any, Callable, Iterable, Mapping

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from proxy.backends.common import (assemble_result, batch_stream, check_micro_batches, divergence_reason,
                                   expert_load, final_evaluation, next_batch, total_steps)
from proxy.backends.memory import resolve_accumulation
from proxy.backends.placement import check_precision
from proxy.backends.torch.device import compute_dtype, numerics, resolve_device
from proxy.backends.torch.model import TorchMoEModel
from proxy.config import DTYPES, ModelConfig
from proxy.hparams import TrainHParams, divergence_threshold, lr_at
from proxy.init import init_params as draw_init_params
from proxy.parametrization import param_rules
from proxy.result import ExpertLoad, TrainResult

Progress = Callable[[int, int, float], None]
BACKEND = "torch"
# Fallback token budget while no ladder rule is installed: Chinchilla's ~20 tokens per
# (active, non-embedding) parameter (Hoffmann et al. 2022).


def torch_dtype(dtype: str | torch.dtype) -> torch.dtype:
    """"float32" / "float64" (or the torch dtype itself) -> torch dtype."""
    if isinstance(dtype, torch.dtype) and dtype in (torch.float32, torch.float64):
        return dtype
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {DTYPES}, got {dtype!r}")
    return getattr(torch, str(dtype))


# --------------------------------------------------------------------------------------
# The pieces of one step
# --------------------------------------------------------------------------------------
def build_optimizer(model: TorchMoEModel, hparams: TrainHParams) -> torch.optim.AdamW:
    """AdamW with one parameter group per (lr multiplier, weight-decay flag) of the parametrization.

    Every constant is explicit (betas, eps, weight decay). The fused kernel computes the same
    per-element update as the single-tensor loop, deterministically, in one pass over each
    tensor (a proxy has dozens of small tensors; on the CPU the multi-tensor "foreach" path
    still runs ~8 kernels per tensor: 3.3 ms against 0.95 ms per step at w96 on one thread).
    Each group keeps its ``lr_mult``; ``set_learning_rate`` sets lr.
    """
    rules = param_rules(model.config, hparams.init_scale)
    groups: dict[tuple[float, bool], list[torch.nn.Parameter]] = {}
    for name, p in model.named_parameters():
        rule = rules[name]
        groups.setdefault((rule.lr_mult, rule.weight_decay), []).append(p)
    param_groups = [{"params": ps, "lr_mult": mult, "weight_decay": hparams.weight_decay if wd else 0.0}
                    for (mult, wd), ps in groups.items()]
    return torch.optim.AdamW(param_groups, lr=hparams.lr, betas=(hparams.beta1, hparams.beta2),
                             eps=hparams.adam_eps, weight_decay=0.0, amsgrad=False, maximize=False,
                             foreach=False, fused=True, capturable=False, differentiable=False)


def set_learning_rate(optimizer: torch.optim.Optimizer, step: int, n_steps: int, hparams: TrainHParams) -> None:
    """lr of every group = lr_at(step, n_steps) * its lr multiplier (muP, Yang et al. 2022)."""
    base = lr_at(step, n_steps, hparams)
    for group in optimizer.param_groups:
        group["lr"] = base * group["lr_mult"]


def clip_gradients(parameters: Iterable[torch.nn.Parameter], grad_clip: float, clip_eps: float) -> Tensor:
    """Scale all gradients by min(1, grad_clip / (global_norm + clip_eps)); returns the norm before.

    ``grad_clip = 0`` disables clipping (the norm is still returned).
    """
    grads = [p.grad for p in parameters if p.grad is not None]
    norm = torch.nn.utils.get_total_norm(grads, norm_type=2.0, foreach=True)
    if grad_clip > 0:
        # Our own factor (clip_grads_with_norm_ hard-codes its epsilon): the same formula as JAX.
        factor = torch.clamp(grad_clip / (norm + clip_eps), max=1.0)
        torch._foreach_mul_(grads, factor.to(grads[0].dtype))
    return norm


def token_ce(logits: Tensor, targets: Tensor) -> Tensor:
    """Mean token cross-entropy, computed in float32 or wider whatever the logits' dtype."""
    wide = logits.to(torch.promote_types(logits.dtype, torch.float32))
    return F.cross_entropy(wide.reshape(-1, wide.shape[-1]), targets.reshape(-1))


def training_loss(model: TorchMoEModel, batch: Tensor, hparams: TrainHParams) -> tuple[Tensor, dict[str, Tensor]]:
    """CE of batch[:, 1:] given batch[:, :-1], plus the weighted balancing and z losses."""
    logits, aux = model(batch[:, :-1])
    ce = token_ce(logits, batch[:, 1:])
    loss = ce + hparams.aux_loss_coef * aux["balance_loss"] + hparams.z_loss_coef * aux["z_loss"]
    return loss, aux


def update(model: TorchMoEModel, optimizer: torch.optim.Optimizer, loss: Tensor, aux: Mapping[str, Tensor],
           step: int, n_steps: int, hparams: TrainHParams) -> None:
    """Steps 4-6 of the recipe: backward, clip, AdamW step at the scheduled lr, bias update."""
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    apply_update(model, optimizer, aux["slot_counts"], step, n_steps, hparams)


def apply_update(model: TorchMoEModel, optimizer: torch.optim.Optimizer, slot_counts: Tensor,
                 step: int, n_steps: int, hparams: TrainHParams) -> None:
    """Steps 4-6 after the backward: clip, AdamW step at the scheduled lr, bias update."""
    clip_gradients(model.parameters(), hparams.grad_clip, hparams.clip_eps)
    set_learning_rate(optimizer, step, n_steps, hparams)
    optimizer.step()
    model.update_expert_bias(slot_counts, model.config.bias_update_rate)


def compiled_loss(model: TorchMoEModel) -> Callable[..., tuple[Tensor, dict[str, Tensor]]]:
    """``training_loss`` under ``torch.compile`` (inductor), the model's MoE layers left eager:
    inductor's CPU backend cannot lower ``torch._grouped_mm`` (nor the data-dependent token
    permutation without graph breaks), so each MoE layer runs eagerly between compiled attention,
    norm, embedding and loss graphs. Measured on the CPU ladder: 1.07-1.11x eager's step, about
    break-even per trial once the compile is paid (docs/benchmarks.md)."""
    for moe in model.moe_blocks():
        moe.forward = torch.compiler.disable(moe.forward)
    return torch.compile(training_loss, dynamic=False)


def accumulate_gradients(model: TorchMoEModel, batch: Tensor, hparams: TrainHParams,
                         micro_batches: int, loss_fn: Callable = training_loss) -> tuple[Tensor, Tensor]:
    """Forward and backward of a batch as ``micro_batches`` equal micro-batches, the gradients
    summed into ``.grad`` (zeroed first); returns (the batch's training loss, its slot counts).

    Each micro-batch's loss is scaled by 1/k before its backward, so the summed gradient of the
    token-mean cross-entropy and of the z-loss (a mean over tokens) is the full batch's, and the
    slot counts (summed) give the bias update of the full batch. The Switch balancing loss
    ``E sum_e f_e P_e`` is a product of two batch means, so it is computed per micro-batch
    (as Megatron-LM computes it) and with ``aux_loss_coef > 0`` the update differs from the full
    batch's by the micro-batches' spread of f; a capacity factor, likewise, admits slots per
    micro-batch."""
    model.zero_grad(set_to_none=True)
    total, counts = None, None   # k = 1 is the plain step: one chunk, a loss divided by 1 (exact)
    for chunk in batch.chunk(micro_batches):
        loss, aux = loss_fn(model, chunk, hparams)
        (loss / micro_batches).backward()
        total = loss.detach() if total is None else total + loss.detach()
        counts = aux["slot_counts"] if counts is None else counts + aux["slot_counts"]
    return total / micro_batches, counts


# --------------------------------------------------------------------------------------
# Evaluation and bookkeeping
# --------------------------------------------------------------------------------------
@torch.no_grad()
def evaluate(model: TorchMoEModel, eval_sets: Mapping[str, np.ndarray], batch_size: int
             ) -> tuple[dict[str, float], ExpertLoad]:
    """Mean token CE per domain (nats/byte) and the routing statistics over all evaluation batches."""
    per_domain: dict[str, float] = {}
    fractions, dropped, balance = [], [], []
    device = model.readout.w.device
    for domain, rows in eval_sets.items():
        total, count = 0.0, 0
        for start in range(0, len(rows), batch_size):
            batch = torch.as_tensor(np.asarray(rows[start:start + batch_size]), dtype=torch.long).to(device)
            logits, aux = model(batch[:, :-1])
            ce = token_ce(logits, batch[:, 1:])
            total += ce.item() * batch[:, 1:].numel()
            count += batch[:, 1:].numel()
            fractions.append(aux["load_fractions"].double().cpu().numpy())
            dropped.append(aux["dropped_fraction"].item())
            balance.append(aux["balance_loss"].item())
        per_domain[domain] = total / count
    return per_domain, expert_load(fractions, dropped, balance)


# --------------------------------------------------------------------------------------
# The trainer
# --------------------------------------------------------------------------------------
def train(config: ModelConfig, hparams: TrainHParams, data: Any, seed: int, *,
          progress: Progress | None = None, dispatch: str = "fast", dtype: str = "float32",
          init_params: Mapping[str, np.ndarray] | None = None,
          batches: Iterable[np.ndarray] | None = None, device: str = "auto",
          precision: str = "fp32", micro_batches: int | str = 1, checkpoint: bool | str = False,
          compile: bool = False) -> TrainResult:
    """Train one proxy and evaluate it; see the module docstring for the recipe.

    ``data`` is a ``proxy.data.MixtureData`` (it may be None when ``batches`` is given; then
    nothing is evaluated and ``final_loss`` is NaN). ``progress(step, total_steps,
    train_loss)`` is called after every step (``step`` 0-based, so ``step + 1`` are done). ``init_params`` (canonical name -> array) replaces
    the seeded initialisation and ``batches`` (arrays (batch_size, seq_len + 1)) the data stream,
    for parity tests against the JAX twin. ``device`` and ``precision`` are those of
    ``proxy.backends.placement`` (a named device torch does not see raises). ``micro_batches``
    splits each batch for gradient accumulation (``accumulate_gradients``; it must divide the
    batch size) and ``checkpoint`` recomputes each block's activations in the backward instead of
    keeping them (``TorchMoEModel(checkpoint=True)``); ``"auto"`` plans either from the GPU's
    memory (``proxy.backends.memory``), and is no accumulation and no checkpointing on the CPU.
    ``compile`` runs the loss under ``torch.compile`` (``compiled_loss``). A divergence never
    raises: it is reported.
    ``wall_time_s`` covers the whole call (set-up, training, evaluation); ``tokens_per_s`` is the
    training tokens over the time of the training loop alone.
    """
    if not isinstance(hparams, TrainHParams):
        raise TypeError(f"hparams must be a TrainHParams, got {type(hparams).__name__}")
    start = time.perf_counter()
    torch.manual_seed(seed)
    tdtype = torch_dtype(dtype)
    check_precision(precision, str(tdtype).removeprefix("torch."))
    dev = resolve_device(device)
    n_steps = total_steps(config, hparams)
    bsz, seq = hparams.batch_size, config.seq_len
    weights = init_params if init_params is not None else draw_init_params(config, seed, hparams.init_scale)
    memory = torch.cuda.get_device_properties(dev).total_memory if dev.type == "cuda" else None
    micro_batches, checkpoint = resolve_accumulation(config, bsz, precision, micro_batches, checkpoint, memory)
    check_micro_batches(bsz, micro_batches)
    model = TorchMoEModel(config, dispatch=dispatch, dtype=tdtype, params=weights,
                          compute_dtype=compute_dtype(precision, tdtype), checkpoint=checkpoint).to(dev)
    optimizer = build_optimizer(model, hparams)
    loss_fn = compiled_loss(model) if compile else training_loss
    stream = batch_stream(data, batches, seed, bsz, seq)
    threshold = divergence_threshold(hparams, config.vocab_size)
    losses: list[float] = []
    diverged_step, reason = None, ""

    with numerics(dev, precision):
        loop_start = time.perf_counter()
        for step in range(n_steps):
            batch = torch.as_tensor(next_batch(stream, step, n_steps, (bsz, seq + 1), np.int64)).to(dev)
            loss, counts = accumulate_gradients(model, batch, hparams, micro_batches, loss_fn)
            value = loss.item()
            losses.append(value)
            reason = divergence_reason(value, threshold, step)
            if reason:
                diverged_step = step
                break   # before its update, as without accumulation
            apply_update(model, optimizer, counts, step, n_steps, hparams)
            if progress is not None:
                progress(step, n_steps, value)
        train_time = time.perf_counter() - loop_start

        final_loss, per_domain, load = final_evaluation(
            data, diverged_step is not None, seq, bsz, hparams.eval_batches,
            lambda sets: evaluate(model, sets, bsz))

    return assemble_result(config=config, hparams=hparams, backend=BACKEND, seed=seed, losses=losses,
                           final_loss=final_loss, per_domain=per_domain, load=load,
                           diverged_step=diverged_step, reason=reason,
                           wall_time_s=time.perf_counter() - start, train_time_s=train_time)
