"""Train one MoE proxy in JAX: the ``jax`` backend of ``proxy.backends``.

The recipe is ``proxy.backends.torch.trainer``'s, step by step:

1. Weights from ``proxy.init.init_params(config, seed, hparams.init_scale)`` (or ``init_params``),
   batches from ``data.batches(seed, batch_size, seq_len)`` (or ``batches``): int arrays
   (B, seq_len + 1); inputs ``batch[:, :-1]``, targets ``batch[:, 1:]``.
2. Loss = mean token cross-entropy + ``aux_loss_coef`` * Switch balancing loss (Fedus et al. 2021,
   eq. 4) + ``z_loss_coef`` * router z-loss (Zoph et al. 2022, eq. 5): the "training loss" of
   the loss curve, the progress callback and the divergence test.
3. Divergence: a non-finite training loss, or one above ``proxy.hparams.divergence_threshold``,
   stops training at that step (its update is discarded); reported, never raised.
4. Gradient clipping by global norm, by hand so both frameworks share the epsilon:
   ``g <- g * min(1, grad_clip / (||g||_2 + clip_eps))`` (Pascanu et al. 2013); 0 disables it.
5. AdamW (Loshchilov & Hutter 2019) from optax parts: per parameter ``scale_by_adam(b1, b2, eps,
   eps_root=0)`` (eps added to sqrt(v_hat), torch's convention), plus ``weight_decay * p`` where
   ``param_rules`` says so, times ``-lr_at(step) * lr_mult``, grouped with ``multi_transform`` by
   labels keyed by canonical name. ``p - lr (u + wd p)`` is torch's decay-then-step
   ``p (1 - lr wd) - lr u``: both decay the pre-step weights, so they agree up to rounding.
6. Aux-loss-free balancing (DeepSeek-V3; Wang et al. 2024), after the optimiser step:
   ``b_e += bias_update_rate * sign(mean(c) - c_e)`` with c the step's pre-drop slots per expert.
7. At the end: evaluation on ``data.eval_sets`` per domain, the mix-weighted overall loss and the
   expert load of the evaluation batches.

Compilation. One jitted step per (config, dispatch, dtype); every hyperparameter (the scheduled lr,
loss coefficients, weight decay, clip, clip eps, betas, Adam eps, bias rate) is an *input*
array, and the optax transform is rebuilt from those inputs inside the trace (its state does
not depend on their values), so a new learning rate or coefficient never recompiles.
``TRACE_COUNTS`` counts traces. The persistent compilation cache is on (``cache_dir()``), so a
fresh process reuses compiled steps.

x64 is enabled only for a float64 model (``proxy.backends.jax.model.enable_x64``); float32 and bf16
steps hold no 64-bit value (their hyperparameter inputs are float32 there), so they run on TPUs.
"""

from __future__ import annotations

import collections
import functools
import os
import time
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

import numpy as np

from proxy.backends.jax import model as model_jax

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import optax  # noqa: E402

from proxy.backends.common import (assemble_result, batch_stream, check_micro_batches,  # noqa: E402
                                   divergence_reason, expert_load, final_evaluation, next_batch,
                                   total_steps)
from proxy.backends.jax.device import placed, resolve_device  # noqa: E402
from proxy.backends.jax.model import (Params, cast_for_compute, flatten_named, forward, init,  # noqa: E402
                                      tree_from_flat)
from proxy.backends.memory import resolve_accumulation  # noqa: E402
from proxy.backends.placement import check_precision  # noqa: E402
from proxy.config import DTYPES, ModelConfig  # noqa: E402
from proxy.hparams import TrainHParams, divergence_threshold, lr_at  # noqa: E402
from proxy.init import init_params as draw_init_params  # noqa: E402
from proxy.parametrization import param_rules  # noqa: E402
from proxy.result import ExpertLoad, TrainResult  # noqa: E402

Progress = Callable[[int, int, float], None]
BACKEND = "jax"
TRACE_COUNTS: collections.Counter[str] = collections.Counter()
# Hyperparameters fed to the compiled step as float64 scalars (one signature for every value).
HP_FIELDS = ("lr", "aux_loss_coef", "z_loss_coef", "weight_decay", "grad_clip", "clip_eps",
             "beta1", "beta2", "adam_eps", "bias_update_rate")


def cache_dir() -> Path:
    """Persistent compilation cache: $PROXY_TRANSFER_JAX_CACHE, else $XDG_CACHE_HOME or
    ~/.cache, under proxy-transfer/jax."""
    explicit = os.environ.get("PROXY_TRANSFER_JAX_CACHE")
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "proxy-transfer" / "jax"


