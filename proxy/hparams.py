"""Training hyperparameters of one proxy trial: the optimiser and loss knobs.

Architecture knobs (expert count, top-k) live in ``ModelConfig``; data-mix weights live in
the data mixture (``proxy.data``). Everything here is the same on both frameworks, with every
default that differs between PyTorch and optax stated explicitly.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Literal, Mapping

Schedule = Literal["constant", "cosine", "wsd"]
SCHEDULES = ("constant", "cosine", "wsd")


@dataclass(frozen=True)
class TrainHParams:
    """Optimiser, schedule and loss settings.

    AdamW follows PyTorch's convention, which optax's ``adamw`` shares: the decoupled weight
    decay is multiplied by the *scheduled* learning rate, ``p <- p - lr_t * (m_hat / (sqrt(v_hat)
    + eps) + weight_decay * p)`` (Loshchilov & Hutter 2019, as implemented by both libraries).
    Weight decay applies to matrices (attention, router, experts, dense MLP, readout), not to
    norm gains or embeddings.
    """

    lr: float = 3e-3
    aux_loss_coef: float = 1e-2        # balancing loss coefficient (Switch: 1e-2)
    z_loss_coef: float = 1e-3          # router z-loss coefficient (ST-MoE: 1e-3)
    init_scale: float = 1.0            # multiplies every init std
    warmup_frac: float = 0.1           # fraction of steps of linear warmup from 0
    weight_decay: float = 0.1
    batch_size: int = 16               # sequences per step
    tokens: int = 0                    # training tokens; 0 means the rung's default budget
    schedule: Schedule = "cosine"
    decay_frac: float = 0.2            # WSD: fraction of steps in the final linear decay
    min_lr_frac: float = 0.1           # cosine / WSD floor as a fraction of lr
    grad_clip: float = 1.0             # global-norm clip; 0 disables
    clip_eps: float = 1e-6             # clip factor = min(1, grad_clip / (norm + clip_eps)) on both sides
    beta1: float = 0.9
    beta2: float = 0.95
    adam_eps: float = 1e-8
    divergence_loss: float = 0.0       # a training loss above this marks divergence; 0 means 1.5 * ln(vocab) + 1
    eval_batches: int = 4              # evaluation batches per domain
    log_points: int = 64               # points kept in the downsampled loss curve

    def __post_init__(self) -> None:
        def finite(name: str, low: float, high: float = math.inf, *, low_open: bool = False) -> None:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise ValueError(f"TrainHParams.{name} must be a finite number, got {value!r}")
            if value < low or value > high or (low_open and value == low):
                bound = f"> {low}" if low_open else f">= {low}"
                raise ValueError(f"TrainHParams.{name} must be {bound} and <= {high}, got {value!r}")

        finite("lr", 0.0, low_open=True)
        finite("aux_loss_coef", 0.0)
        finite("z_loss_coef", 0.0)
        finite("init_scale", 0.0, low_open=True)
        finite("warmup_frac", 0.0, 1.0)
        finite("weight_decay", 0.0)
        finite("decay_frac", 0.0, 1.0)
        finite("min_lr_frac", 0.0, 1.0)
        finite("grad_clip", 0.0)
        finite("clip_eps", 0.0, low_open=True)
        finite("beta1", 0.0, 1.0)
        finite("beta2", 0.0, 1.0)
        finite("adam_eps", 0.0, low_open=True)
        finite("divergence_loss", 0.0)
        for name in ("batch_size", "tokens", "eval_batches", "log_points"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int):
                raise ValueError(f"TrainHParams.{name} must be an int, got {value!r}")
        if self.batch_size <= 0:
            raise ValueError(f"TrainHParams.batch_size must be positive, got {self.batch_size!r}")
        if self.tokens < 0:
            raise ValueError(f"TrainHParams.tokens must be >= 0, got {self.tokens!r}")
        if self.eval_batches <= 0:
            raise ValueError(f"TrainHParams.eval_batches must be positive, got {self.eval_batches!r}")
        if self.log_points <= 1:
            raise ValueError(f"TrainHParams.log_points must be > 1, got {self.log_points!r}")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"TrainHParams.schedule must be one of {SCHEDULES}, got {self.schedule!r}")

    def replace(self, **changes: Any) -> "TrainHParams":
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "TrainHParams":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown TrainHParams field(s): {', '.join(unknown)}")
        return cls(**dict(data))


def divergence_threshold(hparams: TrainHParams, vocab_size: int) -> float:
    """Training loss above which a run counts as diverged.

    The default, 1.5 * ln(V) + 1 nats, sits well above the loss of a uniform predictor (ln V):
    a healthy run never goes back there, a blown-up one passes it within a few steps.
    """
    if hparams.divergence_loss > 0:
        return hparams.divergence_loss
    return 1.5 * math.log(vocab_size) + 1.0


def lr_at(step: int, total_steps: int, hparams: TrainHParams) -> float:
    """Scheduled learning rate at ``step`` (0-based) of ``total_steps``.

    Linear warmup from lr / warmup_steps to lr over ``warmup_steps = round(warmup_frac * total)``
    steps, then: constant; cosine to ``min_lr_frac * lr`` at the last step; or warmup-stable-decay
    (Hu et al. 2024, MiniCPM) holding lr until the last ``decay_frac`` of steps, then linear to
    ``min_lr_frac * lr``. Both frameworks call this one function, so the schedules agree exactly.
    """
    lr = hparams.lr
    warmup = int(round(hparams.warmup_frac * total_steps))
    if warmup > 0 and step < warmup:
        return lr * (step + 1) / warmup
    floor = hparams.min_lr_frac * lr
    if hparams.schedule == "constant":
        return lr
    if hparams.schedule == "cosine":
        span = max(total_steps - warmup - 1, 1)
        progress = min(max((step - warmup) / span, 0.0), 1.0)
        return floor + (lr - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))
    decay_steps = int(round(hparams.decay_frac * total_steps))
    decay_start = total_steps - decay_steps
    if step < decay_start or decay_steps == 0:
        return lr
    progress = (step - decay_start + 1) / decay_steps
    return lr + (floor - lr) * progress
