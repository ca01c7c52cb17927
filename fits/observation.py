"""``Observation``: the record contract between the sweep (or an import) and the fits.

One trial = one observation. The fits read nothing else, so anything a fit needs is here.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Mapping


@dataclass(frozen=True)
class Observation:
    """One finished trial.

    ``params_total`` and ``params_active`` are parameter counts (active = touched per token);
    ``tokens`` is training tokens; ``knobs`` maps a knob name to its value (float for continuous
    knobs such as ``lr``, int or str for categorical ones such as ``n_experts``); ``loss`` is the
    evaluation loss in nats (NaN or inf when ``diverged``); ``rung`` names the ladder rung.
    """

    params_total: float
    params_active: float
    tokens: float
    knobs: Mapping[str, float | int | str]
    loss: float
    diverged: bool = False
    rung: str = ""
    seed: int = 0
    extra: Mapping[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name in ("params_total", "params_active", "tokens"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
                raise ValueError(f"Observation.{name} must be a finite positive number, got {value!r}")
        if not self.diverged and not math.isfinite(self.loss):
            raise ValueError(f"Observation.loss must be finite unless diverged, got {self.loss!r}")

    @property
    def usable(self) -> bool:
        """True when the trial finished with a finite loss."""
        return not self.diverged and math.isfinite(self.loss)
