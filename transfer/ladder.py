"""Ladder-aware search: climb the rungs from smallest to largest, carrying the optimum up.

Over ``proxy.sweep.runner.sweep_rung`` (one Optuna study per rung, ask-and-tell), rung by rung
in ascending active size:

1. Box. While fewer than two rungs below have an interior optimum (``RungOptimum.usable``),
   a rung searches the human's box. From then on, each continuous knob's box is re-centred on
   the optimum extrapolated to this rung from the rungs below (``transfer.box.extrapolate_next``:
   the power-law trend's widest 95% interval, or the line through two rungs), its width set by
   that interval (``transfer.box.recentre``); it never leaves the human's box unless the review
   policy's ``allow_widening`` is true, and then by at most ``max_widen_factor``. Categorical
   knobs and the mix keep the human's choices.
2. First trial. The extrapolated optimum (with the categorical levels that won the rung below)
   is enqueued (``study.enqueue_trial``), so the sampler's first point is the best guess.
3. Edges. After the rung's N trials its optimum is fitted; a knob whose optimum sits on an edge
   of the sampled range (or whose surface is not convex with the best trial at a box edge) has
   that edge moved out (``transfer.box.widen``) and ``max(3, ceil(N / 3))`` trials are added,
   at most ``max_widen_rounds`` times, within the sweep budget; a rung with no interior minimum
   and no edge to move (a surface not convex, too few points) gets the same number of trials
   added in the same box, counted as a round. Every change is recorded
   (``transfer.plan.BoxAdjustment``) and the report states it.
4. Replicates. Once a rung's box is settled, its incumbent (the trial nearest its fitted
   optimum, or its best trial where the optimum is not usable: ``replicate_choice``) is
   trained again with ``search.replicates`` further seeds (one trial a seed, enqueued with the
   same parameters and the user attributes ``replicate_of`` and ``replicate_seeds``): the
   seed-to-seed noise at the incumbent, against which the review compares the rungs' losses
   (``scaling_regime``). The replicates train on up to one worker each while the other workers
   start the next rung (whose box depends on this rung's fitted optimum, not on its
   replicates); the climb waits for every replicate before it returns.

A re-centred rung starts near its answer and runs ``search.trials_per_upper_rung`` trials (the
default is ``trials_per_rung``). Each rung is swept by ``experiment.workers`` local processes at
once (``proxy.sweep.runner.WorkerPool``; TPE with the constant liar), which stay alive from rung
to rung.

``mode="plain"`` runs the same ladder on the human's box with no re-centring, no enqueued
point and no widening: the per-rung search the benchmark compares against.

Resume: each rung's box and its adjustments are stored in the rung's study (user attribute
``ladder``) when the rung starts, so a restarted run searches the same box; a rung with its
trials is not re-swept (only a pending widening round runs).
"""

from __future__ import annotations

import dataclasses
import math
import os
import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Mapping, Sequence

from fits.intervals import ConfidenceInterval
from fits.optimum import RungOptimum
from proxy.flops import param_counts
from proxy.sweep import knobs as K
from proxy.sweep.spec import RungSpec
from transfer.box import Box, BoxChoice, extrapolate_next, recentre, widen
from transfer.observations import fit_rungs, load_observations
from transfer.plan import BoxAdjustment

if TYPE_CHECKING:
    from optuna.storages import BaseStorage

    from proxy.sweep.experiment import Experiment

MODES = ("ladder", "plain")
ATTR = "ladder"
EDGE_BEST_FRACTION = 0.1     # a non-convex rung's best trial this close (share of width) to a box edge


