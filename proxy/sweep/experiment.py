"""The experiment file (TOML): what to sweep, where, on which ladder, within which budget.

``load_experiment(path)`` parses and validates the whole file *before anything is created*:
an unknown key at any level, a bad range, an unknown knob, an unreachable store, a missing
domain or a bad preset raises ``ExperimentError`` (a ValueError) whose message starts with the
TOML key path and names the value. See the README section "Experiment files" for a full
annotated example. Defaults:

* ``experiment.storage``: ``sqlite:///runs/<name>/trials.db``; a relative SQLite path is
  resolved against the experiment file's folder (so a file and its runs travel together,
  whatever the working directory).
* ``experiment.seeds = [0]``: every trial trains once per seed (the objective is the mean);
  all trials use the same seeds (common random numbers: differences between trials are not
  noise in the data order); the first seed also seeds the sampler unless ``search.sampler_seed``
  is given.
* ``experiment.heartbeat_interval = 10`` s (stale trials of a dead worker are retried after
  about twice that).
* ``experiment.workers = "auto"``: local worker processes of ``ladder run``, ``ladder sweep`` and
  ``ladder demo``; auto is one per ``threads`` CPU cores this process may use for the torch and
  JAX backends (two one-thread workers on two cores), one for the simulated backend (its trials
  take microseconds; a process would cost more than it saves), and one when ``device`` names an
  accelerator (one trial on it at a time). ``resolve_workers`` states it.
* ``experiment.device = "auto"`` (the framework's accelerator when it has one, else the CPU)
  and ``experiment.precision = "fp32"`` (``tf32``, or ``bf16`` mixed precision over float32
  master weights): ``proxy.backends.placement``.
* ``experiment.micro_batches = "auto"`` and ``experiment.checkpoint = "auto"``: gradient
  accumulation and per-block activation checkpointing planned from the accelerator's memory
  (``proxy.backends.memory``); on the CPU, auto is neither. A number of micro-batches must
  divide every rung's batch size.
* ``search.startup_trials = min(10, trials_per_rung)``, ``search.grid_points = 5`` per
  continuous knob (grid sampler), ``search.multivariate = true`` (TPE).
* ``search.trials_per_upper_rung = trials_per_rung``: trials of a rung whose box the ladder-aware
  search re-centres on the optimum extrapolated from the rungs below (it starts near the answer,
  so it needs fewer trials than a rung searched in the human's box).
* ``search.replicates = 1``: the ladder-aware search trains each rung's incumbent (the trial
  nearest its fitted optimum, ``transfer.ladder.replicate_choice``) again with
  this many further seeds, so the review can measure the seed-to-seed noise the rungs' losses
  are compared against (``scaling_regime``); the replicates count toward the ledger.
* ``review``: see ``REVIEW_DEFAULTS``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from proxy.backends.placement import check_precision, parse_device
from proxy.config import DTYPES, ModelConfig
from proxy.flops import train_flops
from proxy.sweep import knobs as K
from proxy.sweep.data_table import parse_data
from proxy.sweep.fields import ExperimentError, _check_keys, _name, _number, _string, _table
from proxy.sweep.spec import BudgetSpec, DataSpec, FitSpec, KnobSpec, RungSpec
from proxy.sweep.store import check_reachable, resolve_url

SAMPLERS = ("tpe", "random", "grid", "qmc", "gp")
BACKEND_NAMES = ("torch", "jax", "simulated")

# Review policy defaults (read by transfer.ladder and reports.review; README "The review policy"):
REVIEW_DEFAULTS: dict[str, Any] = {
    "min_interior_rungs": 4,        # rungs whose optimum is inside the box (not on an edge)
    "extrapolation_warn": 100.0,    # target/largest-rung ratio on a parameter axis above which to warn
    "extrapolation_fail": 1000.0,   # ... above which the review fails
    "extrapolation_tokens_warn": 10.0,    # the same on the tokens axis, where a trend uses it
    "extrapolation_tokens_fail": 100.0,
    "extrapolation_flops_warn": 1e4,      # ... and on the compute axis (compute grows as N * D)
    "extrapolation_flops_fail": 1e6,
    "max_lr_ratio": 4.0,            # width (high/low) of the 95% interval of the target lr
    "max_loss_penalty": 0.01,       # predicted loss penalty (nats) at the 95% interval ends
    "max_budget_fraction": 0.2,     # sweep FLOPs / target FLOPs
    "backtest_alpha": 0.05,         # miss probability of the backtest's prediction interval
    "divergence_window": 2.0,       # trials within this factor of the planned lr (largest rung)
    "max_divergence_fraction": 0.2,  # ... of which at most this share may diverge
    "max_expert_load": 2.0,         # max/mean expert load of the largest rung's best trial
    "allow_widening": True,         # may the ladder widen a box beyond the human's box
    "max_widen_factor": 4.0,        # ... to at most this multiple of its width (log units)
    "max_widen_rounds": 2,          # edge-widening rounds per rung (each adds trials)
    "regime_z": 1.645,              # a rung's loss must fall below the next smaller one's by z noise sds
}


# Review settings with a bounded range (exclusive low, inclusive high): probabilities and fractions.
REVIEW_RANGES: dict[str, tuple[float, float]] = {
    "backtest_alpha": (0.0, 0.5),
    "max_divergence_fraction": (0.0, 1.0),
    "max_lr_ratio": (1.0, 1e6),
    "max_widen_factor": (1.0, 1e6),
    "divergence_window": (1.0, 1e6),
}


@dataclass(frozen=True)
class SearchSpec:
    sampler: str = "tpe"
    trials_per_rung: int = 20
    startup_trials: int = 10
    trials_per_upper_rung: int | None = None   # None: trials_per_rung
    replicates: int = 1
    sampler_seed: int | None = None            # None: the experiment's first training seed
    grid_points: int = 5
    multivariate: bool = True
    box: tuple[KnobSpec, ...] = ()
    fixed: Mapping[str, Any] = field(default_factory=dict)

    def seed_of(self, training_seeds: tuple[int, ...]) -> int:
        """The sampler's seed: ``sampler_seed``, else the first training seed."""
        return training_seeds[0] if self.sampler_seed is None else self.sampler_seed

    @property
    def upper_trials(self) -> int:
        """Trials of a rung the ladder-aware search re-centres (``trials_per_upper_rung``)."""
        return self.trials_per_rung if self.trials_per_upper_rung is None else self.trials_per_upper_rung


