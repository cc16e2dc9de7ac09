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


def _rank(rank: int, port: int, folder: str, fail: bool, results) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2)
    calls = []

    def prepare():
        calls.append(rank)
        if fail:
            raise FtftError("column 'label' is missing")
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
    except FtftError as exc:
        results[rank] = {"calls": calls, "error": str(exc)}
    finally:
        dist.barrier()
        dist.destroy_process_group()


def _run(folder, fail: bool) -> dict:
    with mp.Manager() as manager:
        results = manager.dict()
        mp.spawn(_rank, args=(free_port(), str(folder), fail, results), nprocs=2)
        return dict(results)


def test_rank_0_prepares_and_the_others_map_the_same_splits(tmp_path):
    results = _run(tmp_path, fail=False)
    assert results[0]["calls"] == [0] and results[1]["calls"] == []
    for key in ("fingerprints", "uids", "input_ids"):
        assert results[1][key] == results[0][key]
    assert (tmp_path / FOLDER).is_dir()  # until the run ends (runtime.run_folder removes it)


def test_rank_0s_error_stops_every_rank_with_its_line(tmp_path):
    results = _run(tmp_path, fail=True)
    assert results[0]["error"] == results[1]["error"] == "column 'label' is missing"
    assert results[1]["calls"] == []
