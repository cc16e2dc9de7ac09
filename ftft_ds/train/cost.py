"""The cost ledger: what a run spent, step by step, in units that add up across a whole recipe.

Per optimizer step it counts non-padding tokens, analytic FLOPs (≈ 6 × parameters × tokens for a
training step, 2 × for an evaluation forward pass; parameters without the embedding tables, as in
Kaplan et al.'s C ≈ 6ND; with frozen weights, as under LoRA, fewer: `train_flops_per_token`), wall
time and device-hours, plus loss, learning rate, accuracy, throughput and, at log points, peak
memory since set-up. Counters stay on the device between log points, so counting adds no
synchronisation; at a log point the ranks sum them in one all-reduce. Rank 0 writes the events to
TensorBoard under the stable tags below and `cost.json` at the end. Reference runs and main runs use
the same ledger, so `reference + main` costs are directly comparable with ERM's. Evaluations that
only report (the closing evaluation of every split, which every method pays alike) are counted apart
from those that steer a run (`CostTotals.cost_flops`)."""

from __future__ import annotations

import contextlib
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist

from ..io import write_json
from .runtime import peak_memory_bytes

EVAL_FLOPS_PER_PARAM_TOKEN = 2
"""A forward pass: one multiply and one add per parameter and token."""


def train_flops_per_token(flops_parameters: float, trainable: float | None = None) -> float:
    """Training FLOPs per token of a model with `flops_parameters` matrix-multiply parameters, of
    which `trainable` train (None: all).

    A step is a forward pass (2 per parameter), the gradients of every layer's input (2 per
    parameter: each layer below still has something to train) and the gradients of the trainable
    weights (2 per trainable parameter): 6N when everything trains, as in the usual C ≈ 6ND, and
    4N + 2T when only T of them do, about two thirds of it for LoRA's small T.
    """
    trainable = flops_parameters if trainable is None else trainable
    return 2.0 * EVAL_FLOPS_PER_PARAM_TOKEN * flops_parameters + EVAL_FLOPS_PER_PARAM_TOKEN * trainable


# Stable TensorBoard tags (dashboards and tests rely on these names).
TAG_LOSS = "train/loss"
TAG_LR = "train/lr"
TAG_ACCURACY = "train/accuracy"
TAG_EXAMPLES_PER_S = "train/examples_per_s"
TAG_TOKENS_PER_S = "train/tokens_per_s"
TAG_TOKENS = "cost/tokens"
TAG_FLOPS = "cost/flops"
TAG_WALL_S = "cost/wall_seconds"
TAG_DEVICE_HOURS = "cost/device_hours"
TAG_MEMORY_MIB = "memory/rank0_mib"
TAG_RESERVED_MIB = "memory/rank0_reserved_mib"


@dataclass
class CostTotals:
    """Cumulative cost of a run (global: summed over ranks)."""

    train_tokens: int = 0
    train_examples: int = 0
    eval_tokens: int = 0
    optimizer_steps: int = 0
    wall_seconds: float = 0.0
    device_hours: float = 0.0
    report_tokens: int = 0
    """Of `eval_tokens`, those of evaluations that only report (the closing evaluation of every
    split, and every evaluation of a run that nothing it evaluates steers): every method pays the
    same report, so it measures a model rather than what producing it cost."""
    flops_parameters: int = 0
    """Parameters in the 6·N·D rule: all but embedding tables (lookups are not matrix multiplies)."""
    trainable_flops_parameters: int | None = None
    """Of `flops_parameters`, those that train (None: all of them); frozen ones cost no weight gradients."""
    world_size: int = 1
    run_seconds: float = 0.0
    """Wall time of the whole run, set-up (data, model, engine), evaluations, checkpoints and export
    included, summed over resumed segments: what a user waits for, apart from interpreter start-up.
    `wall_seconds` counts the training loop alone (its evaluations included)."""

    @property
    def train_flops(self) -> float:
        return train_flops_per_token(self.flops_parameters, self.trainable_flops_parameters) * self.train_tokens

    @property
    def eval_flops(self) -> float:
        return float(EVAL_FLOPS_PER_PARAM_TOKEN) * self.flops_parameters * self.eval_tokens

    @property
    def total_flops(self) -> float:
        return self.train_flops + self.eval_flops

    @property
    def report_flops(self) -> float:
        return float(EVAL_FLOPS_PER_PARAM_TOKEN) * self.flops_parameters * self.report_tokens

    @property
    def cost_flops(self) -> float:
        """What producing the model cost: training and the evaluations that steer the run (stop it,
        choose the checkpoint it keeps), without the report (`report_tokens`)."""
        return self.total_flops - self.report_flops

    def to_dict(self) -> dict:
        out = asdict(self)
        out.update(
            train_flops=self.train_flops,
            eval_flops=self.eval_flops,
            total_flops=self.total_flops,
            report_flops=self.report_flops,
            cost_flops=self.cost_flops,
        )
        return out


