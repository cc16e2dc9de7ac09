"""Ranks from whichever launcher started them, the GPU each drives, collective timeouts, memory peaks."""

import datetime
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from ftft_ds.errors import FtftError
from ftft_ds.train.runtime import (
    collective_timeout,
    device_index,
    launcher_variables,
    peak_memory_bytes,
    prefer_own_ninja,
    reset_memory_peaks,
)

from .helpers import REPO, free_port, quiet_env, tail

TINY_RUN = [
    "--model",
    "tiny-bert",
    "--budget",
    "steps:4",
    "--set",
    "data.embedded_train_size=64",
    "--set",
    "micro_batch_size=4",
    "--set",
    "data.eval_splits=[dev]",
    "--set",
    "export_model=false",
]


def test_srun_variables_make_one_world():
    srun = {
        "SLURM_JOB_ID": "4242",
        "SLURM_PROCID": "3",
        "SLURM_NTASKS": "4",
        "SLURM_STEP_NUM_TASKS": "4",
        "SLURM_LOCALID": "1",
        "SLURM_STEP_NODELIST": "gpu[07-08]",
    }
    found = launcher_variables(srun)
    assert found == {
        "RANK": "3",
        "WORLD_SIZE": "4",
        "LOCAL_RANK": "1",
        "MASTER_ADDR": found["MASTER_ADDR"],
        "MASTER_PORT": str(12_000 + 4242),
    }
    # Consecutive jobs get consecutive ports, none in Linux's ephemeral range (32768-60999).
    ports = [int(launcher_variables({**srun, "SLURM_JOB_ID": str(i)})["MASTER_PORT"]) for i in range(19_990, 20_010)]
    assert len(set(ports)) == 20 and all(12_000 <= p < 32_000 for p in ports)
    assert found["MASTER_ADDR"] == "gpu07"  # the step's first node
    # A launcher's own MASTER_* win; a batch script (no srun step) is a world of one.
    assert launcher_variables({**srun, "MASTER_ADDR": "head", "MASTER_PORT": "29500"})["MASTER_ADDR"] == "head"
    batch = launcher_variables({"SLURM_JOB_ID": "1", "SLURM_PROCID": "0", "SLURM_NTASKS": "4"})
    assert batch["WORLD_SIZE"] == "1" and batch["MASTER_ADDR"] == "127.0.0.1"


def test_mpi_variables_need_a_master_address():
    ompi = {"OMPI_COMM_WORLD_RANK": "1", "OMPI_COMM_WORLD_SIZE": "2", "OMPI_COMM_WORLD_LOCAL_RANK": "1"}
    with pytest.raises(FtftError, match="Open MPI with 2 ranks but MASTER_ADDR/MASTER_PORT"):
        launcher_variables(ompi)
    found = launcher_variables({**ompi, "MASTER_ADDR": "n1", "MASTER_PORT": "29500"})
    assert (found["RANK"], found["WORLD_SIZE"], found["LOCAL_RANK"]) == ("1", "2", "1")
    mpich = launcher_variables(
        {"PMI_RANK": "5", "PMI_SIZE": "8", "MPI_LOCALRANKID": "1", "MASTER_ADDR": "n1", "MASTER_PORT": "1"}
    )
    assert (mpich["RANK"], mpich["WORLD_SIZE"], mpich["LOCAL_RANK"]) == ("5", "8", "1")
    # torch.distributed's own variables come first (the deepspeed launcher under srun sets them).
    both = launcher_variables(
        {**ompi, "RANK": "0", "WORLD_SIZE": "2", "LOCAL_RANK": "0", "MASTER_ADDR": "a", "MASTER_PORT": "2"}
    )
    assert both["RANK"] == "0"
    assert launcher_variables({})["WORLD_SIZE"] == "1"


def test_each_rank_drives_its_own_gpu():
    assert device_index(3, 8) == 3
    assert device_index(5, 1) == 0  # one GPU shown per task
    with pytest.raises(FtftError, match="local rank 4 but only 2 GPUs"):
        device_index(4, 2)


def test_collective_timeout(monkeypatch):
    monkeypatch.delenv("DEEPSPEED_TIMEOUT", raising=False)
    assert collective_timeout() == datetime.timedelta(minutes=60)
    monkeypatch.setenv("DEEPSPEED_TIMEOUT", "90")
    assert collective_timeout() == datetime.timedelta(minutes=90)
    monkeypatch.setenv("DEEPSPEED_TIMEOUT", "soon")
    with pytest.raises(FtftError, match="DEEPSPEED_TIMEOUT.*'soon'"):
        collective_timeout()


