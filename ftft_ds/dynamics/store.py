"""The dynamics store: per-example logits at every epoch, kept as a directory of `.npy` files.

A store is what one recording run leaves behind and what every later stage (metrics, data maps,
subset selection, export) reads. It is a directory so that the large array can be memory-mapped:
a store of 10M examples x 5 epochs x 3 classes opens without reading 600 MB into memory, and
chunked passes over it keep the resident set bounded.

    uids.npy         bytes 'S<k>' (N,)   utf-8 encoded example ids, unique
    labels.npy       int64 (N,)          gold label of each example
    logits.npy       float32 (N, E, C)   logits of the training forward pass at each epoch
    eval_logits.npy  float32 (N, E, C)   optional: logits of an eval-mode pass at each epoch end
    manifest.json    what the dynamics were recorded on (dataset fingerprint, model, seeds, ...)

A store is written as a whole under a temporary name and renamed into place, and it is validated
whenever it is built or opened, so a store that exists is complete and consistent.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

import numpy as np

from ..errors import FtftError, require
from ..io import atomic_path, read_json, versions, write_json

ARRAY_FILES = ("uids", "labels", "logits")

#: Values (not rows) handled at once by every chunked pass: 8 MB of float32, cache-friendly.
CHUNK_ELEMENTS = 1 << 21


def utc_timestamp() -> str:
    """The current time for manifests: ISO 8601, UTC, to the second."""
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def chunk_rows(row_elements: int) -> int:
    """How many rows of `row_elements` elements make one chunk of about `CHUNK_ELEMENTS`."""
    return max(1, CHUNK_ELEMENTS // max(1, row_elements))


def chunk_bounds(num_rows: int, row_elements: int) -> Iterator[tuple[int, int]]:
    """(start, stop) pairs covering `num_rows` rows in chunks of `chunk_rows(row_elements)`."""
    step = chunk_rows(row_elements)
    for start in range(0, num_rows, step):
        yield start, min(num_rows, start + step)


def encode_uids(uids: Iterable[Any]) -> np.ndarray:
    """Example ids (any values; str() is taken) as a fixed-width utf-8 bytes array.

    NumPy's bytes arrays cannot hold a trailing NUL and an empty id names nothing, so both are
    refused here rather than silently altered.
    """
    encoded = [str(u).encode("utf-8") for u in uids]
    for raw in encoded:
        if not raw or b"\0" in raw:
            raise FtftError(f"example id {raw!r} is empty or contains a NUL character")
    require(bool(encoded), "no example ids given: dynamics need at least one example")
    return np.array(encoded, dtype=bytes)


def decode_uids(uids: np.ndarray) -> list[str]:
    """A bytes uid array as a list of str; ASCII ids (the usual case) take a vectorised path."""
    uids = np.ascontiguousarray(uids)
    if uids.size == 0:
        return []
    if int(uids.view(np.uint8).max()) < 128:
        return uids.astype(f"U{uids.dtype.itemsize}").tolist()
    return [u.decode("utf-8") for u in uids.tolist()]


def show_uid(uid: bytes | np.bytes_) -> str:
    """A uid for an error message: decoded and quoted."""
    return repr(bytes(uid).decode("utf-8", "replace"))


def uid_words(uids: np.ndarray) -> Iterator[np.ndarray]:
    """The uids as big-endian uint64 words, most significant first, zero-padded, one at a time.

    Comparing the word columns in turn compares the uids as bytes, so integer sorts (much faster
    than sorting strings) can order them; see `uid_order`.
    """
    n, width = uids.shape[0], uids.dtype.itemsize
    raw = np.ascontiguousarray(uids).view(np.uint8).reshape(n, width)
    for start in range(0, width, 8):
        word = np.zeros((n, 8), dtype=np.uint8)
        stop = min(width, start + 8)
        word[:, : stop - start] = raw[:, start:stop]
        yield word.view(">u8")[:, 0].astype(np.uint64)


def uid_order(uids: np.ndarray) -> np.ndarray:
    """`np.argsort(uids)` computed as an integer lexsort of their words."""
    return np.lexsort(list(uid_words(uids))[::-1])


def _uid_keys(uids: np.ndarray) -> np.ndarray:
    """One uint64 per uid such that equal uids get equal keys (and, up to 8 bytes, only they do).

    The words are folded with a multiplicative hash one at a time, so memory stays bounded for
    long ids while collisions are left to be resolved exactly.
    """
    keys = np.zeros(uids.shape[0], dtype=np.uint64)
    for word in uid_words(uids):
        keys *= np.uint64(0x9E3779B97F4A7C15)
        keys ^= word
    return keys


def first_duplicate(uids: np.ndarray) -> bytes | None:
    """A uid that occurs more than once, or None; sorts integer keys, never the strings themselves."""
    keys = _uid_keys(uids)
    ordered = np.sort(keys)
    clash = ordered[1:][ordered[1:] == ordered[:-1]]
    if clash.size == 0:
        return None
    candidates = np.sort(uids[np.isin(keys, clash)])
    same = candidates[1:][candidates[1:] == candidates[:-1]]
    return bytes(same[0]) if same.size else None


def _check_finite(name: str, values: np.ndarray, uids: np.ndarray) -> None:
    """Refuse NaN or infinite logits, reading the (possibly memory-mapped) array chunk by chunk."""
    row = int(np.prod(values.shape[1:]))
    for start, stop in chunk_bounds(values.shape[0], row):
        chunk = values[start:stop]
        finite = np.isfinite(chunk)
        if not finite.all():
            bad_row, bad_epoch = np.argwhere(~finite)[0][:2]
            value = chunk[bad_row, bad_epoch][~finite[bad_row, bad_epoch]][0]
            raise FtftError(
                f"{name} has a non-finite value ({value}) for example "
                f"{show_uid(uids[start + bad_row])} at epoch {bad_epoch}"
            )


@dataclass(eq=False)
class Dynamics:
    """Recorded training dynamics of N examples over E epochs with C classes; validated on creation."""

    uids: np.ndarray
    labels: np.ndarray
    logits: np.ndarray
    eval_logits: np.ndarray | None = None
    manifest: dict = field(default_factory=dict)
    path: Path | None = field(default=None, repr=False)
    _fingerprint: str | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        self.validate()

    @classmethod
    def create(
        cls,
        uids: Sequence[Any] | np.ndarray,
        labels: Sequence[int] | np.ndarray,
        logits: np.ndarray,
        *,
        eval_logits: np.ndarray | None = None,
        dataset_fingerprint: str | None = None,
        model: str | None = None,
        seeds: Any = None,
        source: str = "ftft",
        extra: dict | None = None,
    ) -> "Dynamics":
        """Build (and validate) dynamics from in-memory arrays, filling in the manifest."""
        if isinstance(uids, np.ndarray) and uids.dtype.kind == "S":
            uid_array = np.ascontiguousarray(uids)
        else:
            uid_array = encode_uids(uids)
        logits = np.ascontiguousarray(logits, dtype=np.float32)
        if eval_logits is not None:
            eval_logits = np.ascontiguousarray(eval_logits, dtype=np.float32)
        require(logits.ndim == 3, f"logits must have shape (examples, epochs, classes), got {logits.shape}")
        manifest = {
            "dataset_fingerprint": dataset_fingerprint,
            "num_examples": int(logits.shape[0]),
            "num_epochs": int(logits.shape[1]),
            "num_labels": int(logits.shape[2]),
            "model": model,
            "seeds": seeds if seeds is not None else {},
            "source": source,
            "versions": versions(),
            "created": utc_timestamp(),
            **(extra or {}),
        }
        return cls(uid_array, np.asarray(labels, dtype=np.int64), logits, eval_logits, manifest)

    # -- shape --------------------------------------------------------------------------------

    @property
    def num_examples(self) -> int:
        return int(self.logits.shape[0])

    @property
    def num_epochs(self) -> int:
        return int(self.logits.shape[1])

    @property
    def num_labels(self) -> int:
        return int(self.logits.shape[2])

    @property
    def dataset_fingerprint(self) -> str | None:
        return self.manifest.get("dataset_fingerprint")

    def uid_strings(self) -> list[str]:
        """The example ids as str, in store order."""
        return decode_uids(self.uids)

    def describe(self) -> str:
        """How error messages name these dynamics: their directory, if they have one."""
        return f"dynamics {self.path}" if self.path is not None else "dynamics (in memory)"

    # -- validation ---------------------------------------------------------------------------

    def validate(self) -> None:
        """Raise `FtftError` (one line) unless the arrays and the manifest describe one consistent store."""
        uids, labels, logits = self.uids, self.labels, self.logits
        require(
            isinstance(uids, np.ndarray) and uids.dtype.kind == "S" and uids.ndim == 1,
            f"uids must be a 1-d bytes array, got {getattr(uids, 'dtype', type(uids))} "
            f"with shape {getattr(uids, 'shape', None)}",
        )
        n = uids.shape[0]
        require(n > 0, "the store is empty: it has no examples")
        require(
            isinstance(labels, np.ndarray) and labels.dtype.kind in "iu" and labels.ndim == 1,
            f"labels must be a 1-d integer array, got {getattr(labels, 'dtype', type(labels))}",
        )
        require(
            isinstance(logits, np.ndarray) and logits.dtype == np.float32 and logits.ndim == 3,
            f"logits must be a float32 array of shape (examples, epochs, classes), got "
            f"{getattr(logits, 'dtype', type(logits))} with shape {getattr(logits, 'shape', None)}",
        )
        require(labels.shape[0] == n, f"labels has {labels.shape[0]} entries but uids has {n}")
        require(logits.shape[0] == n, f"logits has {logits.shape[0]} examples but uids has {n}")
        epochs, classes = logits.shape[1], logits.shape[2]
        require(epochs > 0, "logits has no epochs")
        require(classes >= 2, f"logits has {classes} class(es); classification needs at least 2")
        self._validate_manifest(n, epochs, classes)
        if self.eval_logits is not None:
            ev = self.eval_logits
            require(
                isinstance(ev, np.ndarray) and ev.dtype == np.float32 and ev.shape == logits.shape,
                f"eval_logits must be float32 with the shape of logits {logits.shape}, got "
                f"{getattr(ev, 'dtype', type(ev))} with shape {getattr(ev, 'shape', None)}",
            )
        require(not (uids == b"").any(), "an example id is empty")
        duplicate = first_duplicate(uids)
        if duplicate is not None:
            raise FtftError(f"example id {show_uid(duplicate)} occurs more than once")
        low, high = int(labels.min()), int(labels.max())
        if low < 0 or high >= classes:
            bad = int(np.flatnonzero((labels < 0) | (labels >= classes))[0])
            raise FtftError(f"label {int(labels[bad])} of example {show_uid(uids[bad])} is outside [0, {classes})")
        _check_finite("logits", logits, uids)
        if self.eval_logits is not None:
            _check_finite("eval_logits", self.eval_logits, uids)

    def _validate_manifest(self, n: int, epochs: int, classes: int) -> None:
        m = self.manifest
        require(isinstance(m, dict), f"the manifest must be a JSON object, got {type(m).__name__}")
        for key in ("num_examples", "num_epochs", "num_labels"):
            require(
                isinstance(m.get(key), int) and not isinstance(m.get(key), bool),
                f"manifest lacks an integer {key!r} (got {m.get(key)!r})",
            )
        require(m["num_examples"] == n, f"the manifest says {m['num_examples']} examples but the arrays hold {n}")
        require(
            m["num_epochs"] == epochs,
            f"logits hold {epochs} epoch(s) but the manifest says num_epochs={m['num_epochs']} "
            "(epochs missing or extra)",
        )
        require(
            m["num_labels"] == classes,
            f"logits hold {classes} classes but the manifest says num_labels={m['num_labels']}",
        )
        fp = m.get("dataset_fingerprint")
        require(fp is None or isinstance(fp, str), f"manifest dataset_fingerprint must be a string or null, got {fp!r}")

    def check_dataset(self, fingerprint: str | None) -> None:
        """Refuse to pair these dynamics with a dataset other than the one they were recorded on."""
        mine = self.dataset_fingerprint
        if mine is None or fingerprint is None:
            return
        require(
            mine == fingerprint,
            f"{self.describe()} were recorded on dataset {mine}, not {fingerprint}",
        )

    # -- identity -----------------------------------------------------------------------------

    @property
    def fingerprint(self) -> str:
        """A blake2b hash of uids, labels and logits (with their shapes and dtypes).

        It is computed once, chunk by chunk, and stored in the manifest on `save`, so an opened
        store reports it without reading the logits again.
        """
        if self._fingerprint is None:
            digest = hashlib.blake2b(digest_size=16)
            for array in (self.uids, np.asarray(self.labels, dtype=np.int64), self.logits):
                digest.update(f"{array.dtype.str}{array.shape};".encode())
                row = int(np.prod(array.shape[1:]))
                for start, stop in chunk_bounds(array.shape[0], row):
                    digest.update(np.ascontiguousarray(array[start:stop]).data)
            self._fingerprint = digest.hexdigest()
        return self._fingerprint

    # -- files --------------------------------------------------------------------------------

    def save(self, path: str | os.PathLike) -> Path:
        """Write the store to directory `path` as a whole (replacing any store there)."""
        manifest = {**self.manifest, "fingerprint": self.fingerprint}
        with atomic_path(path, is_dir=True) as tmp:
            np.save(tmp / "uids.npy", self.uids)
            np.save(tmp / "labels.npy", np.asarray(self.labels, dtype=np.int64))
            np.save(tmp / "logits.npy", self.logits)
            if self.eval_logits is not None:
                np.save(tmp / "eval_logits.npy", self.eval_logits)
            write_json(tmp / "manifest.json", manifest)
        self.manifest = manifest
        self.path = Path(path)
        return self.path

    @classmethod
    def load(cls, path: str | os.PathLike, mmap: bool = True) -> "Dynamics":
        """Open (memory-mapped by default) and validate the store in directory `path`."""
        root = Path(path)
        require(root.is_dir(), f"dynamics directory not found: {root}")
        manifest = read_json(root / "manifest.json", what="dynamics manifest")
        arrays = {name: _load_npy(root / f"{name}.npy", mmap) for name in ARRAY_FILES}
        eval_path = root / "eval_logits.npy"
        eval_logits = _load_npy(eval_path, mmap) if eval_path.exists() else None
        try:
            dyn = cls(arrays["uids"], arrays["labels"], arrays["logits"], eval_logits, manifest, root)
        except FtftError as exc:
            raise FtftError(f"dynamics {root}: {exc}") from None
        stored = manifest.get("fingerprint")
        dyn._fingerprint = stored if isinstance(stored, str) else None
        return dyn


def _load_npy(path: Path, mmap: bool) -> np.ndarray:
    require(path.is_file(), f"dynamics file missing: {path}")
    try:
        return np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise FtftError(f"{path} is not a readable .npy file ({reason})") from None
