"""What a SLURM job runs: one stage's run, resumable however often the job restarts.

Every task of the job (one per rank) runs `StageTask` in-process; the ranks find each other from
SLURM's variables (`train.runtime`). A job restarts from the top when SLURM requeues it (preempted,
or by submitit's handler when its time limit nears: `submitit.helpers.Checkpointable` resubmits
the same task). So the task decides at every start how to take its folder: a main run continues
from its latest checkpoint if it has one, and otherwise starts over; a reference run starts over.

It calls the library's runs (`runs.main`, `runs.reference`), not the command line, which sits above
the jobs in the package's layers; a mistake in the run's input ends the task as the command line
would: one `error:` line, which the executor reads back from the job's log, and exit code 2.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import submitit

from ..errors import FtftError
from ..io import write_json
from .slurm import DONE


class StageTask(submitit.helpers.Checkpointable):
    """One stage's run (`train` or `reference`) from its config file, inside a SLURM job, continuing
    where an earlier start of it stopped."""

    def __init__(self, command: str, config: str):
        self.command = command
        self.config = config

    def restart_overrides(self) -> list[str]:
        """`key=value` overrides that make this start continue (or redo) what the last one left."""
        output_dir = Path(json.loads(Path(self.config).read_text(encoding="utf-8"))["output_dir"])
        if self.command == "train" and (output_dir / "checkpoints" / "latest").is_file():
            return ["resume=true", "overwrite=false"]
        return ["overwrite=true", *(["resume=false"] if self.command == "train" else [])]

    def __call__(self) -> None:
        from ..config import MainConfig, ReferenceConfig, load_config

        try:
            if self.command == "train":
                from ..runs.main import run_main

                cfg = load_config(MainConfig, self.config, self.restart_overrides())
                run_main(cfg)
            else:
                from ..runs.reference import run_reference

                cfg = load_config(ReferenceConfig, self.config, self.restart_overrides())
                run_reference(cfg)
        except FtftError as exc:
            print(f"error: {exc}", file=sys.stderr, flush=True)
            sys.exit(2)
        environment = submitit.JobEnvironment()
        if environment.global_rank == 0:  # what the orchestrator trusts once SLURM forgets the job
            write_json(Path(cfg.output_dir) / DONE, {"job_id": environment.job_id, "finished": time.time()})
