"""Loading any source into one canonical form, with stable uids and content fingerprints.

Whatever the source (the embedded task, a Hugging Face dataset, a local jsonl / json / csv /
parquet file or folder), a split becomes a `datasets.Dataset` with exactly the columns

- `uid`: str, stable across models, tokenizers, file formats and row order, because training
  dynamics recorded by one model are looked up by uid when they select data for another;
- `text`, and `text_pair` when the task has two texts: str;
- `label`: int64 in [0, num_labels).

A uid is the mapped id column's value when there is one, else a content hash of the texts;
exact duplicate contents get `#1`, `#2`, ... suffixes in order of appearance.

The split's fingerprint hashes its sorted (uid, label, text hash) records, so it depends on the
content alone, not on path, format or row order: dynamics can be checked against the data they
are applied to. It is also the canonical dataset's `datasets` fingerprint, so `datasets` caching
follows content too.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Iterable, Optional

from ..errors import FtftError, require
from ..io import iter_jsonl

if TYPE_CHECKING:  # `datasets` is imported where used: it is slow to import
    import datasets

EMBEDDED = "embedded"
FILE_FORMATS = {".jsonl": "json", ".json": "json", ".csv": "csv", ".parquet": "parquet"}
"""Local file extensions and the `datasets` builder that reads each."""

_UID_SEPARATOR = "\x1f"


@dataclasses.dataclass
class DataConfig:
    """Where a task's examples come from and how its columns map onto the canonical ones."""

    source: str = EMBEDDED
    """`embedded` (the built-in NLI task), a Hugging Face dataset name, or a local file or folder.
    A local file holds the train split; a folder holds one `<split>.<ext>` file per split."""
    hf_config: Optional[str] = None
    """Subset (configuration) name of a Hugging Face dataset, e.g. `mnli` of `glue`."""
    train_split: str = "train"
    """Name of the split to train on."""
    eval_splits: Optional[tuple] = None
    """Names of the splits to evaluate on; None means `("dev", "test", "ood_dev", "ood")` for the
    embedded task and none for other sources."""
    text_column: str = "text"
    """Column holding the (first) text."""
    text_pair_column: Optional[str] = "text_pair"
    """Column holding the second text of a sentence-pair task; None for single-text tasks."""
    label_column: str = "label"
    """Column holding the label: integers in [0, num_labels) or strings (see `label_names`)."""
    id_column: Optional[str] = None
    """Column of unique example ids to use as uids; None derives uids from the texts."""
    num_labels: Optional[int] = None
    """Number of classes; None infers it (from label_names, a ClassLabel, or the train split)."""
    label_names: Optional[tuple] = None
    """Class names, in label order. String labels are mapped through them; without them, the
    sorted distinct strings of the train split become the names."""
    embedded_train_size: int = 6000
    """Training examples of the embedded task (dev, test and ood_dev get 1/6 of it, ood 1/3)."""
    embedded_seed: int = 0
    """Generation seed of the embedded task."""
    validation_holdout: Optional[str] = None
    """`SPLIT:FRACTION`, e.g. `ood:0.3`: that share of SPLIT's rows, chosen by a hash of their uids,
    becomes a validation split `SPLIT_val` (added to `eval_splits`), and SPLIT keeps only the rest,
    so a task with an OOD test set but no OOD validation set can early-stop on OOD data without
    touching the rows it reports."""

    def __post_init__(self):
        require(
            isinstance(self.source, str) and self.source.strip() != "",
            f"data source must be 'embedded', a dataset name or a path, got {self.source!r}",
        )
        require(
            self.hf_config is None or (isinstance(self.hf_config, str) and self.hf_config),
            f"hf_config must be a non-empty string or None, got {self.hf_config!r}",
        )
        require(_is_name(self.train_split), f"train_split must be a non-empty string, got {self.train_split!r}")
        if self.eval_splits is None:
            self.eval_splits = ("dev", "test", "ood_dev", "ood") if self.source == EMBEDDED else ()
        elif isinstance(self.eval_splits, str):
            self.eval_splits = (self.eval_splits,)
        self.eval_splits = tuple(self.eval_splits)
        for split in self.eval_splits:
            require(_is_name(split), f"eval_splits must be non-empty strings, got {split!r}")
        require(
            len(set(self.eval_splits)) == len(self.eval_splits),
            f"eval_splits must not repeat a split, got {list(self.eval_splits)}",
        )
        for name in ("text_column", "label_column"):
            value = getattr(self, name)
            require(_is_name(value), f"{name} must be a non-empty string, got {value!r}")
        for name in ("text_pair_column", "id_column"):
            value = getattr(self, name)
            require(value is None or _is_name(value), f"{name} must be a non-empty string or None, got {value!r}")
        mapped = [c for c in self._mapped_columns().values() if c is not None]
        require(len(set(mapped)) == len(mapped), f"text, text_pair, label and id columns must differ, got {mapped}")
        require(
            self.num_labels is None or (_is_int(self.num_labels) and self.num_labels >= 2),
            f"num_labels must be an integer of at least 2, got {self.num_labels!r}",
        )
        if self.label_names is not None:
            names = self.label_names
            require(
                not isinstance(names, str) and all(_is_name(n) for n in names),
                f"label_names must be a list of non-empty strings, got {names!r}",
            )
            self.label_names = tuple(names)
            require(
                len(set(names)) == len(names) and len(names) >= 2,
                f"label_names must hold at least 2 distinct names, got {list(names)}",
            )
            require(
                self.num_labels is None or self.num_labels == len(names),
                f"num_labels={self.num_labels} disagrees with the {len(names)} label_names {list(names)}",
            )
        require(
            _is_int(self.embedded_train_size) and self.embedded_train_size >= 18,
            f"embedded_train_size must be an integer of at least 18, got {self.embedded_train_size!r}",
        )
        require(
            _is_int(self.embedded_seed) and self.embedded_seed >= 0,
            f"embedded_seed must be a non-negative integer, got {self.embedded_seed!r}",
        )
        holdout = self.holdout()
        if holdout is not None:
            source, _ = holdout
            require(
                source in self.eval_splits,
                f"validation_holdout names split {source!r}, which is not among eval_splits {list(self.eval_splits)}",
            )
            if f"{source}_val" not in self.eval_splits:
                self.eval_splits = (*self.eval_splits, f"{source}_val")

    def check_source(self) -> None:
        """Refuse a source that names a local file or folder which does not exist (a hub name is
        only known to exist once it is read)."""
        _source_kind(self.source)

    def holdout(self) -> Optional[tuple]:
        """(split, fraction) of `validation_holdout`, or None."""
        if self.validation_holdout is None:
            return None
        split, _, fraction = str(self.validation_holdout).rpartition(":")
        try:
            share = float(fraction)
        except ValueError:
            share = float("nan")
        require(
            _is_name(split) and 0 < share < 1,
            f"validation_holdout must be SPLIT:FRACTION with a fraction in (0, 1), e.g. ood:0.3, "
            f"got {self.validation_holdout!r}",
        )
        return split, share

    def _mapped_columns(self) -> dict:
        """Canonical column name -> source column name (None: not mapped)."""
        return {
            "uid": self.id_column,
            "text": self.text_column,
            "text_pair": self.text_pair_column,
            "label": self.label_column,
        }


