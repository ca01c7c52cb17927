"""Coordinate check: does every module's activation size stay put as the model widens?

The recipe of Yang et al. 2022 ("Tensor Programs V", Appendix D.1, "coordinate check"): train
models of widths ``base * 2^k`` (fixed depth and head size, so the head count grows; a fixed
expert count with ``d_expert = d_model``) for a few Adam steps at a deliberately large learning
rate, over several seeds, and record the mean absolute value of each module's output at every
step. Under a parametrization that transfers (muP) these coordinate sizes are Theta(1) in width:
the slope of ``log mean|act|`` against ``log width`` is about 0. Under SP the logits and hidden
outputs grow with width once training moves the weights (Adam's update of an ``n x n`` matrix
changes its output by ``Theta(n * lr)``), so their slope is clearly positive.

Steps are counted from 1: step 1 is the forward pass at initialisation, step t the forward pass
after t - 1 updates (the convention of the ``mup`` package's ``get_coord_data``). The criteria
hold *from step 2 on*.

The recipe follows the ``mup`` package's ``get_coord_data`` where it has a default:

- the *same batch* at every step (its ``fix_data=True``), so a step's outputs differ from the
  last step's only by the update (``fresh_batches`` draws a new batch per step instead);
- the *language-model loss* alone (its ``lossfn='xent'``): the balancing and z-loss
  coefficients are 0 (``aux_losses`` restores the trainer's defaults). The check is of the
  width exponents of the table, which TP V derives for the task loss;
- a zero-initialised readout (``readout_zero_init``, TP V Appendix D.2, ``MuReadout``'s
  option), in both parametrizations: under muP the logits' initial value is Theta(m^-1/2) by
  design (output weights of variance ``1/fan_in^2``) and would take several steps to fade under
  the Theta(1) updates, which is a fact about the initial value, not the parametrization.

What each departure from the recipe shows is measured in the README ("Parametrizations and
the coordinate check").

Recorded modules (``module_names``), each the mean |x| over every element of the batch:

- ``embed``: the token embeddings ``x0`` (B, T, d);
- ``blocks.i.attn``: the attention output ``a = o @ w_o`` of block i (before the residual
  multiplier);
- ``blocks.i.router``: the router logits ``z = fm.router * (h @ router)`` (N, E);
- ``blocks.i.experts``: the FFN output of an MoE block, ``sum_j g_j y_{e_j}(h)`` (plus shared
  experts) (B, T, d); dense blocks record their MLP output under the same name;
- ``logits``: the output logits (B, T, V).

This module is framework-free: settings, slope fits and the result record with its JSON. The
recording itself lives in ``proxy.backends.torch.coordcheck`` and ``proxy.backends.jax.coordcheck``.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from proxy.config import PARAMETRIZATIONS, ModelConfig
from proxy.data import load_data
from proxy.hparams import TrainHParams

MUP_TOLERANCE = 0.1         # |slope| bound of every module under muP, from step 2 on
SP_LOGIT_MIN_SLOPE = 0.3    # the negative control: SP's logit slope exceeds this from step 2 on
FROM_STEP = 2               # first step (1-based) the criteria apply to


def module_names(config: ModelConfig) -> tuple[str, ...]:
    """Recorded modules of ``config`` in forward order (see the module docstring)."""
    names = ["embed"]
    for i in range(config.n_layers):
        names.append(f"blocks.{i}.attn")
        if config.is_moe_layer(i):
            names.append(f"blocks.{i}.router")
        names.append(f"blocks.{i}.experts")
    names.append("logits")
    return tuple(names)


@dataclass(frozen=True)
class CoordCheckSettings:
    """What the coordinate check trains.

    Widths are ``base_width * 2^k`` for ``k < n_widths``; head size, depth, expert count and
    top-k are fixed, ``d_expert = d_model`` and the head count is ``d_model / head_dim``.
    Training: Adam(W) at a constant ``lr`` (no warmup, no clipping, no weight decay, so the
    optimiser is the plain one of the muP derivation), ``steps`` forward passes (step 1 is at
    initialisation) on ``batch_size`` x ``seq_len`` tokens of the built-in data.
    """

    parametrization: str = "mup"
    base_width: int = 32
    n_widths: int = 5
    head_dim: int = 16
    n_layers: int = 2
    n_experts: int = 8
    top_k: int = 2
    seq_len: int = 16
    batch_size: int = 2
    steps: int = 5
    seeds: tuple[int, ...] = tuple(range(8))
    lr: float = 1e-2
    init_std: float = 0.02
    readout_zero_init: bool = True
    fresh_batches: bool = False
    aux_losses: bool = False

    def __post_init__(self) -> None:
        if self.parametrization not in PARAMETRIZATIONS:
            raise ValueError(f"CoordCheckSettings.parametrization must be one of {PARAMETRIZATIONS}, "
                             f"got {self.parametrization!r}")
        for name in ("base_width", "head_dim", "n_layers", "n_experts", "top_k", "seq_len",
                     "batch_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ValueError(f"CoordCheckSettings.{name} must be a positive int, got {value!r}")
        if isinstance(self.n_widths, bool) or not isinstance(self.n_widths, int) or self.n_widths < 2:
            raise ValueError(f"CoordCheckSettings.n_widths must be an int >= 2 (a slope needs two "
                             f"widths), got {self.n_widths!r}")
        if isinstance(self.steps, bool) or not isinstance(self.steps, int) or self.steps < FROM_STEP:
            raise ValueError(f"CoordCheckSettings.steps must be an int >= {FROM_STEP}, got {self.steps!r}")
        if self.base_width % self.head_dim:
            raise ValueError(f"CoordCheckSettings.base_width ({self.base_width}) must be a multiple of "
                             f"head_dim ({self.head_dim})")
        for name in ("readout_zero_init", "fresh_batches", "aux_losses"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"CoordCheckSettings.{name} must be a bool, got {getattr(self, name)!r}")
        seeds = tuple(self.seeds)
        if not seeds or any(isinstance(s, bool) or not isinstance(s, int) or s < 0 for s in seeds):
            raise ValueError(f"CoordCheckSettings.seeds must be non-negative ints, got {self.seeds!r}")
        object.__setattr__(self, "seeds", seeds)
        for name in ("lr", "init_std"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not (
                    math.isfinite(value) and value > 0):
                raise ValueError(f"CoordCheckSettings.{name} must be a finite positive number, got {value!r}")

    @property
    def widths(self) -> tuple[int, ...]:
        return tuple(self.base_width * 2 ** k for k in range(self.n_widths))

    def config(self, width: int) -> ModelConfig:
        """The model of one width (``base_d_model`` = ``base_width``, so m = width / base_width)."""
        return ModelConfig(
            d_model=width, n_layers=self.n_layers, n_heads=width // self.head_dim,
            head_dim=self.head_dim, n_experts=self.n_experts, top_k=self.top_k, d_expert=width,
            seq_len=self.seq_len, name=f"coordcheck-w{width}", init_std=self.init_std,
            parametrization=self.parametrization, base_d_model=self.base_width,
            base_head_dim=self.head_dim, readout_zero_init=self.readout_zero_init)

    def hparams(self) -> TrainHParams:
        """Plain Adam at a constant lr: no warmup, no clipping, no weight decay; the auxiliary
        losses off unless ``aux_losses`` (then the trainer's default coefficients)."""
        aux = {} if self.aux_losses else {"aux_loss_coef": 0.0, "z_loss_coef": 0.0}
        return TrainHParams(lr=self.lr, schedule="constant", warmup_frac=0.0, grad_clip=0.0,
                            weight_decay=0.0, batch_size=self.batch_size,
                            tokens=self.steps * self.batch_size * self.seq_len, **aux)

    def to_dict(self) -> dict[str, Any]:
        return {f: (list(v) if isinstance(v, tuple) else v) for f, v in vars(self).items()}


# --- Slope fits -------------------------------------------------------------------------------
def loglog_slope(widths: Sequence[float], values: Sequence[float]) -> float:
    """Least-squares slope of log(values) against log(widths); NaN if any value is not positive
    and finite (a run that blew up has no coordinate size)."""
    x = np.log(np.asarray(widths, dtype=np.float64))
    y = np.asarray(values, dtype=np.float64)
    if x.shape != y.shape or x.size < 2:
        raise ValueError(f"loglog_slope needs matching widths and values (>= 2), got {x.shape} and {y.shape}")
    if not np.all(np.isfinite(y) & (y > 0)):
        return math.nan
    y = np.log(y)
    xc = x - x.mean()
    return float(np.dot(xc, y - y.mean()) / np.dot(xc, xc))


def mean_over_seeds(records: np.ndarray) -> np.ndarray:
    """(seeds, widths, steps) mean |act| -> (widths, steps): the mean over seeds."""
    records = np.asarray(records, dtype=np.float64)
    if records.ndim != 3:
        raise ValueError(f"records must be (seeds, widths, steps), got shape {records.shape}")
    return records.mean(axis=0)


def slopes_by_step(widths: Sequence[int], sizes: np.ndarray) -> tuple[float, ...]:
    """(widths, steps) coordinate sizes -> the log-log slope at each step."""
    sizes = np.asarray(sizes, dtype=np.float64)
    return tuple(loglog_slope(widths, sizes[:, t]) for t in range(sizes.shape[1]))


# --- The result -------------------------------------------------------------------------------
@dataclass(frozen=True)
class CoordCheckResult:
    """Coordinate sizes and slopes of one parametrization on one backend.

    ``sizes[module]`` is a (widths, steps) tuple of tuples: mean |act| averaged over seeds;
    ``per_seed[module]`` the (seeds, widths, steps) raw records; ``slopes[module][t]`` the
    log-log slope at step t + 1.
    """

    parametrization: str
    backend: str
    widths: tuple[int, ...]
    modules: tuple[str, ...]
    steps: int
    sizes: Mapping[str, tuple[tuple[float, ...], ...]]
    slopes: Mapping[str, tuple[float, ...]]
    per_seed: Mapping[str, tuple[tuple[tuple[float, ...], ...], ...]] = field(default_factory=dict)
    settings: Mapping[str, Any] = field(default_factory=dict)
    wall_time_s: float = 0.0

    @classmethod
    def from_records(cls, settings: CoordCheckSettings, backend: str,
                     records: Mapping[str, np.ndarray], wall_time_s: float = 0.0) -> "CoordCheckResult":
        """Build from raw records: module -> (seeds, widths, steps) mean |act|."""
        widths = settings.widths
        modules = module_names(settings.config(widths[0]))
        missing = [m for m in modules if m not in records]
        if missing:
            raise ValueError(f"records lack modules {missing}")
        sizes, slopes, per_seed = {}, {}, {}
        for m in modules:
            raw = np.asarray(records[m], dtype=np.float64)
            if raw.shape != (len(settings.seeds), len(widths), settings.steps):
                raise ValueError(f"records[{m!r}] has shape {raw.shape}, expected "
                                 f"{(len(settings.seeds), len(widths), settings.steps)}")
            mean = mean_over_seeds(raw)
            sizes[m] = tuple(tuple(float(v) for v in row) for row in mean)
            slopes[m] = slopes_by_step(widths, mean)
            per_seed[m] = tuple(tuple(tuple(float(v) for v in row) for row in s) for s in raw)
        return cls(settings.parametrization, backend, widths, modules, settings.steps, sizes, slopes,
                   per_seed, settings.to_dict(), wall_time_s)

    def slope(self, module: str, step: int) -> float:
        """Slope of ``module`` at ``step`` (1-based)."""
        if not 1 <= step <= self.steps:
            raise ValueError(f"step must be in 1..{self.steps}, got {step!r}")
        return self.slopes[module][step - 1]

    def max_abs_slope(self, module: str, from_step: int = FROM_STEP) -> float:
        """max |slope| of ``module`` over steps ``from_step..steps`` (NaN counts as infinite)."""
        values = [abs(s) if math.isfinite(s) else math.inf for s in self.slopes[module][from_step - 1:]]
        return max(values)

    def slope_se(self, module: str) -> tuple[float, ...]:
        """Standard error of each step's slope over seeds: the spread of the slopes fitted to
        each seed alone over sqrt(seeds) (NaN with one seed). It says how far the +-0.1 verdict
        is from seed noise."""
        raw = np.asarray(self.per_seed.get(module, ()), dtype=np.float64)
        if raw.ndim != 3 or raw.shape[0] < 2:
            return tuple(math.nan for _ in range(self.steps))
        per_seed = np.array([slopes_by_step(self.widths, s) for s in raw])
        return tuple(float(v) for v in per_seed.std(axis=0, ddof=1) / math.sqrt(raw.shape[0]))

    def min_slope(self, module: str, from_step: int = FROM_STEP) -> float:
        values = [s if math.isfinite(s) else -math.inf for s in self.slopes[module][from_step - 1:]]
        return min(values)

    def verdicts(self) -> dict[str, bool]:
        """Module -> pass. muP: |slope| <= MUP_TOLERANCE at every step from step 2. SP (the
        negative control): the check passes when the parametrization is visibly *not* width-stable,
        i.e. ``logits`` has slope > SP_LOGIT_MIN_SLOPE at every step from step 2; other modules are
        judged by the muP rule, so their line says whether they happen to be stable."""
        out = {m: self.max_abs_slope(m) <= MUP_TOLERANCE for m in self.modules}
        if self.parametrization == "sp":
            out["logits"] = self.min_slope("logits") > SP_LOGIT_MIN_SLOPE
        return out

    def width_stable(self) -> bool:
        """True when every module's |slope| stays within MUP_TOLERANCE from step 2 on."""
        return all(self.max_abs_slope(m) <= MUP_TOLERANCE for m in self.modules)

    def summary_lines(self) -> list[str]:
        """One line per module: slopes per step and the verdict of the criterion that applies."""
        lines = []
        verdicts = self.verdicts()
        for m in self.modules:
            steps = " ".join(f"{s:+.2f}" for s in self.slopes[m])
            if self.parametrization == "sp" and m == "logits":
                rule = f"min slope from step {FROM_STEP} > {SP_LOGIT_MIN_SLOPE} (SP must grow)"
            else:
                rule = f"|slope| <= {MUP_TOLERANCE} from step {FROM_STEP}"
            se = [v for v in self.slope_se(m)[FROM_STEP - 1:] if math.isfinite(v)]
            spread = f", seed SE <= {max(se):.2f}" if se else ""
            lines.append(f"{'PASS' if verdicts[m] else 'FAIL'}  {m:<18} slopes by step [{steps}]  "
                         f"({rule}{spread})")
        return lines

    def to_dict(self) -> dict[str, Any]:
        return {"parametrization": self.parametrization, "backend": self.backend,
                "widths": list(self.widths), "modules": list(self.modules), "steps": self.steps,
                "slopes": {m: list(v) for m, v in self.slopes.items()},
                "slope_se": {m: list(self.slope_se(m)) for m in self.modules},
                "sizes": {m: [list(r) for r in v] for m, v in self.sizes.items()},
                "per_seed": {m: [[list(r) for r in s] for s in v] for m, v in self.per_seed.items()},
                "verdicts": self.verdicts(), "width_stable": self.width_stable(),
                "settings": dict(self.settings), "wall_time_s": self.wall_time_s}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "CoordCheckResult":
        return cls(data["parametrization"], data["backend"], tuple(data["widths"]), tuple(data["modules"]),
                   int(data["steps"]),
                   {m: tuple(tuple(r) for r in v) for m, v in data["sizes"].items()},
                   {m: tuple(v) for m, v in data["slopes"].items()},
                   {m: tuple(tuple(tuple(r) for r in s) for s in v)
                    for m, v in data.get("per_seed", {}).items()},
                   dict(data.get("settings", {})), float(data.get("wall_time_s", 0.0)))

    def write_json(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        # NaN slopes (a blown-up run) are written as JSON null.
        text = json.dumps(_nan_to_none(self.to_dict()), indent=1)
        path.write_text(text + "\n")
        return path

    @classmethod
    def read_json(cls, path: str | Path) -> "CoordCheckResult":
        return cls.from_dict(_none_to_nan(json.loads(Path(path).read_text())))



def run_widths(settings: "CoordCheckSettings", backend: str,
               record_one: Callable[["CoordCheckSettings", int, int, list[np.ndarray]], Mapping[str, Sequence[float]]],
               progress: Callable[[str], None] | None = None) -> "CoordCheckResult":
    """Train every width for every seed with a framework's ``record_one`` and fit the slopes.

    Each seed draws its batches from the built-in data (one batch repeated at every step, or a
    fresh one per step with ``fresh_batches``), shared by all widths (and by both frameworks),
    so width is the only thing that changes along a line.
    ``record_one(settings, width, seed, batches)`` returns module -> mean |output| per step.
    """
    start = time.perf_counter()
    data = load_data()
    widths = settings.widths
    modules = module_names(settings.config(widths[0]))
    records = {m: np.zeros((len(settings.seeds), len(widths), settings.steps)) for m in modules}
    for s_idx, seed in enumerate(settings.seeds):
        stream = data.batches(seed, settings.batch_size, settings.seq_len)
        if settings.fresh_batches:
            batches = [next(stream) for _ in range(settings.steps)]
        else:
            batches = [next(stream)] * settings.steps
        for w_idx, width in enumerate(widths):
            one = record_one(settings, width, seed, batches)
            for m in modules:
                records[m][s_idx, w_idx] = one[m]
            if progress is not None:
                progress(f"{settings.parametrization} {backend} seed {seed} width {width}")
    return CoordCheckResult.from_records(settings, backend, records, time.perf_counter() - start)

def _nan_to_none(obj: Any) -> Any:
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _nan_to_none(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_nan_to_none(v) for v in obj]
    return obj


def _none_to_nan(obj: Any) -> Any:
    if obj is None:
        return math.nan
    if isinstance(obj, dict):
        return {k: _none_to_nan(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_none_to_nan(v) for v in obj]
    return obj
