"""The training loop shared by reference runs and main runs; read it top to bottom.

Each micro-batch: forward, optionally record its logits (training dynamics), count its cost,
backward, step. DeepSpeed accumulates gradients across micro-batches and steps the optimizer on its
own boundaries; after each optimizer step the trainer logs, asks the stopper whether the budget is
spent, evaluates, and checkpoints. Every decision that ends or branches the loop is made
identically on every rank, because a rank that leaves early would hang the others' collectives.
"""
from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from tqdm.auto import tqdm

from ..cost import CostLedger, CostTotals
from ..errors import FtftError
from .budget import Stopper
from .checkpoint import BEST_TAG, Checkpointer
from .engine import current_lr, to_device
from .runtime import DistEnv


@dataclass
class TrainState:
    """Where training stands; saved in every checkpoint."""

    step: int = 0
    epoch: int = 0
    batches_in_epoch: int = 0
    best_score: float | None = None
    best_step: int | None = None
    evals_since_best: int = 0
    stopped_early: bool = False
    diverged: bool = False


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


class Trainer:
    """Runs one DeepSpeed engine over a sharded sampler until its stopper says so."""

    def __init__(self, engine, loader, sampler, ledger: CostLedger, stopper: Stopper, env: DistEnv, *,
                 log_every: int = 10, evaluator=None, eval_every: int = 0, patience: Patience | None = None,
                 divergence: Divergence | None = None,
                 checkpointer: Checkpointer | None = None, checkpoint_every: int = 0, recorder=None,
                 on_epoch_end: Callable[[], None] | None = None, log_path: Path | None = None,
                 desc: str = "train"):
        self.engine = engine
        self.loader = loader
        self.sampler = sampler
        self.ledger = ledger
        self.stopper = stopper
        self.env = env
        self.log_every = log_every
        self.evaluator = evaluator
        self.eval_every = eval_every
        self.patience = patience
        self.divergence = divergence
        self.checkpointer = checkpointer
        self.checkpoint_every = checkpoint_every
        self.recorder = recorder
        self.on_epoch_end = on_epoch_end
        self.log_path = log_path
        self.desc = desc
        self.state = TrainState()
        self.batches_per_epoch = math.ceil(sampler.per_rank / loader.batch_size)
        self.last_eval: dict = {}

    # -- the loop ----------------------------------------------------------------------------

    def fit(self) -> dict:
        """Train until the budget (or patience) stops the run; return the final evaluation."""
        state = self.state
        progress = tqdm(total=self.stopper.max_steps, initial=state.step, desc=self.desc,
                        disable=not self.env.is_main, dynamic_ncols=True)
        # A run resumed from a checkpoint taken when it had already stopped (killed after its final
        # checkpoint, before its results were written) only finishes: no step past its budget.
        stop = state.stopped_early or state.diverged or self.stopper.should_stop(state.step, self.ledger.totals)
        while not stop:
            self.sampler.set_epoch(state.epoch, start=state.batches_in_epoch * self.loader.batch_size)
            for batch in self.loader:
                boundary = self._train_micro_batch(batch)
                state.batches_in_epoch += 1
                if boundary:
                    state.step = self.engine.global_steps
                    progress.update(1)
                    stop = self._after_step(progress)
                    if stop:
                        break
            if state.batches_in_epoch == self.batches_per_epoch:
                if self.recorder is not None:
                    self.recorder.end_epoch()
                if self.on_epoch_end is not None:
                    self.on_epoch_end()
                state.epoch += 1
                state.batches_in_epoch = 0
        if self.recorder is not None:
            self.recorder.discard_epoch()  # a partial last epoch is never recorded
        progress.close()
        if self.evaluator is not None and self.last_eval.get("step") != state.step:
            self._evaluate()
        self.ledger.flush(state.step, current_lr(self.engine))
        return self.last_eval

    def _train_micro_batch(self, batch: dict) -> bool:
        indices = batch.pop("index")  # row numbers stay on the host: only the recorder reads them
        batch = to_device(batch, self.env.device)
        output = self.engine(**batch)
        if self.recorder is not None:
            self.recorder.record(indices, output.logits)
        self.ledger.count_train(batch["attention_mask"], output.loss, output.logits, batch["labels"])
        self.engine.backward(output.loss)
        boundary = self.engine.is_gradient_accumulation_boundary()
        self.engine.step()
        return boundary

    def _after_step(self, progress) -> bool:
        step = self.state.step
        if step % self.log_every == 0:
            record = self.ledger.flush(step, current_lr(self.engine))
            self._log({"step": step, **record})
            if "train/loss" in record:
                progress.set_postfix(loss=f"{record['train/loss']:.4f}", epoch=self.state.epoch)
        elif not self.stopper.budget.is_static:
            self.ledger.flush(step, write=False)  # FLOPs/time budgets need current global totals
        stop = self.stopper.should_stop(step, self.ledger.totals)
        if self.evaluator is not None and self.eval_every and step % self.eval_every == 0:
            stop = self._evaluate() or stop
        if not stop and self.checkpointer is not None and self.checkpoint_every and step % self.checkpoint_every == 0:
            self.save_checkpoint()
        return stop

    # -- evaluation, patience, checkpoints ----------------------------------------------------

    def _evaluate(self) -> bool:
        """Evaluate, update patience and the best checkpoint; True when patience runs out."""
        state = self.state
        results = self.evaluator.evaluate(self.engine, self.ledger)
        self.last_eval = {"step": state.step, **results}
        self.ledger.write(results, state.step)
        self._log({"step": state.step, **results})
        guard = self.divergence
        if guard is not None and state.step >= guard.after_step and results.get(guard.metric, 1.0) <= guard.threshold:
            state.diverged = True
            return True
        if self.patience is None:
            return False
        score = results.get(self.patience.metric)
        if score is None:
            return False
        better = state.best_score is None or (
            score > state.best_score if self.patience.greater_is_better else score < state.best_score)
        if better:
            state.best_score, state.best_step, state.evals_since_best = score, state.step, 0
            if self.checkpointer is not None:
                self.checkpointer.save(self.engine, BEST_TAG, self.client_state(), latest=False)
            return False
        state.evals_since_best += 1
        if self.patience.evals is not None and state.evals_since_best >= self.patience.evals:
            state.stopped_early = True
            return True
        return False

    def client_state(self) -> dict:
        return {
            "trainer": dataclasses.asdict(self.state),
            "ledger": dataclasses.asdict(self.ledger.totals),
            "budget": str(self.stopper.budget),
            "data_seed": self.sampler.seed,
        }

    def save_checkpoint(self) -> None:
        self.ledger.flush(self.state.step, write=False)
        self.checkpointer.save(self.engine, f"step_{self.state.step}", self.client_state())

    def resume(self) -> None:
        """Continue from the latest checkpoint: same sampler position, optimizer, schedule, ledger."""
        client = self.checkpointer.load(self.engine)
        if client.get("data_seed") != self.sampler.seed:
            raise FtftError(
                f"the checkpoint used data_seed {client.get('data_seed')}, this run uses {self.sampler.seed}")
        self.state = TrainState(**client["trainer"])
        self.ledger.totals = CostTotals(**client["ledger"])
        if self.env.is_main and self.log_path is not None and self.log_path.is_file():
            kept = [line for line in self.log_path.read_text().splitlines()
                    if json.loads(line)["step"] <= self.state.step]
            self.log_path.write_text("".join(line + "\n" for line in kept))

    def _log(self, record: dict) -> None:
        if self.env.is_main and self.log_path is not None:
            with open(self.log_path, "a", encoding="utf-8") as handle:
                handle.write(json.dumps(record) + "\n")
