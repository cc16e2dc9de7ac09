"""Process-group set-up, whichever launcher started the ranks.

A run finds its place in the job from the variables of the launcher that started it:
- the `deepspeed` launcher and torchrun set RANK, WORLD_SIZE, LOCAL_RANK and MASTER_*;
- `srun` (and `deepspeed --launcher slurm`) sets SLURM_PROCID, SLURM_STEP_NUM_TASKS and SLURM_LOCALID;
- Open MPI's `mpirun` (and `deepspeed --launcher openmpi`) sets OMPI_COMM_WORLD_*; MPICH and Intel
  MPI set PMI_RANK, PMI_SIZE and MPI_LOCALRANKID.
They are translated into torch.distributed's variables before the process group starts. Only a
process that no launcher started becomes a world of one, on a free loopback port, so the same code
runs unchanged from one CPU to many GPU nodes and never splits a job into N worlds of one.
"""

from __future__ import annotations

import contextlib
import datetime
import os
import shutil
import socket
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import torch
import torch.distributed as dist

from ..errors import FtftError

DEFAULT_TIMEOUT_MINUTES = 60
"""How long a collective may wait (DeepSpeed's own default is 10 minutes). Ranks wait at barriers
while rank 0 alone writes a multi-GB model, millions of dynamics rows or clears an `--overwrite`
folder; `DEEPSPEED_TIMEOUT` (minutes), DeepSpeed's own variable, sets another value."""


@dataclass(frozen=True)
class DistEnv:
    """Where this process sits in the job."""

    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        """Rank 0 alone writes logs, TensorBoard, progress bars and artefacts."""
        return self.rank == 0


