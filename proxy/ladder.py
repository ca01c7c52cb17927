"""Named presets: ladders of proxy models (rungs) and the full-size targets they extrapolate to.

A *ladder* is a sequence of rungs that grow in width at fixed depth (the muP setting: Yang et
al. 2022 transfer hyperparameters across width) or, on the GPU ladder, in width and depth
together. A *rung* is one ``ModelConfig`` with its default token budget and batch size. A
*target* is a single, larger config that the ladder's fitted trends are extrapolated to.

Ladders
-------
``cpu``      ten rungs, width 16..256 (depth 4, head_dim 16 so the head count grows with
             width from w32 on; w16, w20 and w24 have one head, 8 experts top-2, d_expert = d_model,
             seq_len 128), about 0.03M..5.4M total parameters. Each rung trains at its default
             budget (>= 1024 optimiser steps) in 25 s (w16..w32: bound by per-op overhead,
             not FLOPs) to ~6 min (w256) on one core; the demo sweeps w16..w48.
``cpu-mup``  the same rungs with ``parametrization="mup"`` (base width 32, base head_dim 16).
``gpu``      six rungs for accelerator users, about 40M..1.1B active parameters (d_model
             512..2048, 8..16 layers, 64 fine-grained experts top-8, seq_len 2048).
``gpu-mup``  the same with ``parametrization="mup"`` (base width 512).

The token rule (``default_tokens``)
-----------------------------------
``N`` is the active non-embedding parameter count (``proxy.flops.param_counts``; the untied
readout counts as non-embedding). Two regimes, split at ``COMPUTE_LIMITED_MAX_N``:

* ``N >= COMPUTE_LIMITED_MAX_N`` (accelerator scale): ``D = 20 N``, the compute-optimal ratio of
  Hoffmann et al. 2022 ("Chinchilla", Table 3: about 20 tokens per parameter).
* ``N < COMPUTE_LIMITED_MAX_N`` (CPU scale): the budget is set by the compute a CPU core
  delivers in minutes, not by compute-optimality: a power law
  ``D = CPU_D_REF * (N / CPU_N_REF) ** CPU_GAMMA`` with a floor of ``CPU_MIN_TOKENS``.
  Training costs ``6 N D`` FLOPs (Kaplan et al. 2020), so 20 N tokens would cost the largest CPU
  rung (N = 2.2M) 5.7e14 FLOPs: hours at the 50-100 GFLOP/s of model FLOPs the torch fast path
  sustains on one or two cores.

  The floor is what puts the ladder in the scaling regime, where a larger proxy is a better one
  (the review's ``scaling_regime`` check). Measured on the built-in data (one thread per trial,
  batch 8 x 128, the best of two learning rates, seed 0): at 128 and 384 steps the rungs' losses
  are still in the byte-statistics plateau or mid-transition (w32 2.32 and 2.12 nats/byte at
  384 steps with two seeds, w96 not below w64); at 768 steps w64 is barely below w48 (1.552 and
  1.564); at 1024 steps every rung is clearly below the next smaller one: w16 1.740, w20 1.669,
  w24 1.588, w32 1.502, w48 1.462, w64 1.397, w96 1.352. The seed-to-seed spread depends on
  the learning rate: 0.0004 at w32 and lr 7e-3, but 0.04 at lr 1.5e-2 (1.502 and 1.545), near
  the optimum, where the seeds cross a sharp drop in loss (around step 450) at different steps;
  at 512 steps of 16 x 128 (the same tokens) the spread is 0.2. Hence the
  floor of 1024 steps of 8 x 128 tokens. Time per trial on one loaded core: w16..w32 25 s (per-op
  overhead dominates below w32, so narrower rungs save nothing), w48 36 s, w64 46 s, w96 70 s.
  The small exponent keeps the budget increasing with size (as every compute-optimal rule
  does) from about N = 0.2M on; the CPU ladder still lives in the under-trained regime (0.6 to
  80 tokens per parameter) and says so, and the CPU target is trained by the same rule.

All budgets are rounded up to a whole number of ``TOKEN_QUANTUM`` tokens.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from proxy.config import ModelConfig
from proxy.flops import param_counts

# --- The token rule ---------------------------------------------------------------------------
CHINCHILLA_TOKENS_PER_PARAM = 20.0   # Hoffmann et al. 2022
COMPUTE_LIMITED_MAX_N = 20_000_000   # active non-embedding params below which the CPU rule applies
CPU_N_REF = 1_000_000                # reference size of the CPU power law (active non-embedding)
CPU_D_REF = 1_240_000                # tokens at N = CPU_N_REF
CPU_GAMMA = 0.1                      # D grows as N^0.1 on the CPU ladder (compute-limited)
CPU_MIN_TOKENS = 1_048_576           # floor: 1024 steps of 8 x 128 tokens (the scaling regime)
TOKEN_QUANTUM = 8_192                # budgets are whole multiples of this many tokens


def _round_up(tokens: float, quantum: int = TOKEN_QUANTUM) -> int:
    return int(math.ceil(tokens / quantum)) * quantum


def default_tokens(config: ModelConfig) -> int:
    """Default training budget of ``config`` in tokens (the rule in the module docstring).

    Used by the trainers when ``TrainHParams.tokens == 0``.
    """
    if not isinstance(config, ModelConfig):
        raise TypeError(f"default_tokens needs a ModelConfig, got {type(config).__name__}")
    n = param_counts(config).active_non_embedding
    if n >= COMPUTE_LIMITED_MAX_N:
        return _round_up(CHINCHILLA_TOKENS_PER_PARAM * n)
    return _round_up(max(CPU_MIN_TOKENS, CPU_D_REF * (n / CPU_N_REF) ** CPU_GAMMA))


# --- Values --------------------------------------------------------------------------------
@dataclass(frozen=True)
class Rung:
    """One proxy model: its config, default token budget (tokens) and batch size (sequences)."""

    name: str
    config: ModelConfig
    tokens: int
    batch_size: int

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise ValueError(f"Rung.name must be a non-empty string, got {self.name!r}")
        if not isinstance(self.config, ModelConfig):
            raise TypeError(f"Rung.config must be a ModelConfig, got {type(self.config).__name__}")
        for field_name in ("tokens", "batch_size"):
            value = getattr(self, field_name)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ValueError(f"Rung.{field_name} must be a positive int, got {value!r}")

    @property
    def steps(self) -> int:
        """Optimiser steps at the default budget: max(1, tokens // (batch_size * seq_len))."""
        return max(1, self.tokens // (self.batch_size * self.config.seq_len))


@dataclass(frozen=True)
class Ladder:
    name: str
    rungs: tuple[Rung, ...]
    description: str = ""

    def __post_init__(self) -> None:
        if not self.rungs:
            raise ValueError(f"Ladder.rungs of {self.name!r} must not be empty")
        names = [r.name for r in self.rungs]
        if len(set(names)) != len(names):
            raise ValueError(f"Ladder.rungs of {self.name!r} has duplicate names: {names}")

    def rung(self, name: str) -> Rung:
        for r in self.rungs:
            if r.name == name:
                return r
        raise ValueError(f"ladder {self.name!r} has no rung {name!r}; choose one of "
                         f"{', '.join(self.rung_names())}")

    def rung_names(self) -> tuple[str, ...]:
        return tuple(r.name for r in self.rungs)

    @property
    def middle(self) -> Rung:
        """The middle rung (the lower middle for an even count)."""
        return self.rungs[(len(self.rungs) - 1) // 2]

    def with_parametrization(self, parametrization: str, name: str | None = None) -> "Ladder":
        """The same rungs under another parametrization (budgets unchanged: N does not change)."""
        rungs = tuple(Rung(r.name, r.config.replace(parametrization=parametrization), r.tokens,
                           r.batch_size) for r in self.rungs)
        return Ladder(name or f"{self.name}-{parametrization}", rungs,
                      f"{self.description} ({parametrization})")


def _rung(name: str, config: ModelConfig, batch_size: int) -> Rung:
    return Rung(name, config, default_tokens(config), batch_size)


# --- CPU ladder: width 16..256 at depth 4 ------------------------------------------------------
CPU_WIDTHS = (16, 20, 24, 32, 48, 64, 96, 128, 192, 256)
CPU_BATCH_SIZE = 8
CPU_BASE_D_MODEL = 32
CPU_HEAD_DIM = 16


def _cpu_config(width: int, name: str, parametrization: str = "sp") -> ModelConfig:
    return ModelConfig(
        d_model=width, n_layers=4, n_heads=width // CPU_HEAD_DIM, head_dim=CPU_HEAD_DIM,
        n_experts=8, top_k=2, d_expert=width, seq_len=128, name=name,
        parametrization=parametrization, base_d_model=CPU_BASE_D_MODEL,
        base_head_dim=CPU_HEAD_DIM)


def _cpu_ladder() -> Ladder:
    rungs = tuple(_rung(f"w{w}", _cpu_config(w, f"cpu-w{w}"), CPU_BATCH_SIZE) for w in CPU_WIDTHS)
    return Ladder("cpu", rungs, "width 16..256, depth 4, 8 experts top-2, seq 128, >= 1024 steps, for CPU cores")


# --- GPU ladder: fine-grained experts, width and depth together --------------------------------
GPU_SHAPES = ((512, 8), (768, 10), (1024, 12), (1280, 14), (1536, 16), (2048, 16))
GPU_HEAD_DIM = 64
GPU_BATCH_SIZE = 256                # sequences of 2048 tokens: 0.5M tokens per step


def _gpu_config(width: int, layers: int, name: str, parametrization: str = "sp") -> ModelConfig:
    # 64 fine-grained experts, top-8, each d_model/2 wide (DeepSeekMoE / OLMoE-style granularity).
    return ModelConfig(
        d_model=width, n_layers=layers, n_heads=width // GPU_HEAD_DIM, head_dim=GPU_HEAD_DIM,
        n_experts=64, top_k=8, d_expert=width // 2, seq_len=2048, name=name,
        parametrization=parametrization, base_d_model=GPU_SHAPES[0][0],
        base_head_dim=GPU_HEAD_DIM)


def _gpu_ladder() -> Ladder:
    rungs = tuple(_rung(f"w{w}-l{n}", _gpu_config(w, n, f"gpu-w{w}-l{n}"), GPU_BATCH_SIZE)
                  for w, n in GPU_SHAPES)
    return Ladder("gpu", rungs, "width 512..2048, 8..16 layers, 64 experts top-8, seq 2048, "
                                "20 tokens per active parameter")


# --- Targets ------------------------------------------------------------------------------
def _targets() -> dict[str, Rung]:
    # cpu-target: the cpu ladder's shape at twice its largest width (~4x its parameters), the
    # config the CPU pipeline extrapolates to and can still train to check the prediction.
    cpu_target = _cpu_config(512, "cpu-target")
    # moe-7b: OLMoE-1B-7B's shape (Muennighoff et al. 2024: 16 layers, d_model 2048, 64 experts
    # top-8) with two-matrix GELU experts widened to 1536 so the expert parameter count matches
    # its three-matrix SwiGLU experts of 1024: ~6.7B total, ~1.1B active.
    moe_7b = ModelConfig(d_model=2048, n_layers=16, n_heads=16, head_dim=128, n_experts=64,
                         top_k=8, d_expert=1536, seq_len=2048, name="moe-7b",
                         base_d_model=GPU_SHAPES[0][0], base_head_dim=GPU_HEAD_DIM)
    # moe-30b: Qwen3-30B-A3B's shape (48 layers, d_model 2048, 128 experts top-8, 32 heads of
    # 128) with GELU experts of 1152 (= 1.5 x its SwiGLU 768) and full multi-head attention:
    # ~30.6B total, ~3.4B active.
    moe_30b = ModelConfig(d_model=2048, n_layers=48, n_heads=32, head_dim=128, n_experts=128,
                          top_k=8, d_expert=1152, seq_len=2048, name="moe-30b",
                          base_d_model=GPU_SHAPES[0][0], base_head_dim=GPU_HEAD_DIM)
    return {
        "cpu-target": _rung("cpu-target", cpu_target, CPU_BATCH_SIZE),
        "moe-7b": _rung("moe-7b", moe_7b, 512),
        "moe-30b": _rung("moe-30b", moe_30b, 1024),
    }


_CPU = _cpu_ladder()
_GPU = _gpu_ladder()
_LADDERS: dict[str, Ladder] = {
    "cpu": _CPU,
    "cpu-mup": _CPU.with_parametrization("mup", "cpu-mup"),
    "gpu": _GPU,
    "gpu-mup": _GPU.with_parametrization("mup", "gpu-mup"),
}
_TARGETS: dict[str, Rung] = _targets()


def ladder_names() -> tuple[str, ...]:
    return tuple(_LADDERS)


def get_ladder(name: str) -> Ladder:
    """The preset ladder called ``name`` (see ``ladder_names()``)."""
    try:
        return _LADDERS[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown ladder {name!r}; choose one of {', '.join(_LADDERS)}") from None


def target_names() -> tuple[str, ...]:
    return tuple(_TARGETS)


def get_target(name: str) -> Rung:
    """The preset target called ``name`` (see ``target_names()``)."""
    try:
        return _TARGETS[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown target {name!r}; choose one of {', '.join(_TARGETS)}") from None