@dataclass(frozen=True)
class RungRecord:
    """What the search did on one rung: its mode, per-knob box, adjustments, enqueued point,
    widening rounds and trials requested."""

    rung: str
    mode: str
    box: Mapping[str, Box]
    adjustments: tuple[BoxAdjustment, ...]
    enqueued: Mapping[str, Any]
    widen_rounds: int
    requested: int

    def to_dict(self) -> dict[str, Any]:
        return {"rung": self.rung, "mode": self.mode,
                "box": {k: {"low": b.low, "high": b.high, "log": b.log, "integer": b.integer} for k, b in self.box.items()},
                "adjustments": [a.to_dict() for a in self.adjustments], "enqueued": dict(self.enqueued),
                "widen_rounds": self.widen_rounds, "requested": self.requested}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "RungRecord":
        return cls(rung=d["rung"], mode=d["mode"],
                   box={k: Box(float(b["low"]), float(b["high"]), bool(b["log"]), bool(b.get("integer", False)))
                        for k, b in d["box"].items()},
                   adjustments=tuple(BoxAdjustment.from_dict(a) for a in d.get("adjustments", ())),
                   enqueued=dict(d.get("enqueued", {})), widen_rounds=int(d.get("widen_rounds", 0)),
                   requested=int(d["requested"]))


@dataclass(frozen=True)
class LadderResult:
    records: tuple[RungRecord, ...]
    stopped_by_budget: bool = False
    message: str = ""


def human_boxes(experiment: Experiment) -> dict[str, Box]:
    """The human's box of every continuous, non-mix knob, as ``transfer.box.Box``."""
    return {k.name: Box(float(k.low), float(k.high), bool(k.log), bool(k.integer))
            for k in experiment.search.box if not k.categorical and k.name != K.MIX_KNOB}


def _policy(experiment: Experiment) -> tuple[bool, float, int]:
    r = experiment.review
    return bool(r.get("allow_widening", True)), float(r.get("max_widen_factor", 4.0)), int(r.get("max_widen_rounds", 2))


def _adjustment(rung: str, knob: str, action: str, human: Box, choice: BoxChoice | None, box: Box,
                reason: str) -> BoxAdjustment:
    return BoxAdjustment(rung=rung, knob=knob, action=action, human=ConfidenceInterval(human.low, human.high),
                         box=ConfidenceInterval(box.low, box.high), centre=None if choice is None else choice.centre,
                         factor=1.0 if choice is None else choice.factor,
                         clipped=False if choice is None else choice.clipped, reason=reason)


def first_box(experiment: Experiment, rung: RungSpec, below: list[RungOptimum], mode: str) -> RungRecord:
    """The box a rung starts with, given the optima of the rungs below (ascending size)."""
    humans = human_boxes(experiment)
    usable = [o for o in below if o.usable]
    if mode == "plain" or len(usable) < 2:
        n = experiment.search.trials_per_rung
        why = ("plain per-rung search of the human's box" if mode == "plain" else
               f"human's box: {len(usable)} rung(s) below with an interior optimum (re-centring needs 2)")
        adj = tuple(_adjustment(rung.name, k, "kept", h, None, h, why) for k, h in humans.items())
        return RungRecord(rung.name, mode, humans, adj, {}, 0, n)
    n = experiment.search.upper_trials   # re-centred: the search starts near the answer
    allow, factor, _ = _policy(experiment)
    size = float(param_counts(rung.config).active)
    boxes: dict[str, Box] = {}
    adjs: list[BoxAdjustment] = []
    enqueued: dict[str, Any] = {}
    for knob, human in humans.items():
        logs = [o.log_value(knob, part="noise") for o in usable]   # the shared bias cancels rung to rung
        ext = extrapolate_next([o.params_active for o in usable], [math.exp(m) for m, _ in logs],
                               [s for _, s in logs], size)
        centre = min(max(ext.centre, ext.interval[0]), ext.interval[1])
        if human.log or centre > 0:
            choice = recentre(human, centre, ext.interval, allow_widening=allow, max_widen_factor=factor)
        else:   # a linear knob extrapolated to a non-positive value cannot be re-centred in log
            choice = None
        if choice is None:
            boxes[knob] = human
            adjs.append(_adjustment(rung.name, knob, "kept", human, None, human, "extrapolation unusable"))
            continue
        boxes[knob] = choice.box
        adjs.append(_adjustment(rung.name, knob, "recentred", human, choice, choice.box,
                                f"{choice.reason} ({ext.method} over {len(usable)} rungs)"))
        value = choice.box.clip(choice.centre)
        enqueued[knob] = int(value) if human.integer else float(value)
    largest = usable[-1]
    for name, cat in largest.categorical.items():
        enqueued[name] = cat.best
    return RungRecord(rung.name, mode, boxes, tuple(adjs), enqueued, 0, n)


