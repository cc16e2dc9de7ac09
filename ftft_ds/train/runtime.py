"""Process-group set-up for single-process and `deepspeed`-launched runs alike.

Under the `deepspeed` launcher every rank finds RANK/WORLD_SIZE/MASTER_* in its environment. A plain
`python` or `ftft` process has none, so it becomes a world of one on a free loopback port; the same
code then runs unchanged from one CPU to many GPU nodes.
"""
from __future__ import annotations

import contextlib
import os
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import torch
import torch.distributed as dist


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


def init_distributed() -> DistEnv:
    """Join (or, alone, create) the process group: NCCL on GPUs, gloo on CPUs."""
    import deepspeed
    from deepspeed.accelerator import get_accelerator

    if "RANK" not in os.environ:
        os.environ.update(
            RANK="0", LOCAL_RANK="0", WORLD_SIZE="1", LOCAL_SIZE="1",
            MASTER_ADDR="127.0.0.1", MASTER_PORT=str(free_port()),
        )
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    accelerator = get_accelerator()
    on_cpu = accelerator.device_name() == "cpu"
    if not on_cpu:
        accelerator.set_device(local_rank)
    deepspeed.init_distributed(dist_backend="gloo" if on_cpu else accelerator.communication_backend_name())
    device = torch.device("cpu") if on_cpu else torch.device(accelerator.device_name(local_rank))
    if on_cpu:
        _release_shared_memory_name()
    return DistEnv(
        rank=int(os.environ["RANK"]), world_size=int(os.environ["WORLD_SIZE"]),
        local_rank=local_rank, device=device,
    )


def _release_shared_memory_name() -> None:
    """Unlink the name of this rank's DeepSpeed CPU all-reduce buffer once every rank has mapped it.

    DeepSpeed's CPU communication op puts a ~66 MB buffer per rank in /dev/shm and never removes
    it, so every CPU job would leak that memory until the machine runs out. Each rank maps all
    buffers while the process group starts; after a barrier the names can go, and the memory is
    freed when the processes exit, even when they are killed.
    """
    dist.barrier()
    name = "deepspeed_allreduce_buffer_{}_{}_{}_{}".format(
        os.getuid(), os.environ["MASTER_ADDR"], os.environ["MASTER_PORT"], os.environ["RANK"])
    try:
        os.unlink(os.path.join("/dev/shm", name))
    except FileNotFoundError:
        pass


@contextlib.contextmanager
def run_folder(cfg, env: DistEnv) -> Iterator[Path]:
    """Rank 0 owns `cfg.output_dir` for the run (`io.own_output_dir`); the other ranks wait until it does.

    If rank 0 refuses the folder it exits with the error line, and the launcher stops the others.
    """
    from ..io import own_output_dir

    owner = own_output_dir(cfg.output_dir, resume=getattr(cfg, "resume", False), overwrite=cfg.overwrite) \
        if env.is_main else contextlib.nullcontext(Path(cfg.output_dir))
    with owner as folder:
        if dist.is_initialized():
            dist.barrier()
        yield folder


def peak_memory_bytes(device: torch.device) -> int:
    """Peak memory this process has used so far: allocated tensors on a GPU, resident set on a CPU."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device)
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB


def memory_in_use_bytes(device: torch.device) -> int:
    """Memory this process uses now, read without waiting for the device: the allocator's peak so
    far on a GPU (a host-side counter), the current resident set on a CPU (0 where /proc is absent)."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device)
    try:
        with open("/proc/self/statm") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        return 0
