"""Data-map metrics of every example, from its logits across epochs.

The definitions are those of dataset cartography (Swayamdipta et al., 2020) so that numbers and
selections agree with the reference implementation; p[n, e] is the softmax probability of the gold
label of example n at epoch e:

    confidence           mean over epochs of p
    variability          population standard deviation of p over epochs; with variability="ci"
                         sqrt(var + var^2 / (E - 1)), cartography's --include_ci
    correctness          number of epochs at which argmax(logits) is the gold label (first index
                         wins a tie, as in np.argmax); correctness_fraction = correctness / E
    forgetfulness        1000 if never predicted correctly, else the number of correct -> incorrect
                         transitions between consecutive epochs (Toneva et al., 2019)
    threshold_closeness  confidence * (1 - confidence)
    aum                  area under the margin (Pleiss et al., 2020): mean over epochs of the gold
                         logit minus the largest other logit

`burn_out=E'` uses only the first E' epochs, like cartography's --burn_out.

The logits are processed in chunks of about two million values, each rearranged to (classes,
epochs, examples) so that every step is an operation on contiguous vectors: a store of
10M x 5 x 3 takes about a second and a few hundred MB beyond the memory-mapped file. The gold
probability is 1 / sum_c exp(x_c - x_gold), which needs no max-shift to be stable: an overflowing
term only drives p to its limit, 0.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import FtftError, require
from ..io import atomic_path, iter_jsonl, read_json, versions, write_json
from .store import (
    Dynamics,
    chunk_bounds,
    chunk_rows,
    decode_uids,
    encode_uids,
    first_duplicate,
    show_uid,
    utc_timestamp,
)

VARIABILITY_MODES = ("population", "ci")

#: Cartography's forgetfulness for an example that was never predicted correctly.
NEVER_LEARNT = 1000

#: The keys of cartography's td_metrics.jsonl, in its order; ours adds the three after them.
CARTOGRAPHY_KEYS = ("guid", "index", "threshold_closeness", "confidence", "variability", "correctness", "forgetfulness")
EXTRA_KEYS = ("correctness_fraction", "aum", "label")


@dataclass(eq=False)
class Metrics:
    """Per-example data-map metrics, aligned with `uids` (bytes, as in the store).

    `labels`, `correctness_fraction`, `aum` and `num_epochs` are None when the metrics were read
    from cartography's td_metrics.jsonl, which does not carry them; `forgetfulness` and
    `threshold_closeness` too when it is the 5-key file cartography released (guid, index,
    confidence, variability, correctness). `provenance` records what the
    metrics were computed from: source_fingerprint, dataset_fingerprint, burn_out, variability.
    """

    uids: np.ndarray
    confidence: np.ndarray
    variability: np.ndarray
    correctness: np.ndarray
    forgetfulness: np.ndarray | None = None
    threshold_closeness: np.ndarray | None = None
    labels: np.ndarray | None = None
    correctness_fraction: np.ndarray | None = None
    aum: np.ndarray | None = None
    num_epochs: int | None = None
    provenance: dict = field(default_factory=dict)

    @property
    def num_examples(self) -> int:
        return int(self.uids.shape[0])

    def summary(self) -> dict:
        """A few headline numbers for logs and the CLI."""
        out = {
            "examples": self.num_examples,
            "epochs": self.num_epochs,
            "mean_confidence": float(self.confidence.mean(dtype=np.float64)),
            "mean_variability": float(self.variability.mean(dtype=np.float64)),
        }
        if self.forgetfulness is not None:
            out["never_learnt"] = int((self.forgetfulness == NEVER_LEARNT).sum())
        if self.correctness_fraction is not None:
            out["mean_correctness"] = float(self.correctness_fraction.mean(dtype=np.float64))
        if self.aum is not None:
            out["mean_aum"] = float(self.aum.mean(dtype=np.float64))
        return out


def compute_metrics(
    dyn: Dynamics,
    *,
    variability: str = "population",
    burn_out: int | None = None,
    eval_pass: bool = False,
) -> Metrics:
    """Cartography's metrics (plus AUM) of every example of `dyn`.

    `eval_pass=True` reads the logits of the eval-mode pass recorded at each epoch end instead of
    those of the training forward pass.
    """
    require(
        variability in VARIABILITY_MODES, f"variability {variability!r} is not one of {', '.join(VARIABILITY_MODES)}"
    )
    epochs = dyn.num_epochs if burn_out is None else burn_out
    require(
        isinstance(epochs, int) and not isinstance(epochs, bool) and 1 <= epochs <= dyn.num_epochs,
        f"burn-out {burn_out!r} is outside [1, {dyn.num_epochs}], the epochs recorded in {dyn.describe()}",
    )
    require(
        variability != "ci" or epochs >= 2,
        "variability 'ci' divides by (epochs - 1) and needs at least 2 epochs",
    )
    if eval_pass:
        require(dyn.eval_logits is not None, f"{dyn.describe()} have no eval-pass logits (eval_logits.npy)")
        logits = dyn.eval_logits
    else:
        logits = dyn.logits

    n, classes = dyn.num_examples, dyn.num_labels
    out = {
        "confidence": np.empty(n, np.float32),
        "variability": np.empty(n, np.float32),
        "threshold_closeness": np.empty(n, np.float32),
        "aum": np.empty(n, np.float32),
        "correctness": np.empty(n, np.int32),
        "forgetfulness": np.empty(n, np.int32),
    }
    kernel = _ChunkKernel(min(n, chunk_rows(epochs * classes)), epochs, classes, variability)
    for start, stop in chunk_bounds(n, epochs * classes):
        kernel(
            logits[start:stop, :epochs], np.asarray(dyn.labels[start:stop]), {k: v[start:stop] for k, v in out.items()}
        )

    return Metrics(
        uids=dyn.uids,
        labels=dyn.labels,
        correctness_fraction=(out["correctness"] / np.float32(epochs)).astype(np.float32),
        num_epochs=epochs,
        provenance={
            "source_fingerprint": dyn.fingerprint,
            "dataset_fingerprint": dyn.dataset_fingerprint,
            "burn_out": burn_out,
            "variability": variability,
            "eval_pass": eval_pass,
        },
        **out,
    )


class _ChunkKernel:
    """Computes the metrics of one chunk of rows into slices of the output arrays.

    The chunk is rearranged to (classes, epochs, rows), so every per-class and per-epoch step is
    an operation on contiguous vectors and every reduction over epochs is a handful of vector
    additions. Working buffers are allocated once for the largest chunk and reused, since fresh
    allocations (page faults) would cost more than the arithmetic.
    """

    #: Rows transposed at a time, so that the source block stays in cache.
    BLOCK = 8192

    def __init__(self, rows: int, epochs: int, classes: int, variability: str):
        self.epochs, self.classes, self.variability = epochs, classes, variability
        cube, plane = classes * epochs * rows, epochs * rows
        self._planes = np.empty(cube, np.float32)
        self._work = np.empty(cube, np.float32)
        self._bias = np.empty(classes * rows, np.float32)
        self._gold = np.empty(plane, np.float32)
        self._other = np.empty(plane, np.float32)
        self._prob = np.empty(plane, np.float32)
        self._dev = np.empty(plane, np.float64)
        self._correct = np.empty(plane, bool)
        self._flags = np.empty(plane, bool)
        # _masks[0][c, k] = 0 where c == k else -inf keeps only the gold class; _masks[1] drops it.
        eye = np.eye(classes, dtype=bool)
        self._masks = [np.where(keep, np.float32(0), np.float32(-np.inf)) for keep in (eye, ~eye)]

    def __call__(self, logits: np.ndarray, labels: np.ndarray, out: dict[str, np.ndarray]) -> None:
        rows, epochs, classes = logits.shape[0], self.epochs, self.classes
        cube, plane = (classes, epochs, rows), (epochs, rows)
        planes = self._planes[: np.prod(cube)].reshape(cube)
        work = self._work[: np.prod(cube)].reshape(cube)
        bias = self._bias[: classes * rows].reshape(classes, rows)
        gold, other, prob = (b[: epochs * rows].reshape(plane) for b in (self._gold, self._other, self._prob))
        correct, flags = (b[: epochs * rows].reshape(plane) for b in (self._correct, self._flags))

        for start in range(0, rows, self.BLOCK):
            np.copyto(planes[:, :, start : start + self.BLOCK], logits[start : start + self.BLOCK].transpose(2, 1, 0))

        # The gold logit and the largest other one: a max over classes after a -inf bias.
        for mask, target in zip(self._masks, (gold, other)):
            np.take(mask, labels, axis=1, out=bias)
            np.add(planes, bias[:, None, :], out=work)
            np.maximum.reduce(work, axis=0, out=target)

        # argmax == gold: the gold logit beats every other one, or ties only with later classes.
        np.greater(gold, other, out=correct)
        np.equal(gold, other, out=flags)
        if flags.any():
            e, r = np.nonzero(flags)
            earlier = np.arange(classes)[:, None] < labels[r][None, :]
            correct[e, r] = ~((planes[:, e, r] == gold[e, r]) & earlier).any(axis=0)

        # p_gold = 1 / sum over classes of exp(x_c - x_gold); the gold term is exactly 1.
        with np.errstate(over="ignore"):  # an overflow drives p to its limit, 0
            np.subtract(planes, gold, out=work)
            np.exp(work, out=work)
        np.add.reduce(work, axis=0, out=prob)
        np.reciprocal(prob, out=prob)

        confidence = np.add.reduce(prob, axis=0, dtype=np.float64) / epochs
        dev = self._dev[: epochs * rows].reshape(plane)
        np.subtract(prob, confidence, out=dev)
        np.square(dev, out=dev)
        var = np.add.reduce(dev, axis=0) / epochs
        if self.variability == "ci":
            var += var * var / (epochs - 1)
        out["confidence"][:] = confidence
        out["variability"][:] = np.sqrt(var)
        out["threshold_closeness"][:] = confidence * (1.0 - confidence)

        # Sums in float64: the margin of extreme float32 logits need not fit in float32.
        margin = np.add.reduce(gold, axis=0, dtype=np.float64) - np.add.reduce(other, axis=0, dtype=np.float64)
        out["aum"][:] = margin / epochs

        np.add.reduce(correct, axis=0, dtype=np.int32, out=out["correctness"])
        # A forgetting event: correct at epoch e, wrong at e + 1 (for booleans, a > b is a and not b).
        forgets = flags[: epochs - 1]
        np.greater(correct[:-1], correct[1:], out=forgets)
        forgotten = np.add.reduce(forgets, axis=0, dtype=np.int32)
        out["forgetfulness"][:] = np.where(out["correctness"] > 0, forgotten, NEVER_LEARNT)


# -- td_metrics.jsonl ---------------------------------------------------------------------------


def metrics_manifest_path(path: str | os.PathLike) -> Path:
    """Where the manifest describing a metrics file lives: beside it, `<name>.manifest.json`."""
    p = Path(path)
    return p.with_name(p.name + ".manifest.json")


def _file_hash(path: Path) -> str:
    digest = hashlib.blake2b(digest_size=16)
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


def _json_floats(values: np.ndarray) -> list[str]:
    """float32 values as the shortest decimal strings that read back to the same float32."""
    return np.asarray(values, dtype=np.float32).astype(str).tolist()


def write_metrics_jsonl(metrics: Metrics, path: str | os.PathLike) -> Path:
    """Write one JSON object per example, cartography's td_metrics keys first, plus a manifest.

    The file reads back in cartography's own tools; `<name>.manifest.json` beside it records the
    provenance and a hash of the file, so a later selection knows which dynamics and dataset the
    metrics came from.
    """
    path = Path(path)
    require(
        metrics.labels is not None and metrics.aum is not None and metrics.correctness_fraction is not None,
        "these metrics lack labels/aum/correctness_fraction (read from cartography's td_metrics); "
        "write metrics computed from dynamics",
    )
    template = (
        '{{"guid": {}, "index": {}, "threshold_closeness": {}, "confidence": {}, "variability": {}, '
        '"correctness": {}, "forgetfulness": {}, "correctness_fraction": {}, "aum": {}, "label": {}}}\n'
    )
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as f:
        for start, stop in chunk_bounds(metrics.num_examples, 16):
            columns = (
                [json.dumps(u) for u in decode_uids(metrics.uids[start:stop])],
                range(start, stop),
                _json_floats(metrics.threshold_closeness[start:stop]),
                _json_floats(metrics.confidence[start:stop]),
                _json_floats(metrics.variability[start:stop]),
                metrics.correctness[start:stop].tolist(),
                metrics.forgetfulness[start:stop].tolist(),
                _json_floats(metrics.correctness_fraction[start:stop]),
                _json_floats(metrics.aum[start:stop]),
                np.asarray(metrics.labels[start:stop]).tolist(),
            )
            f.writelines(template.format(*row) for row in zip(*columns))
    write_json(
        metrics_manifest_path(path),
        {
            **metrics.provenance,
            "num_examples": metrics.num_examples,
            "num_epochs": metrics.num_epochs,
            "file_hash": _file_hash(path),
            "created": utc_timestamp(),
            "versions": versions(),
        },
    )
    return path


def read_metrics_jsonl(path: str | os.PathLike) -> Metrics:
    """Read metrics written by `write_metrics_jsonl` or cartography's td_metrics.jsonl.

    Cartography's guids may be integers; they become strings. guid, confidence, variability and
    correctness are required (cartography's released files hold just these and `index`), the
    other metrics are read when the first line has them, and then every line must carry them.
    Lines are parsed in batches into arrays so that memory stays proportional to the arrays, not to
    millions of Python objects.
    """
    path = Path(path)
    require(path.is_file(), f"metrics file not found: {path}")
    file_hash = _file_hash(path)
    manifest = _read_sidecar(path, file_hash)
    batches: list[dict[str, np.ndarray]] = []
    keys: tuple[str, ...] = ()
    for numbers, records in _record_batches(path):
        if not keys:
            keys = (*_REQUIRED_KEYS, *(k for k in (*_OPTIONAL_KEYS, *EXTRA_KEYS) if k in records[0]))
        batches.append(_columns(path, keys, numbers, records))
    require(bool(batches), f"metrics file {path} holds no examples")
    arrays = {key: np.concatenate([b[key] for b in batches]) for key in keys}
    require("label" not in arrays or arrays["label"].min() >= 0, f"{path}: a label is negative")
    uids = arrays.pop("guid")
    duplicate = first_duplicate(uids)
    if duplicate is not None:
        raise FtftError(f"{path}: guid {show_uid(duplicate)} occurs more than once")

    def optional(key: str, dtype: type) -> np.ndarray | None:
        return arrays[key].astype(dtype) if key in arrays else None

    return Metrics(
        uids=uids,
        confidence=arrays["confidence"].astype(np.float32),
        variability=arrays["variability"].astype(np.float32),
        correctness=arrays["correctness"].astype(np.int32),
        forgetfulness=optional("forgetfulness", np.int32),
        threshold_closeness=optional("threshold_closeness", np.float32),
        labels=optional("label", np.int64),
        correctness_fraction=optional("correctness_fraction", np.float32),
        aum=optional("aum", np.float32),
        num_epochs=manifest.get("num_epochs"),
        provenance={
            "source_fingerprint": file_hash,
            "dataset_fingerprint": manifest.get("dataset_fingerprint"),
            "dynamics_fingerprint": manifest.get("source_fingerprint"),
            "burn_out": manifest.get("burn_out"),
            "variability": manifest.get("variability"),
        },
    )


_OPTIONAL_KEYS = ("threshold_closeness", "forgetfulness")
_REQUIRED_KEYS = tuple(k for k in CARTOGRAPHY_KEYS if k != "index" and k not in _OPTIONAL_KEYS)
_INTEGER_KEYS = ("correctness", "forgetfulness", "label")
_BATCH_LINES = 1 << 20


def _record_batches(path: Path):
    """(line numbers, parsed objects) in batches of about a million non-blank lines."""
    numbers: list[int] = []
    records: list[dict] = []
    for number, record in iter_jsonl(path):
        numbers.append(number)
        records.append(record)
        if len(records) == _BATCH_LINES:
            yield numbers, records
            numbers, records = [], []
    if records:
        yield numbers, records


def _columns(path: Path, keys: tuple[str, ...], numbers: list[int], records: list[dict]) -> dict[str, np.ndarray]:
    """One batch of records as arrays, refusing missing keys, bad guids and non-finite numbers."""
    out = {}
    for key in keys:
        try:
            values = [r[key] for r in records]
        except KeyError:
            line = next(n for n, r in zip(numbers, records) if key not in r)
            raise FtftError(f"{path} line {line} lacks the key {key!r}") from None
        if key == "guid":
            for line, guid in zip(numbers, values):
                if isinstance(guid, bool) or not isinstance(guid, (int, str)):
                    raise FtftError(f"{path} line {line}: guid {guid!r} is neither a string nor an integer")
            out[key] = encode_uids(values)
            continue
        try:
            array = np.array(values, dtype=np.float64)
            ok = array.ndim == 1 and bool(np.isfinite(array).all())
        except (TypeError, ValueError):
            ok = False
        if ok and key in _INTEGER_KEYS:
            ok = bool((array == np.round(array)).all())
        if not ok:
            line, value = next(
                (n, v)
                for n, v in zip(numbers, values)
                if isinstance(v, bool)
                or not isinstance(v, (int, float))
                or not math.isfinite(v)
                or (key in _INTEGER_KEYS and v != round(v))
            )
            kind = "an integer" if key in _INTEGER_KEYS else "a finite number"
            raise FtftError(f"{path} line {line}: {key} is {value!r}, not {kind}")
        out[key] = array
    return out


def _read_sidecar(path: Path, file_hash: str) -> dict:
    """The manifest beside a metrics file, if there is one and it describes this very file."""
    sidecar = metrics_manifest_path(path)
    if not sidecar.exists():
        return {}
    manifest = read_json(sidecar, what="metrics manifest")
    require(
        isinstance(manifest, dict) and manifest.get("file_hash") == file_hash,
        f"metrics manifest {sidecar} does not describe {path} (the file changed after it was written); "
        "remove the manifest or recompute the metrics",
    )
    return manifest