@dataclass(frozen=True)
class Experiment:
    """A validated experiment file. ``storage`` is an absolute URL; FLOPs are training FLOPs."""

    name: str
    storage: str
    backend: str
    seeds: tuple[int, ...]
    dtype: str
    threads: int
    heartbeat_interval: int
    rungs: tuple[RungSpec, ...]
    target: RungSpec | None
    search: SearchSpec
    data: DataSpec
    budget: BudgetSpec
    review: Mapping[str, Any]
    simulated: Any = None            # proxy.backends.simulated.SimulatedTruth for that backend
    path: str = ""
    sha256: str = ""
    workers: int | str = "auto"      # local worker processes: "auto" or a positive int (resolve_workers)
    device: str = "auto"             # proxy.backends.placement: auto | cpu | cuda[:N] | tpu[:N]
    precision: str = "fp32"          # proxy.backends.placement: fp32 | tf32 | bf16
    micro_batches: int | str = "auto"   # gradient accumulation: "auto" (proxy.backends.memory) or k
    checkpoint: bool | str = "auto"     # activation checkpointing per block: "auto" or a bool
    fit: FitSpec = field(default_factory=FitSpec)   # the [fit] table: size axes of the trends
    target_sizes: Any = None         # fits.axes.SizePoint of a [target] given by sizes, no model
    target_label: str = "target"     # ... and its name
    baseline: Any = None             # proxy.sweep.baseline.BaselineSpec: the [baseline] table (None: none)

    def rung(self, name: str) -> RungSpec:
        for r in self.rungs:
            if r.name == name:
                return r
        raise ValueError(f"unknown rung {name!r}; the ladder has {[r.name for r in self.rungs]}")

    @property
    def target_flops(self) -> float | None:
        if self.target is not None:
            return train_flops(self.target.config, self.target.tokens)
        return None if self.target_sizes is None else self.target_sizes.value("flops")

    @property
    def has_target(self) -> bool:
        return self.target is not None or self.target_sizes is not None

    @property
    def target_name(self) -> str:
        return self.target.name if self.target is not None else self.target_label

    def target_point(self) -> Any:
        """The target's sizes on every axis (``fits.axes.SizePoint``), or None without a target."""
        from fits.axes import SizePoint
        from proxy.flops import param_counts

        if self.target is None:
            return self.target_sizes
        counts = param_counts(self.target.config)
        return SizePoint(params_total=float(counts.total), params_active=float(counts.active),
                         tokens=float(self.target.tokens), flops=float(self.target_flops))

    def with_target_sizes(self, point: Any, name: str = "target") -> "Experiment":
        """This experiment planned for a target given by sizes (``ladder plan --at``)."""
        return dataclasses.replace(self, target=None, target_sizes=point, target_label=name)

    @property
    def budget_flops(self) -> float | None:
        """The sweep's FLOP cap: the smaller of the two budget entries (None: no cap)."""
        caps = []
        if self.budget.max_flops is not None:
            caps.append(self.budget.max_flops)
        if self.budget.max_fraction_of_target is not None and self.target_flops:
            caps.append(self.budget.max_fraction_of_target * self.target_flops)
        return min(caps) if caps else None

    def with_storage(self, url: str) -> "Experiment":
        return dataclasses.replace(self, storage=url)


