"""The compute ledger: training FLOPs spent by a sweep, per trial, per rung and in total.

FLOPs of a trial are what its training runs report (``TrainResult.flops``, summed over the
trial's seeds; a diverged run counts the steps it did), stored as the trial attribute
``flops``. A trial still running, or killed before it finished, counts what its heartbeat last
stored (``flops_spent``: the steps done times the FLOPs of a step), and its retry counts again:
the compute was spent twice. Fractions are of the target run's FLOPs, ``proxy.flops.train_flops(target,
target tokens)``.

Budget rule: before asking a new trial the runner checks ``spent + next_cost > budget`` and
stops with a message if so, so a sweep never exceeds its budget (with several workers, each
may have one trial in flight past the check: at most ``workers - 1`` trials over).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

from proxy.flops import train_flops
from proxy.sweep.spec import RungSpec


@dataclass(frozen=True)
class TrialCost:
    rung: str
    number: int
    state: str
    flops: float


@dataclass(frozen=True)
class Ledger:
    """FLOPs spent (training FLOPs) and the caps they are measured against."""

    trials: tuple[TrialCost, ...]
    per_rung: Mapping[str, float]
    total_flops: float
    target_flops: float | None
    budget_flops: float | None

    @property
    def fraction_of_target(self) -> float | None:
        return None if not self.target_flops else self.total_flops / self.target_flops

    @property
    def fraction_of_budget(self) -> float | None:
        return None if not self.budget_flops else self.total_flops / self.budget_flops

    def rung_fraction(self, rung: str) -> float | None:
        return None if not self.target_flops else self.per_rung.get(rung, 0.0) / self.target_flops


def trial_flops(trial: Any) -> float:
    """A stored trial's training FLOPs: ``flops`` once it ended, else ``flops_spent`` so far."""
    a = trial.user_attrs
    return float(a.get("flops", a.get("flops_spent", 0.0)) or 0.0)


def next_trial_cost(rung: RungSpec, n_seeds: int = 1) -> float:
    """Estimated FLOPs of one more trial on ``rung``: its base config for its tokens, per seed.

    Searched knobs that change the active size (``top_k``) or the tokens are not anticipated;
    the check uses the rung's own config.
    """
    return train_flops(rung.config, rung.tokens) * n_seeds


def budget_message(spent: float, next_cost: float, budget: float | None) -> str | None:
    """A stop message when one more trial would exceed ``budget``; None when it fits."""
    if budget is None or spent + next_cost <= budget:
        return None
    return (f"budget reached: spent {spent:.3e} FLOPs of {budget:.3e}; the next trial "
            f"(~{next_cost:.3e} FLOPs) would exceed it, so the sweep stops here")


def ledger(storage: Any, experiment: Any) -> Ledger:
    """The ledger of ``experiment`` (an ``Experiment``, or a name) in ``storage`` (URL or storage).

    Target and budget FLOPs are known only when an ``Experiment`` is given.
    """
    from optuna.trial import TrialState

    from proxy.sweep.snapshot import read_experiment
    from proxy.sweep.store import open_storage

    name = experiment if isinstance(experiment, str) else experiment.name
    if isinstance(storage, str):
        storage = open_storage(storage)
    costs: list[TrialCost] = []
    per_rung: dict[str, float] = {}
    for study_name, snap in read_experiment(storage, name).items():
        rung = study_name[len(name) + 1:]
        total = 0.0
        for trial in snap.trials:
            if trial.state == TrialState.WAITING:
                continue
            flops = trial_flops(trial)
            costs.append(TrialCost(rung, trial.number, trial.state.name, flops))
            total += flops
        per_rung[rung] = total
    target = None if isinstance(experiment, str) else experiment.target_flops
    budget = None if isinstance(experiment, str) else experiment.budget_flops
    return Ledger(trials=tuple(costs), per_rung=per_rung, total_flops=sum(per_rung.values()),
                  target_flops=target, budget_flops=budget)