def free_port() -> int:
    """A TCP port that is free on loopback right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# (rank, world size, local rank) variables of each launcher, in the order they are looked for.
_LAUNCHERS = (
    ("torch.distributed", "RANK", "WORLD_SIZE", "LOCAL_RANK"),
    ("srun", "SLURM_PROCID", "SLURM_STEP_NUM_TASKS", "SLURM_LOCALID"),
    ("Open MPI", "OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE", "OMPI_COMM_WORLD_LOCAL_RANK"),
    ("MPICH/Intel MPI", "PMI_RANK", "PMI_SIZE", "MPI_LOCALRANKID"),
)


RANK_VARIABLES = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_SIZE", "MASTER_ADDR", "MASTER_PORT")
"""torch.distributed's place-in-the-world variables. A job an orchestrator starts (a child process,
a SLURM job) never takes them from the orchestrator: each job is a world of its own."""


def launcher_variables(environ: dict) -> dict:
    """torch.distributed's RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR and MASTER_PORT for this process,
    from whichever launcher's variables `environ` holds (see the module docstring).

    A SLURM batch script has SLURM_PROCID too, but only `srun` starts a step with tasks
    (SLURM_STEP_NUM_TASKS): a plain `python` in the batch script is a world of one.
    """
    launcher = next((entry for entry in _LAUNCHERS if entry[1] in environ and entry[2] in environ), None)
    if launcher is None:
        return {
            "RANK": "0",
            "LOCAL_RANK": "0",
            "WORLD_SIZE": "1",
            "MASTER_ADDR": "127.0.0.1",
            "MASTER_PORT": str(free_port()),
        }
    name, rank_var, size_var, local_var = launcher
    found = {"RANK": environ[rank_var], "WORLD_SIZE": environ[size_var], "LOCAL_RANK": environ.get(local_var, "0")}
    for key, value in found.items():
        if not value.isdigit():
            raise FtftError(f"{name} set {key} to {value!r}; expected a whole number")
    if int(found["WORLD_SIZE"]) == 1:
        return {**found, "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": environ.get("MASTER_PORT") or str(free_port())}
    addr, port = environ.get("MASTER_ADDR"), environ.get("MASTER_PORT")
    if name == "srun":
        addr = addr or _first_slurm_host(environ.get("SLURM_STEP_NODELIST") or environ.get("SLURM_JOB_NODELIST", ""))
        # Every task of a step derives the same port from the job id, so none has to announce it.
        port = port or str(srun_port(int(environ.get("SLURM_JOB_ID", "0"))))
    if not addr or not port:
        raise FtftError(
            f"started by {name} with {found['WORLD_SIZE']} ranks but MASTER_ADDR/MASTER_PORT are not "
            f"set; export the first host's address and a free port to every rank "
            f"(for mpirun: -x MASTER_ADDR=HOST -x MASTER_PORT=29500)"
        )
    return {**found, "MASTER_ADDR": addr, "MASTER_PORT": port}


SRUN_PORTS = range(12_000, 32_000)
"""Where a SLURM job's rendezvous port lies: below Linux's ephemeral range (32768-60999 by
default), from which the kernel hands out the source ports of outgoing connections, so the port a
job derives is not already one end of some other connection on its first node."""


def srun_port(job_id: int) -> int:
    """The rendezvous port of SLURM job `job_id`: jobs that share a node get different ones (for
    fewer than 20,000 consecutive job ids)."""
    return SRUN_PORTS.start + job_id % len(SRUN_PORTS)


def _first_slurm_host(nodelist: str) -> str:
    """The first host of a SLURM node list (`n[1-4],m2` gives `n1`), through `scontrol` where it exists."""
    if not nodelist:
        return ""
    if shutil.which("scontrol"):
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            hosts = subprocess.run(
                ["scontrol", "show", "hostnames", nodelist], capture_output=True, text=True, timeout=30, check=True
            ).stdout.split()
            if hosts:
                return hosts[0]
    head = nodelist.split(",")[0]
    if "[" in head:
        prefix, _, ranges = head.partition("[")
        head = prefix + ranges.split(",")[0].split("-")[0].rstrip("]")
    return head


def device_index(local_rank: int, visible: int) -> int:
    """The GPU this rank drives: its local rank, or 0 where the launcher shows each task one GPU
    (`srun --gpus-per-task=1`, a scheduler's CUDA_VISIBLE_DEVICES per task)."""
    if local_rank < visible:
        return local_rank
    if visible == 1:
        return 0
    raise FtftError(
        f"local rank {local_rank} but only {visible} GPUs are visible to it; start at most "
        f"{visible} ranks per node, or show each rank one GPU"
    )


def collective_timeout() -> datetime.timedelta:
    """`DEFAULT_TIMEOUT_MINUTES`, or `DEEPSPEED_TIMEOUT` minutes where it is set."""
    raw = os.environ.get("DEEPSPEED_TIMEOUT", str(DEFAULT_TIMEOUT_MINUTES))
    if not raw.isdigit() or int(raw) < 1:
        raise FtftError(f"DEEPSPEED_TIMEOUT must be a whole number of minutes (at least 1), got {raw!r}")
    return datetime.timedelta(minutes=int(raw))


def init_distributed() -> DistEnv:
    """Join (or, alone, create) the process group: NCCL on GPUs, gloo on CPUs."""
    import deepspeed
    from deepspeed.accelerator import get_accelerator

    os.environ.update(launcher_variables(dict(os.environ)))
    prefer_own_ninja()
    local_rank = int(os.environ["LOCAL_RANK"])
    accelerator = get_accelerator()
    on_cpu = accelerator.device_name() == "cpu"
    if not on_cpu:
        index = device_index(local_rank, accelerator.device_count())
        # DeepSpeed reads LOCAL_RANK as the device index (engine, ZeRO-3) and insists that Open
        # MPI's local rank agrees with it.
        os.environ["LOCAL_RANK"] = str(index)
        if "OMPI_COMM_WORLD_LOCAL_RANK" in os.environ:
            os.environ["OMPI_COMM_WORLD_LOCAL_RANK"] = str(index)
        accelerator.set_device(index)
    deepspeed.init_distributed(
        dist_backend="gloo" if on_cpu else accelerator.communication_backend_name(),
        auto_mpi_discovery=False,
        timeout=collective_timeout(),
    )
    device = torch.device("cpu") if on_cpu else torch.device(accelerator.device_name(int(os.environ["LOCAL_RANK"])))
    if on_cpu:
        _release_shared_memory_name()
    return DistEnv(
        rank=int(os.environ["RANK"]),
        world_size=int(os.environ["WORLD_SIZE"]),
        local_rank=local_rank,
        device=device,
    )


def prefer_own_ninja() -> None:
    """Put the `ninja` installed beside this interpreter first on PATH, when there is one.

    DeepSpeed compiles its ops through PyTorch's JIT (on CPUs its communication op, which every
    process group loads), and the JIT runs whichever `ninja` comes first on PATH: the one pip
    installs with DeepSpeed when the environment is activated, else the system's. Neither trusts
    the other's build log, so each switch compiles the op again (40 s on 2 cores, in every run that
    switches). The interpreter's own `ninja` is always the one, as if the environment were active.
    """
    own = os.path.join(os.path.dirname(sys.executable), "ninja")
    if os.path.isfile(own) and shutil.which("ninja") != own:
        os.environ["PATH"] = os.path.dirname(own) + os.pathsep + os.environ.get("PATH", "")


def _release_shared_memory_name() -> None:
    """Unlink the name of this rank's DeepSpeed CPU all-reduce buffer once every rank has mapped it.

    DeepSpeed's CPU communication op puts a ~66 MB buffer per rank in /dev/shm and never removes
    it, so every CPU job would leak that memory until the machine runs out. Each rank maps all
    buffers while the process group starts; after a barrier the names can go, and the memory is
    freed when the processes exit, even when they are killed.
    """
    dist.barrier()
    name = "deepspeed_allreduce_buffer_{}_{}_{}_{}".format(
        os.getuid(), os.environ["MASTER_ADDR"], os.environ["MASTER_PORT"], os.environ["RANK"]
    )
    try:
        os.unlink(os.path.join("/dev/shm", name))
    except FileNotFoundError:
        pass


@contextlib.contextmanager
def run_folder(cfg, env: DistEnv) -> Iterator[Path]:
    """Rank 0 owns `cfg.output_dir` for the run (`io.own_output_dir`); the other ranks wait until it does.

    If rank 0 refuses the folder it exits with the error line, and the launcher stops the others.
    When the run ends, rank 0 removes the data it handed to the other ranks (`data.handoff`).
    """
    from ..data.handoff import remove_handoff
    from ..io import own_output_dir

    owner = (
        own_output_dir(cfg.output_dir, resume=cfg.resume, overwrite=cfg.overwrite)
        if env.is_main
        else contextlib.nullcontext(Path(cfg.output_dir))
    )
    with owner as folder:
        if dist.is_initialized():
            dist.barrier()
        try:
            yield folder
        finally:
            if env.is_main:
                remove_handoff(folder)


# -- memory ------------------------------------------------------------------------------------
# On a GPU: the caching allocator's counters, allocated (tensors) and reserved (what the process
# holds from the driver, which is what runs out). On a CPU: the resident set, from /proc.


def reset_memory_peaks(device: torch.device) -> None:
    """Start the peaks afresh, so that they measure training rather than loading and set-up."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        return
    with contextlib.suppress(OSError):
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")  # resets the resident-set high-water mark (VmHWM)


def peak_memory_bytes(device: torch.device) -> dict:
    """Peak memory since the last `reset_memory_peaks`: `allocated` and `reserved` on a GPU; on a
    CPU both are the resident set's high-water mark."""
    if device.type == "cuda":
        return {
            "allocated": torch.cuda.max_memory_allocated(device),
            "reserved": torch.cuda.max_memory_reserved(device),
        }
    resident = _proc_status_kib("VmHWM") * 1024
    return {"allocated": resident, "reserved": resident}


def memory_in_use_bytes(device: torch.device) -> dict:
    """Memory in use now, read without waiting for the device: the allocator's host-side counters on
    a GPU, the current resident set on a CPU (0 where /proc is absent)."""
    if device.type == "cuda":
        return {"allocated": torch.cuda.memory_allocated(device), "reserved": torch.cuda.memory_reserved(device)}
    resident = _proc_status_kib("VmRSS") * 1024
    return {"allocated": resident, "reserved": resident}


def _proc_status_kib(field: str) -> int:
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0
