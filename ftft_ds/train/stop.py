"""The one stop decision: budget, patience and divergence together, and why a run ended.

A run ends for one of three reasons, each checked at its own moment: its budget is spent (after
every optimizer step), its validation score has not improved for `patience` evaluations, or it sits
at majority-class level after warm-up (both after an evaluation). `StopRule` makes all three
decisions from values every rank shares, so every rank leaves the loop at the same step, and
returns a `StopReason` that the run keeps in its state, its checkpoints and `metrics.json`.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass
from typing import Iterable

from .budget import Budget
from .cost import CostTotals


class StopReason(str, enum.Enum):
    BUDGET = "budget"
    PATIENCE = "patience"
    DIVERGED = "diverged"


def improves(score: float, best: float | None, greater_is_better: bool = True) -> bool:
    """Whether `score` beats the best so far (`None`: nothing yet)."""
    return best is None or (score > best if greater_is_better else score < best)


def running_best(scores: Iterable[float], greater_is_better: bool = True) -> list[float]:
    """The best score so far after each of `scores`: the one best-so-far rule of runs and sweeps."""
    best, out = None, []
    for score in scores:
        if improves(score, best, greater_is_better):
            best = score
        out.append(best)
    return out


@dataclass
class Patience:
    """Stop after `evals` evaluations without improvement of `metric` (e.g. `dev/accuracy`)."""

    metric: str
    evals: int | None = None  # None: never stop early, but still keep the best checkpoint
    greater_is_better: bool = True


@dataclass
class Divergence:
    """Stop a run stuck at majority-class level: `metric` <= `threshold` at an evaluation after `after_step`.

    Fine-tuning on small data sometimes never leaves the majority class (Dodge et al. 2020); such a
    trial is wasted compute, and a sweep is better off stopping it.
    """

    metric: str
    threshold: float
    after_step: int


@dataclass(frozen=True)
class FlopsCeiling:
    """The most a run may spend, in the cost ledger's `cost_flops` (training and the evaluations
    that steer the run): what a recipe's cost target leaves a main run.

    The run goes on only while one more step at its largest (every example at the longest row
    trained on) and two evaluations of the split it watches (one may fall on that step, one more
    ends a run stopped between evaluation points) still fit. So a run that stops on it has spent no
    more than `limit` when its results are written; its closing report is counted apart.
    """

    limit: float
    step_flops: float
    """An upper bound on one optimizer step's training FLOPs."""
    eval_flops: float
    """One evaluation while training (the watched split, or its fixed sample)."""

    @property
    def reserve(self) -> float:
        """What must stay unspent for one more step and whatever evaluations follow it."""
        return self.step_flops + 2 * self.eval_flops

    def allows(self, spent: float) -> bool:
        """Whether a run that has spent `spent` FLOPs may take one more step."""
        return spent + self.reserve <= self.limit


@dataclass
class StopRule:
    """Decides, identically on every rank, when a run is over and why."""

    budget: Budget
    max_steps: int | None  # None for FLOPs/time budgets, checked against the ledger's totals
    patience: Patience | None = None
    divergence: Divergence | None = None
    ceiling: FlopsCeiling | None = None

    def after_step(self, step: int, totals: CostTotals) -> StopReason | None:
        """`BUDGET` once the run has spent its budget, or the ceiling leaves no room for a step."""
        if self.max_steps is not None:
            spent = step >= self.max_steps
        else:
            spent = (totals.total_flops if self.budget.kind == "flops" else totals.wall_seconds) >= self.budget.value
        if self.ceiling is not None and not self.ceiling.allows(totals.cost_flops):
            spent = True
        return StopReason.BUDGET if spent else None

    def after_eval(self, state, results: dict) -> StopReason | None:
        """Update `state`'s best score from an evaluation at `state.step`; `DIVERGED` or `PATIENCE`
        when the run should end there. `state` is the trainer's `TrainState`."""
        guard = self.divergence
        if (
            guard is not None
            and state.step >= guard.after_step
            and results.get(guard.metric, math.inf) <= guard.threshold
        ):
            return StopReason.DIVERGED
        if self.patience is None or self.patience.metric not in results:
            return None
        score = results[self.patience.metric]
        if improves(score, state.best_score, self.patience.greater_is_better):
            state.best_score, state.best_step, state.evals_since_best = score, state.step, 0
            return None
        state.evals_since_best += 1
        if self.patience.evals is not None and state.evals_since_best >= self.patience.evals:
            return StopReason.PATIENCE
        return None