def _enable_compilation_cache() -> None:
    if jax.config.jax_compilation_cache_dir:  # the caller chose one: keep it
        return
    jax.config.update("jax_compilation_cache_dir", str(cache_dir()))
    # Proxy steps compile in about a second; cache everything above a tenth of that.
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.1)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)


_enable_compilation_cache()


def jax_dtype(dtype: Any) -> np.dtype:
    """"float32" / "float64" (or a NumPy/JAX float dtype) -> NumPy dtype."""
    if isinstance(dtype, str) and dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {DTYPES}, got {dtype!r}")
    dt = np.dtype(dtype)
    if dt not in (np.dtype(np.float32), np.dtype(np.float64)):
        raise ValueError(f"dtype must be one of {DTYPES}, got {dtype!r}")
    if dt == np.float64:
        model_jax.enable_x64()
    return dt




def scalar_input(value: float) -> np.ndarray:
    """A float input of the compiled step: float64 where x64 is on (a float64 model), float32
    otherwise (no 64-bit value in a 32-bit step)."""
    return np.asarray(value, dtype=np.float64 if jax.config.jax_enable_x64 else np.float32)


def hp_inputs(hparams: TrainHParams, config: ModelConfig, lr: float) -> dict[str, np.ndarray]:
    """The compiled step's hyperparameter inputs (``scalar_input``), lr being the scheduled one
    for this step."""
    values = dict(hparams.to_dict(), lr=lr, bias_update_rate=config.bias_update_rate)
    return {k: scalar_input(values[k]) for k in HP_FIELDS}


# The pieces of one step ---------------------------------------------------------------------
def _label(lr_mult: float, weight_decay: bool) -> str:
    return f"lr_mult={lr_mult!r},{'decay' if weight_decay else 'no_decay'}"


def optimizer_labels(config: ModelConfig) -> tuple[Params, dict[str, tuple[float, bool]]]:
    """Label tree keyed by canonical name, and label -> (lr multiplier, weight-decay flag)."""
    rules = param_rules(config)
    groups = {_label(r.lr_mult, r.weight_decay): (r.lr_mult, r.weight_decay) for r in rules.values()}
    labels = tree_from_flat({name: _label(r.lr_mult, r.weight_decay) for name, r in rules.items()})
    return labels, groups


def build_optimizer(config: ModelConfig, hp: Mapping[str, Any], dtype: Any) -> optax.GradientTransformation:
    """AdamW as optax parts, one group per (lr multiplier, decay flag); hp values may be traced."""
    labels, groups = optimizer_labels(config)
    c = {k: jnp.asarray(v).astype(dtype) for k, v in hp.items()}
    transforms = {}
    for label, (lr_mult, decay) in groups.items():
        parts = [optax.scale_by_adam(b1=c["beta1"], b2=c["beta2"], eps=c["adam_eps"], eps_root=0.0)]
        if decay:
            parts.append(optax.add_decayed_weights(c["weight_decay"]))
        parts.append(optax.scale(-(c["lr"] * lr_mult)))
        transforms[label] = optax.chain(*parts)
    return optax.multi_transform(transforms, labels)


def clip_by_global_norm(grads: Params, grad_clip: jax.Array, clip_eps: jax.Array) -> tuple[Params, jax.Array]:
    """g * min(1, grad_clip / (||g|| + clip_eps)) when grad_clip > 0; returns (grads, norm)."""
    leaves = jax.tree_util.tree_leaves(grads)
    norm = jnp.sqrt(sum(jnp.sum(g * g) for g in leaves))
    factor = jnp.where(grad_clip > 0, jnp.minimum(1.0, grad_clip / (norm + clip_eps)), 1.0)
    return jax.tree_util.tree_map(lambda g: g * factor.astype(g.dtype), grads), norm


def update_expert_bias(buffers: Params, counts: jax.Array, rate: jax.Array, config: ModelConfig) -> Params:
    """b_e += rate * sign(mean(c) - c_e) per MoE layer (DeepSeek-V3; Wang et al. 2024)."""
    if not config.bias_balancing:
        return buffers
    flat = flatten_named(buffers)
    moe_layers = list(config.moe_layers)
    for row, layer in enumerate(moe_layers):
        name = f"blocks.{layer}.moe.expert_bias"
        bias = flat[name]
        c = counts[row].astype(bias.dtype)
        flat[name] = bias + rate.astype(bias.dtype) * jnp.sign(jnp.mean(c) - c)
    return tree_from_flat(flat)


