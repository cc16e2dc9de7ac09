"""Dynamics to and from other tools' files.

cartography (allenai/cartography) logs one JSON-lines file per epoch:

    DIR/training_dynamics/dynamics_epoch_<e>.jsonl
        {"guid": <str or int>, "logits_epoch_<e>": [<C floats>], "gold": <int>}

FTFT's original code keeps one torch file mapping each uid to a float32 tensor of shape
(epochs, classes); the labels live in the dataset, so importing it needs a uid -> label mapping.

Imports check what the stores cannot see afterwards (an epoch file missing, an example absent from
some epoch, a gold label that changes between epochs) and then build a validated `Dynamics`.
Exports write every float32 exactly (as the float64 it equals), so export -> import round-trips.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Mapping

import numpy as np

from ..errors import FtftError, require
from ..io import atomic_path, iter_jsonl
from .store import Dynamics

_EPOCH_FILE = re.compile(r"^dynamics_epoch_(\d+)\.jsonl?$")


# -- cartography ------------------------------------------------------------------------------


def _epoch_files(root: Path) -> list[Path]:
    """The per-epoch files of a cartography run, epoch 0 first; refuses gaps."""
    folder = root / "training_dynamics" if (root / "training_dynamics").is_dir() else root
    require(folder.is_dir(), f"cartography dynamics directory not found: {root}")
    found: dict[int, Path] = {}
    for entry in sorted(folder.iterdir()):
        match = _EPOCH_FILE.match(entry.name)
        if match and entry.is_file():
            epoch = int(match.group(1))
            require(epoch not in found, f"{folder} holds two files for epoch {epoch}: {found.get(epoch)} and {entry}")
            found[epoch] = entry
    require(bool(found), f"{folder} holds no dynamics_epoch_<e>.jsonl files")
    missing = sorted(set(range(max(found) + 1)) - set(found))
    if missing:
        raise FtftError(
            f"{folder} lacks epoch {missing[0]} (dynamics_epoch_{missing[0]}.jsonl); "
            f"epochs must run 0..{max(found)} without gaps"
        )
    return [found[e] for e in range(len(found))]


def _read_epoch(path: Path, epoch: int) -> tuple[list[str], np.ndarray, np.ndarray]:
    """(uids, gold labels, float64 logits) of one cartography epoch file, in file order."""
    key = f"logits_epoch_{epoch}"
    uids: list[str] = []
    golds: list = []
    logits: list = []
    numbers: list[int] = []
    for number, record in iter_jsonl(path):
        require(
            {"guid", key, "gold"} <= record.keys(),
            f"{path} line {number} lacks one of the keys 'guid', {key!r}, 'gold'",
        )
        guid = record["guid"]
        require(
            isinstance(guid, (str, int)) and not isinstance(guid, bool),
            f"{path} line {number}: guid {guid!r} is neither a string nor an integer",
        )
        uids.append(str(guid))
        golds.append(record["gold"])
        logits.append(record[key])
        numbers.append(number)
    require(bool(uids), f"{path} holds no examples")
    try:
        values = np.array(logits, dtype=np.float64)
        shaped = values.ndim == 2
    except (TypeError, ValueError):
        shaped = False
    if not shaped:
        width = len(logits[0]) if isinstance(logits[0], list) else 0
        line = next((n for n, row in zip(numbers, logits) if not _is_number_list(row, width)), numbers[0])
        raise FtftError(f"{path} line {line}: {key} is not a list of numbers as long as the first line's")
    finite = np.isfinite(values).all(axis=1)
    if not finite.all():
        raise FtftError(f"{path} line {numbers[int(np.argmin(finite))]}: {key} holds a NaN or infinite value")
    for number, gold in zip(numbers, golds):
        if isinstance(gold, bool) or not isinstance(gold, int):
            raise FtftError(f"{path} line {number}: gold {gold!r} is not an integer")
    return uids, np.array(golds, dtype=np.int64), values


def _is_number_list(row: object, width: int) -> bool:
    return (
        isinstance(row, list)
        and len(row) == width > 0
        and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in row)
    )


def import_cartography(directory: str | os.PathLike) -> Dynamics:
    """Read a cartography run's training_dynamics (DIR or DIR/training_dynamics) as Dynamics."""
    files = _epoch_files(Path(directory))
    uids, labels, first = _read_epoch(files[0], 0)
    position = {uid: i for i, uid in enumerate(uids)}
    require(len(position) == len(uids), f"{files[0]} lists some guid more than once")
    logits = np.empty((len(uids), len(files), first.shape[1]), dtype=np.float32)
    logits[:, 0] = first
    for epoch, path in enumerate(files[1:], start=1):
        epoch_uids, golds, values = _read_epoch(path, epoch)
        require(
            values.shape[1] == first.shape[1],
            f"{path} has {values.shape[1]} logits per example but epoch 0 has {first.shape[1]}",
        )
        rows = np.array([position.get(uid, -1) for uid in epoch_uids], dtype=np.int64)
        unknown = np.flatnonzero(rows < 0)
        if unknown.size:
            raise FtftError(
                f"{path} has {unknown.size} example(s) absent from epoch 0 (e.g. {epoch_uids[unknown[0]]!r})"
            )
        seen = np.bincount(rows, minlength=len(uids))
        require(int(seen.max()) <= 1, f"{path} lists some guid more than once")
        absent = np.flatnonzero(seen == 0)
        if absent.size:
            raise FtftError(
                f"{path} lacks {absent.size} of the {len(uids)} examples of epoch 0 (e.g. {uids[absent[0]]!r})"
            )
        changed = np.flatnonzero(labels[rows] != golds)
        if changed.size:
            raise FtftError(f"{path}: the gold label of {epoch_uids[changed[0]]!r} differs from epoch 0's")
        logits[rows, epoch] = values
    return Dynamics.create(uids, labels, logits, source="cartography", extra={"imported_from": str(Path(directory))})


