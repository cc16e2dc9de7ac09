"""The training loop shared by reference runs and main runs; read it top to bottom.

Each micro-batch: forward, optionally record its logits (training dynamics), count its cost,
backward, step. DeepSpeed accumulates gradients across micro-batches and steps the optimizer on its
own boundaries; after each optimizer step the trainer logs, asks the stop rule whether the budget
is spent, evaluates (the stop rule then weighs patience and divergence), checkpoints and calls the
`on_step_end` hook. Every decision that ends or branches the loop is made identically on every
rank, because a rank that leaves early would hang the others' collectives.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from tqdm.auto import tqdm

from ..errors import FtftError
from .checkpoint import Checkpointer
from .cost import CostLedger
from .engine import current_lr, to_device
from .runtime import DistEnv
from .stop import StopReason, StopRule


@dataclass
class TrainState:
    """Where training stands; saved in every checkpoint."""

    step: int = 0
    epoch: int = 0
    batches_in_epoch: int = 0
    best_score: float | None = None
    best_step: int | None = None
    evals_since_best: int = 0
    stopped: str | None = None
    """Why the run ended (a `StopReason` value); None while it runs."""

    def state_dict(self) -> dict:
        return dataclasses.asdict(self)

    def load_state_dict(self, state: dict) -> None:
        for name, value in state.items():
            setattr(self, name, value)


class Trainer:
    """Runs one DeepSpeed engine over a sharded sampler until its stop rule says so.

    `on_step_end(trainer)` is called after every optimizer step has been handled (logged,
    evaluated, checkpointed): the place to watch or measure a run from outside. `rank_state` names
    further objects (`state_dict`/`load_state_dict`) that checkpoints keep per rank besides
    `recorder`, such as a reference's eval-pass recorder.
    """

    def __init__(
        self,
        engine,
        loader,
        sampler,
        ledger: CostLedger,
        stop_rule: StopRule,
        env: DistEnv,
        *,
        log_every: int = 10,
        evaluator=None,
        eval_every: int = 0,
        checkpointer: Checkpointer | None = None,
        checkpoint_every: int = 0,
        checkpoint_minutes: float | None = None,
        recorder=None,
        rank_state: dict | None = None,
        on_epoch_end: Callable[[], None] | None = None,
        on_step_end: Callable[["Trainer"], None] | None = None,
        log_path: Path | None = None,
        desc: str = "train",
    ):
        self.engine = engine
        self.loader = loader
        self.sampler = sampler
        self.ledger = ledger
        self.stop_rule = stop_rule
        self.env = env
        self.log_every = log_every
        self.evaluator = evaluator
        self.eval_every = eval_every
        self.checkpointer = checkpointer
        self.checkpoint_every = checkpoint_every
        self.checkpoint_minutes = checkpoint_minutes
        self._checkpointed_at = 0.0  # the ledger's wall_seconds at the last checkpoint
        self._checkpointed_step: int | None = None  # the step of the last checkpoint saved or loaded
        self.recorder = recorder
        # What each rank alone holds and checkpoints save per rank: the dynamics recorders' epochs.
        self.rank_state = {**({"recorder": recorder} if recorder is not None else {}), **(rank_state or {})}
        self.on_epoch_end = on_epoch_end
        self.on_step_end = on_step_end
        self.log_path = log_path
        self.desc = desc
        self.state = TrainState()
        self.batches_per_epoch = math.ceil(sampler.per_rank / loader.batch_size)
        self.last_eval: dict = {}

    # -- the loop ----------------------------------------------------------------------------

    def fit(self) -> dict:
        """Train until the budget (or patience) stops the run; return the final evaluation."""
        state = self.state
        progress = tqdm(
            total=self.stop_rule.max_steps,
            initial=state.step,
            desc=self.desc,
            disable=not self.env.is_main,
            dynamic_ncols=True,
        )
        # A run resumed from a checkpoint taken when it had already stopped (killed after its final
        # checkpoint, before its results were written) only finishes: no step past its budget.
        # Patience and divergence end a run for good; a budget only for itself, so a run resumed
        # with a larger one (a sweep's next rung) goes on.
        if state.stopped in (None, StopReason.BUDGET.value):
            reason = self.stop_rule.after_step(state.step, self.ledger.totals)
            state.stopped = reason.value if reason else None
        while state.stopped is None:
            self.sampler.set_epoch(state.epoch, start=state.batches_in_epoch * self.loader.batch_size)
            for batch in self.loader:
                boundary = self._train_micro_batch(batch)
                state.batches_in_epoch += 1
                if boundary:
                    state.step = self.engine.global_steps
                    progress.update(1)
                    self._after_step(progress)
                    if self.on_step_end is not None:
                        self.on_step_end(self)
                    if state.stopped is not None:
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

    def _after_step(self, progress) -> None:
        """Log, decide whether to stop (budget; after an evaluation, patience or divergence), checkpoint."""
        step = self.state.step
        if step % self.log_every == 0:
            record = self.ledger.flush(step, current_lr(self.engine))
            self._log({"step": step, **record})
            if "train/loss" in record:
                progress.set_postfix(loss=f"{record['train/loss']:.4f}", epoch=self.state.epoch)
        elif not self.stop_rule.budget.is_static or self._ceiling_in_reach(step):
            self.ledger.flush(step, write=False)  # FLOPs/time budgets and a near ceiling need current totals
        reason = self.stop_rule.after_step(step, self.ledger.totals)
        if self.evaluator is not None and self.eval_every and step % self.eval_every == 0:
            reason = self._evaluate() or reason  # what the evaluation decides comes first
        self.state.stopped = reason.value if reason else None
        if reason is None and self.checkpointer is not None and self._checkpoint_due(step):
            self.save_checkpoint()

    def _checkpoint_due(self, step: int) -> bool:
        """Every `checkpoint_every` steps, and at a log point once `checkpoint_minutes` have passed
        since the last checkpoint by the ledger's clock, which a log point's flush makes the same on
        every rank (each rank reading its own clock could disagree, and hang the others' save)."""
        if self.checkpoint_every and step % self.checkpoint_every == 0:
            return True
        elapsed = self.ledger.totals.wall_seconds - self._checkpointed_at
        return bool(self.checkpoint_minutes) and step % self.log_every == 0 and elapsed >= 60 * self.checkpoint_minutes

    def _ceiling_in_reach(self, step: int) -> bool:
        """Whether the FLOPs ceiling may bind by now. Each step since the ledger's last flush cost at
        most a step and an evaluation, so until that bound nears the ceiling its check can wait for
        the next log point, and no collective runs per step; every rank computes the same bound."""
        ceiling = self.stop_rule.ceiling
        if ceiling is None:
            return False
        totals = self.ledger.totals
        unflushed = step - totals.optimizer_steps
        return not ceiling.allows(totals.cost_flops + unflushed * (ceiling.step_flops + ceiling.eval_flops))

    # -- evaluation, patience, checkpoints ----------------------------------------------------

    def _evaluate(self) -> StopReason | None:
        """Evaluate; keep the best checkpoint; patience's or divergence's verdict (see `StopRule`)."""
        state = self.state
        results = self.evaluator.evaluate(self.engine, self.ledger)
        self.last_eval = {"step": state.step, **results}
        self.ledger.write(results, state.step)
        self._log({"step": state.step, **results})
        reason = self.stop_rule.after_eval(state, results)
        if reason is None and state.best_step == state.step and self.checkpointer is not None:
            self.checkpointer.save_best(self.engine, state.step)
        return reason

    def client_state(self) -> dict:
        """What a checkpoint keeps besides the engine's own state: each part saves itself."""
        return {
            "trainer": self.state.state_dict(),
            "ledger": self.ledger.state_dict(),
            "sampler": self.sampler.state_dict(),
            "budget": str(self.stop_rule.budget),
        }

    def save_checkpoint(self) -> None:
        self.ledger.flush(self.state.step, write=False)
        self.checkpointer.save(
            self.engine,
            f"step_{self.state.step}",
            self.client_state(),
            best_step=self.state.best_step,
            rank_state={name: kept.state_dict() for name, kept in self.rank_state.items()},
        )
        self._checkpointed_at = self.ledger.totals.wall_seconds
        self._checkpointed_step = self.state.step

    def checkpoint_now(self) -> None:
        """A checkpoint of the current step, unless one was just saved (a collective: every rank
        calls it at the same step)."""
        if self._checkpointed_step != self.state.step:
            self.save_checkpoint()

    def resume(self) -> None:
        """Continue from the latest checkpoint: same sampler position, optimizer, schedule, ledger
        and recorded dynamics."""
        client, saved = self.checkpointer.load(self.engine)
        for name, kept in self.rank_state.items():
            if name not in saved:
                raise FtftError(
                    f"--resume: the checkpoint in {self.checkpointer.directory} holds no {name} of rank "
                    f"{self.env.rank}: a run that records dynamics resumes on the ranks that saved it"
                )
            kept.load_state_dict(saved[name])
        self.sampler.load_state_dict(client["sampler"])
        self.state.load_state_dict(client["trainer"])
        self.ledger.load_state_dict(client["ledger"])
        self._checkpointed_at = self.ledger.totals.wall_seconds
        self._checkpointed_step = self.state.step
        if self.env.is_main and self.log_path is not None and self.log_path.is_file():
            kept = [
                line for line in self.log_path.read_text().splitlines() if json.loads(line)["step"] <= self.state.step
            ]
            self.log_path.write_text("".join(line + "\n" for line in kept))

    def _log(self, record: dict) -> None:
        if self.env.is_main and self.log_path is not None:
            with open(self.log_path, "a", encoding="utf-8") as handle:
                handle.write(json.dumps(record) + "\n")
