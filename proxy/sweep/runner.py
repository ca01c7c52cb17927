"""The sweep runner: Optuna ask-and-tell, one study per rung, training through the registry.

The runner owns what Optuna does not: seeding, training (``proxy.backends.load_backend``),
divergence handling, cost accounting and the trial attributes the fits and reports read.

* Study per rung, named ``"<experiment>/<rung>"``, minimising the objective.
* Objective: the mean evaluation loss over the experiment's seeds. A diverged trial is told
  COMPLETE with a *clipped* objective, ``max(ln V, worst finite loss of the rung so far) +
  DIVERGED_MARGIN``, so the sampler learns where the wall is without an infinite value; its
  attributes say ``diverged=True`` and the step.
* N trials per rung, with several workers: a worker asks only while COMPLETE + RUNNING < N,
  and after ``ask`` it checks that fewer than N COMPLETE/RUNNING trials have a smaller trial
  number (numbers are assigned atomically by the store); a trial that loses that race is told
  FAIL with ``surplus=True`` before it trains, so exactly N trials complete.
* Resume: each running trial has a heartbeat; on restart, stale RUNNING trials are failed and
  re-enqueued with their parameters (``proxy.sweep.store``), COMPLETE ones are kept.
* Seeds: training seeds are the experiment's seeds (the same for every trial); the sampler is
  seeded afresh for every trial by the sampler seed, the rung name and the trial's number
  (``trial_seed``), so any number of processes propose distinct points and a resumed sweep
  does not replay the start-up points it already has.
"""

from __future__ import annotations

import math
import os
import socket
import threading
import time
import warnings
from dataclasses import dataclass
from typing import Any, Callable, Mapping

from fits.observation import Observation
from proxy import __version__
from proxy.flops import train_flops
from proxy.sweep import knobs as K
from proxy.sweep.experiment import Experiment
from proxy.sweep.ledger import budget_message, ledger, next_trial_cost, trial_flops
from proxy.sweep.sampling import TrialSeededSampler, make_sampler, quiet_optuna, trial_seed
from proxy.sweep.spec import RungSpec
from proxy.sweep.baseline import baseline_extra, enqueue_baseline
from proxy.sweep.store import experiment_study_names, fail_stale, open_storage, retry, study_name

DIVERGED_MARGIN = 0.1        # nats added to the clipped objective of a diverged trial
SIMULATED_MAX_EXPERTS = 1 << 20   # expert loads the simulated backend draws per trial, at most
POLL_S = 0.25                # wait between looks at the store while others' trials run


@dataclass(frozen=True)
class RungProgress:
    """Where one rung stands: COMPLETE trials of the N asked, best loss, FLOPs spent."""

    rung: str
    complete: int
    requested: int
    diverged: int
    failed: int
    best_loss: float | None
    best_params: Mapping[str, Any]
    spent_flops: float
    budget_flops: float | None


@dataclass(frozen=True)
class SweepSummary:
    rungs: tuple[RungProgress, ...]
    stopped_by_budget: bool = False
    message: str = ""


def _requeue(study: Any, trial_id: int) -> None:
    """Put a FAIL trial's parameters back in the queue (``proxy.sweep.store.retry``)."""
    retry(study, study._storage.get_trial(trial_id))


def _study(experiment: Experiment, rung: RungSpec, storage: Any) -> Any:
    import optuna

    name = study_name(experiment.name, rung.name)
    study = optuna.create_study(study_name=name, storage=storage, direction="minimize",
                                load_if_exists=True)
    # The constant liar always: other processes' RUNNING trials may be in the study too.
    study.sampler = TrialSeededSampler(lambda seed: make_sampler(experiment, seed, workers=2),
                                       lambda number: trial_seed(experiment, rung.name, number),
                                       per_trial=experiment.search.sampler not in ("grid", "qmc"))
    if "rung" not in study.user_attrs:
        study.set_user_attr("experiment", experiment.name)
        study.set_user_attr("rung", rung.name)
        study.set_user_attr("config", rung.config.to_dict())
        study.set_user_attr("tokens", rung.tokens)
        study.set_user_attr("batch_size", rung.batch_size)
        study.set_user_attr("box", [{"name": k.name, "low": k.low, "high": k.high, "log": k.log,
                                     "choices": list(k.choices)} for k in experiment.search.box])
        study.set_user_attr("fixed", dict(experiment.search.fixed))
        study.set_user_attr("source", "sweep")
    return study


