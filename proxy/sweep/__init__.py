"""The sweep layer (L3): experiment files, knobs, the trial store, the runner, the compute
ledger and imports of external runs. Frameworks are reached only through ``proxy.backends``.

Importing this package is light: Optuna and the backends are imported by the modules that
need them, when they are used.
"""

from proxy.sweep.experiment import Experiment, ExperimentError, load_experiment

__all__ = ["Experiment", "ExperimentError", "load_experiment"]
