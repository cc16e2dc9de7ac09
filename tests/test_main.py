"""Main runs on 2 CPU ranks under the `deepspeed` launcher: budgets, subsets, resume, nodes (ZeRO-3's
partitions and export: test_checkpoint)."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from ftft_ds.data.load import DataConfig, load_split
from ftft_ds.dynamics.select import Subset
from ftft_ds.dynamics.store import Dynamics
from ftft_ds.train.runtime import free_port

from .helpers import REPO, assert_same_losses, deepspeed_launch, launcher_command, quiet_env, ran_in_process, tail

pytestmark = pytest.mark.xdist_group("test_main")  # its module fixtures are built once, on one worker

TRAIN_SIZE = 240
COMMON = [
    "--model",
    "tiny-bert",
    "--set",
    f"data.embedded_train_size={TRAIN_SIZE}",
    "--set",
    "micro_batch_size=8",
    "--set",
    "lr=1e-3",
    "--set",
    "log_every=1",
]


@pytest.fixture(scope="module")
def split():
    return load_split(DataConfig(embedded_train_size=TRAIN_SIZE), "train")


@pytest.fixture(scope="module")
def subset_file(split, tmp_path_factory):
    """Every third training example (77 rows: an odd count, so the sampler pads)."""
    uids = list(split.dataset["uid"])[::3][:77]
    path = tmp_path_factory.mktemp("subset") / "subset.json"
    Subset(uids, {"dataset_fingerprint": split.fingerprint, "num_selected": len(uids)}).save(path)
    return path


def read_json(path):
    return json.loads(path.read_text())


def subset_run_args(subset_file) -> list:
    return [
        *COMMON,
        "--ds-config",
        "zero2",
        "--subset",
        subset_file,
        "--budget",
        "epochs:2",
        "--set",
        "record_dynamics=true",
        "--set",
        "eval_every=5",
    ]


@pytest.fixture(scope="module")
def zero2_subset_run(subset_file, tmp_path_factory):
    """2 ranks on one node, ZeRO-2, on the subset for 2 epochs, recording dynamics."""
    out = tmp_path_factory.mktemp("zero2")
    proc = deepspeed_launch("launch/main.py", [*subset_run_args(subset_file), "-o", out])
    assert proc.returncode == 0, tail(proc)
    return out


@pytest.mark.launcher
def test_zero2_subset_run_stops_at_budget_and_covers_the_subset(zero2_subset_run, subset_file):
    out = zero2_subset_run
    metrics = read_json(out / "metrics.json")
    # 77 rows on 2 ranks: 39 per rank, 5 micro-batches of <= 8, so 5 steps per epoch.
    assert metrics["steps"] == metrics["max_steps"] == 10
    assert metrics["train_rows"] == 77 and metrics["world_size"] == 2 and metrics["zero_stage"] == 2
    # The rows consumed, as the recorder saw them across both ranks: exactly the subset, each
    # once per epoch, for both epochs.
    dyn = Dynamics.load(out / "dynamics")
    assert sorted(dyn.uid_strings()) == sorted(Subset.load(subset_file).uids)
    assert dyn.logits.shape == (77, 2, 3)
    cost = read_json(out / "cost.json")
    assert cost["optimizer_steps"] == 10 and cost["train_examples"] == 2 * 2 * 39
    # Evaluation ran at steps 5 and 10 on ID and OOD splits.
    evals = [r for r in map(json.loads, (out / "log.jsonl").read_text().splitlines()) if "ood/accuracy" in r]
    assert [r["step"] for r in evals] == [5, 10]
    events = EventAccumulator(str(out / "tensorboard" / "main")).Reload()
    assert {
        "train/loss",
        "train/lr",
        "cost/flops",
        "cost/tokens",
        "cost/device_hours",
        "dev/accuracy",
        "ood/mcc",
    } <= set(events.Tags()["scalars"])
    assert len(events.Scalars("train/loss")) == 10


@pytest.mark.launcher
def test_two_nodes_on_loopback_train_as_the_same_two_ranks_on_one_node(tmp_path, subset_file, zero2_subset_run):
    """One rank on each of two loopback "nodes" (a hostfile, --no_ssh, --node_rank): the same run
    as two ranks on one node, loss for loss, with the same recorded rows and the same final weights.
    Two worlds of one, or two ranks reading one shard, would each give other losses and rows."""
    from transformers import AutoModelForSequenceClassification

    hostfile = tmp_path / "hostfile"
    hostfile.write_text("localhost slots=1\n127.0.0.1 slots=1\n")
    port = free_port()
    out = tmp_path / "two_nodes"
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "deepspeed.launcher.runner",
                "--hostfile",
                str(hostfile),
                "--no_ssh",
                "--node_rank",
                str(rank),
                "--master_addr",
                "127.0.0.1",
                "--master_port",
                str(port),
                str(REPO / "launch/main.py"),
                *map(str, subset_run_args(subset_file)),
                "-o",
                str(out),
            ],
            cwd=REPO,
            env=quiet_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for rank in (0, 1)
    ]
    outputs = [p.communicate(timeout=300)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs[0][-3000:] + outputs[1][-3000:]
    one_node, two_nodes = read_json(zero2_subset_run / "metrics.json"), read_json(out / "metrics.json")
    assert two_nodes["world_size"] == 2 and two_nodes["steps"] == one_node["steps"] == 10
    assert_same_losses(losses(out), losses(zero2_subset_run))
    assert two_nodes["final"] == pytest.approx(one_node["final"])
    both_shards = Dynamics.load(out / "dynamics")
    assert sorted(both_shards.uid_strings()) == sorted(Subset.load(subset_file).uids)
    torch.testing.assert_close(
        torch.from_numpy(both_shards.logits[:]),
        torch.from_numpy(Dynamics.load(zero2_subset_run / "dynamics").logits[:]),
    )
    weights = [
        AutoModelForSequenceClassification.from_pretrained(folder / "model").state_dict()
        for folder in (out, zero2_subset_run)
    ]
    assert weights[0].keys() == weights[1].keys()
    for name in weights[0]:
        torch.testing.assert_close(weights[0][name], weights[1][name])


def losses(out):
    return [
        (r["step"], r["train/loss"])
        for r in map(json.loads, (out / "log.jsonl").read_text().splitlines())
        if "train/loss" in r
    ]


@pytest.mark.launcher
def test_kill_and_resume_matches_an_uninterrupted_run(tmp_path):
    args = [
        *COMMON,
        "--ds-config",
        "zero2",
        "--budget",
        "steps:40",
        "--set",
        "checkpoint_every=10",
        "--set",
        "eval_every=20",
    ]
    full = tmp_path / "full"
    proc = deepspeed_launch("launch/main.py", [*args, "-o", full])
    assert proc.returncode == 0, tail(proc)

    cut = tmp_path / "cut"
    cmd = launcher_command("launch/main.py", [*args, "-o", cut])
    victim = subprocess.Popen(
        cmd, cwd=REPO, env=quiet_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    latest = cut / "checkpoints" / "latest"
    deadline = time.time() + 300
    while time.time() < deadline and not (latest.is_file() and latest.read_text().strip() == "step_20"):
        time.sleep(0.02)
    os.killpg(victim.pid, signal.SIGKILL)
    victim.wait()
    assert latest.read_text().strip() in ("step_20", "step_30"), "the run was not cut mid-way"
    assert not (cut / "metrics.json").exists()

    proc = deepspeed_launch("launch/main.py", [*args, "-o", cut, "--resume"])
    assert proc.returncode == 0, tail(proc)
    assert_same_losses(losses(cut), losses(full))
    a, b = read_json(full / "metrics.json"), read_json(cut / "metrics.json")
    assert a["final"] == b["final"] and a["steps"] == b["steps"] == 40
    assert read_json(cut / "cost.json")["train_examples"] == read_json(full / "cost.json")["train_examples"]


def test_resume_after_a_kill_past_the_final_checkpoint_only_finishes(world, tmp_path):
    """A scheduler's time limit can strike after the last checkpoint, before metrics.json and model/
    (even mid-export): the resumed run must not train past its budget, and must leave no temp folder."""
    from transformers import AutoModelForSequenceClassification

    out = tmp_path / "late"
    args = ["train", *COMMON, "--budget", "steps:12", "-o", out]
    ran_in_process(args)
    finished = read_json(out / "metrics.json")
    (out / "model").rename(tmp_path / "model_before")
    (out / "metrics.json").unlink()
    (out / ".model.k1ll3d.tmp").mkdir()  # what a kill during export leaves

    ran_in_process([*args, "--resume"])
    resumed = read_json(out / "metrics.json")
    assert resumed["steps"] == finished["steps"] == 12 and resumed["final"] == finished["final"]
    assert read_json(out / "cost.json")["optimizer_steps"] == 12
    assert not list(out.glob(".model.*.tmp"))
    before = AutoModelForSequenceClassification.from_pretrained(tmp_path / "model_before").state_dict()
    after = AutoModelForSequenceClassification.from_pretrained(out / "model").state_dict()
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)


@pytest.mark.launcher
def test_the_cost_plan_matches_a_two_rank_run(tmp_path):
    """The plan counts every row's tokens and the steps from the batch arithmetic; the run pads its
    shards (2,051 rows on 2 ranks: one repeat, which the plan leaves out) and ends each epoch on a
    partial batch (1,026 rows a rank in micro-batches of 64). The two agree within 0.1%, and its
    closing evaluation to the token."""
    from ftft_ds.config import from_dict
    from ftft_ds.data.load import load_splits
    from ftft_ds.pipeline.config import RecipeConfig
    from ftft_ds.pipeline.cost_plan import plan_costs

    rows = 2051
    assert (rows + 1) // 2 % 64
    main = {"model": "tiny-bert", "micro_batch_size": 64, "erm_epochs": 1.0, "export_model": False}
    data = {"embedded_train_size": rows, "eval_splits": ["dev"]}
    out = tmp_path / "erm"
    proc = deepspeed_launch(
        "launch/main.py",
        [
            "--model",
            "tiny-bert",
            "--set",
            f"data.embedded_train_size={rows}",
            "--set",
            "data.eval_splits=[dev]",
            "--set",
            "micro_batch_size=64",
            "--set",
            "erm_epochs=1",
            "--set",
            "export_model=false",
            "--budget",
            "erm:1",
            "-o",
            out,
        ],
    )
    assert proc.returncode == 0, tail(proc)
    cost = read_json(out / "cost.json")
    assert cost["optimizer_steps"] == 17 and cost["train_examples"] == rows + 1
    recipe = from_dict(RecipeConfig, {"data": data, "main": main, "methods": ["erm"], "num_ranks": 2})
    plan = plan_costs(recipe, load_splits(DataConfig(**data)), {})
    assert plan.erm.train == pytest.approx(cost["train_flops"], rel=1e-3)
    # A run that only evaluates at its end spends its evaluations on the report, outside the plan.
    assert plan.erm.total == plan.erm.train == pytest.approx(cost["cost_flops"], rel=1e-3)
    assert cost["report_flops"] == cost["eval_flops"] > 0


def _start_with_own_view(rank: int, port: int, out: str, results) -> None:
    """A rank of a two-rank main run whose restart decision (`resume`) is its own: rank 1 believes
    there is a checkpoint to resume from (a stale file-system cache), rank 0 knows there is none."""
    from ftft_ds.config import MainConfig, from_dict
    from ftft_ds.runs.main import run_main

    os.environ.update(
        RANK=str(rank), WORLD_SIZE="2", LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port)
    )
    cfg = from_dict(
        MainConfig,
        {
            "model": "tiny-bert",
            "data": {"embedded_train_size": 40, "eval_splits": []},
            "micro_batch_size": 4,
            "budget": "steps:3",
            "export_model": False,
            "output_dir": out,
            "resume": rank == 1,
        },
    )
    results[rank] = run_main(cfg)["steps"]


def test_every_rank_starts_as_rank_0_decides(tmp_path):
    import torch.multiprocessing as mp

    with mp.Manager() as manager:
        results = manager.dict()
        mp.spawn(_start_with_own_view, args=(free_port(), str(tmp_path / "run"), results), nprocs=2)
        assert dict(results) == {0: 3, 1: 3}  # both trained from step 0, as rank 0 decided