def _finite_or_none(x: Any) -> Any:
    return x if isinstance(x, (int, float)) and math.isfinite(x) else None


class SpentCounter:
    """Training FLOPs a running trial has spent so far (added by the training thread after each
    step, read by the heartbeat thread)."""

    def __init__(self) -> None:
        self.flops = 0.0
        self._lock = threading.Lock()

    def add(self, flops: float) -> None:
        with self._lock:
            self.flops += flops

    def read(self) -> float:
        with self._lock:
            return self.flops


SPENT_ATTR = "flops_spent"   # a running (or killed) trial's FLOPs so far; ``flops`` once it ends


def _heartbeat(storage: Any, trial_id: int, interval: float, stop: threading.Event,
               spent: SpentCounter | None = None) -> None:
    written = 0.0
    while not stop.wait(interval):
        try:
            storage.record_heartbeat(trial_id)
            if spent is not None and spent.read() > written:
                written = spent.read()
                storage.set_trial_user_attr(trial_id, SPENT_ATTR, written)
        except Exception:  # a transient store error (or the trial ended) must not kill training
            pass


def run_trial(experiment: Experiment, rung: RungSpec, params: Mapping[str, Any],
              backend: Any | None = None, seeds: tuple[int, ...] | None = None,
              spent: "SpentCounter | None" = None) -> tuple[dict[str, Any], bool]:
    """Train one trial (once per seed: ``experiment.seeds``, or ``seeds`` for a replicate) and
    return (user attributes, diverged). ``spent`` counts the training FLOPs as the steps go
    (the heartbeat stores them, so a trial killed midway still counts what it spent)."""
    from proxy.backends import load_backend

    backend = backend or load_backend(experiment.backend)
    setup = K.setup_trial(rung, params, experiment.search.fixed, experiment.data)
    extra: dict[str, Any] = {}
    if experiment.backend == "simulated":
        data: Any = setup.weights(experiment.data.domains)
        extra["truth"] = experiment.simulated
    else:
        data = K.load_mixture(setup, experiment.data)
    config = setup.config
    if experiment.dtype != "float32":
        extra["dtype"] = experiment.dtype
    if experiment.backend != "simulated":
        extra |= {"device": experiment.device, "precision": experiment.precision,
                  "micro_batches": experiment.micro_batches, "checkpoint": experiment.checkpoint}
    seeds = tuple(seeds) if seeds else experiment.seeds
    if spent is not None:
        per_step = train_flops(config, setup.hparams.batch_size * config.seq_len)
        extra["progress"] = lambda step, total, loss: spent.add(per_step)
    results = [backend.train(config, setup.hparams, data, seed, **extra) for seed in seeds]
    diverged = any(r.diverged for r in results)
    losses = [r.final_loss for r in results]
    final = math.nan if diverged else sum(losses) / len(losses)
    domains = sorted({d for r in results for d in r.eval_loss_by_domain})
    by_domain = {d: _finite_or_none(sum(r.eval_loss_by_domain.get(d, math.nan) for r in results)
                                    / len(results)) for d in domains}
    first = results[0]
    step = min((r.diverged_step for r in results if r.diverged_step is not None), default=None)
    attrs = {
        "rung": rung.name,
        "knobs": dict(setup.knobs),
        "params_total": first.params_total,
        "params_active": first.params_active,
        "tokens": int(setup.hparams.tokens),
        "flops": float(sum(r.flops for r in results)),
        "wall_time_s": float(sum(r.wall_time_s for r in results)),
        "final_loss": _finite_or_none(final),
        "eval_loss_by_domain": by_domain,
        "diverged": diverged,
        "diverged_step": step,
        "expert_load": {"max_over_mean": max(r.expert_load.max_over_mean for r in results),
                        "dropped_fraction": max(r.expert_load.dropped_fraction for r in results),
                        "balance_loss": sum(r.expert_load.balance_loss for r in results) / len(results)},
        "seed": seeds[0],
        # One entry per training seed (each trial trains once per seed; means above).
        "seed_runs": [{"seed": r.seed, "final_loss": _finite_or_none(r.final_loss),
                       "tokens": r.tokens, "steps": r.steps} for r in results],
        "backend": experiment.backend,
        "worker": f"{socket.gethostname()}:{os.getpid()}",   # which process trained it
        "toolkit_version": __version__,
    }
    return attrs, diverged


