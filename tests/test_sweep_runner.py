"""`ftft sweep`: exact steps per trial, survivors continue from their checkpoint, resume after SIGTERM."""

import contextlib
import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
import yaml

from ftft_ds.config import from_dict
from ftft_ds.data.sampler import ShardedSampler
from ftft_ds.errors import FtftError
from ftft_ds.sweep.runner import SweepConfig
from ftft_ds.train.models import build_model

from .helpers import REPO, assert_same_losses, in_process, processes_mentioning, quiet_env, ran_in_process, world_of_one

SWEEP = {
    "data": {"embedded_train_size": 160},
    "main": {"model": "tiny-bert", "micro_batch_size": 8, "lr": 1.0e-3, "budget": "steps:20", "log_every": 1},
    "policy": "ssc:t=4,f=0.25,p=2",
    "wi_seeds": [1, 2],
    "do_seeds": [10, 20],
    "parallel": 2,  # two trials at a time, each in its own process
    "evals_per_epoch": 4,  # every 5 of the 20 steps an epoch: scores before the first rung
    "divergence_margin": None,  # tiny random models stay at majority level; keep them all
}


@pytest.mark.parametrize(
    "field, value",
    [
        ("eval_every", 5),
        ("evals_per_schedule", 12),
        ("patience", 3),
        ("patience_metric", "dev/mcc"),
        ("divergence_margin", 0.05),
        ("export_model", True),
        ("schedule_budget", "erm:1"),
        ("init_seed", 4),
    ],
)
def test_a_main_field_the_sweep_owns_is_refused_not_overwritten(field, value):
    with pytest.raises(
        FtftError,
        match=rf"^main\.{field} is set by the sweep for every run it starts; "
        rf"remove it from main$",
    ):
        from_dict(SweepConfig, {**SWEEP, "main": {**SWEEP["main"], field: value}})


@pytest.mark.parametrize(
    "wi, do", [([1, 1, 2, 3, 4, 5], [0]), ([0], [7, 7, 8, 9, 10, 11]), ([0, 1, 2, 3, 4, True], [0])]
)
def test_a_grid_with_a_repeated_seed_is_refused(wi, do):
    """Two equal seeds would train two identical trials and bias every expected-max estimate."""
    with pytest.raises(FtftError, match=r"^(wi|do)_seeds must be distinct integers, got \["):
        from_dict(SweepConfig, {**SWEEP, "policy": "none:t=6", "wi_seeds": wi, "do_seeds": do})


def losses(folder):
    return {
        r["step"]: r["train/loss"]
        for r in map(json.loads, (folder / "log.jsonl").read_text().splitlines())
        if "train/loss" in r
    }


def test_sweep_runs_exact_steps_continues_survivors_and_resumes(tmp_path):
    out = tmp_path / "sweep"
    config = tmp_path / "sweep.yaml"
    config.write_text(yaml.safe_dump({**SWEEP, "output_dir": str(out)}))

    # Stop the sweep with SIGTERM to the orchestrator alone, as `kill PID` or a scheduler does, once
    # the first two trials, run side by side, have finished rung 1: its trial processes stop too.
    victim = subprocess.Popen(
        [sys.executable, "-m", "ftft_ds", "sweep", str(config)],
        cwd=REPO,
        env=quiet_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    done = [out / "trials" / f"trial{i:03d}" / "metrics.json" for i in range(2)]
    try:
        deadline = time.time() + 400
        while time.time() < deadline and not all(p.is_file() for p in done):
            time.sleep(0.1)
        os.kill(victim.pid, signal.SIGTERM)
        assert victim.wait(timeout=60) == 128 + signal.SIGTERM
        assert processes_mentioning(str(out)) == []
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(victim.pid, signal.SIGKILL)
    assert all(p.is_file() for p in done) and not (out / "trials" / "trial003" / "metrics.json").exists()

    proc = ran_in_process(["sweep", config])
    assert "4 trials alive, 2 to run" in proc.stdout
    summary = json.loads((out / "sweep.json").read_text())
    assert summary["rung_steps"] == [5, 20]
    steps = {row["trial"]: row["steps"] for row in summary["trials"]}
    survivors = [t for t, s in steps.items() if s == 20]
    assert sorted(steps.values()) == [5, 5, 20, 20] and len(survivors) == 2
    assert summary["budget_full_runs"] == summary["policy_budget_full_runs"] == 4 * 0.25 + 2 * 0.75
    # Stopped trials keep their metrics, logs and weights, not their optimizer states; survivors all.
    assert "2 trial(s) stopped:" in proc.stdout and "MiB of optimizer states deleted" in proc.stdout
    for trial, reached in steps.items():
        checkpoints = out / "trials" / f"trial{trial:03d}" / "checkpoints"
        assert (checkpoints / "latest").is_file() == (reached == 20)
        assert bool(list(checkpoints.glob("step_*/*optim_states.pt"))) == (reached == 20)
        assert list(checkpoints.glob("step_*/mp_rank_00_model_states.pt"))
        assert (checkpoints.parent / "metrics.json").is_file()

    # A survivor's second segment resumed from the checkpoint at the cut: its losses equal those of
    # the same trial trained 20 steps in one go.
    folder = out / "trials" / f"trial{survivors[0]:03d}"
    assert json.loads((folder / "run_config.json").read_text())["resume"] is True
    assert sorted(losses(folder)) == list(range(1, 21))
    straight = json.loads((folder / "run_config.json").read_text())
    straight.update(output_dir=str(tmp_path / "straight"), resume=False, budget="steps:20")
    (tmp_path / "straight.json").write_text(json.dumps(straight))
    with world_of_one():
        ran_in_process(["train", tmp_path / "straight.json"])
    assert_same_losses(losses(tmp_path / "straight"), losses(folder))

    report = in_process(["report", out])
    assert report.exit_code == 0, report.output
    assert (out / "report.json").is_file() and "E[max]" in (out / "report.md").read_text()


def test_weight_init_and_data_order_seeds_are_independent():
    torch.manual_seed(123)
    a = build_model("tiny-bert", 3, init_seed=7)
    torch.manual_seed(456)  # other global state (e.g. another data-order or dropout seed)
    b = build_model("tiny-bert", 3, init_seed=7)
    c = build_model("tiny-bert", 3, init_seed=8)
    assert torch.equal(a.classifier.weight, b.classifier.weight)
    assert not torch.equal(a.classifier.weight, c.classifier.weight)

    torch.manual_seed(1)
    first = list(ShardedSampler(range(50), 1, 0, seed=10))
    torch.manual_seed(2)
    assert list(ShardedSampler(range(50), 1, 0, seed=10)) == first
    assert list(ShardedSampler(range(50), 1, 0, seed=11)) != first


def test_divergence_guard_stops_trials_stuck_at_majority(tmp_path):
    config = tmp_path / "sweep.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                **SWEEP,
                "output_dir": str(tmp_path / "out"),
                "policy": "none:t=2",
                "wi_seeds": [1],
                "do_seeds": [1, 2],
                "divergence_margin": 0.05,
            }
        )
    )
    # What a segment killed before its first checkpoint leaves: the sweep starts that trial over.
    stale = tmp_path / "out" / "trials" / "trial000"
    (stale / "tensorboard").mkdir(parents=True)
    (stale / "log.jsonl").write_text('{"step": 99, "train/loss": 9.9}\n')
    ran_in_process(["sweep", config])
    rows = json.loads((tmp_path / "out" / "sweep.json").read_text())["trials"]
    assert all(r["status"] == "diverged" and r["steps"] < 20 for r in rows)
    assert '"step": 99' not in (stale / "log.jsonl").read_text()
