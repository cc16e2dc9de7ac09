"""Loading and tokenizing once per job: rank 0 does it, the other ranks map its result from disk.

Hashing every row into uids and fingerprints and tokenizing every split costs minutes of CPU on
large data; done on each of 64 ranks it costs that many times over, on the cores that feed the
GPUs. Rank 0 prepares the splits, writes them as Arrow files into the run's (shared) folder, and
the other ranks memory-map them. The files stay until the run ends (`remove_handoff`): `datasets`
reopens a memory-mapped table by its path whenever it is pickled (a loader worker started by
spawn, a column sent to another process). A user error rank 0 meets (a missing column, a bad label) is sent
to every rank, so that each stops with the same line instead of waiting at a barrier.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Callable

import torch.distributed as dist

from ..errors import FtftError
from ..io import atomic_path
from .load import Split

FOLDER = ".prepared-data"


def prepare_once(
    folder: Path, rank: int, world_size: int, prepare: Callable[[], tuple[dict, dict]]
) -> tuple[dict, dict]:
    """`prepare()`'s (splits, tokenized splits), computed on rank 0 alone and handed to the others
    through `folder / FOLDER`. A collective."""
    if world_size == 1 or not dist.is_initialized():
        return prepare()
    path = Path(folder) / FOLDER
    error = None
    if rank == 0:
        try:
            splits, tokenized = prepare()
            _save(path, splits, tokenized)
        except FtftError as exc:
            error = str(exc)
    message = [error]
    dist.broadcast_object_list(message, src=0)
    if message[0] is not None:
        raise FtftError(message[0])
    if rank != 0:
        splits, tokenized = _load(path)
    dist.barrier()  # every rank has mapped the files: rank 0 may now fail and clean up
    return splits, tokenized


def remove_handoff(folder: Path) -> None:
    """Delete what `prepare_once` wrote into `folder` (rank 0, once the run is over)."""
    shutil.rmtree(Path(folder) / FOLDER, ignore_errors=True)


def _save(path: Path, splits: dict, tokenized: dict) -> None:
    with atomic_path(path, is_dir=True) as tmp:
        meta = {}
        for name, split in splits.items():
            split.dataset.save_to_disk(str(tmp / name / "canonical"))
            meta[name] = {
                "fingerprint": split.fingerprint,
                "num_labels": split.num_labels,
                "label_names": list(split.label_names),
                "tokenized": name in tokenized,
            }
            if name in tokenized:
                tokenized[name].save_to_disk(str(tmp / name / "tokenized"))
        (tmp / "splits.json").write_text(json.dumps(meta), encoding="utf-8")


def _load(path: Path) -> tuple[dict, dict]:
    import datasets

    meta = json.loads((path / "splits.json").read_text(encoding="utf-8"))
    splits, tokenized = {}, {}
    for name, info in meta.items():
        splits[name] = Split(
            name,
            datasets.load_from_disk(str(path / name / "canonical")),
            info["fingerprint"],
            info["num_labels"],
            tuple(info["label_names"]),
        )
        if info["tokenized"]:
            tokenized[name] = datasets.load_from_disk(str(path / name / "tokenized"))
    return splits, tokenized
