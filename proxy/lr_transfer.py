"""Learning-rate transfer across width: sweep the lr on a few widths under SP and muP.

muP's promise (Yang et al. 2022, "Tensor Programs V", Figure 1) is that the best learning rate
stays put as the model widens, while under SP it moves (for Adam, roughly as 1/width for the
hidden weights). This module sweeps a log grid of learning rates on widths of the CPU ladder
(``proxy.ladder``: depth 4, head_dim 16, 8 experts top-2, base width 32), finds the best lr per
width by a parabola in log lr through the grid minimum and its two neighbours, and reports how
far it moves. Training goes through a backend's ``train`` (``proxy.backends``) on the built-in
data; a diverged run scores its divergence threshold, so it never looks best.

Framework-free: the backend is passed in (or loaded by name).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from proxy.hparams import TrainHParams, divergence_threshold
from proxy.ladder import get_ladder


def best_log_lr(lrs: Sequence[float], losses: Sequence[float]) -> float:
    """log of the best lr: the vertex of a parabola in log lr through the grid minimum and its
    two neighbours (the grid point itself when it sits on an edge or the parabola is not convex).
    """
    x = np.log(np.asarray(lrs, dtype=np.float64))
    y = np.asarray(losses, dtype=np.float64)
    if x.size != y.size or x.size < 1:
        raise ValueError(f"best_log_lr needs matching lrs and losses, got {x.size} and {y.size}")
    order = np.argsort(x)
    x, y = x[order], np.where(np.isfinite(y[order]), y[order], np.inf)
    i = int(np.argmin(y))
    if i == 0 or i == x.size - 1 or not np.all(np.isfinite(y[i - 1:i + 2])):
        return float(x[i])
    a, b, _ = np.polyfit(x[i - 1:i + 2], y[i - 1:i + 2], 2)
    if a <= 0:
        return float(x[i])
    return float(np.clip(-b / (2 * a), x[i - 1], x[i + 1]))


@dataclass(frozen=True)
class LrTransferResult:
    """Losses of an lr sweep: ``losses[param][width]`` aligned with ``lrs``; best lr per width."""

    lrs: tuple[float, ...]
    widths: tuple[int, ...]
    losses: Mapping[str, Mapping[int, tuple[float, ...]]]
    tokens: int
    seeds: tuple[int, ...]
    backend: str
    settings: Mapping[str, Any] = field(default_factory=dict)

    def best_lr(self, parametrization: str, width: int) -> float:
        return math.exp(best_log_lr(self.lrs, self.losses[parametrization][width]))

    def shift(self, parametrization: str) -> float:
        """max / min of the best lr over the widths (1 = no movement)."""
        best = [self.best_lr(parametrization, w) for w in self.widths]
        return max(best) / min(best)

    def summary_lines(self) -> list[str]:
        lines = []
        for p in self.losses:
            best = ", ".join(f"w{w}: {self.best_lr(p, w):.3g}" for w in self.widths)
            lines.append(f"{p:>4}: best lr {best}; max/min = {self.shift(p):.2f}")
        return lines

    def to_dict(self) -> dict[str, Any]:
        return {"lrs": list(self.lrs), "widths": list(self.widths), "tokens": self.tokens,
                "seeds": list(self.seeds), "backend": self.backend, "settings": dict(self.settings),
                "losses": {p: {str(w): [None if not math.isfinite(v) else v for v in ls]
                               for w, ls in d.items()} for p, d in self.losses.items()},
                "best_lr": {p: {str(w): self.best_lr(p, w) for w in self.widths} for p in self.losses},
                "shift": {p: self.shift(p) for p in self.losses}}


def sweep(train: Callable[..., Any], lrs: Sequence[float], widths: Sequence[int] = (32, 64, 128), *,
          parametrizations: Sequence[str] = ("sp", "mup"), tokens: int = 0, seeds: Sequence[int] = (0,),
          data: Any = None, backend: str = "torch", batch_size: int = 0,
          progress: Callable[[str], None] | None = None) -> LrTransferResult:
    """Train every (parametrization, width, lr, seed) of the CPU ladder; the loss is the final
    eval loss, averaged over seeds (a diverged run counts as its divergence threshold).

    ``train`` is a backend's ``train(config, hparams, data, seed)``; ``tokens`` 0 uses each rung's
    default budget; ``batch_size`` 0 the rung's batch size.
    """
    if data is None:
        from proxy.data import load_data
        data = load_data()
    ladder = get_ladder("cpu")
    by_width = {r.config.d_model: r for r in ladder.rungs}
    missing = [w for w in widths if w not in by_width]
    if missing:
        raise ValueError(f"widths {missing} are not rungs of the cpu ladder ({sorted(by_width)})")
    losses: dict[str, dict[int, tuple[float, ...]]] = {}
    for p in parametrizations:
        losses[p] = {}
        for w in widths:
            rung = by_width[w]
            config = rung.config.replace(parametrization=p)
            row = []
            for lr in lrs:
                hp = TrainHParams(lr=float(lr), tokens=tokens, batch_size=batch_size or rung.batch_size)
                cap = divergence_threshold(hp, config.vocab_size)
                vals = []
                for seed in seeds:
                    r = train(config, hp, data, seed)
                    vals.append(cap if r.diverged or not math.isfinite(r.final_loss) else r.final_loss)
                row.append(float(np.mean(vals)))
                if progress is not None:
                    progress(f"{p} w{w} lr {lr:.3g}: {row[-1]:.4f}")
            losses[p][w] = tuple(row)
    return LrTransferResult(tuple(float(x) for x in lrs), tuple(widths), losses, tokens, tuple(seeds),
                            backend, {"batch_size": batch_size})