def _clipped(study: Any, vocab_size: int) -> float:
    from optuna.trial import TrialState

    worst = [t.user_attrs.get("final_loss") for t in study.get_trials(
        deepcopy=False, states=(TrialState.COMPLETE,)) if not t.user_attrs.get("diverged")]
    finite = [x for x in worst if isinstance(x, (int, float)) and math.isfinite(x)]
    return max([math.log(vocab_size)] + finite) + DIVERGED_MARGIN


def rung_progress(experiment: Experiment, rung: RungSpec, storage: Any) -> RungProgress:
    """Read where ``rung`` stands from the store."""
    from optuna.trial import TrialState

    name = study_name(experiment.name, rung.name)
    try:
        study_id = storage.get_study_id_from_name(name)
        trials = storage.get_all_trials(study_id, deepcopy=False)
    except KeyError:
        trials = []
    done = [t for t in trials if t.state == TrialState.COMPLETE]
    ok = [t for t in done if not t.user_attrs.get("diverged")]
    best = min(ok, key=lambda t: t.value, default=None)
    failed = sum(1 for t in trials if t.state == TrialState.FAIL and not t.user_attrs.get("surplus"))
    spent = sum(trial_flops(t) for t in trials)
    return RungProgress(rung=rung.name, complete=len(done),
                        requested=experiment.search.trials_per_rung + baseline_extra(experiment),
                        diverged=len(done) - len(ok), failed=failed,
                        best_loss=None if best is None else best.value,
                        best_params={} if best is None else dict(best.params),
                        spent_flops=spent, budget_flops=experiment.budget_flops)


