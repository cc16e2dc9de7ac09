"""Loading and tokenizing once per job: rank 0 does it, the other ranks map its result from disk.

Hashing every row into uids and fingerprints and tokenizing every split costs minutes of CPU on
large data; done on each of 64 ranks it costs that many times over, on the cores that feed the
GPUs. Rank 0 prepares the splits, writes them as Arrow files into the run's (shared) folder, and
the other ranks memory-map them. The files stay until the run ends (`remove_handoff`): `datasets`
reopens a memory-mapped table by its path whenever it is pickled (a loader worker started by
spawn, a column sent to another process). Whatever stops rank 0 there is sent to every rank, so
that each stops instead of waiting at a barrier until the collective times out: a user error (a
missing column, a bad label) as the same one-line error, anything else (a full disk, a tokenizer's
exception) as an error that names rank 0's.
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
    error: Exception | None = None
    if rank == 0:
        try:
            splits, tokenized = prepare()
            _save(path, splits, tokenized)
        except Exception as exc:  # every rank must hear of it, or the others hang below
            error = exc
    message = [None if error is None else _describe(error)]
    dist.broadcast_object_list(message, src=0)
    if error is not None:
        raise error
    if message[0] is not None:
        user_error, text = message[0]
        raise FtftError(text) if user_error else RuntimeError(f"rank 0 could not prepare the data ({text})")
    if rank != 0:
        splits, tokenized = _load(path)
    dist.barrier()  # every rank has mapped the files: rank 0 may now fail and clean up
    return splits, tokenized


def _describe(error: Exception) -> tuple[bool, str]:
    """(whether `error` is the user's, its line for the other ranks)."""
    if isinstance(error, FtftError):
        return True, str(error)
    return False, f"{type(error).__name__}: {error}"


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
