"""How a sweep proposes its points: the Optuna sampler an experiment names, reseeded for each
trial by the trial's own number (``TrialSeededSampler``), so processes on many machines sharing
one store draw distinct points and each point is reproducible from the store."""

from __future__ import annotations

import contextlib
import warnings
import zlib
from typing import Any, Callable, Iterator

from proxy.sweep import knobs as K
from proxy.sweep.experiment import Experiment


@contextlib.contextmanager
def quiet_optuna() -> Iterator[None]:
    """Silence the Optuna warnings the ask-and-tell loop triggers by design: the heartbeat is
    driven by the runner (Optuna warns it expects Study.optimize) and QMC / GP / the retry
    callback are marked experimental."""
    import optuna

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
        warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed to be used")
        # The hand-set baseline may lie outside a re-centred rung's box: it is trained as it is.
        warnings.filterwarnings("ignore", message="Fixed parameter")
        yield


def make_sampler(experiment: Experiment, seed: int, *, workers: int = 1) -> Any:
    """The Optuna sampler of ``experiment.search.sampler`` (GP needs torch, which is installed)."""
    import optuna

    s = experiment.search
    with quiet_optuna():
        if s.sampler == "random":
            return optuna.samplers.RandomSampler(seed=seed)
        if s.sampler == "qmc":
            return optuna.samplers.QMCSampler(seed=s.seed_of(experiment.seeds), scramble=True)
        if s.sampler == "gp":
            return optuna.samplers.GPSampler(seed=seed, n_startup_trials=s.startup_trials)
        if s.sampler == "grid":
            return optuna.samplers.GridSampler(K.grid_space(s.box, experiment.data.domains, s.grid_points), seed=seed)
        n_params = len(K.distributions(s.box, experiment.data.domains))
        return optuna.samplers.TPESampler(
            seed=seed, n_startup_trials=s.startup_trials,
            multivariate=s.multivariate and n_params > 1, constant_liar=workers > 1)


def trial_seed(experiment: Experiment, rung: str, number: int) -> int:
    """The sampler's seed for trial ``number`` of ``rung``: the sampler seed, the rung and the
    trial's own number, which the store hands out atomically. So every process on every machine
    draws from its own stream (two sweeps of one experiment never propose the same point),
    a resumed sweep does not replay the points it has, and each point is reproducible from the
    store (the number is in it)."""
    return (experiment.search.seed_of(experiment.seeds) * 1_000_003 + zlib.crc32(rung.encode())
            + number * 7_919) % (2 ** 32)


class TrialSeededSampler:
    """An Optuna sampler that makes its inner sampler afresh for each trial, seeded by
    ``trial_seed`` (the samplers the toolkit uses keep no state between trials but their random
    stream: TPE, GP and random recompute from the study's trials). The grid and QMC samplers
    keep one seed (``per_trial=False``): their seed orders the grid or the sequence, and each
    trial takes its own cell or index from the store (its number, or the cells others hold), so
    a seed per trial would reorder the grid under them. The grid sampler's ``after_trial`` is
    not forwarded: it calls ``Study.stop``, which only ``Study.optimize`` allows; the runner
    counts the rung's trials itself."""

    def __init__(self, make: Callable[[int], Any], seed_of: Callable[[int], int], *,
                 per_trial: bool = True) -> None:
        self._make = make
        self._seed_of = seed_of
        self._per_trial = per_trial
        with quiet_optuna():
            self._inner = make(seed_of(0))

    def before_trial(self, study: Any, trial: Any) -> None:
        with quiet_optuna():
            if self._per_trial:
                self._inner = self._make(self._seed_of(trial.number))
            self._inner.before_trial(study, trial)

    def infer_relative_search_space(self, study: Any, trial: Any) -> Any:
        return self._inner.infer_relative_search_space(study, trial)

    def sample_relative(self, study: Any, trial: Any, search_space: Any) -> Any:
        with quiet_optuna():
            return self._inner.sample_relative(study, trial, search_space)

    def sample_independent(self, study: Any, trial: Any, name: str, dist: Any) -> Any:
        with quiet_optuna():
            return self._inner.sample_independent(study, trial, name, dist)

    def after_trial(self, study: Any, trial: Any, state: Any, values: Any) -> None:
        import optuna

        if not isinstance(self._inner, optuna.samplers.GridSampler):
            self._inner.after_trial(study, trial, state, values)

    def reseed_rng(self) -> None:
        self._inner.reseed_rng()