def _config(table: Mapping[str, Any], key: str, skip: tuple[str, ...]) -> ModelConfig:
    fields = {f.name for f in dataclasses.fields(ModelConfig)}
    _check_keys(table, key, fields | set(skip))
    try:
        return ModelConfig(**{k: v for k, v in table.items() if k not in skip})
    except (TypeError, ValueError) as exc:
        raise ExperimentError(key, str(exc)) from exc


def _rung_from_table(table: Any, key: str) -> RungSpec:
    table = _table(table, key)
    for required in ("name", "tokens"):
        if required not in table:
            raise ExperimentError(f"{key}.{required}", "is required")
    name = _name(table["name"], f"{key}.name")
    tokens = _number(table["tokens"], f"{key}.tokens", integer=True, positive=True, maximum=MAX_TOKENS)
    batch = _number(table.get("batch_size", 16), f"{key}.batch_size", integer=True, positive=True,
                    maximum=MAX_BATCH)
    config = _config(table, key, ("tokens", "batch_size"))
    return RungSpec(name=name, config=config, tokens=tokens, batch_size=batch)


def _from_ladder_rung(rung: Any) -> RungSpec:
    return RungSpec(name=rung.name, config=rung.config, tokens=int(rung.tokens),
                    batch_size=int(rung.batch_size))


def _parse_ladder(table: Any) -> tuple[RungSpec, ...]:
    table = _table(table, "ladder")
    _check_keys(table, "ladder", ("preset", "rungs", "subset"))
    if ("preset" in table) == ("rungs" in table):
        raise ExperimentError("ladder", "give exactly one of preset or rungs")
    if "preset" in table:
        preset = _string(table["preset"], "ladder.preset")
        try:
            from proxy.ladder import get_ladder

            rungs = tuple(_from_ladder_rung(r) for r in get_ladder(preset).rungs)
        except (ValueError, KeyError, ImportError) as exc:
            raise ExperimentError("ladder.preset", f"unknown ladder preset ({exc})", preset) from exc
    else:
        if not isinstance(table["rungs"], list) or not table["rungs"]:
            raise ExperimentError("ladder.rungs", "must be a non-empty array of tables", table["rungs"])
        rungs = tuple(_rung_from_table(t, f"ladder.rungs[{i}]") for i, t in enumerate(table["rungs"]))
    names = [r.name for r in rungs]
    if len(set(names)) != len(names):
        raise ExperimentError("ladder.rungs", "rung names must be unique", names)
    if "subset" in table:
        subset = table["subset"]
        if not isinstance(subset, list) or not subset:
            raise ExperimentError("ladder.subset", "must be a non-empty array of rung names", subset)
        for name in subset:
            if name not in names:
                raise ExperimentError("ladder.subset", f"unknown rung; the ladder has {names}", name)
        rungs = tuple(r for r in rungs if r.name in subset)
    return rungs


TARGET_SIZE_KEYS = ("params_total", "params_active", "tokens", "flops")