def cross_entropy(logits: jax.Array, targets: jax.Array) -> jax.Array:
    """Mean token cross-entropy (nats) of integer targets under logits (..., V), in float32 or
    wider whatever the logits' dtype."""
    logits = logits.astype(jnp.promote_types(logits.dtype, jnp.float32))
    picked = jnp.take_along_axis(logits, targets[..., None], axis=-1)[..., 0]
    return jnp.mean(jax.nn.logsumexp(logits, axis=-1) - picked)


def training_loss(params: Params, buffers: Params, batch: jax.Array, hp: Mapping[str, jax.Array],
                  config: ModelConfig, dispatch: str, precision: str = "fp32",
                  remat: bool = False) -> tuple[jax.Array, dict[str, jax.Array]]:
    if precision == "bf16":   # mixed precision: bfloat16 copies of the float32 masters
        params = cast_for_compute(params, jnp.bfloat16)
    logits, aux = forward(params, buffers, batch[:, :-1], config, dispatch=dispatch, remat=remat)
    ce = cross_entropy(logits, batch[:, 1:])
    loss = ce + hp["aux_loss_coef"].astype(ce.dtype) * aux["balance_loss"].astype(ce.dtype) \
        + hp["z_loss_coef"].astype(ce.dtype) * aux["z_loss"].astype(ce.dtype)
    return loss, aux


