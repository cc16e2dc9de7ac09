"""Running real multi-rank jobs through the `deepspeed` launcher, on CPU, from tests."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from ftft_ds.train.runtime import free_port

REPO = Path(__file__).resolve().parents[1]


def quiet_env(**extra) -> dict:
    env = dict(os.environ)
    env.update(TOKENIZERS_PARALLELISM="false", OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1",
               HF_DATASETS_OFFLINE="1", PYTHONUNBUFFERED="1", **extra)
    for var in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(var, None)
    return env


def deepspeed_launch(script: str, args: list, num_ranks: int = 2, timeout: int = 600,
                     launcher_args: tuple = ()) -> subprocess.CompletedProcess:
    """`deepspeed --num_gpus N script args` on CPU ranks, on a free port; output captured."""
    cmd = [sys.executable, "-m", "deepspeed.launcher.runner", "--num_gpus", str(num_ranks),
           "--master_port", str(free_port()), *launcher_args, str(REPO / script), *map(str, args)]
    return subprocess.run(cmd, cwd=REPO, env=quiet_env(), capture_output=True, text=True, timeout=timeout)


def ftft(args: list, timeout: int = 600) -> subprocess.CompletedProcess:
    """The `ftft` command in a fresh process (a world of one)."""
    cmd = [sys.executable, "-m", "ftft_ds", *map(str, args)]
    return subprocess.run(cmd, cwd=REPO, env=quiet_env(), capture_output=True, text=True, timeout=timeout)


def tail(proc: subprocess.CompletedProcess, lines: int = 40) -> str:
    return "\n".join((proc.stdout + proc.stderr).splitlines()[-lines:])