def sweep_rung(experiment: Experiment, rung: RungSpec, *, storage: Any = None, worker: int = 0,
               workers: int = 1, progress: Callable[[RungProgress], None] | None = None) -> str | None:
    """Run ``rung`` until it has N COMPLETE trials; returns a budget stop message or None."""
    from optuna.exceptions import UpdateFinishedTrialError
    from optuna.trial import TrialState

    from proxy.backends import load_backend

    storage = storage or open_storage(experiment.storage,
                                      heartbeat_interval=experiment.heartbeat_interval)
    n = experiment.search.trials_per_rung + baseline_extra(experiment)
    dists = K.distributions(experiment.search.box, experiment.data.domains)
    backend = load_backend(experiment.backend)
    study = _study(experiment, rung, storage)
    enqueue_baseline(experiment, rung, study)
    budget = experiment.budget_flops
    cost = next_trial_cost(rung, len(experiment.seeds))
    while True:
        fail_stale(study)
        trials = study.get_trials(deepcopy=False)
        complete = sum(1 for t in trials if t.state == TrialState.COMPLETE)
        running = sum(1 for t in trials if t.state == TrialState.RUNNING)
        if complete >= n:
            return None
        if complete + running >= n:
            time.sleep(POLL_S)  # others' trials are in flight; wait for them (or their staleness)
            continue
        if budget is not None:
            message = budget_message(ledger(storage, experiment).total_flops, cost, budget)
            if message:
                return message
        with quiet_optuna():
            trial = study.ask(dists)
        storage.record_heartbeat(trial._trial_id)
        ahead = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.RUNNING))
                 if t.number < trial.number]
        if len(ahead) >= n:
            trial.set_user_attr("surplus", True)
            study.tell(trial, state=TrialState.FAIL)
            if "fixed_params" in study._storage.get_trial(trial._trial_id).system_attrs:
                _requeue(study, trial._trial_id)  # it was a retry or enqueued: keep the point
            continue
        stop = threading.Event()
        spent = SpentCounter()
        beat = threading.Thread(target=_heartbeat, args=(storage, trial._trial_id,
                                                         experiment.heartbeat_interval / 2, stop, spent),
                                daemon=True)
        beat.start()
        replicate = trial.user_attrs.get("replicate_seeds")
        try:
            attrs, diverged = run_trial(experiment, rung, trial.params, backend,
                                        seeds=tuple(replicate) if replicate else None, spent=spent)
        except BaseException:
            stop.set()
            try:
                trial.set_user_attr(SPENT_ATTR, spent.read())
                trial.set_user_attr("error", "training raised; see the worker's log")
                study.tell(trial, state=TrialState.FAIL)
            except UpdateFinishedTrialError:
                pass   # another worker found it stale and retried it already
            else:
                _requeue(study, trial._trial_id)  # keep the point for the retry
            raise
        finally:
            stop.set()
            beat.join()
        try:
            for key, value in attrs.items():
                trial.set_user_attr(key, value)
            if diverged:
                trial.set_user_attr("objective_clipped", True)
                value = _clipped(study, rung.config.vocab_size)
            else:
                value = attrs["final_loss"]
            with quiet_optuna():
                study.tell(trial, value)
        except UpdateFinishedTrialError:
            # Another worker finished this trial first (two asks popped the same enqueued point,
            # or a retry of a trial thought stale): its result stands, this late one is dropped.
            warnings.warn(f"{study.study_name} trial {trial.number} was finished by another worker; "
                          "this worker's result is dropped", RuntimeWarning, stacklevel=2)
        if progress is not None:
            progress(rung_progress(experiment, rung, storage))


def _set_thread_env(threads: int) -> None:
    """CPU threads of this process's training, set before a framework is imported."""
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[var] = str(threads)
    if threads == 1:
        os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                                   " --xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1").strip()


def _child_setup(threads: int) -> None:
    """A worker process's first step: its CPU threads; Ctrl-C left to the parent, which stops
    its workers (a terminal sends SIGINT to the whole group: without this each worker would
    print its own KeyboardInterrupt traceback); and an end with its parent, so a killed command
    leaves no orphan training on (a parent-death signal where Linux offers one, and a thread
    that watches the parent's id everywhere)."""
    import signal

    _set_thread_env(threads)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    parent = os.getppid()
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)   # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass
    if os.getppid() != parent:   # the parent died before the signal was armed
        os.kill(os.getpid(), signal.SIGTERM)
    threading.Thread(target=_watch_parent, args=(parent,), daemon=True).start()


def _watch_parent(parent: int) -> None:
    import signal

    while os.getppid() == parent:
        time.sleep(1.0)
    os.kill(os.getpid(), signal.SIGTERM)   # its trial stays RUNNING and is retried once stale


def _worker_main(experiment: Experiment, rungs: tuple[str, ...], worker: int, workers: int,
                 threads: int) -> None:
    _child_setup(threads)
    run_sweep(experiment, rungs=rungs, workers=1, _worker=(worker, workers))


