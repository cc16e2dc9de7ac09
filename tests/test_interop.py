"""Import and export of cartography's and FTFT's dynamics files."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from ftft_ds.dynamics.interop import (
    export_cartography,
    export_ftft,
    import_cartography,
    import_ftft,
    read_labels_by_uid,
)
from ftft_ds.dynamics.metrics import compute_metrics
from ftft_ds.dynamics.store import Dynamics
from ftft_ds.errors import FtftError
from tests.test_metrics import cartography_reference


def make_dynamics(n=12, epochs=3, classes=3, seed=0) -> Dynamics:
    rng = np.random.default_rng(seed)
    logits = (rng.standard_normal((n, epochs, classes)) * 4).astype(np.float32)
    logits[0, 0, 0] = np.float32(0.1)  # not exactly representable in decimal
    logits[1, 1] = np.float32(3e-39)  # subnormal
    return Dynamics.create([f"id-{i}" for i in range(n)], rng.integers(0, classes, n), logits)


def write_epoch(folder: Path, epoch: int, records: list[dict]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"dynamics_epoch_{epoch}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))


def one_line(excinfo) -> str:
    assert "\n" not in str(excinfo.value)
    return str(excinfo.value)


def test_cartography_round_trip(tmp_path: Path):
    dyn = make_dynamics()
    out = export_cartography(dyn, tmp_path / "run")
    assert sorted(p.name for p in (out / "training_dynamics").iterdir()) == [
        f"dynamics_epoch_{e}.jsonl" for e in range(3)
    ]
    for source in (out, out / "training_dynamics"):
        back = import_cartography(source)
        assert back.uid_strings() == dyn.uid_strings()
        np.testing.assert_array_equal(back.labels, dyn.labels)
        np.testing.assert_array_equal(back.logits, dyn.logits)
        assert back.fingerprint == dyn.fingerprint
        assert back.manifest["source"] == "cartography" and back.manifest["dataset_fingerprint"] is None


def test_metrics_of_imported_files_match_reference(tmp_path: Path):
    """Metrics of a cartography run equal cartography's formulas applied to the raw JSON lines."""
    rng = np.random.default_rng(7)
    folder = tmp_path / "training_dynamics"
    guids = [int(g) for g in rng.permutation(1000)[:25]]
    golds = {g: int(rng.integers(0, 2)) for g in guids}
    raw: dict[int, list] = {g: [] for g in guids}
    for epoch in range(4):
        order = list(rng.permutation(guids))  # each epoch lists the examples in its own order
        records = []
        for g in order:
            logits = [round(float(v), 6) for v in rng.standard_normal(2) * 3]
            raw[g].append(logits)
            records.append({"guid": int(g), f"logits_epoch_{epoch}": logits, "gold": golds[g]})
        write_epoch(folder, epoch, records)
    metrics = compute_metrics(import_cartography(tmp_path))
    position = {u: i for i, u in enumerate(import_cartography(tmp_path).uid_strings())}
    for g in guids:
        expected = cartography_reference(raw[g], golds[g])
        i = position[str(g)]
        for key, value in expected.items():
            assert getattr(metrics, key)[i] == pytest.approx(value, rel=1e-5, abs=1e-6), (g, key)


def _good_run(tmp_path: Path, epochs=3) -> Path:
    folder = tmp_path / "training_dynamics"
    for e in range(epochs):
        write_epoch(folder, e, [{"guid": g, f"logits_epoch_{e}": [0.1 * e, 0.2], "gold": g % 2} for g in range(4)])
    return folder


def test_missing_epoch(tmp_path: Path):
    folder = _good_run(tmp_path, epochs=4)
    (folder / "dynamics_epoch_2.jsonl").unlink()
    with pytest.raises(FtftError) as excinfo:
        import_cartography(tmp_path)
    assert "lacks epoch 2 (dynamics_epoch_2.jsonl)" in one_line(excinfo)


def test_missing_and_extra_uids(tmp_path: Path):
    folder = _good_run(tmp_path)
    write_epoch(folder, 1, [{"guid": g, "logits_epoch_1": [0.0, 0.1], "gold": g % 2} for g in (0, 1)])
    with pytest.raises(FtftError) as excinfo:
        import_cartography(tmp_path)
    assert "dynamics_epoch_1.jsonl lacks 2 of the 4 examples of epoch 0 (e.g. '2')" in one_line(excinfo)
    write_epoch(folder, 1, [{"guid": g, "logits_epoch_1": [0.0, 0.1], "gold": g % 2} for g in range(5)])
    with pytest.raises(FtftError, match=r"has 1 example\(s\) absent from epoch 0 \(e.g. '4'\)"):
        import_cartography(tmp_path)