def _is_name(value) -> bool:
    return isinstance(value, str) and value != ""


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


@dataclasses.dataclass(frozen=True)
class Split:
    """One split in canonical form (see the module docstring)."""

    name: str
    dataset: datasets.Dataset
    fingerprint: str
    num_labels: int
    label_names: tuple

    def __len__(self) -> int:
        return len(self.dataset)

    def uids(self) -> list:
        """The uids in row order (read straight from Arrow, no per-row dataset access)."""
        return self.dataset.data.column("uid").to_pylist()

    def uid_to_index(self) -> dict:
        """uid -> row position."""
        return {uid: i for i, uid in enumerate(self.uids())}

    def labels_by_uid(self) -> dict:
        """uid -> label."""
        return dict(zip(self.uids(), self.dataset.data.column("label").to_pylist()))


# -- reading raw splits ----------------------------------------------------------------------------


def _source_kind(source: str) -> str:
    """`embedded`, `local` or `hub`. Anything that looks like a path must exist locally."""
    if source == EMBEDDED:
        return "embedded"
    path = Path(source).expanduser()
    looks_like_path = source.startswith(("/", "./", "../", "~")) or path.suffix.lower() in FILE_FORMATS
    if path.exists() or looks_like_path:
        require(path.exists(), f"data source {source!r} does not exist (expected a file or folder)")
        return "local"
    return "hub"