def export_cartography(dyn: Dynamics, directory: str | os.PathLike) -> Path:
    """Write `dyn` as DIR/training_dynamics/dynamics_epoch_<e>.jsonl, the directory as a whole."""
    uids = [json.dumps(u) for u in dyn.uid_strings()]
    golds = np.asarray(dyn.labels).tolist()
    with atomic_path(directory, is_dir=True) as tmp:
        folder = tmp / "training_dynamics"
        folder.mkdir()
        for epoch in range(dyn.num_epochs):
            rows = np.asarray(dyn.logits[:, epoch], dtype=np.float64).tolist()
            with open(folder / f"dynamics_epoch_{epoch}.jsonl", "w", encoding="utf-8") as f:
                f.writelines(
                    f'{{"guid": {uid}, "logits_epoch_{epoch}": {json.dumps(row)}, "gold": {gold}}}\n'
                    for uid, row, gold in zip(uids, rows, golds)
                )
    return Path(directory)


# -- FTFT's uid -> logits torch file ----------------------------------------------------------


def import_ftft(path: str | os.PathLike, labels_by_uid: Mapping[str, int]) -> Dynamics:
    """Read a torch file {uid: float tensor (epochs, classes)}; labels come from `labels_by_uid`."""
    import torch

    path = Path(path)
    require(path.is_file(), f"FTFT dynamics file not found: {path}")
    try:
        table = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for corrupt or foreign files
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise FtftError(f"{path} is not a readable torch file of uid -> logits ({reason})") from None
    require(isinstance(table, dict) and table, f"{path} must hold a non-empty dict of uid -> logits tensor")
    uids = [str(uid) for uid in table]
    tensors = list(table.values())
    shape = tuple(tensors[0].shape) if isinstance(tensors[0], torch.Tensor) else None
    for uid, tensor in zip(uids, tensors):
        require(
            isinstance(tensor, torch.Tensor)
            and tensor.dim() == 2
            and tuple(tensor.shape) == shape
            and tensor.is_floating_point(),
            f"{path}: the logits of uid {uid!r} are not a float tensor of shape {shape} (epochs, classes) "
            "like the first",
        )
    unlabeled = [uid for uid in uids if uid not in labels_by_uid]
    if unlabeled:
        raise FtftError(f"{len(unlabeled)} of the {len(uids)} uids of {path} have no label (e.g. {unlabeled[0]!r})")
    logits = torch.stack(tensors).to(torch.float32).numpy()
    labels = np.array([labels_by_uid[uid] for uid in uids], dtype=np.int64)
    return Dynamics.create(uids, labels, logits, source="ftft", extra={"imported_from": str(path)})


def export_ftft(dyn: Dynamics, path: str | os.PathLike) -> Path:
    """Write `dyn` as a torch file {uid: float32 tensor (epochs, classes)}, atomically."""
    import torch

    # The per-uid tensors are views of one storage, which torch.save writes once.
    logits = torch.from_numpy(np.array(dyn.logits, dtype=np.float32))
    with atomic_path(path) as tmp:
        torch.save(dict(zip(dyn.uid_strings(), logits.unbind(0))), tmp)
    return Path(path)


def read_labels_by_uid(path: str | os.PathLike) -> dict[str, int]:
    """A uid -> label mapping from a JSON object {uid: label} or JSON lines {"uid": .., "label": ..}.

    JSON lines may name the uid "guid" instead (cartography's spelling).
    """
    path = Path(path)
    require(path.is_file(), f"labels file not found: {path}")
    try:
        whole = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError):
        whole = None
    if isinstance(whole, dict):
        pairs = list(whole.items())
    else:
        pairs = []
        for number, record in iter_jsonl(path, what=f"labels file {path}"):
            uid = record.get("uid", record.get("guid"))
            require(
                uid is not None and "label" in record,
                f"labels file {path} line {number} needs a 'uid' (or 'guid') and a 'label'",
            )
            pairs.append((uid, record["label"]))
    labels: dict[str, int] = {}
    for uid, label in pairs:
        require(
            isinstance(label, int) and not isinstance(label, bool),
            f"labels file {path}: the label of {uid!r} is {label!r}, not an integer",
        )
        labels[str(uid)] = label
    require(bool(labels), f"labels file {path} maps no uids")
    return labels
