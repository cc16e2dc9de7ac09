"""The one step plan: every step count of a run, from its rows, batch shape and budgets.

A main run, the sweep that cuts it into rungs and the cost plan must agree to the step on how
long an epoch is, what "the ERM budget" means, where the run stops and what the learning-rate
schedule spans; so they all ask `plan_steps`, and nothing else does this arithmetic.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from ..errors import FtftError
from ..train.budget import Budget

MAX_EPOCHS = 1000
"""More passes over the training rows than this is refused as a likely typo in a budget."""


@dataclass(frozen=True)
class StepPlan:
    steps_per_epoch: float
    """Optimizer steps of one epoch over the rows trained on (micro-batches carry over epochs)."""
    erm_steps: int
    """Steps of the ERM budget: `erm_epochs` over the FULL training split at the same global batch."""
    max_steps: int | None
    """Steps the budget allows; None for FLOPs/time budgets, which are checked as the run goes."""
    schedule_steps: int
    """Steps the linear warm-up/decay schedule spans."""
    warmup_steps: int
    """Steps of linear warm-up at the start of the schedule."""

    def evals_every(self, evals_per_schedule: int) -> int:
        """Steps between evaluations that spread `evals_per_schedule` evenly over the schedule."""
        return max(1, round(self.schedule_steps / evals_per_schedule))


def steps_per_epoch(num_rows: int, world_size: int, micro_batch_size: int, grad_accum: int) -> float:
    """Optimizer steps one epoch over `num_rows` takes (micro-batches carry over between epochs)."""
    per_rank = math.ceil(num_rows / world_size)
    return math.ceil(per_rank / micro_batch_size) / grad_accum


def plan_steps(
    rows: int,
    full_rows: int,
    world_size: int,
    micro_batch_size: int,
    grad_accum: int,
    budget: Budget,
    erm_epochs: float = 1.0,
    schedule: str = "compressed",
    schedule_budget: Budget | None = None,
    warmup_ratio: float = 0.0,
) -> StepPlan:
    """Plan a run over `rows` of a `full_rows` training split.

    The schedule spans the budget (`compressed`) or the ERM budget (`truncated`), unless
    `schedule_budget` (a sweep's full trial, run a rung at a time) names the budget it spans.
    """
    per_epoch = steps_per_epoch(rows, world_size, micro_batch_size, grad_accum)
    erm_steps = max(1, round(steps_per_epoch(full_rows, world_size, micro_batch_size, grad_accum) * erm_epochs))
    max_steps = budget.max_steps(per_epoch, erm_steps)
    if max_steps is not None and max_steps / per_epoch > MAX_EPOCHS:
        raise FtftError(
            f"budget {budget} means {max_steps} steps = {max_steps / per_epoch:.0f} epochs over "
            f"the {rows} training rows; at most {MAX_EPOCHS} are allowed"
        )
    schedule_steps = max_steps if (schedule == "compressed" and max_steps is not None) else erm_steps
    if schedule_budget is not None and schedule_budget.max_steps(per_epoch, erm_steps) is not None:
        schedule_steps = schedule_budget.max_steps(per_epoch, erm_steps)
    return StepPlan(per_epoch, erm_steps, max_steps, schedule_steps, math.floor(warmup_ratio * schedule_steps))


def examples_seen(steps: int, rows: int, world_size: int, micro_batch_size: int, grad_accum: int) -> tuple[int, int]:
    """What `steps` optimizer steps over `rows` training rows pass forward, all ranks together:
    (whole epochs, examples of the epoch under way). An epoch's examples are its rows plus the few
    the sampler repeats so that every rank takes as many; micro-batches carry over epochs."""
    per_rank = math.ceil(rows / world_size)
    batches_per_epoch = math.ceil(per_rank / micro_batch_size)
    epochs, batches = divmod(steps * grad_accum, batches_per_epoch)
    return epochs, world_size * min(batches * micro_batch_size, per_rank)