def _parse_target_sizes(table: Mapping[str, Any]) -> Any:
    """``[target]`` given by sizes, no model: ``params_total`` (or ``params_active``) and
    ``tokens``, optionally ``params_active`` (default the total: dense) and ``flops`` (default
    6 N_active D)."""
    from fits.axes import point_from_mapping

    _check_keys(table, "target", ("name",) + TARGET_SIZE_KEYS)
    for key in TARGET_SIZE_KEYS:
        if key in table:
            _number(table[key], f"target.{key}", positive=True)
    if "name" in table:
        _name(table["name"], "target.name")
    try:
        return point_from_mapping({k: float(table[k]) for k in TARGET_SIZE_KEYS if k in table})
    except ValueError as exc:
        raise ExperimentError("target", str(exc)) from None


def _parse_target(table: Any) -> tuple[RungSpec | None, Any]:
    """(the target's RungSpec, None) for a model config or preset; (None, its SizePoint) for a
    target given by sizes alone (``_parse_target_sizes``)."""
    table = _table(table, "target")
    if "preset" not in table and any(k in table for k in ("params_total", "params_active")):
        return None, (str(table.get("name", "target")), _parse_target_sizes(table))
    rung = _parse_target_model(table)
    return rung, None


def _parse_target_model(table: Mapping[str, Any]) -> RungSpec:
    if "preset" in table:
        _check_keys(table, "target", ("preset", "tokens", "batch_size"))
        preset = _string(table["preset"], "target.preset")
        try:
            from proxy.ladder import get_target

            rung = _from_ladder_rung(get_target(preset))
        except (ValueError, KeyError, ImportError) as exc:
            raise ExperimentError("target.preset", f"unknown target preset ({exc})", preset) from exc
        if "tokens" in table:
            rung = dataclasses.replace(rung, tokens=_number(table["tokens"], "target.tokens",
                                                            integer=True, positive=True))
        return rung
    table = {"name": "target", **table}
    return _rung_from_table(table, "target")


def _parse_knob(name: str, spec: Any, key: str) -> KnobSpec:
    if name not in K.KNOBS:
        raise ExperimentError(key, f"unknown knob; choose from {', '.join(K.KNOBS)}", name)
    spec = _table(spec, key)
    _check_keys(spec, key, ("low", "high", "log", "choices"))
    integer = name in K.INT_KNOBS
    if "choices" in spec:
        if name == K.MIX_KNOB:
            raise ExperimentError(key, "the mix is searched with low/high logits, not choices")
        if set(spec) - {"choices"}:
            raise ExperimentError(key, "give either choices or low/high, not both")
        choices = spec["choices"]
        if not isinstance(choices, list) or not choices:
            raise ExperimentError(f"{key}.choices", "must be a non-empty array", choices)
        for i, c in enumerate(choices):
            _number(c, f"{key}.choices[{i}]", integer=integer, positive=name != "weight_decay")
        if len(set(choices)) != len(choices):
            raise ExperimentError(f"{key}.choices", "must not repeat a value", choices)
        return KnobSpec(name=name, choices=tuple(choices), integer=integer)
    for bound in ("low", "high"):
        if bound not in spec:
            raise ExperimentError(f"{key}.{bound}", "is required (or give choices)")
    low = _number(spec["low"], f"{key}.low", integer=integer)
    high = _number(spec["high"], f"{key}.high", integer=integer)
    log = spec.get("log", False)
    if not isinstance(log, bool):
        raise ExperimentError(f"{key}.log", "must be true or false", log)
    if low >= high:
        raise ExperimentError(f"{key}.low", f"must be < high ({high!r})", low)
    if log and low <= 0:
        raise ExperimentError(f"{key}.low", "must be > 0 on a log scale", low)
    return KnobSpec(name=name, low=low, high=high, log=log, integer=integer)


