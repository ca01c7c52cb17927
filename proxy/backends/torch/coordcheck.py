"""Coordinate-check recording in PyTorch: forward hooks on the named submodules.

The model and the optimiser are the trainer's own (``proxy.backends.torch.model.TorchMoEModel``,
``proxy.backends.torch.trainer.build_optimizer`` with the parameter groups of ``proxy.parametrization``),
so the check tests the parametrization as training applies it. Hooks record mean |output| of
``embed``, each block's ``attn`` and ``moe`` (the expert output and, from the returned
``Routing``, the router logits), the dense ``mlp`` where present, and the model's logits.
See ``proxy.diagnostics.coordcheck`` for the recipe and the criteria.
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np
import torch

from proxy.diagnostics.coordcheck import CoordCheckResult, CoordCheckSettings, module_names, run_widths
from proxy.init import init_params
from proxy.backends.torch.model import TorchMoEModel
from proxy.backends.torch.trainer import build_optimizer, training_loss, update

BACKEND = "torch"


def _mean_abs(t: torch.Tensor) -> float:
    return float(t.detach().abs().mean().double())


def attach_recorders(model: TorchMoEModel, sink: dict[str, float]) -> list[Any]:
    """Register forward hooks that write mean |output| of each recorded module into ``sink``.

    Returns the hook handles (call ``.remove()`` on each to detach).
    """
    handles = []

    def put(name: str, pick: Callable[[Any], torch.Tensor]) -> Callable:
        def hook(_module, _inputs, output):
            sink[name] = _mean_abs(pick(output))
        return hook

    handles.append(model.embed.register_forward_hook(put("embed", lambda o: o)))
    for i, block in enumerate(model.blocks):
        handles.append(block.attn.register_forward_hook(put(f"blocks.{i}.attn", lambda o: o)))
        if hasattr(block, "moe"):
            # MoE.forward returns (expert output, Routing); Routing.logits are the router logits z.
            handles.append(block.moe.register_forward_hook(put(f"blocks.{i}.experts", lambda o: o[0])))
            handles.append(block.moe.register_forward_hook(put(f"blocks.{i}.router", lambda o: o[1].logits)))
        else:
            handles.append(block.mlp.register_forward_hook(put(f"blocks.{i}.experts", lambda o: o)))
    handles.append(model.register_forward_hook(put("logits", lambda o: o[0])))
    return handles


def record_one(settings: CoordCheckSettings, width: int, seed: int, batches: list[np.ndarray],
               dtype: torch.dtype = torch.float32) -> dict[str, list[float]]:
    """Mean |act| per module at steps 1..settings.steps of one model (step 1 at initialisation)."""
    config = settings.config(width)
    hparams = settings.hparams()
    torch.manual_seed(seed)
    model = TorchMoEModel(config, dtype=dtype, params=init_params(config, seed, hparams.init_scale))
    optimizer = build_optimizer(model, hparams)
    sink: dict[str, float] = {}
    handles = attach_recorders(model, sink)
    out: dict[str, list[float]] = {m: [] for m in module_names(config)}
    try:
        for step in range(settings.steps):
            batch = torch.as_tensor(batches[step], dtype=torch.long)
            loss, aux = training_loss(model, batch, hparams)
            for m in out:
                out[m].append(sink[m])
            if step + 1 < settings.steps:  # the last forward needs no update after it
                update(model, optimizer, loss, aux, step, settings.steps, hparams)
    finally:
        for h in handles:
            h.remove()
    return out


def run(settings: CoordCheckSettings, *, dtype: torch.dtype = torch.float32,
        progress: Callable[[str], None] | None = None) -> CoordCheckResult:
    """Train every width for every seed and return the slopes (``proxy.diagnostics.coordcheck.run_widths``)."""
    return run_widths(settings, BACKEND, lambda st, width, seed, batches: record_one(st, width, seed, batches, dtype),
                      progress)