@pytest.mark.cpu_only
def test_memory_peaks_restart_after_set_up():
    cpu = torch.device("cpu")
    before = peak_memory_bytes(cpu)["allocated"]
    block = np.ones(400 * 2**20 // 8)  # 400 MiB touched, then freed: set-up's peak
    block.sum()
    with_block = peak_memory_bytes(cpu)["allocated"]
    del block
    assert with_block > before + 300 * 2**20
    reset_memory_peaks(cpu)
    assert peak_memory_bytes(cpu)["allocated"] < with_block - 300 * 2**20


def _metrics(folder):
    return json.loads((folder / "metrics.json").read_text())


@pytest.mark.launcher
def test_ranks_started_by_mpirun_train_as_one_world(tmp_path):
    """Two processes with only Open MPI's variables (what `mpirun -np 2 -x MASTER_ADDR -x
    MASTER_PORT` gives each rank) form one world of two."""
    out, port = tmp_path / "mpi", free_port()
    procs = [
        subprocess.Popen(
            [sys.executable, str(REPO / "launch/main.py"), *TINY_RUN, "-o", str(out)],
            cwd=REPO,
            env=quiet_env(
                OMPI_COMM_WORLD_RANK=str(rank),
                OMPI_COMM_WORLD_SIZE="2",
                OMPI_COMM_WORLD_LOCAL_RANK=str(rank),
                MASTER_ADDR="127.0.0.1",
                MASTER_PORT=str(port),
            ),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for rank in (0, 1)
    ]
    outputs = [proc.communicate(timeout=300)[0] for proc in procs]
    assert all(proc.returncode == 0 for proc in procs), outputs[0][-3000:] + outputs[1][-3000:]
    metrics = _metrics(out)
    assert metrics["world_size"] == 2 and len(metrics["parameters_per_rank"]) == 2


@pytest.mark.slurm
@pytest.mark.xdist_group("slurm")  # with test_slurm's tests, never beside its controller restart
def test_srun_across_two_nodes_trains_one_world(tmp_path, slurm_cluster):
    """`srun -N2 -n2 python launch/main.py`, no deepspeed launcher: one task per node, one world."""
    out = tmp_path / "srun"
    env = quiet_env()
    proc = subprocess.run(
        [
            "srun",
            "-N2",
            "-n2",
            "--kill-on-bad-exit=1",
            sys.executable,
            str(REPO / "launch/main.py"),
            *TINY_RUN,
            "-o",
            str(out),
        ],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, tail(proc)
    assert _metrics(out)["world_size"] == 2


OWN_NINJA = Path(sys.executable).parent / "ninja"


@pytest.mark.skipif(not OWN_NINJA.is_file(), reason="no ninja installed beside this interpreter")
def test_the_interpreters_own_ninja_comes_first(monkeypatch):
    others = [d for d in os.environ["PATH"].split(os.pathsep) if Path(d) != OWN_NINJA.parent]
    monkeypatch.setenv("PATH", os.pathsep.join(others))
    prefer_own_ninja()
    assert shutil.which("ninja") == str(OWN_NINJA)
    prefer_own_ninja()  # once is enough: PATH does not grow
    assert os.environ["PATH"] == os.pathsep.join([str(OWN_NINJA.parent), *others])


@pytest.mark.cpu_only
@pytest.mark.skipif(not OWN_NINJA.is_file(), reason="no ninja installed beside this interpreter")
def test_a_run_outside_the_environment_does_not_compile_the_cpu_op_again(tmp_path):
    """DeepSpeed's CPU communication op, once built with the environment's ninja (as `make setup`
    does), is loaded as it is by a run whose PATH leads to another ninja first, or to none."""
    build = "; ".join(
        [
            "from ftft_ds.train.runtime import prefer_own_ninja",
            "from deepspeed.comm.torch import build_shm_op",
            "prefer_own_ninja()",
            "build_shm_op()",
        ]
    )
    proc = subprocess.run([sys.executable, "-c", build], env=quiet_env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, tail(proc)
    root = Path(os.environ.get("TORCH_EXTENSIONS_DIR", Path.home() / ".cache" / "torch_extensions"))
    ops = [*root.glob("deepspeed_shm_comm/*.so"), *root.glob("*/deepspeed_shm_comm/*.so")]
    assert ops, f"no build of the op under {root}"
    built = {op: op.stat().st_mtime_ns for op in ops}
    path = os.pathsep.join(d for d in os.environ["PATH"].split(os.pathsep) if Path(d) != OWN_NINJA.parent)
    proc = subprocess.run(
        [sys.executable, "-m", "ftft_ds", "train", *TINY_RUN, "-o", tmp_path / "run"],
        cwd=REPO,
        env=quiet_env(PATH=path),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, tail(proc)
    assert {op: op.stat().st_mtime_ns for op in ops} == built