def _parse_search(table: Any, domains: tuple[str, ...]) -> SearchSpec:
    table = _table(table, "search")
    _check_keys(table, "search", ("sampler", "trials_per_rung", "startup_trials", "grid_points",
                                  "multivariate", "box", "fixed", "trials_per_upper_rung", "replicates",
                                  "sampler_seed"))
    sampler = table.get("sampler", "tpe")
    if sampler not in SAMPLERS:
        raise ExperimentError("search.sampler", f"must be one of {', '.join(SAMPLERS)}", sampler)
    trials = _number(table.get("trials_per_rung", 20), "search.trials_per_rung", integer=True,
                     positive=True, maximum=MAX_TRIALS)
    startup = _number(table.get("startup_trials", min(10, trials)), "search.startup_trials",
                      integer=True, non_negative=True, maximum=MAX_TRIALS)
    grid_points = _number(table.get("grid_points", 5), "search.grid_points", integer=True, positive=True,
                          maximum=MAX_GRID)
    upper = table.get("trials_per_upper_rung")
    if upper is not None:
        upper = _number(upper, "search.trials_per_upper_rung", integer=True, positive=True, maximum=MAX_TRIALS)
    replicates = _number(table.get("replicates", 1), "search.replicates", integer=True, non_negative=True,
                         maximum=100)
    sampler_seed = table.get("sampler_seed")
    if sampler_seed is not None:
        sampler_seed = _number(sampler_seed, "search.sampler_seed", integer=True, non_negative=True,
                               maximum=2 ** 32 - 1)
    multivariate = table.get("multivariate", True)
    if not isinstance(multivariate, bool):
        raise ExperimentError("search.multivariate", "must be true or false", multivariate)
    box_table = _table(table.get("box", {}), "search.box")
    box = tuple(_parse_knob(n, s, f"search.box.{n}") for n, s in box_table.items())
    fixed = dict(_table(table.get("fixed", {}), "search.fixed"))
    allowed = K.fixable_names()
    for name, value in fixed.items():
        key = f"search.fixed.{name}"
        if name not in allowed:
            raise ExperimentError(key, f"unknown knob; choose from {', '.join(allowed)}", name)
        if name in box_table:
            raise ExperimentError(key, "is both searched (search.box) and fixed", value)
        if name == K.MIX_KNOB:
            mix = _table(value, key)
            for d, w in mix.items():
                if d not in domains:
                    raise ExperimentError(f"{key}.{d}", f"unknown domain; data.domains is {list(domains)}", d)
                _number(w, f"{key}.{d}", non_negative=True)
            if not any(mix.values()):
                raise ExperimentError(key, "weights must not all be zero", mix)
    if K.MIX_KNOB in box_table and len(domains) < 2:
        raise ExperimentError("search.box.mix", "searching the mix needs at least two data.domains",
                              list(domains))
    if sampler == "grid":
        _check_grid(box, domains, grid_points, trials, upper)
    return SearchSpec(sampler=sampler, trials_per_rung=trials, startup_trials=startup,
                      grid_points=grid_points, multivariate=multivariate, box=box, fixed=fixed,
                      trials_per_upper_rung=upper, replicates=replicates, sampler_seed=sampler_seed)


MAX_GRID = 100_000   # grid cells: far more than any sweep trains, few enough to list
# Upper bounds that no real ladder reaches and that keep every count and product finite.
MAX_TRIALS = 100_000             # trials a rung
MAX_TOKENS = 10 ** 15            # a rung's training tokens (a thousand times a frontier run's)
MAX_BATCH = 2 ** 24              # sequences a step


def _check_grid(box: tuple[KnobSpec, ...], domains: tuple[str, ...], points: int, trials: int,
                upper: int | None) -> None:
    """A grid must hold every trial a rung asks for (else the sampler repeats cells) and stay
    small enough to enumerate."""
    cells = 1
    for values in K.grid_space(box, domains, points).values():
        cells *= len(values)
        if cells > MAX_GRID:
            raise ExperimentError("search.grid_points", f"the grid has more than {MAX_GRID:,} cells", points)
    for key, n in (("search.trials_per_rung", trials), ("search.trials_per_upper_rung", upper)):
        if n is not None and n > cells:
            raise ExperimentError(key, f"exceeds the grid's {cells} cells (grid_points = {points}); "
                                       "fewer trials or more grid points", n)


def _parse_budget(table: Any) -> BudgetSpec:
    table = _table(table, "budget")
    _check_keys(table, "budget", ("max_fraction_of_target", "max_flops"))
    frac = table.get("max_fraction_of_target")
    flops = table.get("max_flops")
    if frac is not None:
        _number(frac, "budget.max_fraction_of_target", positive=True, maximum=1000)
    if flops is not None:
        _number(flops, "budget.max_flops", positive=True, maximum=1e40)
    return BudgetSpec(max_fraction_of_target=frac, max_flops=None if flops is None else float(flops))