def _rung_experiment(experiment: Experiment, record: RungRecord) -> Any:
    box = []
    for k in experiment.search.box:
        b = record.box.get(k.name)
        if b is not None:
            low, high = (int(b.low), int(b.high)) if k.integer else (b.low, b.high)
            k = dataclasses.replace(k, low=low, high=high)
        box.append(k)
    search = dataclasses.replace(experiment.search, box=tuple(box), trials_per_rung=record.requested,
                                 startup_trials=min(experiment.search.startup_trials, record.requested))
    return dataclasses.replace(experiment, search=search)


def _study(experiment: Experiment, rung: RungSpec, storage: BaseStorage) -> Any:
    import optuna

    from proxy.sweep.store import study_name

    return optuna.create_study(study_name=study_name(experiment.name, rung.name), storage=storage,
                               direction="minimize", load_if_exists=True)


def read_records(experiment: Experiment, storage: BaseStorage) -> dict[str, RungRecord]:
    """The stored ``RungRecord`` of every rung that has one (rung name -> record)."""
    from proxy.sweep.store import experiment_study_names

    out = {}
    for sname in experiment_study_names(storage, experiment.name):
        attrs = storage.get_study_user_attrs(storage.get_study_id_from_name(sname))
        if ATTR in attrs:
            rec = RungRecord.from_dict(attrs[ATTR])
            out[rec.rung] = rec
    return out


def _edge_sides(opt: RungOptimum, box: Mapping[str, Box], obs: list) -> dict[str, str]:
    """knob -> "low"/"high" for the knobs whose optimum sits on an edge (see module docstring)."""
    sides: dict[str, str] = {}
    codes = opt.flag_codes
    if "edge" not in codes and "not_convex" not in codes:
        return sides
    for knob, b in box.items():
        if knob not in opt.continuous:
            continue
        vals = [b.to_u(float(o.knobs[knob])) for o in obs if o.usable and (not b.log or o.knobs[knob] > 0)]
        if not vals:
            continue
        lo_s, hi_s = min(vals), max(vals)
        v = opt.vertex[opt.continuous.index(knob)]
        if not b.log and opt._spec(knob).log:   # fits in log while the box is linear
            v = math.exp(v)
        elif b.log and not opt._spec(knob).log:
            v = math.log(v) if v > 0 else -math.inf
        if "edge" in codes:
            m = 0.05 * (hi_s - lo_s)
            if v <= lo_s + m:
                sides[knob] = "low"
            elif v >= hi_s - m:
                sides[knob] = "high"
        else:   # not convex: widen only where the best trial sits at an edge of the box
            m = EDGE_BEST_FRACTION * b.u_width
            if v <= b.u_low + m:
                sides[knob] = "low"
            elif v >= b.u_high - m:
                sides[knob] = "high"
    return sides


def run_ladder(experiment: Experiment, *, mode: str = "ladder", storage: BaseStorage | None = None, seed: int = 0,
               progress: Callable[[Any], None] | None = None, workers: int | None = None,
               force: bool = False) -> LadderResult:
    """Sweep the experiment's ladder rung by rung (see the module docstring); resumable.

    ``workers``: local worker processes (default ``experiment.workers``, see
    ``proxy.sweep.experiment.resolve_workers``). A rung swept before with other settings stops
    the climb before anything trains (``proxy.sweep.identity``), unless ``force``."""
    from proxy.sweep.experiment import resolve_workers
    from proxy.sweep.runner import WorkerPool, preflight
    from proxy.sweep.store import open_storage

    storage = storage or open_storage(experiment.storage, heartbeat_interval=experiment.heartbeat_interval)
    preflight(experiment, storage, experiment.rungs, force=force)
    with WorkerPool(experiment, resolve_workers(experiment, workers)) as pool:
        return _climb(experiment, mode, storage, seed, progress, pool)


