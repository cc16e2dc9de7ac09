"""Data-map metrics against hand-computed values and a plain-Python rendering of cartography's code."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from ftft_ds.dynamics import store as store_module
from ftft_ds.dynamics.metrics import (
    Metrics,
    compute_metrics,
    metrics_manifest_path,
    read_metrics_jsonl,
    write_metrics_jsonl,
)
from ftft_ds.dynamics.store import Dynamics
from ftft_ds.errors import FtftError

LN3 = math.log(3)


def cartography_reference(logits: list[list[float]], gold: int, include_ci: bool = False) -> dict:
    """Cartography's per-example formulas, one example at a time, in plain Python."""
    probs, correct = [], []
    for row in logits:
        exps = [math.exp(v) for v in row]
        probs.append(exps[gold] / sum(exps))
        correct.append(max(range(len(row)), key=lambda c: (row[c], -c)) == gold)
    epochs = len(probs)
    mean = sum(probs) / epochs
    var = sum((p - mean) ** 2 for p in probs) / epochs
    if include_ci:
        var = var + var * var / (epochs - 1)
    if not any(correct):
        forgotten = 1000
    else:
        forgotten, learnt = 0, False
        for is_correct in correct:
            if learnt and not is_correct:
                forgotten += 1
            learnt = is_correct
    margins = [row[gold] - max(v for c, v in enumerate(row) if c != gold) for row in logits]
    return {
        "confidence": mean,
        "variability": math.sqrt(var),
        "correctness": sum(correct),
        "correctness_fraction": sum(correct) / epochs,
        "forgetfulness": forgotten,
        "threshold_closeness": mean * (1 - mean),
        "aum": sum(margins) / epochs,
    }


def dynamics_of(rows: list[list[list[float]]], labels: list[int], **kwargs) -> Dynamics:
    return Dynamics.create([f"u{i}" for i in range(len(rows))], labels, np.array(rows, np.float32), **kwargs)


# Two classes, four epochs, chosen so that every number is known by hand.
HAND = [
    # label 0: p = 1/2 (tie: argmax picks class 0, correct), 3/4, 1/4, 1/2 (tie, correct)
    [[0, 0], [LN3, 0], [0, LN3], [0, 0]],
    # label 1, same logits: p = 1/2 (tie: argmax is class 0, wrong), 1/4, 3/4, 1/2 (wrong)
    [[0, 0], [LN3, 0], [0, LN3], [0, 0]],
    # label 1, never correct
    [[2, 0], [1, 0], [3, 0], [1, -1]],
    # label 0: correct, wrong, correct, wrong
    [[1, 0], [0, 1], [1, 0], [0, 1]],
]
HAND_LABELS = [0, 1, 1, 0]


def test_hand_computed_values():
    m = compute_metrics(dynamics_of(HAND, HAND_LABELS))
    np.testing.assert_allclose(m.confidence[:2], [0.5, 0.5], atol=1e-6)
    spread = math.sqrt((0 + 0.25**2 + 0.25**2 + 0) / 4)
    np.testing.assert_allclose(m.variability[:2], [spread, spread], atol=1e-6)
    assert m.correctness.tolist() == [3, 1, 0, 2]
    np.testing.assert_allclose(m.correctness_fraction, [0.75, 0.25, 0, 0.5])
    # 0: correct, correct, wrong, correct -> forgotten once; 1: learnt at epoch 2 then forgotten
    assert m.forgetfulness.tolist() == [1, 1, 1000, 2]
    np.testing.assert_allclose(m.threshold_closeness[:2], [0.25, 0.25], atol=1e-6)
    np.testing.assert_allclose(m.aum, [0, 0, -2, 0], atol=1e-6)
    assert m.correctness.dtype == np.int32 and m.confidence.dtype == np.float32
    assert m.num_epochs == 4


def test_ties_in_argmax_follow_first_index():
    # Three classes, gold = 1; ties with class 0 (earlier) lose, ties with class 2 (later) win.
    m = compute_metrics(dynamics_of([[[5, 5, 0], [0, 5, 5], [5, 5, 5]]], [1]))
    assert m.correctness.tolist() == [1]
    assert m.forgetfulness.tolist() == [1]


