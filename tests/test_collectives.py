"""`gather_rows` on real gloo ranks: uneven shards, an empty one, padding never leaks into the result."""

import os

import numpy as np
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from ftft_ds.collectives import gather_rows

from .helpers import free_port

COUNTS = (3, 0, 5)
"""Rows each of three ranks holds: uneven, one rank none."""


def _rank(rank: int, port: int, results) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=len(COUNTS))
    start = sum(COUNTS[:rank])
    indices = torch.arange(start, start + COUNTS[rank]) * 10 + rank  # rank-tagged row numbers
    logits = torch.stack([indices.float(), -indices.float()], dim=1) if COUNTS[rank] else torch.zeros(0, 2)
    try:
        gathered_indices, gathered_logits = gather_rows(indices, logits)
        results[rank] = (gathered_indices.tolist(), gathered_logits.tolist())
    finally:
        dist.destroy_process_group()


def test_gather_rows_concatenates_uneven_shards_in_rank_order():
    with mp.Manager() as manager:
        results = manager.dict()
        mp.spawn(_rank, args=(free_port(), results), nprocs=len(COUNTS))
        results = dict(results)
    expected = [
        row * 10 + rank
        for rank, count in enumerate(COUNTS)
        for row in range(sum(COUNTS[:rank]), sum(COUNTS[:rank]) + count)
    ]
    for rank in range(len(COUNTS)):
        indices, logits = results[rank]
        assert indices == expected  # every rank gets all rows, rank 0's first, no padding rows
        assert np.array_equal(np.asarray(logits), np.stack([expected, [-i for i in expected]], axis=1))


def test_gather_rows_alone_is_the_identity():
    indices, logits = torch.tensor([4, 2]), torch.tensor([[1.0, 2.0], [3.0, 4.0]])
    rows, values = gather_rows(indices, logits)
    assert rows.tolist() == [4, 2] and values.tolist() == [[1.0, 2.0], [3.0, 4.0]]
