"""Subset selection: sizes, regions, tie-breaking, stratification, determinism, subset files."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from ftft_ds.dynamics.metrics import Metrics, compute_metrics
from ftft_ds.dynamics.select import Subset, select_subset, stratified_quotas, subset_size
from ftft_ds.dynamics.store import Dynamics, encode_uids
from ftft_ds.errors import FtftError


def metrics_of(confidence, variability=None, labels=None, uids=None, **provenance) -> Metrics:
    confidence = np.asarray(confidence, np.float32)
    n = confidence.size
    variability = np.zeros(n, np.float32) if variability is None else np.asarray(variability, np.float32)
    zeros = np.zeros(n, np.int32)
    return Metrics(
        uids=encode_uids(uids if uids is not None else [f"u{i:02d}" for i in range(n)]),
        confidence=confidence,
        variability=variability,
        correctness=zeros,
        forgetfulness=zeros,
        threshold_closeness=confidence * (1 - confidence),
        labels=None if labels is None else np.asarray(labels, np.int64),
        provenance={"source_fingerprint": "src", "dataset_fingerprint": "data", **provenance},
    )


# -- sizes -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "total, fraction, expected",
    [
        (3, 0.5, 2),
        (10, 0.25, 3),
        (10, 0.35, 4),
        (10, 0.15, 2),
        (1000, 0.33, 330),
        (7, 1.0, 7),
        (7, 1, 7),
        (1, 0.5, 1),
        (10, 0.05, 1),
    ],
)
def test_fraction_rounds_half_up(total, fraction, expected):
    assert subset_size(total, fraction=fraction) == expected


@pytest.mark.parametrize("fraction", [0, 0.0, 1.5, -0.2, float("nan"), float("inf"), True, "0.5"])
def test_bad_fraction(fraction):
    with pytest.raises(FtftError, match=r"fraction .* is outside \(0, 1\]"):
        subset_size(10, fraction=fraction)


def test_bad_count_and_both_or_neither():
    assert subset_size(10, count=10) == 10
    for count in (0, 11, -1, 2.0, True):
        with pytest.raises(FtftError, match=r"count .* is outside \[1, 10\]"):
            subset_size(10, count=count)
    with pytest.raises(FtftError, match="exactly one of fraction and count"):
        subset_size(10, fraction=0.5, count=5)
    with pytest.raises(FtftError, match="exactly one of fraction and count"):
        subset_size(10)
    with pytest.raises(FtftError, match="selects none"):
        subset_size(10, fraction=0.01)


# -- regions ---------------------------------------------------------------------------------

CONF = [0.9, 0.1, 0.5, 0.8, 0.2, 0.6, 0.3, 0.7]
VAR = [0.05, 0.3, 0.4, 0.1, 0.2, 0.35, 0.25, 0.15]


@pytest.mark.parametrize(
    "region, expected",
    [
        ("ambiguous", {"u02", "u05", "u01"}),
        ("hard", {"u01", "u04", "u06"}),
        ("easy", {"u00", "u03", "u07"}),
    ],
)
def test_regions_pick_extremes(region, expected):
    subset = select_subset(metrics_of(CONF, VAR), region, count=3)
    assert set(subset.uids) == expected
    assert subset.uids == sorted(subset.uids)  # store order


def test_both_ends():
    subset = select_subset(metrics_of(CONF, VAR), "both-ends", count=5)
    # floor(5 / 2) = 2 easiest, then the 3 hardest
    assert set(subset.uids) == {"u00", "u03", "u01", "u04", "u06"}
    # all scores equal: the two halves still never overlap
    flat = select_subset(metrics_of([0.5] * 6), "both-ends", count=6)
    assert sorted(flat.uids) == [f"u{i:02d}" for i in range(6)]
    assert select_subset(metrics_of(CONF, VAR), "both-ends", count=1).uids == ["u01"]


def test_ties_broken_by_uid():
    uids = ["d", "b", "e", "a", "c", "f"]
    m = metrics_of([0.5] * 6, [0.2, 0.2, 0.2, 0.2, 0.2, 0.9], uids=uids)
    assert select_subset(m, "ambiguous", count=3).uids == ["b", "a", "f"]  # f first by score; a, b by uid
    assert set(select_subset(m, "hard", count=2).uids) == {"a", "b"}
    # Long uids sharing a prefix longer than one 8-byte word.
    long = [f"shared-prefix-{c}" for c in "zyxw"]
    assert set(select_subset(metrics_of([0.5] * 4, uids=long), "easy", count=2).uids) == {
        "shared-prefix-w",
        "shared-prefix-x",
    }


def test_random_is_seeded_and_independent_of_scores():
    m = metrics_of(np.linspace(0, 1, 200))
    a = select_subset(m, "random", fraction=0.3, seed=1)
    assert a.uids == select_subset(m, "random", fraction=0.3, seed=1).uids
    assert set(a.uids) != set(select_subset(m, "random", fraction=0.3, seed=2).uids)
    shuffled = metrics_of(np.random.default_rng(0).random(200))
    assert set(select_subset(shuffled, "random", fraction=0.3, seed=1).uids) == set(a.uids)
    assert len(a.uids) == 60 and a.manifest["rule"]["seed"] == 1


# -- stratification --------------------------------------------------------------------------


def test_quotas_largest_remainder():
    assert stratified_quotas([5, 3, 2], 5).tolist() == [3, 1, 1]  # remainders .5/.5/0: the tie goes to label 0
    assert stratified_quotas([1, 1, 1], 2).tolist() == [1, 1, 0]
    assert stratified_quotas([10, 0, 30], 40).tolist() == [10, 0, 30]
    rng = np.random.default_rng(0)
    for _ in range(200):
        counts = rng.integers(0, 50, rng.integers(1, 8))
        if counts.sum() == 0:
            continue
        size = int(rng.integers(0, counts.sum() + 1))
        quotas = stratified_quotas(counts, size)
        assert quotas.sum() == size
        exact = counts * size / counts.sum()
        assert np.all(np.abs(quotas - exact) < 1) and np.all(quotas <= counts)


def test_stratified_selection_follows_quotas_and_region_within_labels():
    rng = np.random.default_rng(5)
    labels = np.repeat([0, 1, 2], [50, 30, 20])
    rng.shuffle(labels)
    variability = rng.random(100)
    m = metrics_of(rng.random(100), variability, labels=labels)
    subset = select_subset(m, "ambiguous", fraction=0.25, stratify=True)
    assert subset.manifest["counts_per_label"] == {"0": 13, "1": 7, "2": 5}  # 12.5 / 7.5 / 5
    chosen = {int(u[1:]) for u in subset.uids}
    for label, quota in ((0, 13), (1, 7), (2, 5)):
        rows = np.flatnonzero(labels == label)
        top = rows[np.argsort(-variability[rows].astype(np.float32), kind="stable")][:quota]
        assert chosen & set(rows.tolist()) == set(top.tolist())


def test_stratify_needs_labels():
    with pytest.raises(FtftError, match="needs labels"):
        select_subset(metrics_of(CONF), "easy", count=2, stratify=True)


# -- sources and manifests -------------------------------------------------------------------


def _dynamics(n=40, seed=0):
    rng = np.random.default_rng(seed)
    return Dynamics.create(
        [f"x{i}" for i in range(n)],
        rng.integers(0, 3, n),
        rng.standard_normal((n, 4, 3)).astype(np.float32),
        dataset_fingerprint="data-fp",
    )


def test_from_dynamics_equals_from_metrics():
    dyn = _dynamics()
    direct = select_subset(dyn, "hard", fraction=0.3, burn_out=3, variability="ci")
    via = select_subset(compute_metrics(dyn, burn_out=3, variability="ci"), "hard", fraction=0.3)
    assert direct.uids == via.uids
    rule = direct.manifest["rule"]
    assert rule == {
        "region": "hard",
        "fraction": 0.3,
        "count": None,
        "stratify": False,
        "seed": 0,
        "burn_out": 3,
        "variability": "ci",
    }
    assert direct.manifest["source_fingerprint"] == dyn.fingerprint
    assert direct.manifest["dataset_fingerprint"] == "data-fp"
    assert direct.manifest["num_selected"] == 12 and direct.manifest["num_total"] == 40
    assert sum(direct.manifest["counts_per_label"].values()) == 12
    assert {"created", "versions"} <= direct.manifest.keys()


def test_metrics_cannot_be_recomputed():
    m = compute_metrics(_dynamics())
    with pytest.raises(FtftError, match="burn_out 2 cannot be applied"):
        select_subset(m, "easy", count=3, burn_out=2)
    with pytest.raises(FtftError, match="variability 'ci' cannot be applied"):
        select_subset(m, "easy", count=3, variability="ci")
    with pytest.raises(FtftError, match="region 'middle' is not one of"):
        select_subset(m, "middle", count=3)


def test_subset_file_round_trip(tmp_path: Path):
    subset = select_subset(_dynamics(), "ambiguous", count=10, stratify=True)
    path = subset.save(tmp_path / "subset.json")
    data = json.loads(path.read_text())
    assert set(data) == {"manifest", "uids"}
    back = Subset.load(path)
    assert back.uids == subset.uids and back.manifest == subset.manifest
    back.check_dataset("data-fp", {f"x{i}" for i in range(40)})
    back.check_dataset(None)
    with pytest.raises(FtftError, match=f"subset {path} was selected on dataset data-fp, not other"):
        back.check_dataset("other")
    with pytest.raises(FtftError, match=r"10 of the 10 uids of subset .* are not in the dataset \(e.g. 'x"):
        back.check_dataset("data-fp", ["y1", "y2"])


@pytest.mark.parametrize(
    "content, expected",
    [
        ("{broken", "is not valid JSON"),
        ('{"uids": ["a"]}', "must be a JSON object with a 'manifest' object and a 'uids' list"),
        ('{"manifest": {}, "uids": []}', "selects no uids"),
        ('{"manifest": {}, "uids": ["a", 3]}', "uid 3 is not a string"),
        ('{"manifest": {}, "uids": ["a", "b", "a"]}', "uid 'a' occurs more than once"),
        ('{"manifest": {"num_selected": 3}, "uids": ["a", "b"]}', "lists 2 uids but its manifest says num_selected=3"),
    ],
)
def test_subset_load_refuses_malformed(tmp_path: Path, content: str, expected: str):
    path = tmp_path / "subset.json"
    path.write_text(content)
    with pytest.raises(FtftError) as excinfo:
        Subset.load(path)
    assert expected in str(excinfo.value) and "\n" not in str(excinfo.value)