def _local_files(source: str) -> dict:
    """Split name -> file of a folder of `<split>.<ext>` files; `{None: path}` for a single file."""
    path = Path(source).expanduser()
    if path.is_file():
        require(
            path.suffix.lower() in FILE_FORMATS,
            f"unsupported data file extension {path.suffix!r} of {path}; expected one of {', '.join(FILE_FORMATS)}",
        )
        return {None: path}
    files: dict = {}
    for child in sorted(path.iterdir()):
        if child.is_file() and child.suffix.lower() in FILE_FORMATS:
            require(
                child.stem not in files,
                f"split {child.stem!r} has two files in {path}: {files.get(child.stem)} and {child.name}",
            )
            files[child.stem] = child
    return files


def _read_local(config: DataConfig, split_name: str):
    import datasets

    files = _local_files(config.source)
    if None in files:  # a single file holds the train split
        require(
            split_name == config.train_split,
            f"data source {config.source} is a single file, which holds only the train split "
            f"{config.train_split!r}; split {split_name!r} needs a folder of <split>.<ext> files",
        )
        path = files[None]
    else:
        require(
            split_name in files,
            f"no file for split {split_name!r} in {config.source}; available splits: "
            f"{', '.join(files) or 'none'} (files named <split>.jsonl/.json/.csv/.parquet)",
        )
        path = files[split_name]
    if path.suffix.lower() != ".parquet":
        _check_utf8(path)
    try:
        return datasets.load_dataset(FILE_FORMATS[path.suffix.lower()], data_files=str(path), split="train")
    except Exception as exc:  # noqa: BLE001 - any reader failure is a problem with the user's file
        # `datasets` fails on files without rows with messages that do not say so.
        require(not _holds_no_rows(path), f"split {split_name!r} of {config.source} is empty ({path} has no rows)")
        if path.suffix.lower() == ".jsonl":
            _check_json_lines(path)
        raise FtftError(f"could not read {path}: {_first_line(exc)}") from None


def _check_utf8(path: Path) -> None:
    """Refuse a text file that is not UTF-8, naming the line of the first bad byte."""
    with open(path, "rb") as handle:
        for number, line in enumerate(handle, 1):
            try:
                line.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise FtftError(
                    f"{path} line {number} is not UTF-8 (byte {line[exc.start : exc.start + 1]!r} "
                    f"at column {exc.start + 1}); re-encode the file as UTF-8"
                ) from None


def _check_json_lines(path: Path) -> None:
    """Name the first line of a JSON-lines file that is not one JSON object (reader errors do not)."""
    for _ in iter_jsonl(path):
        pass


def _holds_no_rows(path: Path) -> bool:
    """Whether a data file is empty: no bytes, only a CSV header, `[]`, or a 0-row parquet file."""
    try:
        if path.suffix.lower() == ".parquet":
            import pyarrow.parquet as pq

            return pq.read_metadata(path).num_rows == 0
        text = path.read_text(encoding="utf-8").strip()
    except (OSError, ValueError):
        return False
    if path.suffix.lower() == ".csv":
        return len(text.splitlines()) <= 1
    return text in ("", "[]")


def _read_hub(config: DataConfig, split_name: str):
    import datasets

    try:
        return datasets.load_dataset(config.source, config.hf_config, split=split_name)
    except Exception as exc:  # noqa: BLE001 - network, missing dataset, missing split, bad config
        subset = f" (config {config.hf_config!r})" if config.hf_config else ""
        raise FtftError(
            f"could not load dataset {config.source!r}{subset} split {split_name!r}: {_first_line(exc)}"
        ) from None


def _read_raw(config: DataConfig, names: Iterable[str]) -> dict:
    """Split name -> raw `datasets.Dataset` as the source stores it, non-empty with every mapped column."""
    kind = _source_kind(config.source)
    if kind == "embedded":
        from .task import generate_task

        task = generate_task(config.embedded_train_size, config.embedded_seed)
        for name in names:
            require(name in task, f"the embedded task has no split {name!r}; available splits: {', '.join(task)}")
        raws = {n: task[n] for n in names}
    else:
        reader = _read_local if kind == "local" else _read_hub
        raws = {n: reader(config, n) for n in names}
    for name, raw in raws.items():
        _check_columns(raw, config, name)
        require(len(raw) > 0, f"split {name!r} of {config.source} is empty")
    return raws


