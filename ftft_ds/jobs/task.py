"""What a SLURM job runs: one stage's `ftft` command, resumable however often the job restarts.

Every task of the job (one per rank) runs `StageTask` in-process; the ranks find each other from
SLURM's variables (`train.runtime`). A job restarts from the top when SLURM requeues it (preempted,
or by submitit's handler when its time limit nears: `submitit.helpers.Checkpointable` resubmits
the same task). So the task decides at every start how to take its folder: a main run continues
from its latest checkpoint if it has one, and otherwise starts over; a reference run starts over.
"""

from __future__ import annotations

import json
from pathlib import Path

import submitit


class StageTask(submitit.helpers.Checkpointable):
    """`ftft COMMAND CONFIG` inside a SLURM job, continuing where an earlier start of it stopped."""

    def __init__(self, command: str, config: str):
        self.command = command
        self.config = config

    def restart_options(self) -> list[str]:
        """`--set` options that make this start continue (or redo) what the last one left."""
        output_dir = Path(json.loads(Path(self.config).read_text(encoding="utf-8"))["output_dir"])
        if self.command == "train" and (output_dir / "checkpoints" / "latest").is_file():
            return ["--set", "resume=true", "--set", "overwrite=false"]
        return ["--set", "overwrite=true", *(["--set", "resume=false"] if self.command == "train" else [])]

    def __call__(self) -> None:
        from ..cli import main

        main([self.command, self.config, *self.restart_options()])
