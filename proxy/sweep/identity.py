"""The experiment's identity in the store: what defines a rung's trials, stored with its study.

A rung's trials are worth keeping only while the settings that produced them hold: the rung's
model and token budget, the human's search box, the fixed knobs, the data, the backend, the
training seeds, dtype and precision (and the simulated truth for that backend). Each rung's
study stores that ``fingerprint`` when it is first swept; a later sweep of an edited file
compares it key by key and stops, naming the keys that changed, instead of counting the old
trials as the new experiment's. ``--new-name`` sweeps the edited file as a new experiment in the
same store; ``--force`` keeps the old trials and records the new fingerprint.

What is left out changes how many trials run or where, not what one trial measures: trial
counts, the sampler, workers, threads, device, accumulation and checkpointing, the budget and
the review policy.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any, Iterable

ATTR = "fingerprint"
HISTORY_ATTR = "fingerprint_forced"   # the fingerprints a --force replaced, oldest first


class ExperimentChanged(ValueError):
    """A rung's stored fingerprint differs from the experiment file's; ``keys`` are the changes."""

    def __init__(self, experiment: str, rung: str, keys: list[str], stored: dict, now: dict, *,
                 reading: bool = False) -> None:
        self.keys = keys
        shown = "; ".join(f"{k}: {stored.get(k, '(absent)')} -> {now.get(k, '(absent)')}" for k in keys[:4])
        more = f" and {len(keys) - 4} more" if len(keys) > 4 else ""
        what = ("the fits would read its trials as if run with the file's settings. Restore the file, or "
                "sweep the edited one with `ladder sweep --new-name NAME` (or `--force` to keep the old trials)"
                if reading else
                "its trials would be reused under the new ones. Rerun with --new-name NAME to sweep the "
                "edited file as a new experiment in the same store, or --force to keep the old trials")
        super().__init__(f"experiment {experiment!r} rung {rung!r} was swept with other settings "
                         f"({shown}{more}); {what}")


def _canonical(value: Any) -> Any:
    """A JSON round trip: tuples become lists, keys strings, so stored and fresh values compare."""
    return json.loads(json.dumps(value, sort_keys=True, default=str))


def _flat(prefix: str, value: Any, out: dict[str, Any]) -> None:
    if isinstance(value, dict) and value:
        for k in sorted(value):
            _flat(f"{prefix}.{k}", value[k], out)
    else:
        out[prefix] = value


def fingerprint(experiment: Any, rung: Any) -> dict[str, Any]:
    """The flat ``key -> value`` map of what defines ``rung``'s trials (see the module doc)."""
    raw: dict[str, Any] = {
        "rung": {**rung.config.to_dict(), "tokens": rung.tokens, "batch_size": rung.batch_size},
        "box": {k.name: {"low": k.low, "high": k.high, "log": k.log, "choices": list(k.choices)}
                for k in experiment.search.box},
        "fixed": dict(experiment.search.fixed),
        "data": dataclasses.asdict(experiment.data),
        "backend": experiment.backend,
        "seeds": list(experiment.seeds),
        "dtype": experiment.dtype,
        "precision": experiment.precision,
    }
    if experiment.simulated is not None:   # its truth, not its sleep (which only slows a trial)
        raw["simulated"] = {k: v for k, v in dataclasses.asdict(experiment.simulated).items() if k != "sleep_s"}
    out: dict[str, Any] = {}
    for key, value in _canonical(raw).items():
        _flat(key, value, out)
    return out


def changed_keys(stored: dict[str, Any], now: dict[str, Any]) -> list[str]:
    """The keys whose values differ (or that only one side has), sorted."""
    return sorted(k for k in set(stored) | set(now) if stored.get(k, None) != now.get(k, None)
                  or (k in stored) != (k in now))


def check_identity(experiment: Any, storage: Any, rungs: Iterable[Any], *, force: bool = False) -> None:
    """Compare (or, on a rung's first sweep, store) each rung's fingerprint; raise
    ``ExperimentChanged`` on the first rung that differs, unless ``force``, which records the new
    fingerprint (and the one it replaced) and goes on. Studies are created for the rungs that have
    none, so the fingerprint is in place before any trial is."""
    import optuna

    from proxy.sweep.store import study_name

    for rung in rungs:
        now = fingerprint(experiment, rung)
        study = optuna.create_study(study_name=study_name(experiment.name, rung.name), storage=storage,
                                    direction="minimize", load_if_exists=True)
        stored = study.user_attrs.get(ATTR)
        if stored is None:
            study.set_user_attr(ATTR, now)   # a new rung, or a store written before fingerprints
            continue
        keys = changed_keys(stored, now)
        if not keys:
            continue
        if not force:
            raise ExperimentChanged(experiment.name, rung.name, keys, stored, now)
        study.set_user_attr(HISTORY_ATTR, list(study.user_attrs.get(HISTORY_ATTR, [])) + [stored])
        study.set_user_attr(ATTR, now)


def compare_identity(experiment: Any, storage: Any, rungs: Iterable[Any]) -> None:
    """The reading commands' check (fit, plan, review, report, status): raise ``ExperimentChanged``
    when a rung's stored fingerprint differs from the file's, so no fit silently uses trials of
    other settings; writes nothing (a rung with no fingerprint passes: not swept yet, or imported)."""
    from proxy.sweep.snapshot import read_study_attrs
    from proxy.sweep.store import study_name

    attrs = read_study_attrs(storage, experiment.name)
    for rung in rungs:
        stored = attrs.get(study_name(experiment.name, rung.name), {}).get(ATTR)
        if stored is None:
            continue
        now = fingerprint(experiment, rung)
        keys = changed_keys(stored, now)
        if keys:
            raise ExperimentChanged(experiment.name, rung.name, keys, stored, now, reading=True)