def _check_columns(raw, config: DataConfig, split_name: str) -> None:
    for canonical, column in config._mapped_columns().items():
        if column is None or column in raw.column_names:
            continue
        hint = "; set text_pair_column to None for single-text tasks" if canonical == "text_pair" else ""
        raise FtftError(
            f"column {column!r} ({canonical} column) not found in split {split_name!r} of "
            f"{config.source}; available columns: {', '.join(raw.column_names)}{hint}"
        )


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}".rstrip(": ")


# -- labels ----------------------------------------------------------------------------------------


def _label_schema(config: DataConfig, raws: dict) -> tuple:
    """(num_labels, label_names) from the config, a ClassLabel, or else the train split's labels."""
    import datasets

    if config.label_names is not None:
        return len(config.label_names), config.label_names
    some = next(iter(raws.values()))
    feature = some.features[config.label_column]
    if isinstance(feature, datasets.ClassLabel):
        names = tuple(feature.names)
        require(
            config.num_labels is None or config.num_labels == len(names),
            f"num_labels={config.num_labels} disagrees with the {len(names)} classes {list(names)} "
            f"of label column {config.label_column!r}",
        )
        return len(names), names
    if config.num_labels is not None and not _is_string_type(some.data.column(config.label_column).type):
        return config.num_labels, tuple(str(i) for i in range(config.num_labels))
    # Inferred from the train split only, so every split maps labels the same way.
    train = raws.get(config.train_split)
    if train is None:
        train = _read_raw(config, [config.train_split])[config.train_split]
    column = train.data.column(config.label_column)
    if _is_string_type(column.type):
        names = tuple(sorted(v for v in column.unique().to_pylist() if v is not None))
        require(
            len(names) >= 2,
            f"label column {config.label_column!r} of split {config.train_split!r} "
            f"has {len(names)} distinct label(s) {list(names)}; need at least 2",
        )
        require(
            config.num_labels is None or config.num_labels == len(names),
            f"num_labels={config.num_labels} disagrees with the {len(names)} distinct labels "
            f"{list(names)} of split {config.train_split!r}",
        )
        return len(names), names
    present = sorted(set(_integer_labels(column, config, config.train_split).tolist()))
    top = present[-1]
    require(
        top >= 1,
        f"label column {config.label_column!r} of split {config.train_split!r} needs at "
        f"least 2 classes to infer num_labels; its largest label is {top}",
    )
    # Labels 0, 1, 5 would silently make a 6-class head with three classes that never occur.
    missing = sorted(set(range(top + 1)) - set(present))
    require(
        not missing,
        f"integer labels of split {config.train_split!r} are {present[:10]}: "
        f"{missing[:10]} never occur, so they are not 0..{top} without gaps; map them to "
        f"0..{len(present) - 1}, or set num_labels (or label_names) if those classes exist",
    )
    return top + 1, tuple(str(i) for i in range(top + 1))


def _is_string_type(arrow_type) -> bool:
    import pyarrow as pa

    return pa.types.is_string(arrow_type) or pa.types.is_large_string(arrow_type)