def _climb(experiment: Experiment, mode: str, storage: BaseStorage | None, seed: int,
           progress: Callable[[Any], None] | None, pool: Any) -> LadderResult:
    from proxy.sweep.store import claim_once, open_storage

    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    if "torch" not in sys.modules:   # as proxy.sweep.runner.run_sweep: threads set before the framework loads
        os.environ.setdefault("OMP_NUM_THREADS", str(experiment.threads))
    storage = storage or open_storage(experiment.storage, heartbeat_interval=experiment.heartbeat_interval)
    allow, factor, max_rounds = _policy(experiment)
    humans = human_boxes(experiment)
    rungs = sorted(experiment.rungs, key=lambda r: param_counts(r.config).active)
    stored = read_records(experiment, storage)
    records: list[RungRecord] = []
    below: list[RungOptimum] = []
    n = experiment.search.trials_per_rung
    extra = max(3, math.ceil(n / 3))
    replicating: list[Any] = []   # replicates still training while the next rung is swept
    for rung in rungs:
        record = stored.get(rung.name)
        if record is None:
            record = first_box(experiment, rung, below, mode)
            study = _study(experiment, rung, storage)
            study.set_user_attr(ATTR, record.to_dict())
            if record.enqueued and claim_once(study, "start"):   # once, whatever the processes
                study.enqueue_trial(dict(record.enqueued), skip_if_exists=True)
        while True:
            message = pool.sweep_rung(_rung_experiment(experiment, record), rung, storage, progress)
            if message:
                records.append(record)
                return _finish(records, replicating, message)
            obs = load_observations(experiment, storage).get(rung.name, [])
            fitted = fit_rungs(experiment, {rung.name: obs}, seed=seed)[0]
            opt = fitted.optimum
            if mode == "plain" or opt is None or record.widen_rounds >= max_rounds:
                break
            sides = _edge_sides(opt, record.box, obs)
            if not sides:
                if opt.usable:
                    break
                # No interior minimum yet but no edge to move (a flat or noisy surface): more trials
                # in the same box, counted as a round.
                codes = ", ".join(c for c in opt.flag_codes if c in ("not_convex", "too_few_points"))
                adjs = tuple(_adjustment(rung.name, k, "kept", humans[k], None, b,
                                         f"no interior optimum yet ({codes}): {extra} trials added in the same box")
                             for k, b in record.box.items())
                record = dataclasses.replace(record, adjustments=record.adjustments + adjs,
                                             widen_rounds=record.widen_rounds + 1, requested=record.requested + extra)
                _study(experiment, rung, storage).set_user_attr(ATTR, record.to_dict())
                continue
            box = dict(record.box)
            adjs = list(record.adjustments)
            grew = False
            for knob, side in sides.items():
                choice = widen(box[knob], humans[knob], side, allow_widening=allow, max_widen_factor=factor)
                if choice is None:
                    adjs.append(_adjustment(rung.name, knob, "kept", humans[knob], None, box[knob],
                                            f"optimum on the {side} edge, but the box is at its limit "
                                            f"({'widening forbidden' if not allow else f'{factor:g}x the human box'})"))
                    continue
                box[knob] = choice.box
                adjs.append(_adjustment(rung.name, knob, f"widened_{side}", humans[knob], choice, choice.box,
                                        f"{choice.reason}; {extra} trials added"))
                grew = True
            record = dataclasses.replace(record, box=box, adjustments=tuple(adjs),
                                         widen_rounds=record.widen_rounds + 1,
                                         requested=record.requested + (extra if grew else 0))
            if not grew:   # every edge is at its limit: no further round can help
                record = dataclasses.replace(record, widen_rounds=max_rounds)
            _study(experiment, rung, storage).set_user_attr(ATTR, record.to_dict())
            if not grew:
                break
        record, handle = _replicate(experiment, rung, record, storage, pool, opt)
        if handle is not None:
            replicating.append(handle)
        records.append(record)
        if opt is not None:
            below.append(opt)
    return _finish(records, replicating, None)


