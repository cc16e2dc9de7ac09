"""Reference runs end to end: one process, and two ranks under the `deepspeed` launcher."""
import json

import numpy as np
import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from ftft_ds.data.load import DataConfig, load_split
from ftft_ds.dynamics.store import Dynamics

from .helpers import deepspeed_launch, ftft, tail

TRAIN_SIZE = 301  # odd: the distributed sampler must pad, and the recorder must drop the repeat
COMMON = ["--model", "tiny-bert", "--set", f"data.embedded_train_size={TRAIN_SIZE}",
          "--set", "micro_batch_size=16", "--set", "lr=1e-3", "--set", "log_every=2"]


@pytest.fixture(scope="module")
def two_rank_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("ref2")
    proc = deepspeed_launch("launch/reference.py", [*COMMON, "--epochs", "2", "--eval-pass", "-o", out])
    assert proc.returncode == 0, tail(proc)
    return out


def dataset_split():
    return load_split(DataConfig(embedded_train_size=TRAIN_SIZE), "train")


def test_two_ranks_record_every_uid_once_per_epoch(two_rank_run):
    dyn = Dynamics.load(two_rank_run / "dynamics")
    split = dataset_split()
    assert dyn.logits.shape == (TRAIN_SIZE, 2, 3)
    assert dyn.eval_logits.shape == (TRAIN_SIZE, 2, 3)
    assert dyn.uid_strings() == list(split.dataset["uid"])
    assert len(set(dyn.uid_strings())) == TRAIN_SIZE
    np.testing.assert_array_equal(dyn.labels, np.asarray(split.dataset["label"]))
    assert dyn.manifest["dataset_fingerprint"] == split.fingerprint
    assert dyn.manifest["world_size"] == 2
    # Training-pass logits change between epochs (the model trains); eval-pass logits of an epoch
    # differ from that epoch's training-pass logits (other weights, no dropout).
    assert not np.allclose(dyn.logits[:, 0], dyn.logits[:, 1])
    assert not np.allclose(dyn.logits[:, 1], dyn.eval_logits[:, 1])


def test_two_rank_run_logs_cost_and_loss_to_tensorboard(two_rank_run):
    runs = list((two_rank_run / "tensorboard").glob("*"))
    events = EventAccumulator(str(runs[0])).Reload()
    tags = set(events.Tags()["scalars"])
    assert {"train/loss", "train/lr", "train/accuracy", "train/examples_per_s",
            "cost/flops", "cost/tokens", "cost/device_hours"} <= tags
    cost = json.loads((two_rank_run / "cost.json").read_text())
    # 301 rows on 2 ranks: 151 per rank (one padded repeat), 10 micro-batches of <= 16 per epoch.
    assert cost["optimizer_steps"] == 2 * 10
    assert cost["world_size"] == 2
    assert cost["train_examples"] == 2 * 2 * 151
    assert cost["train_flops"] == 6 * cost["flops_parameters"] * cost["train_tokens"]
    manifest = Dynamics.load(two_rank_run / "dynamics").manifest
    embeddings = manifest["num_parameters"] - cost["flops_parameters"]
    assert 30522 * 32 < embeddings < manifest["num_parameters"]  # tiny-bert: the embeddings dominate


def test_single_process_run_is_deterministic(tmp_path):
    runs = []
    for name in ("a", "b"):
        proc = ftft(["reference", *COMMON, "--epochs", "1", "-o", tmp_path / name])
        assert proc.returncode == 0, tail(proc)
        runs.append(Dynamics.load(tmp_path / name / "dynamics"))
    np.testing.assert_array_equal(runs[0].logits, runs[1].logits)
