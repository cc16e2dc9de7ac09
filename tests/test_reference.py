"""Reference runs end to end: one process, and two ranks under the `deepspeed` launcher."""

import json
import os
import signal
import subprocess
import time

import numpy as np
import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from ftft_ds.config import ReferenceConfig, from_dict
from ftft_ds.data.load import DataConfig, load_split
from ftft_ds.dynamics.store import Dynamics
from ftft_ds.runs.reference import run_reference
from ftft_ds.train.evaluate import classification_metrics

from .helpers import (
    REPO,
    deepspeed_launch,
    forward_alone,
    launcher_command,
    quiet_env,
    ran_in_process,
    save_without_dropout,
    tail,
)

pytestmark = pytest.mark.xdist_group("test_reference")  # its module fixtures are built once, on one worker

TRAIN_SIZE = 307  # odd, as its dev split (51): the samplers must pad, and the gathers drop the repeats
COMMON = [
    "--set",
    f"data.embedded_train_size={TRAIN_SIZE}",
    "--set",
    "micro_batch_size=16",
    "--set",
    "lr=1e-3",
    "--set",
    "log_every=2",
]


@pytest.fixture(scope="module")
def frozen_model(tmp_path_factory):
    """tiny-bert with dropout off, partly trained so that its predictions vary from row to row, saved
    as a model folder: at a learning rate of 1e-12 the weights
    stay what they were (Adam's steps of about 1e-12 vanish in float32 weights of order 1e-2), so
    every recorded logit and every evaluation must be what this model gives on its own."""
    return save_without_dropout(tmp_path_factory.mktemp("frozen") / "model", train_rows=TRAIN_SIZE)


@pytest.fixture(scope="module")
def two_rank_run(tmp_path_factory, frozen_model):
    out = tmp_path_factory.mktemp("ref2")
    args = [*COMMON, "--model", frozen_model, "--set", "lr=1e-12", "--epochs", "2", "--eval-pass", "-o", out]
    proc = deepspeed_launch("launch/reference.py", args)
    assert proc.returncode == 0, tail(proc)
    return out


def dataset_split():
    return load_split(DataConfig(embedded_train_size=TRAIN_SIZE), "train")


@pytest.mark.launcher
def test_two_ranks_record_every_row_as_one_process_sees_it(two_rank_run, frozen_model):
    """Row for row, the logits both ranks recorded (odd row count: one padded repeat) are those of a
    single-process forward pass, so no row's logits landed under another row's uid or label."""
    dyn = Dynamics.load(two_rank_run / "dynamics")
    split = dataset_split()
    assert dyn.logits.shape == dyn.eval_logits.shape == (TRAIN_SIZE, 2, 3)
    assert dyn.uid_strings() == list(split.dataset["uid"])
    np.testing.assert_array_equal(dyn.labels, np.asarray(split.dataset["label"]))
    assert dyn.manifest["dataset_fingerprint"] == split.fingerprint
    assert dyn.manifest["world_size"] == 2
    alone = forward_alone(frozen_model, split)
    for epoch in range(2):
        np.testing.assert_allclose(dyn.logits[:, epoch], alone, atol=1e-5)
        np.testing.assert_allclose(dyn.eval_logits[:, epoch], alone, atol=1e-5)