def _parse_review(table: Any) -> dict[str, Any]:
    table = _table(table, "review")
    _check_keys(table, "review", tuple(REVIEW_DEFAULTS))
    review = dict(REVIEW_DEFAULTS)
    for name, value in table.items():
        key = f"review.{name}"
        if name == "allow_widening":
            if not isinstance(value, bool):
                raise ExperimentError(key, "must be true or false", value)
        elif name in ("min_interior_rungs", "max_widen_rounds"):
            _number(value, key, integer=True, non_negative=True, maximum=1000)
        elif name in REVIEW_RANGES:
            low, high = REVIEW_RANGES[name]
            _number(value, key, positive=True, maximum=high)
            if value <= low:
                raise ExperimentError(key, f"must be > {low:g}", value)
        else:
            _number(value, key, positive=True, maximum=1e30)
        review[name] = value
    for axis in ("", "_tokens", "_flops"):
        if review[f"extrapolation{axis}_warn"] > review[f"extrapolation{axis}_fail"]:
            raise ExperimentError(f"review.extrapolation{axis}_warn", f"must be <= extrapolation{axis}_fail",
                                  review[f"extrapolation{axis}_warn"])
    return review


def _parse_fit(table: Any, box: tuple[KnobSpec, ...]) -> FitSpec:
    """The ``[fit]`` table (``FitSpec``): ``size`` and ``axes.<knob> = [axis, ...]``."""
    from fits.axes import PARAM_AXES, check_axes

    table = _table(table, "fit")
    _check_keys(table, "fit", ("size", "axes"))
    size = table.get("size", "params_active")
    if size not in PARAM_AXES:
        raise ExperimentError("fit.size", f"must be one of {', '.join(PARAM_AXES)}", size)
    axes = _table(table.get("axes", {}), "fit.axes")
    searched = [k.name for k in box if not k.categorical]
    out: dict[str, tuple[str, ...]] = {}
    for knob, value in axes.items():
        key = f"fit.axes.{knob}"
        if searched and knob not in searched:
            raise ExperimentError(key, f"names a knob that is not searched (searched: {', '.join(searched)})")
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list):
            raise ExperimentError(key, "must be an array of axis names", value)
        try:
            out[knob] = check_axes(value, key)
        except ValueError as exc:
            raise ExperimentError(key, str(exc).split(": ", 1)[-1], value) from None
    return FitSpec(size=size, axes=out)


def _parse_simulated(table: Any) -> Any:
    from proxy.backends.simulated import KnobTruth, SimulatedTruth

    table = dict(_table(table, "simulated"))
    _check_keys(table, "simulated", {f.name for f in dataclasses.fields(SimulatedTruth)})
    knobs = _table(table.pop("knobs", {}), "simulated.knobs")
    parsed = {}
    for name, spec in knobs.items():
        key = f"simulated.knobs.{name}"
        spec = _table(spec, key)
        _check_keys(spec, key, {f.name for f in dataclasses.fields(KnobTruth)})
        try:
            parsed[name] = KnobTruth(**spec)
        except (TypeError, ValueError) as exc:
            raise ExperimentError(key, str(exc)) from exc
    for name in ("mix_optimum", "domain_offsets"):
        if name in table:
            table[name] = dict(_table(table[name], f"simulated.{name}"))
    try:
        return SimulatedTruth(knobs=parsed, **table)
    except (TypeError, ValueError) as exc:
        raise ExperimentError("simulated", str(exc)) from exc


def _check_box_values(rungs: tuple[RungSpec, ...], search: SearchSpec, data: DataSpec) -> None:
    """Every box extreme and fixed value must make a valid config and hparams on every rung."""
    box_top_k = [k for k in search.box if k.name == "top_k"]
    box_experts = [k for k in search.box if k.name == "n_experts"]
    for rung in rungs:
        try:
            K.setup_trial(rung, {}, search.fixed, data)
        except (TypeError, ValueError) as exc:
            raise ExperimentError("search.fixed", f"rung {rung.name}: {exc}") from exc
        for knob in search.box:
            if knob.name == K.MIX_KNOB:
                continue
            values = knob.choices or (knob.low, knob.high)
            for value in values:
                params = {knob.name: value}
                # top_k and n_experts are checked against each other's worst case.
                if knob.name == "top_k" and box_experts:
                    params["n_experts"] = min(box_experts[0].choices or (box_experts[0].low,))
                if knob.name == "n_experts" and box_top_k:
                    params["top_k"] = max(box_top_k[0].choices or (box_top_k[0].high,))
                try:
                    K.setup_trial(rung, params, search.fixed, data)
                except (TypeError, ValueError) as exc:
                    raise ExperimentError(f"search.box.{knob.name}", f"rung {rung.name}: {exc}",
                                          value) from exc