class CostLedger:
    """Counts a run's cost on every rank; logs and saves it from rank 0."""

    def __init__(
        self,
        flops_parameters: int,
        world_size: int,
        device: torch.device,
        monitor=None,
        totals: CostTotals | None = None,
        started: float | None = None,
        trainable_flops_parameters: int | None = None,
    ):
        self.totals = totals or CostTotals(
            flops_parameters=flops_parameters,
            trainable_flops_parameters=trainable_flops_parameters,
            world_size=world_size,
        )
        self._segment_started = time.time() if started is None else started  # this process's share of run_seconds
        self.monitor = monitor
        # Device-side sums since the last flush: [train tokens, eval tokens, loss sum, correct, report tokens].
        self._pending = torch.zeros(5, dtype=torch.float64, device=device)
        self._reporting = False
        self._examples = 0  # training examples since the last flush, counted on the host
        self._last_time = time.perf_counter()
        # [train tokens, train examples, loss sum, correct, seconds] since the last write
        self._window = np.zeros(5, dtype=np.float64)
        self._device = device
        self.training_memory_bytes = {"allocated": 0, "reserved": 0}
        """This rank's peak memory since set-up as last sampled at a log point (GPU: the allocator's
        allocated and reserved peaks; CPU: the resident set's): memory while training, apart from
        the final save and evaluations."""

    def count_train(
        self, attention_mask: torch.Tensor, loss: torch.Tensor, logits: torch.Tensor, labels: torch.Tensor
    ) -> None:
        """Count one training micro-batch: device values stay on the device, so nothing waits."""
        examples = labels.numel()
        self._examples += examples
        self._pending[0] += attention_mask.sum()
        self._pending[2] += loss.detach().double() * examples
        self._pending[3] += (logits.detach().argmax(-1) == labels).sum()

    def count_eval(self, attention_mask: torch.Tensor) -> None:
        """Count one evaluation micro-batch's tokens (no synchronisation), as a report's within `reporting`."""
        tokens = attention_mask.sum()
        self._pending[1] += tokens
        if self._reporting:
            self._pending[4] += tokens

    @contextlib.contextmanager
    def reporting(self, active: bool = True):
        """Count the evaluations within as reports (see `CostTotals.report_tokens`) when `active`."""
        previous, self._reporting = self._reporting, self._reporting or active
        try:
            yield
        finally:
            self._reporting = previous

    def flush(self, step: int, lr: float | None = None, write: bool = True) -> dict:
        """Sum pending counts over ranks and add them to the totals (a collective: all ranks call).

        One all-reduce carries the counts and each rank's elapsed time, whose mean is the wall
        time added, so the totals are identical on every rank and budget decisions taken from them
        need no further collective. With `write`, rank 0 also logs the scalars of the window since
        the last write (loss, accuracy, throughput) and the cumulative cost to TensorBoard.
        """
        now = time.perf_counter()
        host = torch.tensor([self._examples, now - self._last_time], dtype=torch.float64)
        pending = torch.cat([self._pending, host.to(self._pending.device)])
        world = 1
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            dist.all_reduce(pending)
            world = dist.get_world_size()
        self._pending.zero_()
        self._examples = 0
        self._last_time = now
        tokens, eval_tokens, loss_sum, correct, report_tokens, examples, elapsed = pending.tolist()
        elapsed /= world
        t = self.totals
        t.train_tokens += int(tokens)
        t.train_examples += int(examples)
        t.eval_tokens += int(eval_tokens)
        t.report_tokens += int(report_tokens)
        t.optimizer_steps = step
        t.wall_seconds += elapsed
        t.device_hours += elapsed * t.world_size / 3600.0
        self._window += (tokens, examples, loss_sum, correct, elapsed)
        record = {
            TAG_TOKENS: t.train_tokens + t.eval_tokens,
            TAG_FLOPS: t.total_flops,
            TAG_WALL_S: t.wall_seconds,
            TAG_DEVICE_HOURS: t.device_hours,
        }
        if not write:
            return record
        # At log points only: budgets that are not step counts flush every step.
        self.training_memory_bytes = peak_memory_bytes(self._device)
        record[TAG_MEMORY_MIB] = self.training_memory_bytes["allocated"] / 2**20
        record[TAG_RESERVED_MIB] = self.training_memory_bytes["reserved"] / 2**20
        tokens, examples, loss_sum, correct, elapsed = self._window.tolist()
        self._window[:] = 0
        if examples:
            record.update(
                {
                    TAG_LOSS: loss_sum / examples,
                    TAG_ACCURACY: correct / examples,
                    TAG_EXAMPLES_PER_S: examples / max(elapsed, 1e-9),
                    TAG_TOKENS_PER_S: tokens / max(elapsed, 1e-9),
                }
            )
        if lr is not None:
            record[TAG_LR] = lr
        self.write(record, step)
        return record

    def write(self, scalars: dict, step: int) -> None:
        """Write scalars to TensorBoard (rank 0 only: the monitor exists there alone)."""
        if self.monitor is not None and self.monitor.enabled:
            self.monitor.write_events([(tag, float(value), step) for tag, value in scalars.items()])

    def save(self, path: str | Path, **extra) -> None:
        write_json(path, {**self.totals.to_dict(), "run_seconds": self.run_seconds(), **extra})

    def state_dict(self) -> dict:
        """The totals so far, `run_seconds` up to now, and the log window so far, for a checkpoint
        (flush first: pending counts are not included). With the window, a run resumed between log
        points logs the same loss and accuracy at the next one as a run that never stopped."""
        return {**asdict(self.totals), "run_seconds": self.run_seconds(), "window": self._window.tolist()}

    def run_seconds(self) -> float:
        """Wall time of the whole run so far, every resumed segment included."""
        return self.totals.run_seconds + time.time() - self._segment_started

    def load_state_dict(self, state: dict) -> None:
        """Continue counting from a checkpoint's totals (`run_seconds` goes on from where it was saved)."""
        state = dict(state)
        self._window = np.array(state.pop("window", [0.0] * len(self._window)), dtype=np.float64)
        self.totals = CostTotals(**state)
