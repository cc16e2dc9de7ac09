"""A distributed sampler that walks a chosen set of rows without copying the dataset.

The rows are the whole training split (ERM, reference runs) or the uids an FTFT subset selected,
mapped to row positions. Every epoch gets a fresh permutation drawn from the data-order seed and
the epoch number alone, so the order is the same whatever the world size or the weight-init seed;
rank r takes every world_size-th element, giving disjoint shards. Like PyTorch's
`DistributedSampler`, the permutation is padded by wrapping around so all ranks take the same
number of steps (a rank that stopped early would hang the collectives).

A resumed run continues with the very next example: the trainer, which counts the batches it
has trained on, starts the epoch past them (`set_epoch(epoch, start)`). The position is the
trainer's and not a count of the indices this sampler has handed out, because a loader with worker
processes draws indices ahead of the batches it trains on. `state_dict` / `load_state_dict` keep
the epoch and refuse a checkpoint taken with another data-order seed.
"""

from __future__ import annotations

import math
from typing import Iterator, Sequence

import torch
from torch.utils.data import Sampler

from ..errors import FtftError


class ShardedSampler(Sampler[int]):
    """Yields this rank's share of `rows`, reshuffled every epoch from `seed`."""

    def __init__(self, rows: Sequence[int], world_size: int, rank: int, seed: int, shuffle: bool = True):
        if len(rows) == 0:
            raise FtftError("the sampler was given no rows to train on")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} outside world of size {world_size}")
        self.rows = torch.as_tensor(list(rows), dtype=torch.long)
        self.world_size = world_size
        self.rank = rank
        self.seed = seed
        self.shuffle = shuffle
        self.epoch = 0
        self.start = 0  # samples of this epoch skipped on this rank when it began (resuming)

    @property
    def per_rank(self) -> int:
        """Samples each rank takes per epoch (after padding)."""
        return math.ceil(len(self.rows) / self.world_size)

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        """Begin `epoch`, skipping its first `start` samples on this rank (for resuming)."""
        self.epoch = epoch
        self.start = start

    def epoch_order(self, epoch: int) -> torch.Tensor:
        """The global order of rows in `epoch`, padded to a multiple of the world size."""
        if self.shuffle:
            generator = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            order = self.rows[torch.randperm(len(self.rows), generator=generator)]
        else:
            order = self.rows
        padding = self.per_rank * self.world_size - len(order)
        if padding:
            wraps = math.ceil(padding / len(order))
            order = torch.cat([order, order.repeat(wraps)[:padding]])
        return order

    def __iter__(self) -> Iterator[int]:
        shard = self.epoch_order(self.epoch)[self.rank :: self.world_size]
        yield from shard[self.start :].tolist()

    def __len__(self) -> int:
        return self.per_rank - self.start

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "seed": self.seed}

    def load_state_dict(self, state: dict) -> None:
        """Take a checkpoint's epoch; where inside it to start is the trainer's (`set_epoch`)."""
        if state["seed"] != self.seed:
            raise FtftError(f"checkpoint used data-order seed {state['seed']}, this run uses {self.seed}")
        self.set_epoch(state["epoch"])
