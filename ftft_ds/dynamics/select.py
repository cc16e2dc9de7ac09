"""Choosing the training subset from a data map.

Regions (cartography's names; "best" means selected first):

    ambiguous   highest variability
    hard        lowest confidence (hard-to-learn)
    easy        highest confidence (easy-to-learn)
    random      a seeded uniform sample, independent of the metric values
    both-ends   half of the examples (rounded down) from the easy end of confidence, the rest
                from the hard end; the two halves never overlap

The size is `count`, or `fraction` of all examples rounded half up (the fraction is taken as the
decimal it is written as, so 0.35 of 10 is 4 despite binary floating point). Equal scores are
broken by ascending uid, so a selection never depends on the order of the store. With
`stratify=True` every label gets a quota proportional to its share of the examples (largest
remainder, ties to the lower label id, so quotas sum exactly to the size), and the region rule is
applied within each label.

The selected uids are listed in store order (the order of the dynamics, normally the dataset's):
which examples are in is the rule's business, the order is not, and keeping the store's order
spares sorting millions of scores.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path

import numpy as np

from ..errors import FtftError, require
from ..io import atomic_path, read_json, versions
from .metrics import Metrics, compute_metrics
from .store import Dynamics, decode_uids, uid_order, utc_timestamp

REGIONS = ("ambiguous", "hard", "easy", "random", "both-ends")


@dataclass(eq=False)
class Subset:
    """The uids a rule selected (in store order) and a manifest of how and from what."""

    uids: list[str]
    manifest: dict = field(default_factory=dict)
    path: Path | None = field(default=None, repr=False)

    def save(self, path: str | os.PathLike) -> Path:
        """Write `{"manifest": ..., "uids": [...]}` as one JSON file, atomically."""
        path = Path(path)
        with atomic_path(path) as tmp:
            # The uid list goes through the fast compact encoder; only the manifest is indented.
            tmp.write_text(
                '{"manifest": '
                + json.dumps(self.manifest, indent=2, sort_keys=True)
                + ',\n"uids": '
                + json.dumps(self.uids)
                + "}\n",
                encoding="utf-8",
            )
        self.path = path
        return path

    @classmethod
    def load(cls, path: str | os.PathLike) -> "Subset":
        """Read and validate a subset file written by `save`."""
        path = Path(path)
        data = read_json(path, what="subset file")
        require(
            isinstance(data, dict) and isinstance(data.get("manifest"), dict) and isinstance(data.get("uids"), list),
            f"subset file {path} must be a JSON object with a 'manifest' object and a 'uids' list",
        )
        uids = data["uids"]
        require(bool(uids), f"subset file {path} selects no uids")
        bad = next((u for u in uids if not isinstance(u, str)), None)
        require(bad is None, f"subset file {path}: uid {bad!r} is not a string")
        if len(set(uids)) != len(uids):
            seen: set[str] = set()
            duplicate = next(u for u in uids if u in seen or seen.add(u))
            raise FtftError(f"subset file {path}: uid {duplicate!r} occurs more than once")
        manifest = data["manifest"]
        declared = manifest.get("num_selected")
        require(
            declared is None or declared == len(uids),
            f"subset file {path} lists {len(uids)} uids but its manifest says num_selected={declared}",
        )
        return cls(uids, manifest, path)

    def check_dataset(self, fingerprint: str | None, uids_in_dataset: Iterable[str] | None = None) -> None:
        """Refuse a dataset other than the one the subset was selected on, or one lacking its uids."""
        mine = self.manifest.get("dataset_fingerprint")
        name = f"subset {self.path}" if self.path is not None else "the subset"
        if mine is not None and fingerprint is not None:
            require(mine == fingerprint, f"{name} was selected on dataset {mine}, not {fingerprint}")
        if uids_in_dataset is not None:
            known = uids_in_dataset if isinstance(uids_in_dataset, (AbstractSet, Mapping)) else set(uids_in_dataset)
            missing = [u for u in self.uids if u not in known]
            if missing:
                raise FtftError(
                    f"{len(missing)} of the {len(self.uids)} uids of {name} are not in the dataset "
                    f"(e.g. {missing[0]!r})"
                )


def subset_size(total: int, fraction: float | None = None, count: int | None = None) -> int:
    """The number of examples to select: `count`, or `fraction * total` rounded half up."""
    require((fraction is None) != (count is None), "give exactly one of fraction and count")
    if count is not None:
        require(
            isinstance(count, (int, np.integer)) and not isinstance(count, bool) and 1 <= count <= total,
            f"count {count!r} is outside [1, {total}], the number of examples",
        )
        return int(count)
    require(
        isinstance(fraction, (int, float, np.floating)) and not isinstance(fraction, bool) and 0 < fraction <= 1,
        f"fraction {fraction!r} is outside (0, 1]",
    )
    size = int((Decimal(repr(float(fraction))) * total).to_integral_value(rounding=ROUND_HALF_UP))
    require(size >= 1, f"fraction {fraction!r} of {total} examples selects none; use a larger fraction")
    return size


def stratified_quotas(label_counts: np.ndarray, size: int) -> np.ndarray:
    """Per-label quotas proportional to `label_counts` that sum exactly to `size`.

    Each label gets floor(size * n_l / N); the remaining places go to the largest remainders,
    equal remainders to the lower label id. Integer arithmetic, so no rounding surprises.
    """
    counts = np.asarray(label_counts, dtype=np.int64)
    total = int(counts.sum())
    require(0 <= size <= total, f"cannot take {size} of {total} examples")
    quotas, remainders = np.divmod(counts * size, total)
    short = size - int(quotas.sum())
    order = np.lexsort((np.arange(counts.size), -remainders))
    quotas[order[:short]] += 1
    return quotas


def select_subset(
    source: Dynamics | Metrics,
    region: str,
    fraction: float | None = None,
    count: int | None = None,
    stratify: bool = False,
    seed: int = 0,
    burn_out: int | None = None,
    variability: str | None = None,
) -> Subset:
    """Select examples of `region` from dynamics (metrics computed here) or from metrics.

    `burn_out` and `variability` (default "population") shape metrics computed from dynamics;
    metrics already computed can only be taken as they are.
    """
    require(region in REGIONS, f"region {region!r} is not one of {', '.join(REGIONS)}")
    require(isinstance(seed, (int, np.integer)) and not isinstance(seed, bool), f"seed {seed!r} is not an integer")
    if isinstance(source, Dynamics):
        variability = variability or "population"
        metrics = compute_metrics(source, variability=variability, burn_out=burn_out)
    else:
        metrics = source
        for name, wanted in (("burn_out", burn_out), ("variability", variability)):
            recorded = metrics.provenance.get(name)
            require(
                wanted is None or wanted == recorded,
                f"{name} {wanted!r} cannot be applied to metrics already computed (with {name} {recorded!r}); "
                "select from the dynamics directory instead",
            )
        burn_out, variability = metrics.provenance.get("burn_out"), metrics.provenance.get("variability")
    total = metrics.num_examples
    size = subset_size(total, fraction, count)
    labels = None if metrics.labels is None else np.asarray(metrics.labels)
    require(not stratify or labels is not None, "stratified selection needs labels, which these metrics lack")

    parts = _region_keys(region, metrics, seed)
    chosen = np.zeros(total, bool)
    if stratify:
        groups, label_counts = _label_groups(labels)
        for rows, quota in zip(groups, stratified_quotas(label_counts, size)):
            chosen[_pick(parts, metrics.uids, rows, int(quota))] = True
    else:
        chosen[_pick(parts, metrics.uids, None, size)] = True
    selected = np.flatnonzero(chosen)

    manifest = {
        "source_fingerprint": metrics.provenance.get("source_fingerprint"),
        "dataset_fingerprint": metrics.provenance.get("dataset_fingerprint"),
        "rule": {
            "region": region,
            "fraction": fraction,
            "count": count,
            "stratify": stratify,
            "seed": int(seed),
            "burn_out": burn_out,
            "variability": variability,
        },
        "num_selected": int(selected.size),
        "num_total": total,
        "created": utc_timestamp(),
        "versions": versions(),
    }
    if labels is not None:
        per_label = np.bincount(labels[selected], minlength=int(labels.max()) + 1)
        manifest["counts_per_label"] = {str(k): int(v) for k, v in enumerate(per_label)}
    return Subset(decode_uids(metrics.uids[selected]), manifest)


def _region_keys(region: str, metrics: Metrics, seed: int) -> list[tuple[np.ndarray, float]]:
    """The region as (key, share) parts: lower key = selected first, share of the size per part.

    A share of 0.5 means floor(half); the last part always takes what is left.
    """
    if region == "ambiguous":
        return [(-metrics.variability, 1.0)]
    if region == "hard":
        return [(metrics.confidence, 1.0)]
    if region == "easy":
        return [(-metrics.confidence, 1.0)]
    if region == "random":
        return [(np.random.default_rng(seed).permutation(metrics.num_examples), 1.0)]
    return [(-metrics.confidence, 0.5), (metrics.confidence, 1.0)]


def _label_groups(labels: np.ndarray) -> tuple[list[np.ndarray], np.ndarray]:
    """Row indices of each label (ascending) and the label counts."""
    counts = np.bincount(labels)
    order = np.argsort(labels, kind="stable")
    return np.split(order, np.cumsum(counts)[:-1]), counts


def _pick(parts: list[tuple[np.ndarray, float]], uids: np.ndarray, rows: np.ndarray | None, size: int) -> np.ndarray:
    """Indices of `size` examples from `rows` (None: all), filled part by part without overlap."""
    picked = []
    available = rows
    left = size
    for i, (key, share) in enumerate(parts):
        last = i == len(parts) - 1
        take = left if last else int(size * share)
        picked.append(_best(key, uids, available, take))
        left -= take
        if not last:
            taken = np.zeros(key.size, bool)
            taken[picked[-1]] = True
            pool = np.arange(key.size) if available is None else available
            available = pool[~taken[pool]]
    return np.concatenate(picked)


def _best(key: np.ndarray, uids: np.ndarray, rows: np.ndarray | None, k: int) -> np.ndarray:
    """Indices of the k rows (of `rows`, None: all) with the smallest key, equal keys by uid.

    A partition finds the k-th smallest key; everything strictly below it is in, and only the
    rows tied at that threshold are sorted by uid to decide which of them make it.
    """
    values = key if rows is None else key[rows]
    if k <= 0:
        return np.zeros(0, dtype=np.intp)
    if k >= values.size:
        return np.arange(values.size) if rows is None else rows
    threshold = np.partition(values, k - 1)[k - 1]
    better = np.flatnonzero(values < threshold)
    tied = np.flatnonzero(values == threshold)
    tied = tied[uid_order(uids[tied if rows is None else rows[tied]])][: k - better.size]
    chosen = np.concatenate([better, tied])
    return chosen if rows is None else rows[chosen]
