"""The local executor: jobs as child processes of this one, with command lines, device slots, logs,
error lines and signals.

`LocalExecutor.run` starts a batch of `Job`s, `parallel` at a time (each an `ftft` command with its
log file; on GPUs the command names its own devices), waits for them, and names the first failure
by its log's last error line.

A training stage is a `deepspeed` launcher with one process per rank below it. Schedulers and
`kill PID` signal the `ftft` process alone, not its group; a launcher left behind would go on
training (and writing into a stage folder that a re-run then deletes). So every child starts in a
session of its own, and while children run, SIGINT and SIGTERM to this process are passed on to
each child's whole group; stragglers get SIGKILL after `GRACE_SECONDS`. Then this process stops as
the signal asks: KeyboardInterrupt for SIGINT, exit code 128 + 15 for SIGTERM.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable, Iterator, Sequence

from ..errors import FtftError
from ..train.runtime import RANK_VARIABLES, free_port

GRACE_SECONDS = 30
"""How long stopped children get to exit (DeepSpeed's launcher stops its ranks) before SIGKILL."""
FORWARDED = (signal.SIGINT, signal.SIGTERM)


def ftft_command(command: str, config: Path, num_ranks: int | None, devices: Sequence[int] | None = None) -> list[str]:
    """`ftft COMMAND CONFIG` in one process, or on `num_ranks` ranks through the `deepspeed` launcher
    on a free port (so that several recipes on one machine do not collide), on GPUs `devices`
    where given (indices among the GPUs this process sees).

    One rank with no devices to place it on is one process too: the launcher would only add two
    interpreters (its runner and its per-node launcher) that each import DeepSpeed, for a world
    of one that the run sets up by itself.
    """
    if num_ranks is None or (num_ranks == 1 and devices is None):
        return [sys.executable, "-m", "ftft_ds", command, str(config)]
    # The launcher ignores and deletes CUDA_VISIBLE_DEVICES whenever --num_gpus or --include is
    # given, and reads GPU ids as the machine numbers them: devices are named by those ids.
    placement = (
        ["--num_gpus", str(num_ranks)]
        if devices is None
        else ["--include", "localhost:" + ",".join(map(str, machine_device_ids(devices)))]
    )
    return [
        sys.executable,
        "-m",
        "deepspeed.launcher.runner",
        *placement,
        "--master_port",
        str(free_port()),
        "--no_local_rank",
        "--module",
        "ftft_ds",
        command,
        str(config),
    ]


def machine_device_ids(devices: Sequence[int]) -> list[int]:
    """The machine's ids of GPUs `devices`, which are indices among those CUDA_VISIBLE_DEVICES shows."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is None:
        return list(devices)
    ids = [item.strip() for item in visible.split(",") if item.strip()]
    if not all(item.isdigit() for item in ids):
        raise FtftError(
            f"CUDA_VISIBLE_DEVICES={visible!r} names GPUs by UUID; the deepspeed launcher takes "
            f"GPU numbers: set it to numbers (e.g. 0,1,2,3) or unset it"
        )
    return [int(ids[index]) for index in devices]


def device_slots(num_ranks: int, parallel: int) -> list:
    """Device groups for `parallel` concurrent jobs of `num_ranks` ranks: GPUs split `num_ranks` at a
    time, or, without GPUs, `parallel` CPU slots (None)."""
    import torch

    if not torch.cuda.is_available():
        return [None] * parallel
    count = torch.cuda.device_count()
    groups = [list(range(g, g + num_ranks)) for g in range(0, count - num_ranks + 1, num_ranks)]
    if not groups:
        raise FtftError(f"num_ranks={num_ranks} but only {count} GPUs are visible")
    return groups[:parallel]


class LocalExecutor:
    """Runs jobs as child processes on this machine, `parallel` at a time, each on its own GPUs."""

    def __init__(self, parallel: int = 1):
        self.parallel = parallel

    def live_job(self, folder: Path) -> None:
        """Child processes do not outlive the orchestrator: there is never a job to re-attach to."""
        return None

    def batch_size(self, pending: int) -> int:
        """How many of `pending` jobs to hand over at once: `parallel`."""
        return self.parallel

    def run(self, batch: Sequence, show_progress: bool = False) -> None:
        """Run `batch` (`Job`s), `parallel` at a time; see `run_processes`."""
        for start in range(0, len(batch), self.parallel):
            chunk = batch[start : start + self.parallel]
            ranks = chunk[0].ranks
            slots = device_slots(ranks, len(chunk)) if ranks is not None else [None] * len(chunk)
            run_processes(
                [
                    (ftft_command(job.command, job.config, job.ranks, devices), job)
                    for job, devices in zip(chunk, slots)
                ],
                show_progress,
            )


def run_processes(batch: Sequence, show_progress: bool = False) -> None:
    """Run `batch` ((command line, `Job`) pairs) concurrently and wait for all of it. A failed job
    raises `FtftError` with its log's last error line (the others are stopped); a signal to this
    process stops them all first. `show_progress` echoes the newest progress bar of the first
    job's log on a terminal."""
    procs: list = []
    handles = []
    with forwarding_signals(procs):
        try:
            for args, job in batch:
                handles.append(open(job.log, "a" if job.append else "w", encoding="utf-8"))
                procs.append(start(args, handles[-1]))
            while any(proc.poll() is None for proc in procs):
                if any(proc.poll() not in (None, 0) for proc in procs):
                    break  # one failed: the `finally` stops the others rather than letting them run on
                time.sleep(0.5)
                if show_progress and sys.stdout.isatty():
                    line = progress_line(batch[0][1].log)
                    if line:
                        sys.stdout.write("\r\033[K    " + line[:110])
                        sys.stdout.flush()
            if show_progress and sys.stdout.isatty():
                sys.stdout.write("\r\033[K")
        finally:
            stop(procs)
            for handle in handles:
                handle.close()
    for (_, job), proc in zip(batch, procs):
        if proc.returncode != 0:
            raise FtftError(f"{job.what} failed (exit {proc.returncode}): {last_error(job.log)} — see {job.log}")


def last_error(log: Path) -> str:
    """The last `error:` line of `log` (else its last line), as a failed job's message."""
    if not log.is_file():
        return "(no output)"
    lines = [line for line in log.read_text(errors="replace").splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error:")]
    return (errors or lines or ["(no output)"])[-1].strip()[:300]


def progress_line(log: Path) -> str | None:
    """The newest progress-bar state in `log` (a tqdm line), or None."""
    if not log.is_file():
        return None
    with open(log, "rb") as handle:
        handle.seek(max(0, log.stat().st_size - 2048))
        tail = handle.read().decode(errors="replace")
    bars = [part for part in tail.replace("\n", "\r").split("\r") if "it/s" in part or "s/it" in part]
    return bars[-1].strip() if bars else None


def child_environment() -> dict:
    """This process's environment less `RANK_VARIABLES`. Each child job is a world of its own: its
    launcher sets them for its ranks, and a one-rank job picks a free port. Inherited, they would
    make it a member of whatever world this process sits in (an orchestrator started from a
    torchrun shell or a batch script that exports MASTER_PORT), and one-rank jobs run side by side
    would all try to listen on the same port."""
    return {key: value for key, value in os.environ.items() if key not in RANK_VARIABLES}


def start(args: Sequence[str], output) -> subprocess.Popen:
    """Start `args` in a process group of its own, stdout and stderr into `output`, no stdin, in
    `child_environment()`."""
    return subprocess.Popen(
        list(args),
        stdout=output,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
        env=child_environment(),
    )


def stop(procs: Sequence[subprocess.Popen], signum: int = signal.SIGTERM) -> None:
    """Send `signum` to every running child's group; SIGKILL the groups still alive after the grace time."""
    running = [p for p in procs if p.poll() is None]
    for proc in running:
        _signal_group(proc, signum)
    deadline = time.monotonic() + GRACE_SECONDS
    for proc in running:
        try:
            proc.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            _signal_group(proc, signal.SIGKILL)
            proc.wait()


def forwarding_signals(procs: list):
    """While inside, SIGINT/SIGTERM stop the children in `procs` (a list that may grow) first."""
    return on_stop_signal(lambda signum: stop(procs, signum))


@contextlib.contextmanager
def on_stop_signal(action: Callable[[int], None]) -> Iterator[None]:
    """While inside, SIGINT/SIGTERM run `action(signum)` (stop what this process started), then stop
    this process as the signal asks: KeyboardInterrupt for SIGINT, exit code 128 + 15 for SIGTERM."""

    def handler(signum, frame):
        action(signum)
        if signum == signal.SIGINT:
            raise KeyboardInterrupt
        raise SystemExit(128 + signum)

    previous = {signum: signal.signal(signum, handler) for signum in FORWARDED}
    try:
        yield
    finally:
        for signum, old in previous.items():
            signal.signal(signum, old)


def _signal_group(proc: subprocess.Popen, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signum)