def run_sweep(experiment: Experiment, *, rungs: tuple[str, ...] | None = None, workers: int = 1,
              progress: Callable[[RungProgress], None] | None = None, force: bool = False,
              _worker: tuple[int, int] = (0, 1)) -> SweepSummary:
    """Sweep the experiment's rungs (or ``rungs``) in order, with ``workers`` local processes.

    Each worker gets ``max(1, experiment.threads // workers)`` CPU threads (environment set in
    the child before a framework is imported). ``progress`` is called with a ``RungProgress``
    after each trial (polled from the store when there are several workers). A rung swept
    before with other settings stops the sweep before anything trains
    (``proxy.sweep.identity``), unless ``force``.
    """
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ValueError(f"workers must be a positive integer, got {workers!r}")
    selected = tuple(experiment.rung(r) for r in rungs) if rungs else experiment.rungs
    if _worker == (0, 1):
        check_buildable(experiment, selected)   # before the store is opened (or created)
    storage = open_storage(experiment.storage, heartbeat_interval=experiment.heartbeat_interval)
    if _worker == (0, 1):   # the command's own process: its workers find the checks made
        preflight(experiment, storage, selected, force=force)
    if workers > 1:
        return _run_workers(experiment, selected, workers, storage, progress)
    if "torch" not in __import__("sys").modules:
        os.environ.setdefault("OMP_NUM_THREADS", str(experiment.threads))
    message = None
    for rung in selected:
        message = sweep_rung(experiment, rung, storage=storage, worker=_worker[0],
                             workers=_worker[1], progress=progress)
        if message:
            break
    return SweepSummary(tuple(rung_progress(experiment, r, storage) for r in selected),
                        stopped_by_budget=message is not None, message=message or "")


def preflight(experiment: Experiment, storage: Any, rungs: tuple[RungSpec, ...], *, force: bool = False) -> None:
    """What a sweep checks before its first trial: ``check_buildable``, and the store's rungs
    were swept with the experiment's settings (``proxy.sweep.identity``; ``force`` goes on
    regardless)."""
    from proxy.sweep.identity import check_identity

    check_buildable(experiment, rungs)
    check_identity(experiment, storage, rungs, force=force)


def check_buildable(experiment: Experiment, rungs: tuple[RungSpec, ...]) -> None:
    """Every rung's weights and optimiser state fit this machine's memory (at the box's largest
    expert count); the simulated backend's expert count is bounded. Touches no store, so a
    command can run it before it opens (or creates) one."""
    from proxy.backends.memory import check_host_memory

    experts = [k for k in experiment.search.box if k.name == "n_experts"]
    most = {"n_experts": max(experts[0].choices or (experts[0].high,))} if experts else {}
    configs = {r.name: K.setup_trial(r, most, experiment.search.fixed, experiment.data).config for r in rungs}
    if experiment.backend != "simulated":
        check_host_memory(configs, experiment.precision)
    else:   # no model is built, but one expert load is drawn per expert
        for name, config in configs.items():
            if config.n_experts > SIMULATED_MAX_EXPERTS:
                raise ValueError(f"rung {name} has {config.n_experts:,} experts; the simulated backend "
                                 f"draws one load per expert and takes at most {SIMULATED_MAX_EXPERTS:,}")


