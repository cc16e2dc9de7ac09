"""ShardedSampler: disjoint shards that cover the rows, seeded order, exact resumption."""

import pytest
import torch

from ftft_ds.data.sampler import ShardedSampler
from ftft_ds.errors import FtftError


def shards(rows, world, seed, epoch):
    out = []
    for rank in range(world):
        s = ShardedSampler(rows, world, rank, seed)
        s.set_epoch(epoch)
        out.append(list(s))
    return out


def test_ranks_are_disjoint_and_cover_rows_once_with_padding():
    rows = [3, 7, 11, 12, 20, 21, 30]  # a subset of a bigger split
    parts = shards(rows, world=3, seed=5, epoch=0)
    assert [len(p) for p in parts] == [3, 3, 3]
    flat = [r for p in parts for r in p]
    assert set(flat) == set(rows)
    assert len(flat) - len(rows) == 2  # padding repeats two rows, as DistributedSampler does


def test_order_depends_on_seed_and_epoch_only():
    rows = list(range(50))
    a = shards(rows, 2, seed=1, epoch=0)
    assert a == shards(rows, 2, seed=1, epoch=0)
    assert a != shards(rows, 2, seed=2, epoch=0)
    assert a != shards(rows, 2, seed=1, epoch=1)
    # The global order is the same whatever the world size.
    single = ShardedSampler(rows, 1, 0, seed=1).epoch_order(0)
    double = ShardedSampler(rows, 2, 0, seed=1).epoch_order(0)
    assert torch.equal(single, double)


def test_resume_continues_with_the_next_sample():
    rows = list(range(40))
    full = ShardedSampler(rows, 2, 1, seed=9)
    full.set_epoch(3)
    expected = list(full)
    saved = ShardedSampler(rows, 2, 1, seed=9)
    saved.set_epoch(3)
    resumed = ShardedSampler(rows, 2, 1, seed=9)
    resumed.load_state_dict(saved.state_dict())
    resumed.set_epoch(resumed.epoch, start=7)  # the trainer's position: 7 samples trained on
    assert list(resumed) == expected[7:]
    assert len(resumed) == len(expected) - 7
    with pytest.raises(FtftError, match="seed 9"):
        ShardedSampler(rows, 2, 1, seed=8).load_state_dict(saved.state_dict())


def test_unshuffled_order_is_the_row_order():
    s = ShardedSampler([4, 5, 6], 1, 0, seed=0, shuffle=False)
    assert list(s) == [4, 5, 6]


def test_more_ranks_than_rows():
    parts = shards([1, 2], world=3, seed=0, epoch=0)
    assert all(len(p) == 1 for p in parts)