def test_matches_reference_on_random_logits(monkeypatch):
    monkeypatch.setattr(store_module, "CHUNK_ELEMENTS", 40)  # many chunks, a ragged last one
    rng = np.random.default_rng(3)
    logits = (rng.standard_normal((57, 5, 4)) * 3).astype(np.float32)
    logits[::7, 2] = logits[::7, 2, :1]  # whole-row ties
    labels = rng.integers(0, 4, 57)
    for ci in (False, True):
        m = compute_metrics(dynamics_of(logits.tolist(), labels.tolist()), variability="ci" if ci else "population")
        for i in range(57):
            ref = cartography_reference(logits[i].astype(np.float64).tolist(), int(labels[i]), include_ci=ci)
            for key, expected in ref.items():
                assert getattr(m, key)[i] == pytest.approx(expected, rel=1e-5, abs=1e-6), (i, key)


def test_ci_variability_by_hand():
    m = compute_metrics(dynamics_of(HAND, HAND_LABELS), variability="ci")
    var = (0.25**2 * 2) / 4
    assert m.variability[0] == pytest.approx(math.sqrt(var + var * var / 3), rel=1e-6)
    assert m.provenance["variability"] == "ci"


def test_burn_out_uses_first_epochs():
    dyn = dynamics_of(HAND, HAND_LABELS)
    m = compute_metrics(dyn, burn_out=2)
    first_two = compute_metrics(dynamics_of([rows[:2] for rows in HAND], HAND_LABELS))
    for key in ("confidence", "variability", "correctness", "forgetfulness", "aum", "correctness_fraction"):
        np.testing.assert_array_equal(getattr(m, key), getattr(first_two, key))
    assert m.num_epochs == 2 and m.provenance["burn_out"] == 2
    np.testing.assert_allclose(m.confidence[:2], [0.625, 0.375], atol=1e-6)


@pytest.mark.parametrize("burn_out", [0, 5, -1])
def test_burn_out_out_of_range(burn_out):
    with pytest.raises(FtftError, match=rf"burn-out {burn_out} is outside \[1, 4\]"):
        compute_metrics(dynamics_of(HAND, HAND_LABELS), burn_out=burn_out)


def test_bad_options():
    dyn = dynamics_of(HAND, HAND_LABELS)
    with pytest.raises(FtftError, match="variability 'std' is not one of"):
        compute_metrics(dyn, variability="std")
    with pytest.raises(FtftError, match="needs at least 2 epochs"):
        compute_metrics(dyn, variability="ci", burn_out=1)
    with pytest.raises(FtftError, match="no eval-pass logits"):
        compute_metrics(dyn, eval_pass=True)


def test_eval_pass_reads_eval_logits():
    # All-zero eval logits: argmax is class 0 at every epoch.
    dyn = dynamics_of(HAND, HAND_LABELS, eval_logits=np.zeros((4, 4, 2), np.float32))
    assert compute_metrics(dyn, eval_pass=True).correctness.tolist() == [4, 0, 0, 4]
    assert compute_metrics(dyn).correctness.tolist() == [3, 1, 0, 2]


def test_extreme_logits_are_stable():
    m = compute_metrics(dynamics_of([[[1000, -1000], [-1000, 1000]], [[3e38, -3e38], [0, 0]]], [0, 1]))
    assert np.isfinite(m.confidence).all() and np.isfinite(m.variability).all()
    np.testing.assert_allclose(m.confidence, [0.5, 0.25])
    np.testing.assert_allclose(m.variability, [0.5, 0.25])
    np.testing.assert_allclose(m.aum, [0, -3e38], rtol=1e-6)


def test_provenance():
    dyn = dynamics_of(HAND, HAND_LABELS, dataset_fingerprint="data-fp")
    m = compute_metrics(dyn)
    assert m.provenance["source_fingerprint"] == dyn.fingerprint
    assert m.provenance["dataset_fingerprint"] == "data-fp"
    assert m.summary()["examples"] == 4


# -- JSON lines ------------------------------------------------------------------------------


def test_jsonl_round_trip(tmp_path: Path):
    m = compute_metrics(dynamics_of(HAND, HAND_LABELS, dataset_fingerprint="data-fp"))
    path = write_metrics_jsonl(m, tmp_path / "td_metrics.jsonl")
    first = json.loads(path.read_text().splitlines()[0])
    assert list(first) == [
        "guid",
        "index",
        "threshold_closeness",
        "confidence",
        "variability",
        "correctness",
        "forgetfulness",
        "correctness_fraction",
        "aum",
        "label",
    ]
    assert first["guid"] == "u0" and first["index"] == 0 and first["correctness"] == 3
    back = read_metrics_jsonl(path)
    for key in (
        "confidence",
        "variability",
        "threshold_closeness",
        "aum",
        "correctness_fraction",
        "correctness",
        "forgetfulness",
        "labels",
        "uids",
    ):
        np.testing.assert_array_equal(getattr(back, key), getattr(m, key))
    assert back.num_epochs == 4
    assert back.provenance["dataset_fingerprint"] == "data-fp"
    assert back.provenance["dynamics_fingerprint"] == m.provenance["source_fingerprint"]


