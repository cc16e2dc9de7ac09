"""Process-group set-up for single-process and `deepspeed`-launched runs alike.

Under the `deepspeed` launcher every rank finds RANK/WORLD_SIZE/MASTER_* in its environment. A plain
`python` or `ftft` process has none, so it becomes a world of one on a free loopback port; the same
code then runs unchanged from one CPU to many GPU nodes.
"""
from __future__ import annotations

import os
import socket
from dataclasses import dataclass

import torch


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
    return DistEnv(
        rank=int(os.environ["RANK"]), world_size=int(os.environ["WORLD_SIZE"]),
        local_rank=local_rank, device=device,
    )


def all_ranks_agree(flag: bool, env: DistEnv) -> bool:
    """True on every rank iff `flag` is true on every rank (a collective: all ranks must call)."""
    import torch.distributed as dist

    value = torch.tensor([1 if flag else 0], dtype=torch.int32)
    if env.device.type != "cpu" and dist.get_backend() == "nccl":
        value = value.to(env.device)
    dist.all_reduce(value, op=dist.ReduceOp.MIN)
    return bool(value.item())
