"""Child processes of `ftft run` and `ftft sweep`: their command lines, started in their own process
group, never orphaned.

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
from typing import Iterator, Sequence

from .train.runtime import free_port

GRACE_SECONDS = 30
"""How long stopped children get to exit (DeepSpeed's launcher stops its ranks) before SIGKILL."""
FORWARDED = (signal.SIGINT, signal.SIGTERM)


def ftft_command(command: str, config: Path, num_ranks: int | None) -> list[str]:
    """`ftft COMMAND CONFIG` in one process, or on `num_ranks` ranks through the `deepspeed` launcher
    on a free port (so that several recipes on one machine do not collide)."""
    if num_ranks is None:
        return [sys.executable, "-m", "ftft_ds", command, str(config)]
    return [sys.executable, "-m", "deepspeed.launcher.runner", "--num_gpus", str(num_ranks),
            "--master_port", str(free_port()), "--no_local_rank", "--module", "ftft_ds", command, str(config)]


def start(args: Sequence[str], output, env: dict | None = None) -> subprocess.Popen:
    """Start `args` in a process group of its own, stdout and stderr into `output`, no stdin."""
    return subprocess.Popen(list(args), stdout=output, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                            env=env, start_new_session=True)


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


@contextlib.contextmanager
def forwarding_signals(procs: list) -> Iterator[None]:
    """While inside, SIGINT/SIGTERM stop the children in `procs` (a list that may grow) first."""
    def handler(signum, frame):
        stop(procs, signum)
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