def test_reads_cartography_td_metrics(tmp_path: Path):
    path = tmp_path / "td_metrics.jsonl"
    rows = [
        {
            "guid": 17,
            "index": 0,
            "threshold_closeness": 0.21,
            "confidence": 0.7,
            "variability": 0.1,
            "correctness": 4,
            "forgetfulness": 0,
        },
        {
            "guid": 3,
            "index": 1,
            "threshold_closeness": 0.09,
            "confidence": 0.1,
            "variability": 0.05,
            "correctness": 0.0,
            "forgetfulness": 1000,
        },
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows) + "\n")
    m = read_metrics_jsonl(path)
    assert isinstance(m, Metrics)
    assert m.uids.tolist() == [b"17", b"3"]
    assert m.labels is None and m.aum is None and m.correctness_fraction is None and m.num_epochs is None
    assert m.correctness.tolist() == [4, 0]
    assert m.provenance["dataset_fingerprint"] is None and len(m.provenance["source_fingerprint"]) == 32


@pytest.mark.parametrize(
    "line, expected",
    [
        ('{"guid": "a", "confidence": 0.5', "line 2 is not valid JSON"),
        ("[1, 2]", "line 2 is not a JSON object"),
        (
            '{"guid": "a", "threshold_closeness": 0.2, "confidence": 0.5, "variability": 0.1, "correctness": 1}',
            "line 2 lacks the key 'forgetfulness'",
        ),
        (
            '{"guid": "b", "threshold_closeness": 0.2, '
            '"confidence": NaN, "variability": 0.1, "correctness": 1, "forgetfulness": 0}',
            "line 2: confidence is nan, not a finite number",
        ),
        (
            '{"guid": "b", "threshold_closeness": 0.2, '
            '"confidence": "x", "variability": 0.1, "correctness": 1, "forgetfulness": 0}',
            "line 2: confidence is 'x'",
        ),
        (
            '{"guid": "b", "threshold_closeness": 0.2, '
            '"confidence": 0.5, "variability": 0.1, "correctness": 1.5, "forgetfulness": 0}',
            "correctness is 1.5, not an integer",
        ),
        (
            '{"guid": null, "threshold_closeness": 0.2, '
            '"confidence": 0.5, "variability": 0.1, "correctness": 1, "forgetfulness": 0}',
            "guid None is neither",
        ),
        (
            '{"guid": "a", "threshold_closeness": 0.2, '
            '"confidence": 0.5, "variability": 0.1, "correctness": 1, "forgetfulness": 0}',
            "guid 'a' occurs more than once",
        ),
    ],
)
def test_malformed_metrics_files(tmp_path: Path, line: str, expected: str):
    path = tmp_path / "m.jsonl"
    good = (
        '{"guid": "a", "threshold_closeness": 0.2, '
        '"confidence": 0.5, "variability": 0.1, "correctness": 1, "forgetfulness": 0}'
    )
    path.write_text(good + "\n" + line + "\n")
    with pytest.raises(FtftError) as excinfo:
        read_metrics_jsonl(path)
    assert expected in str(excinfo.value) and "\n" not in str(excinfo.value)


def test_missing_empty_and_stale_manifest(tmp_path: Path):
    with pytest.raises(FtftError, match="metrics file not found"):
        read_metrics_jsonl(tmp_path / "none.jsonl")
    (tmp_path / "empty.jsonl").write_text("\n")
    with pytest.raises(FtftError, match="holds no examples"):
        read_metrics_jsonl(tmp_path / "empty.jsonl")
    path = write_metrics_jsonl(compute_metrics(dynamics_of(HAND, HAND_LABELS)), tmp_path / "m.jsonl")
    path.write_text("\n".join(path.read_text().splitlines()[:2]) + "\n")
    with pytest.raises(FtftError, match="does not describe"):
        read_metrics_jsonl(path)
    metrics_manifest_path(path).unlink()
    assert read_metrics_jsonl(path).num_examples == 2