@pytest.mark.parametrize(
    "record, expected",
    [
        (
            {"guid": 9, "logits_epoch_1": [float("nan"), 0.1], "gold": 1},
            "line 4: logits_epoch_1 holds a NaN or infinite value",
        ),
        ({"guid": 9, "logits_epoch_1": [None, 0.1], "gold": 1}, "holds a NaN or infinite value"),
        ({"guid": 9, "logits_epoch_1": [float("inf"), 0.1], "gold": 1}, "holds a NaN or infinite value"),
        ({"guid": 9, "logits_epoch_1": [0.1], "gold": 1}, "line 4: logits_epoch_1 is not a list of numbers"),
        ({"guid": 9, "logits_epoch_1": [0.1, "x"], "gold": 1}, "line 4: logits_epoch_1 is not a list of numbers"),
        ({"guid": 9, "logits_epoch_0": [0.1, 0.2], "gold": 1}, "line 4 lacks one of the keys"),
        ({"guid": 9, "logits_epoch_1": [0.1, 0.2], "gold": "1"}, "line 4: gold '1' is not an integer"),
        ({"guid": [9], "logits_epoch_1": [0.1, 0.2], "gold": 1}, "guid [9] is neither"),
    ],
)
def test_bad_records(tmp_path: Path, record: dict, expected: str):
    folder = _good_run(tmp_path)
    good = [{"guid": g, "logits_epoch_1": [0.0, 0.1], "gold": g % 2} for g in range(3)]
    write_epoch(folder, 1, good + [record])
    with pytest.raises(FtftError) as excinfo:
        import_cartography(tmp_path)
    assert expected in one_line(excinfo)


def test_other_cartography_problems(tmp_path: Path):
    with pytest.raises(FtftError, match="not found"):
        import_cartography(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FtftError, match="holds no dynamics_epoch"):
        import_cartography(tmp_path / "empty")
    folder = _good_run(tmp_path)
    write_epoch(folder, 2, [{"guid": g, "logits_epoch_2": [0.0, 0.1], "gold": 1} for g in range(4)])
    with pytest.raises(FtftError, match="the gold label of '0' differs from epoch 0's"):
        import_cartography(tmp_path)
    (folder / "dynamics_epoch_1.jsonl").write_text('{"guid": 1, "logits_epoch_1": [0.1, 0.2], "gold": 1\n')
    with pytest.raises(FtftError, match="line 1 is not valid JSON"):
        import_cartography(tmp_path)


def test_failed_export_leaves_nothing(tmp_path: Path, monkeypatch):
    real_dumps, calls = json.dumps, []

    def failing_dumps(*args, **kwargs):
        calls.append(1)
        if len(calls) > 12 + 12 + 5:  # the uids, epoch 0, then part of epoch 1
            raise OSError("disk full")
        return real_dumps(*args, **kwargs)

    monkeypatch.setattr(json, "dumps", failing_dumps)
    with pytest.raises(OSError):
        export_cartography(make_dynamics(), tmp_path / "run")
    assert len(calls) == 30
    assert list(tmp_path.iterdir()) == []


def test_ftft_round_trip(tmp_path: Path):
    dyn = make_dynamics()
    path = export_ftft(dyn, tmp_path / "dynamics.pt")
    table = torch.load(path, weights_only=True)
    assert list(table) == dyn.uid_strings() and table["id-0"].shape == (3, 3) and table["id-0"].dtype == torch.float32
    labels = dict(zip(dyn.uid_strings(), dyn.labels.tolist()))
    back = import_ftft(path, labels)
    assert back.uid_strings() == dyn.uid_strings()
    np.testing.assert_array_equal(back.logits, dyn.logits)
    np.testing.assert_array_equal(back.labels, dyn.labels)
    assert back.fingerprint == dyn.fingerprint and back.manifest["source"] == "ftft"


def test_ftft_problems(tmp_path: Path):
    path = export_ftft(make_dynamics(), tmp_path / "dynamics.pt")
    with pytest.raises(FtftError) as excinfo:
        import_ftft(path, {"id-0": 1})
    assert "11 of the 12 uids of" in one_line(excinfo) and "have no label (e.g. 'id-1')" in str(excinfo.value)
    (tmp_path / "bad.pt").write_bytes(b"not a torch file")
    with pytest.raises(FtftError, match="is not a readable torch file"):
        import_ftft(tmp_path / "bad.pt", {})
    torch.save({"a": torch.zeros(2, 3), "b": torch.zeros(3, 3)}, tmp_path / "ragged.pt")
    with pytest.raises(FtftError, match="logits of uid 'b' are not a float tensor of shape \\(2, 3\\)"):
        import_ftft(tmp_path / "ragged.pt", {"a": 0, "b": 1})
    torch.save({"a": torch.full((2, 3), float("nan"))}, tmp_path / "nan.pt")
    with pytest.raises(FtftError, match="non-finite value"):
        import_ftft(tmp_path / "nan.pt", {"a": 0})
    with pytest.raises(FtftError, match="not found"):
        import_ftft(tmp_path / "missing.pt", {})


def test_read_labels(tmp_path: Path):
    (tmp_path / "labels.json").write_text('{"a": 1, "b": 0}')
    assert read_labels_by_uid(tmp_path / "labels.json") == {"a": 1, "b": 0}
    (tmp_path / "labels.jsonl").write_text('{"uid": "a", "label": 1}\n\n{"guid": 7, "label": 2}\n')
    assert read_labels_by_uid(tmp_path / "labels.jsonl") == {"a": 1, "7": 2}
    (tmp_path / "bad.jsonl").write_text('{"uid": "a", "label": 1}\n{"uid": "b"}\n')
    with pytest.raises(FtftError, match="line 2 needs a 'uid'"):
        read_labels_by_uid(tmp_path / "bad.jsonl")
    (tmp_path / "bad.json").write_text('{"a": "x"}')
    with pytest.raises(FtftError, match="the label of 'a' is 'x', not an integer"):
        read_labels_by_uid(tmp_path / "bad.json")
