"""`ftft map`, `ftft select`, `ftft dynamics import|export` through click's test runner."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from ftft_ds.cli import _register, cli
from ftft_ds.dynamics.metrics import read_metrics_jsonl
from ftft_ds.dynamics.select import Subset
from ftft_ds.dynamics.store import Dynamics

_register()


def run(*args: str):
    return CliRunner().invoke(cli, [str(a) for a in args])


def assert_user_error(result, *fragments: str) -> None:
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    for fragment in fragments:
        assert fragment in lines[0]


@pytest.fixture
def store(tmp_path: Path) -> Path:
    rng = np.random.default_rng(0)
    n = 60
    return Dynamics.create(
        [f"q{i}" for i in range(n)],
        rng.integers(0, 3, n),
        rng.standard_normal((n, 4, 3)).astype(np.float32),
        dataset_fingerprint="data-fp",
    ).save(tmp_path / "dyn")


def test_map_writes_metrics_plot_and_tensorboard(tmp_path: Path, store: Path):
    out, png, tb = tmp_path / "m.jsonl", tmp_path / "map.png", tmp_path / "tb"
    result = run("map", store, "-o", out, "--plot", png, "--tensorboard", tb, "--burn-out", 3, "--variability", "ci")
    assert result.exit_code == 0, result.output
    assert "60 examples, 3 epochs, 3 classes: mean confidence" in result.stdout
    assert read_metrics_jsonl(out).provenance["burn_out"] == 3
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert any(p.name.startswith("events.out.tfevents") for p in tb.iterdir())


def test_select_from_dynamics_and_metrics(tmp_path: Path, store: Path):
    result = run("select", store, "--region", "ambiguous", "--fraction", 0.25, "--stratify", "-o", tmp_path / "s.json")
    assert result.exit_code == 0, result.output
    assert "selected 15 of 60 examples (ambiguous)" in result.stdout and "per label: 0:" in result.stdout
    subset = Subset.load(tmp_path / "s.json")
    assert len(subset.uids) == 15 and subset.manifest["dataset_fingerprint"] == "data-fp"

    assert run("map", store, "-o", tmp_path / "m.jsonl").exit_code == 0
    result = run(
        "select",
        tmp_path / "m.jsonl",
        "--region",
        "ambiguous",
        "--fraction",
        0.25,
        "--stratify",
        "-o",
        tmp_path / "t.json",
    )
    assert result.exit_code == 0, result.output
    assert Subset.load(tmp_path / "t.json").uids == subset.uids


def test_import_export_round_trip(tmp_path: Path, store: Path):
    assert run("dynamics", "export", "--to", "cartography", store, "-o", tmp_path / "cart").exit_code == 0
    assert run("dynamics", "import", "--from", "cartography", tmp_path / "cart", "-o", tmp_path / "back").exit_code == 0
    np.testing.assert_array_equal(Dynamics.load(tmp_path / "back").logits, Dynamics.load(store).logits)

    assert run("dynamics", "export", "--to", "ftft", store, "-o", tmp_path / "d.pt").exit_code == 0
    dyn = Dynamics.load(store)
    labels = tmp_path / "labels.jsonl"
    labels.write_text(
        "".join(json.dumps({"uid": u, "label": int(label)}) + "\n" for u, label in zip(dyn.uid_strings(), dyn.labels))
    )
    result = run(
        "dynamics", "import", "--from", "ftft", tmp_path / "d.pt", "--labels", labels, "-o", tmp_path / "back2"
    )
    assert result.exit_code == 0, result.output
    np.testing.assert_array_equal(Dynamics.load(tmp_path / "back2").labels, dyn.labels)


# -- bad input: one line, exit code 2, nothing written -------------------------------------


@pytest.mark.parametrize(
    "options, fragments",
    [
        (["--fraction", "0"], ["fraction 0.0 is outside (0, 1]"]),
        (["--fraction", "1.5"], ["fraction 1.5 is outside (0, 1]"]),
        (["--count", "61"], ["count 61 is outside [1, 60]"]),
        (["--count", "0"], ["count 0 is outside [1, 60]"]),
        (["--fraction", "0.5", "--count", "3"], ["exactly one of fraction and count"]),
        ([], ["exactly one of fraction and count"]),
        (["--count", "3", "--burn-out", "9"], ["burn-out 9 is outside [1, 4]"]),
    ],
)
def test_select_bad_options(tmp_path: Path, store: Path, options, fragments):
    out = tmp_path / "s.json"
    assert_user_error(run("select", store, "--region", "easy", *options, "-o", out), *fragments)
    assert not out.exists()


def test_select_bad_sources(tmp_path: Path, store: Path):
    out = tmp_path / "s.json"
    assert_user_error(
        run("select", tmp_path / "none", "--region", "easy", "--count", 2, "-o", out), "selection source not found"
    )
    corrupt = tmp_path / "m.jsonl"
    corrupt.write_text('{"guid": "a", "confidence": 0.5\n')
    assert_user_error(run("select", corrupt, "--region", "easy", "--count", 1, "-o", out), "line 1 is not valid JSON")
    (store / "logits.npy").write_bytes(b"corrupt")
    assert_user_error(run("select", store, "--region", "easy", "--count", 1, "-o", out), "not a readable .npy file")
    assert not out.exists()


def test_nan_logits(tmp_path: Path, store: Path):
    logits = np.load(store / "logits.npy")
    logits[7, 3, 2] = np.nan
    np.save(store / "logits.npy", logits)
    out = tmp_path / "m.jsonl"
    assert_user_error(
        run("map", store, "-o", out, "--plot", tmp_path / "p.png"), "non-finite value (nan)", "'q7' at epoch 3"
    )
    assert not out.exists() and not (tmp_path / "p.png").exists()


def test_map_bad_options(tmp_path: Path, store: Path):
    out = tmp_path / "m.jsonl"
    assert_user_error(run("map", store, "--eval-pass", "-o", out), "no eval-pass logits")
    assert_user_error(run("map", store, "--burn-out", 0, "-o", out), "burn-out 0 is outside [1, 4]")
    assert_user_error(run("map", tmp_path / "nowhere", "-o", out), "dynamics directory not found")
    assert not out.exists()


def _cartography_run(tmp_path: Path) -> Path:
    folder = tmp_path / "run" / "training_dynamics"
    folder.mkdir(parents=True)
    for e in range(3):
        (folder / f"dynamics_epoch_{e}.jsonl").write_text(
            "".join(json.dumps({"guid": g, f"logits_epoch_{e}": [0.5, -0.5], "gold": g % 2}) + "\n" for g in range(5))
        )
    return folder


def test_import_missing_epoch_and_uids(tmp_path: Path):
    folder = _cartography_run(tmp_path)
    out = tmp_path / "dyn"
    (folder / "dynamics_epoch_1.jsonl").unlink()
    assert_user_error(run("dynamics", "import", "--from", "cartography", tmp_path / "run", "-o", out), "lacks epoch 1")
    (folder / "dynamics_epoch_1.jsonl").write_text(
        "".join(json.dumps({"guid": g, "logits_epoch_1": [0.5, -0.5], "gold": g % 2}) + "\n" for g in range(3))
    )
    assert_user_error(
        run("dynamics", "import", "--from", "cartography", tmp_path / "run", "-o", out),
        "lacks 2 of the 5 examples of epoch 0 (e.g. '3')",
    )
    assert not out.exists()
    assert [p.name for p in tmp_path.iterdir()] == ["run"]  # no temporary directory left behind


def test_import_option_mistakes(tmp_path: Path, store: Path):
    out = tmp_path / "dyn2"
    assert_user_error(
        run("dynamics", "import", "--from", "ftft", tmp_path / "x.pt", "-o", out),
        "--from ftft needs exactly one of --labels FILE or --data DATASET",
    )
    assert_user_error(
        run("dynamics", "import", "--from", "cartography", tmp_path, "--labels", tmp_path / "l.json", "-o", out),
        "--labels/--data are only for --from ftft",
    )
    assert run("dynamics", "export", "--to", "ftft", store, "-o", tmp_path / "d.pt").exit_code == 0
    (tmp_path / "l.json").write_text('{"q0": 1}')
    assert_user_error(
        run("dynamics", "import", "--from", "ftft", tmp_path / "d.pt", "--labels", tmp_path / "l.json", "-o", out),
        "59 of the 60 uids",
        "have no label",
    )
    assert not out.exists()


def test_import_ftft_with_labels_from_a_dataset(tmp_path: Path):
    """`--data` takes labels from the dataset and ties the store to its fingerprint."""
    import numpy as np
    import torch

    from ftft_ds.data.load import DataConfig, load_split
    from ftft_ds.dynamics.store import Dynamics

    split = load_split(DataConfig(embedded_train_size=60), "train")
    logits = {uid: torch.randn(2, 3) for uid in split.dataset["uid"]}
    torch.save(logits, tmp_path / "uid_to_logits.pt")
    out = tmp_path / "dyn"
    result = run(
        "dynamics",
        "import",
        "--from",
        "ftft",
        tmp_path / "uid_to_logits.pt",
        "--data",
        "embedded",
        "--set",
        "embedded_train_size=60",
        "-o",
        out,
    )
    assert result.exit_code == 0, result.output
    dyn = Dynamics.load(out)
    assert dyn.dataset_fingerprint == split.fingerprint
    labels = split.labels_by_uid()
    assert [labels[u] for u in dyn.uid_strings()] == list(dyn.labels)
    first = dyn.uid_strings()[0]
    np.testing.assert_array_equal(dyn.logits[0], logits[first].numpy())


@pytest.mark.parametrize("region, key, descending", [("ambiguous", "variability", True), ("hard", "confidence", False)])
def test_cartography_released_five_key_metrics_select_by_cartographys_rule(tmp_path: Path, region, key, descending):
    """allenai/cartography's released td_metrics.jsonl carry guid, index, confidence, variability and
    correctness only; cartography keeps the head of the rows sorted by the metric."""
    rng = np.random.default_rng(7)
    n = 500
    rows = [
        {"guid": int(g), "index": i, "confidence": float(c), "variability": float(v), "correctness": int(k)}
        for i, (g, c, v, k) in enumerate(
            zip(rng.permutation(10 * n)[:n], rng.random(n), rng.random(n) * 0.5, rng.integers(0, 6, n))
        )
    ]
    path = tmp_path / "td_metrics.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    count = int(0.33 * n) + 1  # cartography's `head(n=int(fraction * N) + 1)`
    result = run("select", path, "--region", region, "--count", count, "-o", tmp_path / "subset.json")
    assert result.exit_code == 0, result.output
    ranked = sorted(rows, key=lambda r: -r[key] if descending else r[key])
    assert set(Subset.load(tmp_path / "subset.json").uids) == {str(r["guid"]) for r in ranked[:count]}
    metrics = read_metrics_jsonl(path)
    assert metrics.forgetfulness is None and metrics.threshold_closeness is None


@pytest.mark.parametrize(
    "args, message",
    [
        (
            ["train", "--num-layers", "abc"],
            "error: Invalid value for '--num-layers': 'abc' is not a valid integer. (see ftft train --help)",
        ),
        (["trian"], "error: No such command 'trian'. Did you mean 'train'? (see ftft --help)"),
    ],
)
def test_usage_errors_are_one_line(args, message):
    result = run(*args)
    assert result.exit_code == 2 and result.stderr.strip().splitlines() == [message]