def replicate_choice(trials: Sequence[Any], opt: RungOptimum | None) -> Any:
    """The trial a rung's replicates train again (its incumbent; None for no trial): the one whose
    setting the rung's fitted surface rates best, i.e. the trial nearest the fitted optimum, when
    the optimum is usable and every knob continuous; else the trial with the lowest loss.

    Why not always the lowest loss: near the edge of stability one seed's loss scatters by up to
    ten times what it does at a moderate lr, so the lowest of a rung's single-seed losses is most
    often a lucky draw at a high lr (the winner's curse), and its replicate measures that draw's
    scatter rather than the rung's level. The surface pools the rung's trials, so its choice does
    not select on one trial's noise."""
    if not trials:
        return None
    if opt is not None and opt.usable and opt.surface is not None and not opt.categorical:
        try:
            return min(trials, key=lambda t: (opt.predict(t.params), t.number))
        except (KeyError, TypeError, ValueError):   # a trial without every knob: fall back
            pass
    return min(trials, key=lambda t: (t.value, t.number))


def _finish(records: list[RungRecord], replicating: list[Any], message: str | None) -> LadderResult:
    """Wait for the replicates still training; a budget stop (here or in a replicate) stops the ladder."""
    from proxy.sweep.runner import WorkerPool

    for handle in replicating:   # every one is waited for (and its error raised), stop or not
        stopped = WorkerPool.collect(handle)
        message = message or stopped
    return LadderResult(tuple(records), message is not None, message or "")


def _replicate(experiment: Experiment, rung: RungSpec, record: RungRecord, storage: BaseStorage,
               pool: Any, opt: RungOptimum | None) -> tuple[RungRecord, Any]:
    """Start training the rung's incumbent again with ``search.replicates`` further seeds (once:
    a rung whose store holds a replicate already is left as it is). Returns the record and the
    pool's handle (None when nothing was started): the replicate trains on one worker while the
    others start the next rung, whose box depends on this rung's fitted optimum, not on its
    replicate."""
    from optuna.trial import TrialState

    from proxy.sweep.store import claim_once

    k = experiment.search.replicates
    study = _study(experiment, rung, storage)
    trials = study.get_trials(deepcopy=False)
    if k < 1 or any("replicate_of" in t.user_attrs for t in trials):
        return record, None
    if not claim_once(study, "replicates"):   # another process on this store queued them
        return record, None
    ok = [t for t in trials if t.state == TrialState.COMPLETE and not t.user_attrs.get("diverged")
          and t.user_attrs.get("final_loss") is not None]
    best = replicate_choice(ok, opt)
    if best is None:
        return record, None
    start = max(experiment.seeds) + 1
    # One trial a seed, so the replicates train side by side on as many workers as there are
    # seeds (the last rung's replicates are the ladder's tail: nothing else is left to overlap
    # them). Each trial trains one further seed; the review pools them by ``replicate_of``.
    for seed in range(start, start + k):
        study.enqueue_trial(dict(best.params), user_attrs={"replicate_of": best.number, "replicate_seeds": [seed]})
    record = dataclasses.replace(record, requested=record.requested + k)
    study.set_user_attr(ATTR, record.to_dict())
    return record, pool.start_rung(_rung_experiment(experiment, record), rung, storage,
                                   jobs=min(k, pool.workers))