def parse_experiment(doc: Mapping[str, Any], *, base_dir: str | Path = ".", storage: str | None = None,
                     check_storage: bool = True, path: str = "", sha256: str = "") -> Experiment:
    """Validate a parsed TOML document (see module docstring); creates nothing."""
    base_dir = Path(base_dir)
    _check_keys(doc, "", ("experiment", "ladder", "target", "search", "data", "budget", "review",
                          "simulated", "fit", "baseline"))
    exp = _table(doc.get("experiment", {}), "experiment")
    _check_keys(exp, "experiment", ("name", "storage", "backend", "seeds", "dtype", "threads",
                                    "heartbeat_interval", "workers", "device", "precision",
                                    "micro_batches", "checkpoint"))
    if "name" not in exp:
        raise ExperimentError("experiment.name", "is required")
    name = _name(exp["name"], "experiment.name")
    backend = exp.get("backend", "torch")
    if backend not in BACKEND_NAMES:
        raise ExperimentError("experiment.backend", f"must be one of {', '.join(BACKEND_NAMES)}", backend)
    seeds = exp.get("seeds", [0])
    seeds = [seeds] if isinstance(seeds, int) and not isinstance(seeds, bool) else seeds
    if not isinstance(seeds, list) or not seeds:
        raise ExperimentError("experiment.seeds", "must be a non-empty array of integers", seeds)
    for i, s in enumerate(seeds):
        _number(s, f"experiment.seeds[{i}]", integer=True, non_negative=True, maximum=2 ** 32 - 1)
    dtype = exp.get("dtype", "float32")
    if dtype not in DTYPES:
        raise ExperimentError("experiment.dtype", f"must be one of {', '.join(DTYPES)}", dtype)
    device, precision = _placement(exp.get("device", "auto"), exp.get("precision", "fp32"), dtype)
    micro_batches = exp.get("micro_batches", "auto")
    if micro_batches != "auto":
        micro_batches = _number(micro_batches, "experiment.micro_batches", integer=True, positive=True)
    checkpoint = exp.get("checkpoint", "auto")
    if checkpoint != "auto" and not isinstance(checkpoint, bool):
        raise ExperimentError("experiment.checkpoint", 'must be "auto", true or false', checkpoint)
    threads = _number(exp.get("threads", 1), "experiment.threads", integer=True, positive=True, maximum=4096)
    # A heartbeat every hour at most: a dead worker's trial is retried within two.
    heartbeat = _number(exp.get("heartbeat_interval", 10), "experiment.heartbeat_interval",
                        integer=True, positive=True, maximum=3600)
    workers = exp.get("workers", "auto")
    if workers != "auto":
        workers = _number(workers, "experiment.workers", integer=True, positive=True, maximum=1024)
    if "ladder" not in doc:
        raise ExperimentError("ladder", "is required (preset or rungs)")
    rungs = _parse_ladder(doc["ladder"])
    target, sized = _parse_target(doc["target"]) if "target" in doc else (None, None)
    target_label, target_sizes = sized if sized is not None else ("target", None)
    if micro_batches != "auto":
        for r in rungs:
            if r.batch_size % micro_batches:
                raise ExperimentError("experiment.micro_batches", f"must divide every rung's batch size; "
                                      f"{r.name}'s is {r.batch_size}", micro_batches)
    data = parse_data(doc.get("data", {}), base_dir)
    if data.vocab_size:   # token shards: every model reads (and predicts) the tokenizer's ids
        rungs = tuple(dataclasses.replace(r, config=r.config.replace(vocab_size=data.vocab_size)) for r in rungs)
        if target is not None:
            target = dataclasses.replace(target, config=target.config.replace(vocab_size=data.vocab_size))
    search = _parse_search(doc.get("search", {}), data.domains)
    if search.startup_trials > search.trials_per_rung:
        raise ExperimentError("search.startup_trials", f"must be <= trials_per_rung "
                              f"({search.trials_per_rung})", search.startup_trials)
    _check_box_values(rungs, search, data)
    budget = _parse_budget(doc.get("budget", {}))
    if budget.max_fraction_of_target is not None and target is None and target_sizes is None:
        raise ExperimentError("budget.max_fraction_of_target", "needs a [target] table")
    review = _parse_review(doc.get("review", {}))
    fit = _parse_fit(doc.get("fit", {}), search.box)
    from proxy.sweep.baseline import parse_baseline

    baseline = parse_baseline(doc["baseline"], search.box, rungs) if "baseline" in doc else None
    simulated = _parse_simulated(doc.get("simulated", {})) if (
        backend == "simulated" or "simulated" in doc) else None
    url = storage or exp.get("storage", f"sqlite:///runs/{name}/trials.db")
    url = resolve_url(_string(url, "experiment.storage"), base_dir)
    if check_storage:
        try:
            check_reachable(url)
        except ValueError as exc:
            raise ExperimentError("experiment.storage", str(exc)) from exc
    return Experiment(name=name, storage=url, backend=backend, seeds=tuple(seeds), dtype=dtype,
                      threads=threads, heartbeat_interval=heartbeat, rungs=rungs, target=target,
                      search=search, data=data, budget=budget, review=review, simulated=simulated,
                      path=path, sha256=sha256, workers=workers, device=device, precision=precision,
                      micro_batches=micro_batches, checkpoint=checkpoint, fit=fit, target_sizes=target_sizes, baseline=baseline,
                      target_label=target_label)