def _integer_labels(column, config: DataConfig, split_name: str):
    """Labels as an int64 numpy array; nulls, non-integral and non-numeric labels are errors."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    where = f"label column {config.label_column!r} of split {split_name!r}"
    kind = column.type
    require(
        pa.types.is_integer(kind) or pa.types.is_floating(kind), f"{where} must hold integers or strings, got {kind}"
    )
    missing = _first_true(pc.is_null(column, nan_is_null=True))
    require(missing is None, f"{where} has a missing label at row {missing}")
    values = column.to_numpy()
    fractional = np.flatnonzero(values != np.round(values))
    if len(fractional):
        row = fractional[0]
        raise FtftError(f"{where} has non-integer label {values[row].item()!r} at row {row}")
    return values.astype(np.int64)


def _first_true(mask) -> Optional[int]:
    """Row of the first true value of an Arrow boolean array, or None."""
    import pyarrow.compute as pc

    index = pc.index(mask, True).as_py()
    return None if index < 0 else index


def _canonical_labels(column, config: DataConfig, split_name: str, num_labels: int, names: tuple):
    """Labels as int64 numpy array in [0, num_labels), mapping strings through `names`."""
    import numpy as np

    where = f"split {split_name!r}"
    if _is_string_type(column.type):
        lookup = {name: i for i, name in enumerate(names)}
        values = column.to_pylist()
        out = np.empty(len(values), dtype=np.int64)
        for row, value in enumerate(values):
            code = lookup.get(value)
            if code is None:
                raise FtftError(f"label {value!r} at row {row} of {where} is not one of the label names {list(names)}")
            out[row] = code
        return out
    values = _integer_labels(column, config, split_name)
    bad = np.flatnonzero((values < 0) | (values >= num_labels))
    if len(bad):
        row = bad[0]
        raise FtftError(
            f"label {values[row]} at row {row} of {where} is out of range; expected "
            f"0..{num_labels - 1} (num_labels={num_labels})"
        )
    return values


# -- texts, uids and fingerprints ------------------------------------------------------------------


def _texts(raw, column_name: str, split_name: str) -> list:
    """The strings of a text column; missing (None / NaN) texts and non-strings are errors."""
    import pyarrow.compute as pc

    column = raw.data.column(column_name)
    require(
        _is_string_type(column.type) or column.null_count == len(column),
        f"text column {column_name!r} of split {split_name!r} must hold strings, got {column.type}",
    )
    missing = _first_true(pc.is_null(column))
    require(
        missing is None,
        f"text column {column_name!r} of split {split_name!r} has a missing (None/NaN) text at row {missing}",
    )
    return column.to_pylist()


def content_hash(text: str, text_pair: str = "") -> str:
    """16 hex chars identifying a pair of texts."""
    return hashlib.blake2b(f"{text}{_UID_SEPARATOR}{text_pair}".encode("utf-8"), digest_size=8).hexdigest()


def _uids(raw, config: DataConfig, split_name: str, hashes: list) -> list:
    """Ids as strings when an id column is mapped, else content hashes with duplicate suffixes."""
    if config.id_column is not None:
        import pyarrow.compute as pc

        column = raw.data.column(config.id_column)
        missing = _first_true(pc.is_null(column))
        require(
            missing is None, f"id column {config.id_column!r} of split {split_name!r} has a missing id at row {missing}"
        )
        uids = [str(v) for v in column.to_pylist()]
        first: dict = {}
        for row, uid in enumerate(uids):
            if uid in first:
                raise FtftError(
                    f"duplicate id {uid!r} in column {config.id_column!r} of split "
                    f"{split_name!r} (rows {first[uid]} and {row}); ids must be unique"
                )
            first[uid] = row
        return uids
    seen: dict = {}
    uids = []
    for h in hashes:
        count = seen.get(h, 0)
        seen[h] = count + 1
        uids.append(f"{h}#{count}" if count else h)
    return uids


def _fingerprint(uids: list, labels, hashes: list, columns: list, names: tuple) -> str:
    """Content fingerprint: independent of row order, path and file format."""
    digest = hashlib.blake2b(digest_size=8)
    digest.update(json.dumps({"columns": columns, "label_names": list(names)}).encode("utf-8"))
    records = sorted(f"{u}{_UID_SEPARATOR}{y}{_UID_SEPARATOR}{h}" for u, y, h in zip(uids, labels.tolist(), hashes))
    digest.update("\n".join(records).encode("utf-8"))
    return digest.hexdigest()


def _canonical(raw, config: DataConfig, split_name: str, num_labels: int, names: tuple) -> Split:
    import datasets

    texts = _texts(raw, config.text_column, split_name)
    pairs = _texts(raw, config.text_pair_column, split_name) if config.text_pair_column else None
    labels = _canonical_labels(raw.data.column(config.label_column), config, split_name, num_labels, names)
    if pairs is None:
        hashes = [content_hash(t) for t in texts]
    else:
        hashes = [content_hash(t, p) for t, p in zip(texts, pairs)]
    uids = _uids(raw, config, split_name, hashes)

    columns = ["uid", "text"] + (["text_pair"] if pairs is not None else []) + ["label"]
    fingerprint = _fingerprint(uids, labels, hashes, columns, names)
    features = datasets.Features({c: datasets.Value("int64" if c == "label" else "string") for c in columns})
    source_columns = {"text": config.text_column, "text_pair": config.text_pair_column}

    def to_canonical(batch, indices):
        out = {"uid": [uids[i] for i in indices]}
        for canonical in columns[1:-1]:
            out[canonical] = batch[source_columns[canonical]]
        out["label"] = labels[indices]
        return out

    with progress_bars(len(raw)):
        dataset = raw.map(
            to_canonical,
            batched=True,
            batch_size=10_000,
            with_indices=True,
            remove_columns=raw.column_names,
            features=features,
            new_fingerprint=fingerprint,
            desc=f"canonical {split_name}",
        )
    return Split(split_name, dataset, fingerprint, num_labels, names)


LARGE_SPLIT = 50_000
"""Splits with at least this many rows show `datasets` progress bars while they are processed."""


@contextlib.contextmanager
def progress_bars(num_rows: int):
    """Show `datasets` progress bars for large splits on rank 0 only; small ones would be noise."""
    from datasets.utils import logging as datasets_logging

    show = num_rows >= LARGE_SPLIT and os.environ.get("RANK", "0") == "0"
    was_enabled = datasets_logging.is_progress_bar_enabled()
    if not show:
        datasets_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_enabled:
            datasets_logging.enable_progress_bar()


# -- public entry points ---------------------------------------------------------------------------


def load_splits(config: DataConfig, names: Optional[Iterable[str]] = None) -> dict:
    """Load splits `names` (default: the train split and the eval splits) in canonical form.

    All splits share one label mapping (from the config, a ClassLabel or the train split), and
    the embedded task is generated once for all of them.
    """
    names = list(names) if names is not None else [config.train_split, *config.eval_splits]
    require(len(names) > 0, "no splits requested")
    holdout = config.holdout()
    held_out = f"{holdout[0]}_val" if holdout else None
    read = dict.fromkeys(holdout[0] if n == held_out else n for n in names)
    raws = _read_raw(config, read)
    num_labels, label_names = _label_schema(config, raws)
    splits = {n: _canonical(raws[n], config, n, num_labels, label_names) for n in read}
    if holdout and (held_out in names or holdout[0] in names):
        splits[holdout[0]], splits[held_out] = _hold_out(splits[holdout[0]], held_out, holdout[1])
    return {n: splits[n] for n in names}


def uid_digests(uids) -> list[int]:
    """A 64-bit hash of each uid: the one source of row choices that must not depend on row order
    or a seed (a held-out validation share, the fixed evaluation sample)."""
    return [int.from_bytes(hashlib.blake2b(uid.encode(), digest_size=8).digest(), "big") for uid in uids]


def fixed_sample(uids, size: int | None) -> list[int]:
    """Row positions of the `size` rows whose uids hash lowest, in row order (all rows when `size`
    is None or not smaller): the same rows whatever the model, seed or row order, so evaluations on
    a sample compare like with like, and a cost plan counts exactly the tokens a run evaluates."""
    uids = list(uids)
    if size is None or size >= len(uids):
        return list(range(len(uids)))
    digests = uid_digests(uids)
    return sorted(sorted(range(len(uids)), key=lambda i: (digests[i], uids[i]))[:size])


def _hold_out(split: Split, name: str, fraction: float) -> tuple:
    """`split` cut in two by a hash of each row's uid: (the rest, under its own name; the held-out
    `fraction`, as split `name`). The cut depends on the uids alone, not on row order or a seed."""
    digests = uid_digests(split.uids())
    held = [i for i, d in enumerate(digests) if d < fraction * 2**64]
    kept = sorted(set(range(len(split))) - set(held))
    require(
        held and kept,
        f"validation_holdout {fraction} of split {split.name!r} ({len(split)} rows) leaves one side empty",
    )

    def part(rows: list, part_name: str) -> Split:
        fingerprint = hashlib.sha256(f"{split.fingerprint}:{part_name}:{fraction}".encode()).hexdigest()[:16]
        rows_only = split.dataset.select(rows).flatten_indices()  # Split reads its columns from Arrow directly
        return Split(part_name, rows_only, fingerprint, split.num_labels, split.label_names)

    return part(kept, split.name), part(held, name)


def load_split(config: DataConfig, split_name: str) -> Split:
    """Load one split in canonical form (use `load_splits` for several: it reads sources once)."""
    return load_splits(config, [split_name])[split_name]
