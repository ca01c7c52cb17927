"""A simulated training backend: the loss of a trial comes from a known analytic surface.

It has the same ``train()`` signature and returns the same ``TrainResult`` as the real
backends, takes (almost) no time, and is deterministic per seed, so sweeps, fits and reviews
can be tested against a *known truth*.

The surface (all logs natural; N = active parameters of the config, ``proxy.flops``):

* Loss floor, a Kaplan/Chinchilla-style power law in size (Hoffmann et al. 2022, eq. 2 without
  the data term unless ``data_coef`` > 0)::

      L0(N, D) = E + A * N_eff^-alpha + B * D^-beta,   N_eff = N_active * (N_total/N_active)^expert_exponent

  ``expert_exponent`` > 0 lets extra (inactive) experts help, as in the unified MoE scaling law
  of Clark et al. 2022; 0 (default) makes the floor depend on active parameters only.
* Optimum of each continuous knob, a power law in size (the thing a ladder must discover)::

      log k*(N) = log c_k + gamma_k * log(N / N0)

  and for ``lr`` optionally a *bend*: above ``bend_params`` the exponent changes by
  ``bend_gamma`` (so a fit on small rungs mis-predicts large ones; used to test backtests).
* A quadratic basin in log space around each optimum (curvature ``a_k`` in nats per squared
  e-fold)::

      L = L0 + sum_k a_k * (log k - log k*)^2 + mix_curvature * KL(p* || p) + noise

  knobs that may be 0 (``warmup_frac``, ``weight_decay``, coefficients) are floored at 1e-6
  before the log.

  The learning rate's basin may instead be asymmetric (``lr_basin = "asymmetric"``): in
  x = log(lr / lr*), ``lr_curvature * x^2`` below the optimum and
  ``lr_asymmetry * lr_curvature * (x^2 + x^3 / log wall_factor)`` above it, a gentle rise below
  and a steepening wall above, as real learning-rate curves have (``fits.calibration``,
  ``basin_excess``; its argmin is still lr*). The default stays the quadratic.
* A divergence wall: ``lr > wall_factor * lr*`` diverges; the step is earlier the further past
  the wall, ``step = floor(total_steps * (wall_factor * lr* / lr)^2)`` (at least 1).
* Per-trial Gaussian noise with standard deviation ``noise_sd`` nats, drawn from a generator
  seeded by (seed, a CRC of the config and hparams): deterministic per seed, different for
  different settings.

The truth is passed as a keyword, ``train(..., truth=SimulatedTruth(...))`` (the runner takes
it from the experiment file's ``[simulated]`` table); when the keyword is absent, a
``SimulatedTruth`` given as ``data`` is used, else the default truth. ``data`` may be a
``proxy.data.MixtureData`` or any object with ``train_mix`` / ``eval_mix`` mappings (the sweep
passes a light weights-only object so that no corpus is loaded), or None (one domain,
"simulated").
"""

from __future__ import annotations

import json
import math
import time
import zlib
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

import numpy as np

from proxy.config import ModelConfig
from proxy.flops import param_counts, train_flops
from proxy.hparams import TrainHParams
from proxy.ladder import default_tokens  # the same token rule as the real trainers
from proxy.result import ExpertLoad, TrainResult

BACKEND = "simulated"
CONTINUOUS_KNOBS = ("lr", "aux_loss_coef", "z_loss_coef", "init_scale", "warmup_frac",
                    "weight_decay", "batch_size")
_LOG_FLOOR = 1e-6
LR_BASINS = ("quadratic", "asymmetric")


@dataclass(frozen=True)
class KnobTruth:
    """Optimum ``c * (N/N0)^gamma`` of one knob and the curvature of its log-space basin."""

    optimum: float
    gamma: float = 0.0
    curvature: float = 0.0

    def __post_init__(self) -> None:
        if not (math.isfinite(self.optimum) and self.optimum > 0):
            raise ValueError(f"KnobTruth.optimum must be finite and > 0, got {self.optimum!r}")
        for name in ("gamma", "curvature"):
            if not math.isfinite(getattr(self, name)):
                raise ValueError(f"KnobTruth.{name} must be finite, got {getattr(self, name)!r}")
        if self.curvature < 0:
            raise ValueError(f"KnobTruth.curvature must be >= 0, got {self.curvature!r}")


