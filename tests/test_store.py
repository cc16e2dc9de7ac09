"""The dynamics store: round trips, and every malformed store refused with one clear line."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from ftft_ds.dynamics import store as store_module
from ftft_ds.dynamics.store import Dynamics, decode_uids, encode_uids, first_duplicate, uid_order
from ftft_ds.errors import FtftError


def make_dynamics(n: int = 6, epochs: int = 4, classes: int = 3, seed: int = 0, **kwargs) -> Dynamics:
    rng = np.random.default_rng(seed)
    return Dynamics.create(
        [f"ex-{i}" for i in range(n)],
        rng.integers(0, classes, n),
        rng.standard_normal((n, epochs, classes)).astype(np.float32),
        **kwargs,
    )


def one_line_error(excinfo) -> str:
    message = str(excinfo.value)
    assert "\n" not in message
    return message


@pytest.fixture
def saved(tmp_path: Path) -> Path:
    dyn = make_dynamics(
        eval_logits=np.zeros((6, 4, 3), np.float32), dataset_fingerprint="fp-1", model="m", seeds={"init": 1}
    )
    return dyn.save(tmp_path / "dyn")


def test_round_trip(saved: Path):
    original = make_dynamics()
    for mmap in (True, False):
        loaded = Dynamics.load(saved, mmap=mmap)
        assert loaded.uid_strings() == [f"ex-{i}" for i in range(6)]
        np.testing.assert_array_equal(loaded.labels, original.labels)
        np.testing.assert_array_equal(loaded.logits, original.logits)
        np.testing.assert_array_equal(loaded.eval_logits, np.zeros((6, 4, 3), np.float32))
        assert (loaded.num_examples, loaded.num_epochs, loaded.num_labels) == (6, 4, 3)
        assert loaded.manifest["dataset_fingerprint"] == "fp-1"
        assert loaded.manifest["seeds"] == {"init": 1}
        assert loaded.manifest["source"] == "ftft"
        assert {"versions", "created", "model"} <= loaded.manifest.keys()
        assert loaded.fingerprint == original.fingerprint
    assert isinstance(Dynamics.load(saved).logits, np.memmap)
    assert sorted(p.name for p in saved.iterdir()) == [
        "eval_logits.npy",
        "labels.npy",
        "logits.npy",
        "manifest.json",
        "uids.npy",
    ]


def test_fingerprint_tracks_content():
    a, b = make_dynamics(), make_dynamics()
    assert a.fingerprint == b.fingerprint
    b.logits[0, 0, 0] += 1
    assert make_dynamics().fingerprint != Dynamics(b.uids, b.labels, b.logits, None, b.manifest).fingerprint


def test_save_replaces_whole_store(tmp_path: Path, saved: Path):
    make_dynamics(n=3).save(saved)
    assert Dynamics.load(saved).num_examples == 3
    assert not (saved / "eval_logits.npy").exists()


def test_failed_save_leaves_nothing(tmp_path: Path, monkeypatch):
    def broken(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(store_module, "write_json", broken)
    with pytest.raises(OSError):
        make_dynamics().save(tmp_path / "dyn")
    assert list(tmp_path.iterdir()) == []


def _rewrite(path: Path, name: str, array: np.ndarray) -> None:
    np.save(path / name, array)


def _edit_manifest(path: Path, **changes) -> None:
    manifest = json.loads((path / "manifest.json").read_text())
    manifest.update(changes)
    (path / "manifest.json").write_text(json.dumps(manifest))


@pytest.mark.parametrize(
    "corrupt, expected",
    [
        (lambda p: (p / "labels.npy").unlink(), "dynamics file missing"),
        (lambda p: (p / "manifest.json").unlink(), "dynamics manifest not found"),
        (lambda p: (p / "manifest.json").write_text("{not json"), "not valid JSON"),
        (lambda p: (p / "logits.npy").write_bytes(b"garbage"), "not a readable .npy file"),
        (lambda p: (p / "logits.npy").write_bytes((p / "logits.npy").read_bytes()[:200]), "not a readable .npy file"),
        (lambda p: _rewrite(p, "labels.npy", np.zeros(5, np.int64)), "labels has 5 entries but uids has 6"),
        (lambda p: _rewrite(p, "uids.npy", np.array([b"a", b"b"])), "labels has 6 entries but uids has 2"),
        (lambda p: _rewrite(p, "logits.npy", np.zeros((6, 3, 3), np.float32)), "(epochs missing or extra)"),
        (lambda p: _edit_manifest(p, num_epochs=5), "logits hold 4 epoch(s) but the manifest says num_epochs=5"),
        (lambda p: _edit_manifest(p, num_labels=4), "num_labels=4"),
        (lambda p: _edit_manifest(p, num_examples="6"), "integer 'num_examples'"),
        (lambda p: _rewrite(p, "logits.npy", np.zeros((6, 4, 3), np.float64)), "must be a float32 array"),
        (
            lambda p: _rewrite(p, "uids.npy", np.array([b"a", b"b", b"c", b"a", b"d", b"e"])),
            "example id 'a' occurs more than once",
        ),
        (
            lambda p: _rewrite(p, "labels.npy", np.array([0, 1, 2, 3, 0, 1])),
            "label 3 of example 'ex-3' is outside [0, 3)",
        ),
        (lambda p: _rewrite(p, "labels.npy", np.array([0, -1, 2, 0, 0, 1])), "label -1 of example 'ex-1'"),
        (
            lambda p: _rewrite(p, "eval_logits.npy", np.zeros((6, 4, 2), np.float32)),
            "eval_logits must be float32 with the shape",
        ),
    ],
)
def test_load_refuses_malformed(saved: Path, corrupt, expected: str):
    corrupt(saved)
    with pytest.raises(FtftError) as excinfo:
        Dynamics.load(saved)
    assert expected in one_line_error(excinfo)


@pytest.mark.parametrize("name", ["logits.npy", "eval_logits.npy"])
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_load_refuses_non_finite(saved: Path, name: str, bad: float):
    values = np.load(saved / name)
    values[4, 2, 1] = bad
    np.save(saved / name, values)
    with pytest.raises(FtftError) as excinfo:
        Dynamics.load(saved)
    message = one_line_error(excinfo)
    assert f"{name[:-4]} has a non-finite value ({bad})" in message and "'ex-4' at epoch 2" in message


def test_non_finite_found_across_chunks(monkeypatch):
    monkeypatch.setattr(store_module, "CHUNK_ELEMENTS", 7)
    logits = np.zeros((50, 2, 3), np.float32)
    logits[41, 1, 0] = np.nan
    with pytest.raises(FtftError, match="'e41' at epoch 1"):
        Dynamics.create([f"e{i}" for i in range(50)], np.zeros(50, int), logits)


def test_load_refuses_missing_and_empty(tmp_path: Path, saved: Path):
    with pytest.raises(FtftError, match="dynamics directory not found"):
        Dynamics.load(tmp_path / "nowhere")
    _rewrite(saved, "uids.npy", np.array([], dtype="S3"))
    _rewrite(saved, "labels.npy", np.zeros(0, np.int64))
    _rewrite(saved, "logits.npy", np.zeros((0, 4, 3), np.float32))
    (saved / "eval_logits.npy").unlink()
    with pytest.raises(FtftError, match="the store is empty"):
        Dynamics.load(saved)


def test_load_error_names_directory(saved: Path):
    _edit_manifest(saved, num_epochs=9)
    with pytest.raises(FtftError, match=f"^dynamics {saved}: "):
        Dynamics.load(saved)


def test_create_refuses_bad_input():
    with pytest.raises(FtftError, match="at least 2"):
        Dynamics.create(["a"], [0], np.zeros((1, 2, 1)))
    with pytest.raises(FtftError, match="shape \\(examples, epochs, classes\\)"):
        Dynamics.create(["a"], [0], np.zeros((1, 2)))
    with pytest.raises(FtftError, match="empty or contains a NUL"):
        Dynamics.create(["a", ""], [0, 1], np.zeros((2, 2, 2)))
    with pytest.raises(FtftError, match="has no epochs"):
        Dynamics.create(["a"], [0], np.zeros((1, 0, 2)))
    with pytest.raises(FtftError, match="'a' occurs more than once"):
        Dynamics.create(["a", "a"], [0, 1], np.zeros((2, 2, 2)))


def test_check_dataset(saved: Path):
    dyn = Dynamics.load(saved)
    dyn.check_dataset("fp-1")
    dyn.check_dataset(None)
    with pytest.raises(FtftError) as excinfo:
        dyn.check_dataset("fp-2")
    assert one_line_error(excinfo) == f"dynamics {saved} were recorded on dataset fp-1, not fp-2"
    make_dynamics().check_dataset("anything")  # recorded without a fingerprint (imported): no check


def test_uid_helpers():
    long = np.array([b"prefix-shared-by-all-" + bytes([c]) for c in b"qwertyq"])
    assert first_duplicate(long) == b"prefix-shared-by-all-q"
    assert first_duplicate(long[:-1]) is None
    mixed = np.array([b"b", b"ab", b"a", b"abc", b"\xc3\xa9t\xc3\xa9", b"a\x01"])
    np.testing.assert_array_equal(uid_order(mixed), np.argsort(mixed))
    assert decode_uids(encode_uids(["été", "x", 7])) == ["été", "x", "7"]
    assert decode_uids(encode_uids(["plain", "ascii"])) == ["plain", "ascii"]
