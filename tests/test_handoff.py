"""Rank 0 alone loads and tokenizes; the other ranks map its splits, or stop with its error line."""

import os

import torch.distributed as dist
import torch.multiprocessing as mp

from ftft_ds.data.handoff import FOLDER, prepare_once
from ftft_ds.data.load import DataConfig, load_splits
from ftft_ds.data.tokenize import tokenize_split
from ftft_ds.errors import FtftError
from ftft_ds.train.models import load_tokenizer

from .helpers import free_port


def _rank(rank: int, port: int, folder: str, fail: str | None, results) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2)
    calls = []

    def prepare():
        calls.append(rank)
        if fail == "user":
            raise FtftError("column 'label' is missing")
        if fail == "crash":
            raise OSError(28, "No space left on device")
        splits = load_splits(DataConfig(embedded_train_size=50), ["train", "dev"])
        tokenizer = load_tokenizer("tiny-bert")
        return splits, {"train": tokenize_split(splits["train"], tokenizer, 32)}

    try:
        splits, tokenized = prepare_once(folder, rank, 2, prepare)
        results[rank] = {
            "calls": calls,
            "fingerprints": {n: s.fingerprint for n, s in splits.items()},
            "uids": splits["train"].uids(),
            "input_ids": [list(ids) for ids in tokenized["train"]["input_ids"]],
        }
    except (FtftError, OSError, RuntimeError) as exc:
        results[rank] = {"calls": calls, "error": str(exc), "type": type(exc).__name__}
    finally:
        dist.barrier()
        dist.destroy_process_group()


def _run(folder, fail: str | None) -> dict:
    with mp.Manager() as manager:
        results = manager.dict()
        mp.spawn(_rank, args=(free_port(), str(folder), fail, results), nprocs=2)
        return dict(results)


def test_rank_0_prepares_and_the_others_map_the_same_splits(tmp_path):
    results = _run(tmp_path, fail=None)
    assert results[0]["calls"] == [0] and results[1]["calls"] == []
    for key in ("fingerprints", "uids", "input_ids"):
        assert results[1][key] == results[0][key]
    assert (tmp_path / FOLDER).is_dir()  # until the run ends (runtime.run_folder removes it)


def test_rank_0s_error_stops_every_rank_with_its_line(tmp_path):
    results = _run(tmp_path, fail="user")
    assert results[0]["error"] == results[1]["error"] == "column 'label' is missing"
    assert results[1]["calls"] == []


def test_any_exception_on_rank_0_stops_the_other_ranks_too(tmp_path):
    """Not only a user error: a full disk on rank 0 must not leave the others at a barrier."""
    results = _run(tmp_path, fail="crash")
    assert results[0] == {"calls": [0], "error": "[Errno 28] No space left on device", "type": "OSError"}
    assert results[1] == {
        "calls": [],
        "error": "rank 0 could not prepare the data (OSError: [Errno 28] No space left on device)",
        "type": "RuntimeError",
    }
