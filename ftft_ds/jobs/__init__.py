"""The one owner of jobs, for `ftft run` and `ftft sweep` alike, behind one interface.

An orchestrator decides *what* runs and in which order, and hands each batch of `Job`s to an
executor, which decides *where*: `LocalExecutor` starts child processes on this machine (the
`deepspeed` launcher for main runs), `SlurmExecutor` submits SLURM jobs (multi-node for main runs).
Both wait for the whole batch, name the first failure by its log's error line, and stop the rest
of the batch when it fails or when this process gets SIGINT or SIGTERM. The stage folders are the
only state: a job's id is recorded in its folder, so an orchestrator started again on the same
folder re-attaches to the jobs still queued or running instead of submitting them twice.
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from ..errors import FtftError
from .local import LocalExecutor, device_slots, ftft_command

__all__ = ["ExecutorConfig", "Job", "LocalExecutor", "device_slots", "ftft_command", "make_executor"]

EXECUTORS = ("local", "slurm")


@dataclass
class Job:
    """One run to start: `ftft COMMAND CONFIG`, whose outputs go to `folder`."""

    command: str
    """`train` (a main run) or `reference`."""
    config: Path
    """The run's config file."""
    folder: Path
    """The run's folder (its config's output_dir): where its job record and log live."""
    log: Path
    """Where the run's output goes (the local executor's; SLURM's own log files are named in the record)."""
    what: str
    """How messages name it ("main run 'ftft' seed 0")."""
    ranks: int | None = None
    """Ranks of the run, in the main runs' shape (on SLURM: `nodes` x `ranks_per_node`); None: one
    process (a cheap reference)."""
    append: bool = False
    """Add to `log` (a sweep's trial runs several segments) instead of starting it afresh."""


@dataclass
class ExecutorConfig:
    """Where a recipe's or a sweep's runs execute: child processes here, or SLURM jobs."""

    kind: str = "local"
    """`local` (child processes on this machine) or `slurm` (every reference, main run and trial
    segment a SLURM job)."""
    nodes: int = 1
    """SLURM: nodes of each main run (references take one GPU of one node)."""
    ranks_per_node: int = 1
    """SLURM: ranks (tasks, one per GPU) of each main run on each of its nodes."""
    gpus_per_node: typing.Optional[int] = None
    """SLURM: GPUs to ask for on each node of a main run (a reference asks for 1); None asks for none."""
    cpus_per_task: typing.Optional[int] = None
    """SLURM: CPU cores for each rank (data-loader workers and tokenization use them)."""
    partition: typing.Optional[str] = None
    """SLURM partition (None: the cluster's default)."""
    account: typing.Optional[str] = None
    """SLURM account to charge."""
    qos: typing.Optional[str] = None
    """SLURM quality of service."""
    time_limit_min: int = 240
    """SLURM time limit of each job, in minutes. Warned ahead of it, a run (main or reference) saves
    at a step every rank agrees on and is requeued, and resumes there."""
    max_in_flight: int = 16
    """SLURM: jobs of one batch queued or running at once (the job array's throttle)."""
    max_submit_jobs: typing.Optional[int] = None
    """SLURM: the most jobs your account may have queued or running at once (its association's or
    QOS's MaxSubmitJobs: `sacctmgr show assoc where user=$USER format=MaxSubmit`; every array task
    counts). A larger batch goes out in turns of this size, as one larger than the cluster's
    MaxArraySize does; None: only MaxArraySize splits a batch."""
    sbatch_options: typing.Dict[str, typing.Any] = dataclasses.field(default_factory=dict)
    """SLURM: any other sbatch option, by its long name: {constraint: a100, exclusive: true}."""
    setup: typing.Tuple[str, ...] = ()
    """SLURM: shell lines each job runs first (`module load cuda`, `source venv/bin/activate`)."""
    poll_seconds: float = 5.0
    """SLURM: seconds between looks at the queue while waiting."""

    def __post_init__(self):
        if self.kind not in EXECUTORS:
            raise FtftError(f"executor.kind must be one of {', '.join(EXECUTORS)}, got {self.kind!r}")
        for name in ("nodes", "ranks_per_node", "time_limit_min", "max_in_flight"):
            if getattr(self, name) < 1:
                raise FtftError(f"executor.{name} must be at least 1, got {getattr(self, name)}")
        if self.max_submit_jobs is not None and self.max_submit_jobs < 1:
            raise FtftError(f"executor.max_submit_jobs must be at least 1 (or None), got {self.max_submit_jobs}")
        for name in ("gpus_per_node", "cpus_per_task"):
            value = getattr(self, name)
            if value is not None and value < 0:
                raise FtftError(f"executor.{name} must be 0 or more (or None), got {value}")
        if not self.poll_seconds > 0:
            raise FtftError(f"executor.poll_seconds must be positive, got {self.poll_seconds}")

    @property
    def main_ranks(self) -> int:
        """Ranks of each main run under SLURM."""
        return self.nodes * self.ranks_per_node


def make_executor(
    cfg: ExecutorConfig, root: Path, echo: Callable[[str], None] = print, *, parallel: int = 1, detach: bool = False
):
    """The executor `cfg` names; `root` is the recipe's or sweep's folder, `parallel` the local
    executor's jobs at once, `detach` leaves SLURM jobs running when this process is stopped."""
    if cfg.kind == "slurm":
        from .slurm import SlurmExecutor

        return SlurmExecutor(cfg, root, echo, detach=detach)
    from ..config import fields_set

    slurm_only = sorted(fields_set(cfg) - {"kind"})
    if slurm_only:
        raise FtftError(
            f"executor.{slurm_only[0]} applies to executor.kind slurm only; remove it or set executor.kind=slurm"
        )
    if detach:
        raise FtftError("--detach needs the slurm executor: local runs are children of this process")
    return LocalExecutor(parallel)


def run_ranks(num_ranks: int, executor: ExecutorConfig, owner: str, num_ranks_set: bool) -> int:
    """Ranks of each main run: `num_ranks` locally, nodes x ranks_per_node on SLURM (where a
    `num_ranks` the user set that disagrees is refused rather than ignored)."""
    if executor.kind == "local":
        return num_ranks
    if num_ranks_set and num_ranks != executor.main_ranks:
        raise FtftError(
            f"{owner}.num_ranks={num_ranks} but the slurm executor runs each main run on "
            f"nodes x ranks_per_node = {executor.main_ranks} ranks; remove num_ranks"
        )
    return executor.main_ranks
