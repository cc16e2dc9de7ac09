"""Step budgets: how long a run trains (`stop.StopRule` decides when it has).

A budget is written `KIND:VALUE`:

- `steps:N`     N optimizer steps;
- `epochs:E`    E passes over the rows being trained on (the subset, or the full split for ERM),
                rounded up to whole optimizer steps;
- `erm:F`       a fraction F of the ERM budget, i.e. of the steps plain training would take for
                `erm_epochs` epochs over the FULL training split at the same global batch;
- `flops:X`     stop once the run's analytic FLOPs (the cost ledger's) reach X;
- `seconds:T`   stop once the run's wall-clock time reaches T.

The first three are known up front as a number of optimizer steps; the last two are checked after
every step against the cost ledger's totals, which its per-step flush makes identical on every
rank, so every rank stops at the same step.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from ..errors import FtftError

KINDS = ("steps", "epochs", "erm", "flops", "seconds")


@dataclass(frozen=True)
class Budget:
    kind: str
    value: float

    @classmethod
    def parse(cls, text: str) -> "Budget":
        kind, sep, raw = str(text).partition(":")
        if not sep or kind not in KINDS:
            raise FtftError(f"budget {text!r} must be KIND:VALUE with KIND one of {', '.join(KINDS)} (e.g. erm:0.5)")
        try:
            value = float(raw)
        except ValueError:
            raise FtftError(f"budget {text!r} needs a number after '{kind}:'") from None
        if not value > 0 or not math.isfinite(value):
            raise FtftError(f"budget {text!r} must be positive and finite")
        if kind == "steps" and value != int(value):
            raise FtftError(f"budget {text!r} must be a whole number of steps")
        return cls(kind, value)

    def __str__(self) -> str:
        return f"{self.kind}:{self.value:g}"

    @property
    def is_static(self) -> bool:
        """Whether the number of steps is known before training starts."""
        return self.kind in ("steps", "epochs", "erm")

    def max_steps(self, steps_per_epoch: float, erm_steps: int) -> int | None:
        """Optimizer steps this budget allows, or None for FLOPs/time budgets."""
        if self.kind == "steps":
            return int(self.value)
        if self.kind == "epochs":
            return math.ceil(self.value * steps_per_epoch - 1e-9)
        if self.kind == "erm":
            return math.ceil(self.value * erm_steps - 1e-9)
        return None