def _placement(device: Any, precision: Any, dtype: str) -> tuple[str, str]:
    """``experiment.device`` and ``experiment.precision``, checked (``proxy.backends.placement``)."""
    try:
        device = str(parse_device(device))
    except ValueError as exc:
        raise ExperimentError("experiment.device", str(exc)) from None
    try:
        precision = check_precision(precision, dtype)
    except ValueError as exc:
        raise ExperimentError("experiment.precision", str(exc)) from None
    return device, precision


def with_device(experiment: Experiment, device: str | None) -> Experiment:
    """The experiment with ``--device`` in place of ``experiment.device`` (unchanged for None)."""
    if device is None:
        return experiment
    return dataclasses.replace(experiment, device=_placement(device, experiment.precision, experiment.dtype)[0])


def usable_cores() -> int:
    """CPU cores this process may run on (its affinity mask, which a container or taskset narrows)."""
    import os

    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):   # not Linux
        return os.cpu_count() or 1


def resolve_workers(experiment: Experiment, override: int | None = None, *, cores: int | None = None) -> int:
    """Local worker processes for ``experiment``: ``override`` (``--workers``) when given, else
    ``experiment.workers``; "auto" is ``cores // threads`` (at least 1) for a backend that trains,
    1 for the simulated backend."""
    chosen = override if override is not None else experiment.workers
    if chosen != "auto":
        if isinstance(chosen, bool) or not isinstance(chosen, int) or chosen < 1:
            raise ValueError(f"workers must be a positive integer or 'auto', got {chosen!r}")
        return chosen
    if experiment.backend == "simulated" or experiment.device not in ("auto", "cpu"):
        return 1   # a named accelerator: one trial on it at a time
    return max(1, (cores if cores is not None else usable_cores()) // experiment.threads)


def load_experiment(path: str | Path, *, storage: str | None = None,
                    check_storage: bool = True) -> Experiment:
    """Read and validate an experiment file; ``storage`` overrides ``experiment.storage``."""
    path = Path(path)
    if not path.is_file():
        raise ExperimentError(str(path), "experiment file not found")
    raw = path.read_bytes()
    try:
        doc = tomllib.loads(raw.decode())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError, RecursionError) as exc:
        raise ExperimentError(str(path), f"not valid TOML: {exc}") from exc
    return parse_experiment(doc, base_dir=path.resolve().parent, storage=storage,
                            check_storage=check_storage, path=str(path.resolve()),
                            sha256=hashlib.sha256(raw).hexdigest())