@pytest.mark.launcher
def test_two_ranks_killed_mid_epoch_resume_and_record_every_row_as_one_process_sees_it(
    two_rank_run, frozen_model, tmp_path
):
    """The same two-rank run killed after its first checkpoint (step 3 of 10 in the first epoch:
    each rank holds part of that epoch's logits) and resumed: both epochs hold every row once, with
    the logits one process computes, and the run trained and counted the same steps."""
    args = [*COMMON, "--model", frozen_model, "--set", "lr=1e-12", "--epochs", "2", "--eval-pass"]
    cut = tmp_path / "cut"
    victim = subprocess.Popen(
        launcher_command("launch/reference.py", [*args, "--set", "checkpoint_every=3", "-o", cut]),
        cwd=REPO,
        env=quiet_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    latest = cut / "checkpoints" / "latest"
    deadline = time.time() + 300
    while time.time() < deadline and not latest.is_file():
        time.sleep(0.02)
    os.killpg(victim.pid, signal.SIGKILL)
    victim.wait()
    assert latest.is_file() and not (cut / "dynamics").exists(), "the run was not cut mid-way"

    proc = deepspeed_launch("launch/reference.py", [*args, "-o", cut, "--resume"])
    assert proc.returncode == 0, tail(proc)
    dyn = Dynamics.load(cut / "dynamics")
    alone = forward_alone(frozen_model, dataset_split())
    for epoch in range(2):
        np.testing.assert_allclose(dyn.logits[:, epoch], alone, atol=1e-5)
        np.testing.assert_allclose(dyn.eval_logits[:, epoch], alone, atol=1e-5)
    straight, resumed = (json.loads((out / "cost.json").read_text()) for out in (two_rank_run, cut))
    for key in ("optimizer_steps", "train_examples", "train_tokens", "train_flops", "eval_flops"):
        assert resumed[key] == straight[key], key
    assert not (cut / "checkpoints").exists()  # a finished reference keeps its dynamics, not its checkpoints


@pytest.mark.launcher
def test_two_rank_evaluation_equals_one_process(two_rank_run, frozen_model):
    """Every eval split's metrics, gathered from both ranks' shards, equal one process's."""
    final = json.loads((two_rank_run / "metrics.json").read_text())["final"]
    for name in ("dev", "ood"):
        split = load_split(DataConfig(embedded_train_size=TRAIN_SIZE), name)
        predictions = forward_alone(frozen_model, split).argmax(axis=1)
        expected = classification_metrics(predictions, np.asarray(split.dataset["label"]), 3)
        assert {k: final[f"{name}/{k}"] for k in expected} == pytest.approx(expected, abs=1e-12)


@pytest.mark.launcher
def test_two_rank_run_logs_cost_and_loss_to_tensorboard(two_rank_run):
    runs = list((two_rank_run / "tensorboard").glob("*"))
    events = EventAccumulator(str(runs[0])).Reload()
    tags = set(events.Tags()["scalars"])
    assert {
        "train/loss",
        "train/lr",
        "train/accuracy",
        "train/examples_per_s",
        "cost/flops",
        "cost/tokens",
        "cost/device_hours",
    } <= tags
    cost = json.loads((two_rank_run / "cost.json").read_text())
    # 307 rows on 2 ranks: 154 per rank (one padded repeat), 10 micro-batches of <= 16 per epoch.
    assert cost["optimizer_steps"] == 2 * 10
    assert cost["world_size"] == 2
    assert cost["train_examples"] == 2 * 2 * 154
    assert cost["train_flops"] == 6 * cost["flops_parameters"] * cost["train_tokens"]
    manifest = Dynamics.load(two_rank_run / "dynamics").manifest
    embeddings = manifest["num_parameters"] - cost["flops_parameters"]
    assert 30522 * 32 < embeddings < manifest["num_parameters"]  # tiny-bert: the embeddings dominate


def test_single_process_run_is_deterministic_and_learns(world, tmp_path):
    """Two runs one after the other in one process: nothing the first leaves behind (random
    generators, DeepSpeed's state) changes the second."""
    runs = []
    for name in ("a", "b"):
        ran_in_process(["reference", "--model", "tiny-bert", *COMMON, "--epochs", "2", "-o", tmp_path / name])
        runs.append(Dynamics.load(tmp_path / name / "dynamics"))
    np.testing.assert_array_equal(runs[0].logits, runs[1].logits)
    assert not np.allclose(runs[0].logits[:, 0], runs[0].logits[:, 1])  # the model trains between epochs


def _reference(out, **fields) -> ReferenceConfig:
    return from_dict(
        ReferenceConfig,
        {
            "model": "tiny-bert",
            "micro_batch_size": 16,
            "lr": 1e-3,
            "log_every": 1,
            "epochs": 2,
            "eval_pass": True,
            "output_dir": str(out),
            "data": {"embedded_train_size": TRAIN_SIZE},
            **fields,
        },
    )


class Interrupted(Exception):
    pass


def test_a_reference_resumed_mid_epoch_records_exactly_what_a_straight_run_does(world, tmp_path):
    """Cut at step 27 of 40 (20 a epoch), after its checkpoint at step 25: one epoch finished and a
    quarter of the next recorded. Resumed, its dynamics (training and eval-pass logits), losses and
    cost equal a straight run's bit for bit."""
    run_reference(_reference(tmp_path / "straight"), world)

    def cut(trainer):
        if trainer.state.step == 27:
            raise Interrupted

    with pytest.raises(Interrupted):
        run_reference(_reference(tmp_path / "cut", checkpoint_every=5), world, on_step_end=cut)
    assert (tmp_path / "cut" / "checkpoints" / "latest").read_text() == "step_25"
    steps = []
    run_reference(_reference(tmp_path / "cut", resume=True), world, on_step_end=lambda t: steps.append(t.state.step))
    assert steps == list(range(26, 41))  # the steps after the checkpoint, and only those

    straight, resumed = (Dynamics.load(tmp_path / name / "dynamics") for name in ("straight", "cut"))
    np.testing.assert_array_equal(resumed.logits, straight.logits)
    np.testing.assert_array_equal(resumed.eval_logits, straight.eval_logits)
    assert not np.allclose(straight.logits[:, 0], straight.logits[:, 1])  # it trained between the epochs

    def losses(name):
        lines = (tmp_path / name / "log.jsonl").read_text().splitlines()
        return [(r["step"], r["train/loss"]) for r in map(json.loads, lines) if "train/loss" in r]

    assert losses("cut") == losses("straight") and len(losses("straight")) == 40
    costs = [json.loads((tmp_path / name / "cost.json").read_text()) for name in ("straight", "cut")]
    for key in ("optimizer_steps", "train_examples", "train_tokens", "train_flops", "eval_flops"):
        assert costs[1][key] == costs[0][key], key
    assert not (tmp_path / "cut" / "checkpoints").exists()
