"""A distributed sampler that walks a chosen set of rows without copying the dataset.

The rows are the whole training split (ERM, reference runs) or the uids an FTFT subset selected,
mapped to row positions. Every epoch gets a fresh permutation drawn from the data-order seed and
the epoch number alone, so the order is the same whatever the world size or the weight-init seed;
rank r takes every world_size-th element, giving disjoint shards. Like PyTorch's
`DistributedSampler`, the permutation is padded by wrapping around so all ranks take the same
number of steps (a rank that stopped early would hang the collectives).

The sampler counts the samples it has handed out, so its position inside the epoch is part of a
checkpoint: `state_dict` / `load_state_dict` let a resumed run continue with the very next
example, and refuse a checkpoint taken with another data-order seed. (The loader must draw indices
as it builds batches, i.e. run without worker processes, as the trainer's loader does.)
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
        self.position = 0  # samples of this epoch handed out so far on this rank, skipped ones included

    @property
    def per_rank(self) -> int:
        """Samples each rank takes per epoch (after padding)."""
        return math.ceil(len(self.rows) / self.world_size)

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        """Begin `epoch`, skipping its first `start` samples on this rank (for resuming)."""
        self.epoch = epoch
        self.start = self.position = start

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
        shard = self.epoch_order(self.epoch)[self.rank::self.world_size]
        for row in shard[self.start:].tolist():
            self.position += 1
            yield row

    def __len__(self) -> int:
        return self.per_rank - self.start

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "start": self.position, "seed": self.seed}

    def load_state_dict(self, state: dict) -> None:
        if state["seed"] != self.seed:
            raise FtftError(f"checkpoint used data-order seed {state['seed']}, this run uses {self.seed}")
        self.set_epoch(state["epoch"], state["start"])