def accumulated_grads(params: Params, buffers: Params, batch: jax.Array, hp: Mapping[str, jax.Array],
                      config: ModelConfig, dispatch: str, precision: str, micro_batches: int,
                      remat: bool) -> tuple[jax.Array, dict[str, jax.Array], Params]:
    """(training loss, aux, gradients) of a batch, as ``micro_batches`` equal micro-batches in a
    ``lax.scan`` (one micro-batch's activations live at a time). The same accumulation as the
    torch trainer's ``accumulate_gradients``: exact for the cross-entropy, the z-loss and the
    slot counts; the balancing loss per micro-batch. With micro-batches, aux holds only
    ``slot_counts`` (summed)."""
    grad_fn = jax.value_and_grad(training_loss, has_aux=True)
    if micro_batches == 1:
        (loss, aux), grads = grad_fn(params, buffers, batch, hp, config, dispatch, precision, remat)
        return loss, aux, grads
    chunks = batch.reshape(micro_batches, batch.shape[0] // micro_batches, batch.shape[1])

    def body(carry, chunk):
        loss_sum, counts_sum, grad_sum = carry
        (loss, aux), grads = grad_fn(params, buffers, chunk, hp, config, dispatch, precision, remat)
        return (loss_sum + loss, counts_sum + aux["slot_counts"],
                jax.tree_util.tree_map(jnp.add, grad_sum, grads)), None

    n_moe = len(config.moe_layers)
    dtype = jax.tree_util.tree_leaves(params)[0].dtype
    start = (jnp.zeros((), jnp.promote_types(dtype, jnp.float32)),
             jnp.zeros((n_moe, config.n_experts), jnp.int32),
             jax.tree_util.tree_map(jnp.zeros_like, params))
    (loss_sum, counts, grad_sum), _ = jax.lax.scan(body, start, chunks)
    grads = jax.tree_util.tree_map(lambda g: g / micro_batches, grad_sum)
    return loss_sum / micro_batches, {"slot_counts": counts}, grads


def _apply(config: ModelConfig, params: Params, buffers: Params, opt_state: Any, grads: Params,
           counts: jax.Array, hp: Mapping[str, jax.Array]) -> tuple[Params, Params, Any]:
    """Steps 4-6 of the recipe after the gradients: clip, AdamW, bias update."""
    dtype = jax.tree_util.tree_leaves(params)[0].dtype
    grads, _ = clip_by_global_norm(grads, hp["grad_clip"].astype(dtype), hp["clip_eps"].astype(dtype))
    updates, opt_state = build_optimizer(config, hp, dtype).update(grads, opt_state, params)
    params = optax.apply_updates(params, updates)
    buffers = update_expert_bias(buffers, counts, hp["bias_update_rate"], config)
    return params, buffers, opt_state


@functools.lru_cache(maxsize=32)
def compiled_step(config: ModelConfig, dispatch: str, precision: str = "fp32", micro_batches: int = 1,
                  remat: bool = False) -> Callable:
    """The jitted training step (params, buffers, opt_state, batch, hp) ->
    (params, buffers, opt_state, loss, aux); one trace per dtype and batch shape.
    ``micro_batches`` and ``remat``: gradient accumulation and activation checkpointing
    (``accumulated_grads``, ``forward``)."""

    def step(params, buffers, opt_state, batch, hp):
        TRACE_COUNTS["train_step"] += 1
        loss, aux, grads = accumulated_grads(params, buffers, batch, hp, config, dispatch, precision,
                                             micro_batches, remat)
        params, buffers, opt_state = _apply(config, params, buffers, opt_state, grads, aux["slot_counts"], hp)
        return params, buffers, opt_state, loss, aux

    return jax.jit(step)


@functools.lru_cache(maxsize=32)
def guarded_step(config: ModelConfig, dispatch: str, precision: str = "fp32", micro_batches: int = 1,
                 remat: bool = False) -> Callable:
    """The trainer's step: ``compiled_step``'s, plus a divergence ``threshold`` input, with the
    state buffers donated. A step whose training loss is non-finite or above the threshold
    returns the state it was given (its update skipped by ``lax.cond``, as torch stops before
    its update), so the caller never holds two copies of the weights and optimiser state, and
    donation lets XLA write the new state over the old (``tests/test_train_jax.py`` reads the
    aliasing from the compiled step)."""

    def step(params, buffers, opt_state, batch, hp, threshold):
        TRACE_COUNTS["train_step"] += 1
        loss, aux, grads = accumulated_grads(params, buffers, batch, hp, config, dispatch, precision,
                                             micro_batches, remat)
        ok = jnp.isfinite(loss) & (loss <= threshold)
        params, buffers, opt_state = jax.lax.cond(
            ok, lambda s: _apply(config, *s, grads, aux["slot_counts"], hp), lambda s: s,
            (params, buffers, opt_state))
        return params, buffers, opt_state, loss, aux

    return jax.jit(step, donate_argnums=(0, 1, 2))


@functools.lru_cache(maxsize=32)
def compiled_eval(config: ModelConfig, dispatch: str, precision: str = "fp32") -> Callable:
    """The jitted evaluation: (params, buffers, batch) -> (mean token CE, aux)."""

    def evaluate_batch(params, buffers, batch):
        TRACE_COUNTS["eval"] += 1
        if precision == "bf16":
            params = cast_for_compute(params, jnp.bfloat16)
        logits, aux = forward(params, buffers, batch[:, :-1], config, dispatch=dispatch)
        return cross_entropy(logits, batch[:, 1:]), aux

    return jax.jit(evaluate_batch)


# Evaluation and bookkeeping (the same as proxy.backends.torch.trainer; test_parity compares the results) ------
def evaluate(params: Params, buffers: Params, config: ModelConfig, dispatch: str,
             eval_sets: Mapping[str, np.ndarray], batch_size: int,
             precision: str = "fp32") -> tuple[dict[str, float], ExpertLoad]:
    """Mean token CE per domain (nats/byte) and the routing statistics over all evaluation batches."""
    fn = compiled_eval(config, dispatch, precision)
    per_domain: dict[str, float] = {}
    fractions, dropped, balance = [], [], []
    for domain, rows in eval_sets.items():
        total, count = 0.0, 0
        for start in range(0, len(rows), batch_size):
            batch = np.asarray(rows[start:start + batch_size], dtype=np.int32)
            ce, aux = fn(params, buffers, batch)
            n = batch[:, 1:].size
            total += float(ce) * n
            count += n
            fractions.append(np.asarray(aux["load_fractions"], dtype=np.float64))
            dropped.append(float(aux["dropped_fraction"]))
            balance.append(float(aux["balance_loss"]))
        per_domain[domain] = total / count
    return per_domain, expert_load(fractions, dropped, balance)








def init_state(config: ModelConfig, hparams: TrainHParams, seed: int, dtype: Any,
               init_params: Mapping[str, np.ndarray] | None = None) -> tuple[Params, Params, Any]:
    """(params, buffers, optimiser state) at step 0."""
    dt = jax_dtype(dtype)
    params, buffers = init(config, seed, hparams.init_scale, dt)
    if init_params is not None:
        expected = set(flatten_named(params))
        if set(init_params) != expected:
            raise ValueError(f"init_params do not match the canonical table: missing "
                             f"{sorted(expected - set(init_params))}, unknown {sorted(set(init_params) - expected)}")
        params = tree_from_flat({n: jnp.asarray(np.asarray(a), dtype=dt) for n, a in init_params.items()})
    opt_state = build_optimizer(config, hp_inputs(hparams, config, hparams.lr), dt).init(params)
    return params, buffers, opt_state


# The trainer ---------------------------------------------------------------------------------------
def train(config: ModelConfig, hparams: TrainHParams, data: Any, seed: int, *,
          progress: Progress | None = None, dispatch: str = "fast", dtype: str = "float32",
          init_params: Mapping[str, np.ndarray] | None = None,
          batches: Iterable[np.ndarray] | None = None, device: str = "auto",
          precision: str = "fp32", micro_batches: int | str = 1, checkpoint: bool | str = False) -> TrainResult:
    """Train one proxy and evaluate it; see the module docstring for the recipe.

    Same contract as ``proxy.backends.torch.trainer.train`` (``device`` and ``precision`` as
    ``proxy.backends.placement`` says; ``micro_batches`` and ``checkpoint`` as there, through
    ``accumulated_grads`` and ``jax.checkpoint``): ``data`` is a ``proxy.data.MixtureData`` (None
    allowed with ``batches``; then nothing is evaluated and ``final_loss`` is NaN);
    ``progress(step, total_steps, train_loss)`` after every step; ``init_params`` (canonical
    name -> array) and ``batches`` replace the seeded weights and data stream. Never raises on
    divergence.
    """
    if not isinstance(hparams, TrainHParams):
        raise TypeError(f"hparams must be a TrainHParams, got {type(hparams).__name__}")
    if not isinstance(config, ModelConfig):
        raise TypeError(f"config must be a ModelConfig, got {type(config).__name__}")
    if dispatch not in model_jax.DISPATCHES:
        raise ValueError(f"dispatch must be one of {model_jax.DISPATCHES}, got {dispatch!r}")
    start = time.perf_counter()
    check_precision(precision, str(jax_dtype(dtype)))
    dev = resolve_device(device)
    memory = None if dev.platform == "cpu" else (dev.memory_stats() or {}).get("bytes_limit")
    micro_batches, checkpoint = resolve_accumulation(config, hparams.batch_size, precision, micro_batches,
                                                     checkpoint, memory)
    check_micro_batches(hparams.batch_size, micro_batches)
    step_fn = guarded_step(config, dispatch, precision, micro_batches, checkpoint)
    with placed(dev, precision):
        return _train(config, hparams, data, seed, progress, dispatch, dtype, init_params, batches,
                      precision, start, step_fn)


def _train(config: ModelConfig, hparams: TrainHParams, data: Any, seed: int, progress: Progress | None,
           dispatch: str, dtype: str, init_params: Mapping[str, np.ndarray] | None,
           batches: Iterable[np.ndarray] | None, precision: str, start: float, step_fn: Callable) -> TrainResult:
    n_steps = total_steps(config, hparams)
    bsz, seq = hparams.batch_size, config.seq_len
    weights = init_params if init_params is not None else draw_init_params(config, seed, hparams.init_scale)
    params, buffers, opt_state = init_state(config, hparams, seed, dtype, weights)
    stream = batch_stream(data, batches, seed, bsz, seq)
    threshold = divergence_threshold(hparams, config.vocab_size)
    limit = scalar_input(threshold)
    losses: list[float] = []
    diverged_step, reason = None, ""

    for step in range(n_steps):
        batch = next_batch(stream, step, n_steps, (bsz, seq + 1), np.int32)
        hp = hp_inputs(hparams, config, lr_at(step, n_steps, hparams))
        # A diverged step hands back the state it was given (guarded_step), so the old buffers,
        # donated to it, are never needed again.
        params, buffers, opt_state, loss, _ = step_fn(params, buffers, opt_state, batch, hp, limit)
        value = float(loss)
        losses.append(value)
        reason = divergence_reason(value, threshold, step)
        if reason:
            diverged_step = step
            break  # the step's update is discarded, as torch stops before its update
        if progress is not None:
            progress(step, n_steps, value)
    train_time = time.perf_counter() - start

    final_loss, per_domain, load = final_evaluation(
        data, diverged_step is not None, seq, bsz, hparams.eval_batches,
        lambda sets: evaluate(params, buffers, config, dispatch, sets, bsz, precision))

    return assemble_result(config=config, hparams=hparams, backend=BACKEND, seed=seed, losses=losses,
                           final_loss=final_loss, per_domain=per_domain, load=load,
                           diverged_step=diverged_step, reason=reason,
                           wall_time_s=time.perf_counter() - start, train_time_s=train_time)
