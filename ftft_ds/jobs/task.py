"""What a SLURM job runs: one stage's run, resumable however often the job restarts.

Every task of the job (one per rank) runs `StageTask` in-process; the ranks find each other from
SLURM's variables (`train.runtime`). A job restarts from the top when SLURM requeues it (preempted,
or by submitit's handler when its time limit nears: `submitit.helpers.Checkpointable` resubmits
the same task). So the task decides at every start how to take its folder: a run continues from
its latest checkpoint if it has one, and otherwise starts over.

A run saves before it is requeued (`TimeLimit`): SLURM's warning (SIGUSR2, `signal_delay_s`
before the time limit, or on preemption) reaches every rank at a slightly different moment, so
the ranks agree after every optimizer step whether any of them has had it (one all-reduce of one
number), save a checkpoint at that same step, and stop; rank 0 then lets submitit requeue the job.
Where no step ends within `grace_s` (a long evaluation, a checkpoint being written), submitit's
own handler requeues it from the last checkpoint, as it would without this.

It calls the library's runs (`runs.main`, `runs.reference`), not the command line, which sits above
the jobs in the package's layers; a mistake in the run's input ends the task as the command line
would: one `error:` line, which the executor reads back from the job's log, and exit code 2.
"""

from __future__ import annotations

import json
import signal
import sys
import time
from pathlib import Path

import submitit
import torch
import torch.distributed as dist

from ..errors import FtftError
from ..io import write_json
from ..train.checkpoint import RESUMABLE
from .slurm import DONE


class TimeLimitReached(Exception):
    """Every rank saved a checkpoint at the same step after SLURM's warning: the job is to be requeued."""


class TimeLimit:
    """SIGUSR2 noted on this rank, then agreed on by every rank after an optimizer step (see the
    module docstring). `install` puts it in front of submitit's handler, which it keeps to requeue."""

    def __init__(self, grace_s: int):
        self.grace_s = grace_s
        self.warned = False
        self.requeue = None

    def install(self) -> None:
        self.requeue = signal.getsignal(signal.SIGUSR2)
        signal.signal(signal.SIGUSR2, self._note)
        signal.signal(signal.SIGALRM, self._no_step_came)

    def _note(self, signum, frame) -> None:
        self.warned = True
        signal.alarm(self.grace_s)

    def _no_step_came(self, signum, frame) -> None:
        self.requeue(signal.SIGUSR2, frame)

    def after_step(self, trainer) -> None:
        """`on_step_end` of the run: if any rank was warned, all save at this step and stop."""
        warned = torch.tensor([float(self.warned)], device=trainer.env.device)
        if dist.is_initialized() and dist.get_world_size() > 1:
            dist.all_reduce(warned, op=dist.ReduceOp.MAX)
        if warned.item():
            trainer.checkpoint_now()
            raise TimeLimitReached(f"saved at step {trainer.state.step}")

    def requeue_now(self) -> None:
        """Rank 0: let submitit requeue the job (it exits this process); other ranks just return."""
        signal.alarm(0)
        if submitit.JobEnvironment().global_rank == 0:
            self.requeue(signal.SIGUSR2, None)


class StageTask(submitit.helpers.Checkpointable):
    """One stage's run (`train` or `reference`) from its config file, inside a SLURM job, continuing
    where an earlier start of it stopped; it saves when SLURM warns of its time limit."""

    def __init__(self, command: str, config: str, grace_s: int = 30):
        self.command = command
        self.config = config
        self.grace_s = grace_s

    def restart_overrides(self) -> list[str]:
        """`key=value` overrides that make this start continue (or redo) what the last one left."""
        output_dir = Path(json.loads(Path(self.config).read_text(encoding="utf-8"))["output_dir"])
        if (output_dir / RESUMABLE).is_file():
            return ["resume=true", "overwrite=false"]
        return ["overwrite=true", "resume=false"]

    def __call__(self) -> None:
        from ..config import MainConfig, ReferenceConfig, load_config
        from ..runs.main import run_main
        from ..runs.reference import run_reference

        config_class, run = (MainConfig, run_main) if self.command == "train" else (ReferenceConfig, run_reference)
        try:
            cfg = load_config(config_class, self.config, self.restart_overrides())
            limit = TimeLimit(self.grace_s)
            limit.install()
            try:
                run(cfg, on_step_end=limit.after_step)
            except TimeLimitReached as stop:
                print(f"time limit near: {stop}; requeueing", file=sys.stderr, flush=True)
                limit.requeue_now()
                return
        except FtftError as exc:
            print(f"error: {exc}", file=sys.stderr, flush=True)
            sys.exit(2)
        environment = submitit.JobEnvironment()
        if environment.global_rank == 0:  # what the orchestrator trusts once SLURM forgets the job
            write_json(Path(cfg.output_dir) / DONE, {"job_id": environment.job_id, "finished": time.time()})