@dataclass(frozen=True)
class SimulatedTruth:
    """The known truth of a simulated sweep (see the module docstring for the formulas).

    Units: ``n0`` and ``bend_params`` in active parameters; losses and ``noise_sd`` in nats;
    ``sleep_s`` in seconds (per trial, to test interruptions).
    """

    lr: float = 3e-3                  # c of lr* at N0
    lr_gamma: float = -0.3            # lr* ~ N^gamma
    lr_curvature: float = 0.08        # nats per squared e-fold of lr
    wall_factor: float = 4.0          # lr > wall_factor * lr* diverges
    lr_basin: str = "quadratic"       # "quadratic" | "asymmetric" (module docstring)
    lr_asymmetry: float = 2.5         # asymmetric basin: high-side / low-side curvature, >= 1
    n0: float = 1e6
    floor_e: float = 1.5              # E
    floor_a: float = 40.0             # A
    floor_alpha: float = 0.3          # alpha
    data_coef: float = 0.0            # B (0: no data term)
    data_alpha: float = 0.3           # beta
    expert_exponent: float = 0.0
    noise_sd: float = 0.0
    bend_params: float = 0.0          # 0: no bend
    bend_gamma: float = 0.0           # extra exponent of lr* above bend_params
    knobs: Mapping[str, KnobTruth] = field(default_factory=dict)
    mix_optimum: Mapping[str, float] = field(default_factory=dict)
    mix_curvature: float = 0.0
    domain_offsets: Mapping[str, float] = field(default_factory=dict)
    sleep_s: float = 0.0

    def __post_init__(self) -> None:
        for name in ("lr", "wall_factor", "n0", "floor_a", "floor_alpha", "data_alpha"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
                raise ValueError(f"SimulatedTruth.{name} must be finite and > 0, got {value!r}")
        for name in ("lr_curvature", "floor_e", "data_coef", "noise_sd", "bend_params",
                     "mix_curvature", "sleep_s", "expert_exponent"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
                raise ValueError(f"SimulatedTruth.{name} must be finite and >= 0, got {value!r}")
        for name in ("lr_gamma", "bend_gamma"):   # exponents: any sign, but numbers
            value = getattr(self, name)
            if isinstance(value, bool) or not (isinstance(value, (int, float)) and math.isfinite(value)):
                raise ValueError(f"SimulatedTruth.{name} must be a finite number, got {value!r}")
        for name in ("domain_offsets", "mix_optimum"):
            for key, value in getattr(self, name).items():
                if isinstance(value, bool) or not (isinstance(value, (int, float)) and math.isfinite(value)):
                    raise ValueError(f"SimulatedTruth.{name}.{key} must be a finite number, got {value!r}")
        if self.sleep_s > 3600:
            raise ValueError(f"SimulatedTruth.sleep_s must be <= 3600 s, got {self.sleep_s!r}")
        if self.wall_factor <= 1:
            raise ValueError(f"SimulatedTruth.wall_factor must be > 1, got {self.wall_factor!r}")
        if self.lr_basin not in LR_BASINS:
            raise ValueError(f"SimulatedTruth.lr_basin must be one of {LR_BASINS}, got {self.lr_basin!r}")
        if isinstance(self.lr_asymmetry, bool) or not (isinstance(self.lr_asymmetry, (int, float))
                                                        and math.isfinite(self.lr_asymmetry) and self.lr_asymmetry >= 1):
            raise ValueError(f"SimulatedTruth.lr_asymmetry must be a finite number >= 1, got {self.lr_asymmetry!r}")
        for name in self.knobs:
            if name not in CONTINUOUS_KNOBS or name == "lr":
                raise ValueError(f"SimulatedTruth.knobs: unknown knob {name!r}; "
                                 f"choose from {[k for k in CONTINUOUS_KNOBS if k != 'lr']}")
        if self.mix_optimum and (any(v < 0 for v in self.mix_optimum.values())
                                 or sum(self.mix_optimum.values()) <= 0):
            raise ValueError(f"SimulatedTruth.mix_optimum must be non-negative weights, got "
                             f"{dict(self.mix_optimum)!r}")

    def _lr_excess(self, x: float) -> float:
        """Loss above the floor from the learning rate, at x = log(lr / lr*) (nats)."""
        if self.lr_basin == "quadratic":
            return self.lr_curvature * x ** 2
        from fits.calibration import basin_excess   # one formula for both simulators

        return basin_excess(x, self.lr_curvature, "asymmetric", self.lr_asymmetry, self.wall_factor)

    # The truth, as functions of size ------------------------------------------------------
    def optimum(self, knob: str, n_active: float) -> float:
        """The optimal value of a continuous knob at ``n_active`` active parameters."""
        if knob == "lr":
            log_opt = math.log(self.lr) + self.lr_gamma * math.log(n_active / self.n0)
            if self.bend_params > 0 and n_active > self.bend_params:
                log_opt += self.bend_gamma * math.log(n_active / self.bend_params)
            return math.exp(log_opt)
        truth = self.knobs[knob]
        return truth.optimum * (n_active / self.n0) ** truth.gamma

    def floor(self, n_active: float, n_total: float, tokens: float) -> float:
        """The loss at optimal settings, without noise (nats)."""
        n_eff = n_active * (n_total / n_active) ** self.expert_exponent
        loss = self.floor_e + self.floor_a * n_eff ** -self.floor_alpha
        if self.data_coef > 0:
            loss += self.data_coef * tokens ** -self.data_alpha
        return loss

    def loss(self, config: ModelConfig, hparams: TrainHParams,
             train_mix: Mapping[str, float] | None = None) -> float:
        """Noise-free loss of a (converged) trial; +inf past the divergence wall."""
        counts = param_counts(config)
        n_active, n_total = float(counts.active), float(counts.total)
        tokens = float(hparams.tokens or default_tokens(config))
        lr_opt = self.optimum("lr", n_active)
        if hparams.lr > self.wall_factor * lr_opt:
            return math.inf
        value = self.floor(n_active, n_total, tokens)
        value += self._lr_excess(math.log(hparams.lr / lr_opt))
        for name, truth in self.knobs.items():
            x = max(float(getattr(hparams, name)), _LOG_FLOOR)
            value += truth.curvature * math.log(x / self.optimum(name, n_active)) ** 2
        if self.mix_curvature > 0 and self.mix_optimum and train_mix:
            value += self.mix_curvature * _kl(self.mix_optimum, train_mix)
        return value


def _kl(target: Mapping[str, float], mix: Mapping[str, float]) -> float:
    """KL(p* || p) over the target's domains; a domain missing from the mix costs 20 nats."""
    t_sum = sum(target.values())
    m_sum = sum(mix.values()) or 1.0
    total = 0.0
    for name, weight in target.items():
        p = weight / t_sum
        if p <= 0:
            continue
        q = mix.get(name, 0.0) / m_sum
        total += p * (math.log(p / q) if q > 0 else 20.0)
    return total


def _settings_crc(config: ModelConfig, hparams: TrainHParams, mix: Mapping[str, float]) -> int:
    blob = json.dumps([config.to_dict(), hparams.to_dict(), sorted(mix.items())],
                      sort_keys=True, default=str)
    return zlib.crc32(blob.encode())


def train(config: ModelConfig, hparams: TrainHParams, data: Any, seed: int, *,
          progress: Callable[[int, int, float], None] | None = None,
          truth: SimulatedTruth | None = None, **_: Any) -> TrainResult:
    """Simulate one training run (see the module docstring); deterministic per ``seed``."""
    if truth is None:
        truth = data if isinstance(data, SimulatedTruth) else SimulatedTruth()
    if not isinstance(truth, SimulatedTruth):
        raise TypeError(f"truth must be a SimulatedTruth, got {type(truth).__name__}")
    start = time.perf_counter()
    train_mix: Mapping[str, float] = dict(getattr(data, "train_mix", None) or {})
    eval_mix: Mapping[str, float] = dict(getattr(data, "eval_mix", None) or {}) or (
        dict(train_mix) or {"simulated": 1.0})
    counts = param_counts(config)
    tokens = int(hparams.tokens or default_tokens(config))
    steps = max(1, tokens // (hparams.batch_size * config.seq_len))
    rng = np.random.default_rng([int(seed) & 0xFFFFFFFF, _settings_crc(config, hparams, train_mix)])
    clean = truth.loss(config, hparams.replace(tokens=tokens), train_mix)
    noise = float(rng.normal(0.0, truth.noise_sd)) if truth.noise_sd > 0 else 0.0
    diverged = not math.isfinite(clean)
    diverged_step: int | None = None
    if diverged:
        wall = truth.wall_factor * truth.optimum("lr", counts.active)
        diverged_step = max(1, min(steps, int(steps * (wall / hparams.lr) ** 2)))
    last_step = diverged_step if diverged else steps
    initial = math.log(config.vocab_size)
    final_train = math.inf if diverged else clean + noise

    def curve_at(step: int) -> float:
        # An exponential approach from ln V to the final loss (shape only; for plots).
        if diverged:
            return initial + 10.0 * step / max(last_step, 1)
        return final_train + (initial - final_train) * math.exp(-5.0 * step / steps)

    n_points = min(hparams.log_points, last_step)
    points = sorted({int(round(i * (last_step - 1) / max(n_points - 1, 1))) for i in range(n_points)})
    curve = tuple((s, float(curve_at(s))) for s in points)
    # Optional sleep (tests of interruption), split so that progress is reported as it goes.
    chunks = 4
    for i in range(chunks):
        if truth.sleep_s > 0:
            time.sleep(truth.sleep_s / chunks)
        if progress is not None:
            step = (i + 1) * last_step // chunks
            progress(step, steps, curve_at(step))
    if diverged:
        by_domain = {name: math.nan for name in eval_mix}
        final = math.nan
    else:
        by_domain = {name: final_train + float(truth.domain_offsets.get(name, 0.0)) for name in eval_mix}
        weight_sum = sum(eval_mix.values())
        final = sum(by_domain[n] * w for n, w in eval_mix.items()) / weight_sum
    # Expert load: better balance with a larger aux-loss coefficient (shape only).
    imbalance = 0.5 / (1.0 + hparams.aux_loss_coef / 1e-2)
    frac = 1.0 + imbalance * rng.uniform(-1.0, 1.0, size=config.n_experts)
    frac = np.clip(frac, 1e-3, None)
    frac = frac / frac.sum()
    layers = config.n_layers - config.n_dense_layers
    fractions = tuple(tuple(float(x) for x in frac) for _ in range(layers))
    load = ExpertLoad(fractions=fractions, max_over_mean=float(frac.max() * config.n_experts),
                      dropped_fraction=0.0, balance_loss=1.0 + imbalance ** 2)
    done_tokens = last_step * hparams.batch_size * config.seq_len
    wall_time = time.perf_counter() - start
    return TrainResult(
        final_loss=float(final), eval_loss_by_domain=by_domain, final_train_loss=float(final_train),
        loss_curve=curve, steps=int(last_step), tokens=int(done_tokens),
        flops=float(train_flops(config, done_tokens)), wall_time_s=wall_time,
        tokens_per_s=done_tokens / max(wall_time, 1e-9), expert_load=load, seed=int(seed),
        backend=BACKEND, diverged=diverged, diverged_step=diverged_step,
        divergence_reason="lr past the simulated wall" if diverged else "",
        params_total=counts.total, params_active=counts.active,
        config=config.to_dict(), hparams=hparams.replace(tokens=tokens).to_dict())