def _run_workers(experiment: Experiment, selected: tuple[RungSpec, ...], workers: int,
                 storage: Any, progress: Callable[[RungProgress], None] | None) -> SweepSummary:
    import multiprocessing as mp

    ctx = mp.get_context("spawn")
    threads = max(1, experiment.threads // workers)
    names = tuple(r.name for r in selected)
    procs = [ctx.Process(target=_worker_main, args=(experiment, names, i, workers, threads))
             for i in range(workers)]
    for p in procs:
        p.start()
    last: dict[str, RungProgress] = {}
    try:
        while any(p.is_alive() for p in procs):
            time.sleep(POLL_S * 2)
            if progress is not None:
                for r in selected:
                    now = rung_progress(experiment, r, storage)
                    if last.get(r.name) != now:
                        last[r.name] = now
                        progress(now)
    except BaseException as exc:
        if not isinstance(exc, Exception):   # Ctrl-C or SIGTERM: the workers stop now (their
            for p in procs:                  # trials stay RUNNING and are retried once stale)
                p.terminate()
        raise
    finally:
        for p in procs:
            p.join()
    bad = [p.exitcode for p in procs if p.exitcode != 0]
    if bad:
        raise RuntimeError(f"{len(bad)} of {workers} workers failed (exit codes {bad})")
    summary = tuple(rung_progress(experiment, r, storage) for r in selected)
    if progress is not None:
        for now in summary:
            progress(now)
    short = [p for p in summary if p.complete < p.requested]
    message = "" if not short else "budget reached before every rung had its trials"
    return SweepSummary(summary, stopped_by_budget=bool(short), message=message)


_POOL_STORES: dict[str, Any] = {}   # one open store per URL in each pool process


def _pool_init(threads: int) -> None:
    _child_setup(threads)


def _pool_sweep(experiment: Experiment, rung_name: str, worker: int, workers: int) -> str | None:
    storage = _POOL_STORES.get(experiment.storage)
    if storage is None:
        storage = _POOL_STORES[experiment.storage] = open_storage(
            experiment.storage, heartbeat_interval=experiment.heartbeat_interval)
    return sweep_rung(experiment, experiment.rung(rung_name), storage=storage, worker=worker, workers=workers)


class WorkerPool:
    """Local worker processes that sweep one rung together and stay alive across rungs, so each
    imports its framework once (the ladder-aware search runs rung after rung: a rung's box
    depends on the rungs below). Processes are spawned, never forked (the parent may hold
    threads), and get ``max(1, threads // workers)`` CPU threads each, set before any framework
    is imported. ``workers == 1`` runs in this process. Use as a context manager."""

    def __init__(self, experiment: Experiment, workers: int) -> None:
        if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
            raise ValueError(f"workers must be a positive integer, got {workers!r}")
        self.workers = workers
        self.threads = max(1, experiment.threads // workers)
        self._pool: Any = None
        if workers > 1:
            import multiprocessing as mp
            from concurrent.futures import ProcessPoolExecutor

            self._pool = ProcessPoolExecutor(max_workers=workers, mp_context=mp.get_context("spawn"),
                                             initializer=_pool_init, initargs=(self.threads,))

    def __enter__(self) -> "WorkerPool":
        return self

    def __exit__(self, exc_type: Any, *exc: Any) -> None:
        if exc_type is not None and not issubclass(exc_type, Exception) and self._pool is not None:
            # Interrupted (Ctrl-C, SIGTERM) or failed: stop the workers now rather than wait
            # for their trials; those stay RUNNING and are retried once stale.
            for proc in list(getattr(self._pool, "_processes", {}).values()):
                proc.terminate()
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None
        self.close()

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None

    def sweep_rung(self, experiment: Experiment, rung: RungSpec, storage: Any,
                   progress: Callable[[RungProgress], None] | None = None, *, jobs: int | None = None) -> str | None:
        """``sweep_rung`` with every worker (or ``jobs`` of them) on ``rung``; returns a budget
        stop message or None. ``progress`` is polled from the store while the workers run."""
        if self._pool is None:
            return sweep_rung(experiment, rung, storage=storage, progress=progress)
        from concurrent.futures import FIRST_EXCEPTION, wait

        futures = self._submit(experiment, rung, jobs or self.workers)
        last = None
        pending = set(futures)
        while pending:
            done, pending = wait(pending, timeout=POLL_S * 2, return_when=FIRST_EXCEPTION)
            if progress is not None:
                now = rung_progress(experiment, rung, storage)
                if now != last:
                    last = now
                    progress(now)
            if any(f.exception() is not None for f in done):
                wait(pending)   # the others finish their trials; then the first error is raised
                break
        return self.collect(futures)

    def _submit(self, experiment: Experiment, rung: RungSpec, jobs: int) -> list[Any]:
        return [self._pool.submit(_pool_sweep, experiment, rung.name, i, self.workers)
                for i in range(min(self.workers, jobs))]

    def start_rung(self, experiment: Experiment, rung: RungSpec, storage: Any, *, jobs: int = 1) -> Any:
        """Start sweeping ``rung`` with ``jobs`` workers and return at once, so the work overlaps
        what is submitted next (a job submitted while every worker is busy waits its turn);
        ``collect`` the handle later. In-process (``workers == 1``) the sweep runs now."""
        if self._pool is None:
            return sweep_rung(experiment, rung, storage=storage)
        return self._submit(experiment, rung, jobs)

    @staticmethod
    def collect(handle: Any) -> str | None:
        """Wait for a ``start_rung`` handle (or ``sweep_rung``'s futures); re-raise the first
        worker error; return the first budget stop message, or None."""
        if handle is None or isinstance(handle, str):
            return handle
        from concurrent.futures import wait

        wait(handle)
        for f in handle:
            if f.exception() is not None:
                raise f.exception()
        messages = [f.result() for f in handle if f.result()]
        return messages[0] if messages else None


def enqueue(experiment: Experiment, rung: str, params: Mapping[str, Any], *,
            user_attrs: Mapping[str, Any] | None = None) -> None:
    """Queue a point for ``rung`` (the next ``ask`` takes it first); duplicates are skipped.

    ``params`` uses Optuna parameter names (knob names; ``mix.<domain>`` logits).
    """
    dists = K.distributions(experiment.search.box, experiment.data.domains)
    unknown = sorted(set(params) - set(dists))
    if unknown:
        raise ValueError(f"enqueue: {unknown} are not searched knobs of {experiment.name!r}; "
                         f"searched: {sorted(dists)}")
    storage = open_storage(experiment.storage, heartbeat_interval=experiment.heartbeat_interval)
    study = _study(experiment, experiment.rung(rung), storage)
    study.enqueue_trial(dict(params), user_attrs=dict(user_attrs or {}), skip_if_exists=True)


def observations(storage: Any, experiment: Any) -> list[Observation]:
    """Every COMPLETE trial of ``experiment`` (an ``Experiment`` or its name) as an Observation.

    ``knobs`` holds every knob value of the trial (searched and fixed; mix weights as
    ``mix_weight.<domain>``); ``loss`` is the mean evaluation loss (NaN when diverged);
    ``extra`` has ``flops``, ``wall_time_s`` and ``objective`` (the value the sampler saw).
    """
    from optuna.trial import TrialState

    name = experiment if isinstance(experiment, str) else experiment.name
    if isinstance(storage, str):
        storage = open_storage(storage)
    out: list[Observation] = []
    for sname in experiment_study_names(storage, name):
        rung = sname[len(name) + 1:]
        study_id = storage.get_study_id_from_name(sname)
        for t in storage.get_all_trials(study_id, deepcopy=False, states=(TrialState.COMPLETE,)):
            out.append(trial_observation(rung, t))
    return out


def trial_observation(rung: str, t: Any) -> Observation:
    """One COMPLETE ``optuna.trial.FrozenTrial`` of ``rung`` as an Observation (see ``observations``)."""
    a = t.user_attrs
    loss = a.get("final_loss")
    diverged = bool(a.get("diverged", False))
    knobs = dict(a.get("knobs") or {k: v for k, v in t.params.items()})
    extra = {"objective": float(t.value)}
    for key in ("flops", "wall_time_s", "replicate_of"):
        if isinstance(a.get(key), (int, float)) and not isinstance(a.get(key), bool):
            extra[key] = float(a[key])
    if a.get("baseline"):   # the hand-set config (proxy.sweep.baseline), trained once a rung
        extra["baseline"] = 1.0
    # Each training seed's own loss (``seed_loss.<seed>``): a trial trained with several seeds
    # (a replicate with search.replicates >= 2) reports their mean as its loss, and the review's
    # noise estimate needs the single-seed losses it averaged.
    for run in a.get("seed_runs") or ():
        if isinstance(run, Mapping) and isinstance(run.get("final_loss"), (int, float)) and not diverged:
            extra[f"seed_loss.{int(run['seed'])}"] = float(run["final_loss"])
    return Observation(
        params_total=float(a["params_total"]), params_active=float(a["params_active"]),
        tokens=float(a["tokens"]), knobs=knobs,
        loss=math.nan if loss is None or diverged else float(loss), diverged=diverged,
        rung=rung, seed=int(a.get("seed", 0) or 0), extra=extra)
