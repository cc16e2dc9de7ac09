"""Main runs: FLOPs/time budgets and patience stop where they should; bad input fails cleanly.

One-process runs train in this test process (the `world` fixture's group of one): what they check
does not depend on a fresh interpreter, and starting one costs more than their training."""

import json

import pytest

from ftft_ds.dynamics.select import Subset

from .helpers import (
    assert_same_losses,
    deepspeed_launch,
    ran_in_process,
    refused_in_process,
    save_without_dropout,
)

COMMON = [
    "--model",
    "tiny-bert",
    "--set",
    "data.embedded_train_size=120",
    "--set",
    "micro_batch_size=8",
    "--set",
    "log_every=1",
]


def log_records(out):
    return [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]


def test_flops_budget_stops_at_the_first_step_past_it(world, tmp_path):
    out = tmp_path / "flops"
    budget = 2.0e9
    ran_in_process(["train", *COMMON, "--budget", f"flops:{budget}", "-o", out])
    flops = [r["cost/flops"] for r in log_records(out) if "train/loss" in r]
    assert flops[-1] >= budget > flops[-2]
    assert json.loads((out / "metrics.json").read_text())["steps"] == len(flops)


def test_time_budget_and_patience(world, tmp_path):
    timed = tmp_path / "seconds"
    ran_in_process(["train", *COMMON, "--budget", "seconds:3", "-o", timed])
    walls = [r["cost/wall_seconds"] for r in log_records(timed) if "train/loss" in r]
    assert walls[-1] >= 3 > walls[-2]


def test_patience_reports_the_best_checkpoint_and_costs_up_to_the_stop(world, tmp_path):
    """The FTFT protocol's stopping rule: evaluations spread over the ERM schedule, patience on a
    validation metric, the best checkpoint reported, the cost counted up to where the run stopped."""
    patient = tmp_path / "patience"
    # 120 rows / batch 8 = 15 steps an epoch; erm_epochs=3 -> a 45-step schedule, evaluated every 3 steps.
    ran_in_process(
        [
            "train",
            *COMMON,
            "--budget",
            "steps:200",
            "--set",
            "erm_epochs=3",
            "--set",
            "evals_per_schedule=15",
            "--set",
            "patience=2",
            "--set",
            "patience_metric=ood_dev/accuracy",
            "--set",
            "lr=1e-7",
            "-o",
            patient,
        ]
    )
    metrics = json.loads((patient / "metrics.json").read_text())
    records = log_records(patient)
    evals = {r["step"]: r for r in records if "ood_dev/accuracy" in r}
    assert sorted(evals) == list(range(3, metrics["steps"] + 1, 3))
    assert metrics["stopped"] == "patience" and metrics["steps"] < 200
    assert metrics["steps"] == metrics["best"]["step"] + 2 * 3 == metrics["selected_step"] + 6
    assert set(evals[3]) == {
        "step",
        "ood_dev/accuracy",
        "ood_dev/macro_f1",
        "ood_dev/mcc",
    }  # only what patience follows
    best = evals[metrics["selected_step"]]
    assert metrics["best"]["score"] == best["ood_dev/accuracy"] == max(r["ood_dev/accuracy"] for r in evals.values())
    # The kept checkpoint, evaluated on every split: its validation score is the one patience saw.
    selected = metrics["selected"]
    assert selected["step"] == metrics["selected_step"] and selected["ood_dev/accuracy"] == best["ood_dev/accuracy"]
    assert {f"{s}/accuracy" for s in ("dev", "test", "ood_dev", "ood")} <= set(selected)
    cost = json.loads((patient / "cost.json").read_text())
    # Counted up to the stop, not over the 200-step cap: 8 examples a step (15 full batches an epoch).
    assert len([r for r in records if "train/loss" in r]) == metrics["steps"] == cost["optimizer_steps"]
    assert cost["train_examples"] == 8 * metrics["steps"]
    assert cost["train_flops"] == pytest.approx(6 * cost["flops_parameters"] * cost["train_tokens"])
    assert (patient / "checkpoints" / f"best_step_{metrics['selected_step']}").is_dir()
    assert (patient / "model" / "config.json").is_file()


@pytest.mark.launcher
def test_subset_from_another_dataset_fails_on_every_rank(tmp_path):
    subset = tmp_path / "subset.json"
    Subset(["abc"], {"dataset_fingerprint": "0000000000000000", "num_selected": 1}).save(subset)
    proc = deepspeed_launch("launch/main.py", [*COMMON, "--subset", subset, "-o", tmp_path / "run"], timeout=120)
    assert proc.returncode == 2
    errors = [line for line in (proc.stdout + proc.stderr).splitlines() if line.startswith("error:")]
    assert len(errors) == 2 and "selected on dataset 0000000000000000" in errors[0]
    assert "Traceback" not in proc.stdout + proc.stderr
    assert not (tmp_path / "run" / "metrics.json").exists()


@pytest.mark.parametrize(
    "args, message",
    [
        (["--budget", "steps:0"], "must be positive"),
        (["--budget", "epochs:5000"], "at most 1000"),
        (["--budget", "hours:1"], "KIND:VALUE"),
        (["--ds-config", "zero7"], "zero7"),
        (["--ds-config", "{bad}"], "not found"),
        (["--set", "lr_schedule=cosine"], "lr_schedule"),
        (["--set", "patience=3", "--set", "patience_metric=train/accuracy"], "patience_metric"),
        (["--set", "max_length=900"], "max_length 900 is more than model 'tiny-bert' takes (512 positions)"),
        (["--model", "/no/such/model"], "model folder '/no/such/model' does not exist"),
        (["--num-layers", "abc"], "Invalid value for '--num-layers': 'abc' is not a valid integer"),
    ],
)
def test_bad_options_give_one_line(tmp_path, args, message):
    """Refused before any process group starts (`check_before_start`), so checked in-process."""
    errors = refused_in_process(["train", *COMMON, *args, "-o", tmp_path / "run"])
    assert len(errors) == 1 and errors[0].startswith("error:") and message in errors[0]
    assert not (tmp_path / "run").exists()


def test_impossible_batch_arithmetic_and_malformed_config(world, tmp_path):
    fixed = tmp_path / "fixed.json"
    fixed.write_text(json.dumps({"train_batch_size": 7, "train_micro_batch_size_per_gpu": 8}))
    broken = tmp_path / "broken.json"
    broken.write_text('{"train_batch_size": ')
    worded = tmp_path / "worded.json"
    worded.write_text(json.dumps({"zero_optimization": {"stage": "two"}}))
    typo = tmp_path / "typo.json"
    typo.write_text(json.dumps({"optimizer": {"type": "Adamm", "params": {}}}))
    (tmp_path / "empty_model").mkdir()
    for args, message in (
        (["--ds-config", broken], "not valid JSON"),
        (["--ds-config", worded], "zero_optimization.stage must be 0, 1, 2 or 3, got 'two'"),
        (["--ds-config", typo], "optimizer.type 'Adamm' is unknown"),
        (["--model", tmp_path / "empty_model"], "has no config.json; expected a Hugging Face model folder"),
    ):
        errors = refused_in_process(["train", *COMMON, *args, "-o", tmp_path / "run"])
        assert len(errors) == 1 and errors[0].startswith("error:") and message in errors[0]
        assert not (tmp_path / "run").exists()  # nothing half-written: not even the folder
    # The batch arithmetic needs the world size, known once the process group is up.
    errors = refused_in_process(["train", *COMMON, "--ds-config", fixed, "-o", tmp_path / "run"])
    assert errors[-1].startswith("error:") and "train_batch_size=7" in errors[-1]
    assert not (tmp_path / "run").exists()


def test_a_budget_past_the_schedule_warns_and_exports_name_the_labels(world, tmp_path):
    out = tmp_path / "run"
    # 120 rows / batch 8 = 15 steps an epoch: a 15-step ERM schedule, then 5 steps at learning rate 0.
    proc = ran_in_process(
        [
            "train",
            *COMMON,
            "--set",
            "erm_epochs=1",
            "--budget",
            "steps:20",
            "--set",
            "data.eval_splits=[dev]",
            "-o",
            out,
        ]
    )
    assert (
        "warning: budget steps:20 means 20 steps but the learning-rate schedule spans 15 (the ERM budget), "
        "so the last 5 steps train at learning rate 0"
    ) in proc.stderr
    config = json.loads((out / "model" / "config.json").read_text())
    assert config["id2label"] == {"0": "entailment", "1": "neutral", "2": "contradiction"}


def test_config_errors_need_no_process_group(tmp_path):
    assert (
        "micro_batch_size must be at least 1"
        in refused_in_process(["train", *COMMON, "--set", "micro_batch_size=0", "-o", tmp_path])[-1]
    )


def test_evaluating_does_not_change_training(world, tmp_path):
    """ERM and ERM with early stopping must walk the same trajectory until one of them stops."""
    losses = {}
    for name, extra in (("quiet", []), ("evaluating", ["--set", "eval_every=3"])):
        ran_in_process(
            ["train", *COMMON, "--budget", "steps:12", *extra, "--set", "export_model=false", "-o", tmp_path / name]
        )
        losses[name] = [r["train/loss"] for r in log_records(tmp_path / name) if "train/loss" in r]
    assert len(losses["quiet"]) == 12
    assert_same_losses(losses["quiet"], losses["evaluating"])


def test_loader_workers_resume_with_the_very_next_example(world, tmp_path):
    """Worker processes draw rows ahead of the batches trained on; a run cut mid-epoch and resumed
    still walks the same trajectory as a straight one (the position is the trainer's count)."""
    args = [
        *COMMON,
        "--set",
        "num_workers=2",
        "--set",
        "pad_to_multiple_of=8",
        "--set",
        "eval_batch_size=5",
        "--set",
        "export_model=false",
        "--set",
        "data.eval_splits=[dev]",
    ]
    ran_in_process(["train", *args, "--budget", "steps:10", "-o", tmp_path / "straight"])
    ran_in_process(["train", *args, "--budget", "steps:5", "-o", tmp_path / "cut"])
    ran_in_process(["train", *args, "--budget", "steps:10", "--resume", "-o", tmp_path / "cut"])
    losses = {
        name: [(r["step"], r["train/loss"]) for r in log_records(tmp_path / name) if "train/loss" in r]
        for name in ("straight", "cut")
    }
    assert len(losses["straight"]) == 10
    assert_same_losses(losses["cut"], losses["straight"])


def test_grad_accum_2_walks_the_trajectory_of_a_batch_twice_as_big_on_a_compressed_schedule(world, tmp_path):
    """Micro-batches of 4 accumulated twice are batches of 8: the same examples per optimizer step,
    the same losses (dropout off), the same learning rates. `compressed` squeezes warm-up and
    linear decay into the run's own budget (half the ERM schedule here), so the decay reaches
    zero one step past the last."""
    model = save_without_dropout(tmp_path / "model")
    runs = {}
    for micro, accum in ((8, 1), (4, 2)):
        out = tmp_path / f"accum{accum}"
        ran_in_process(
            [
                "train",
                *COMMON,
                "--model",
                model,
                "--set",
                f"micro_batch_size={micro}",
                "--set",
                f"grad_accum={accum}",
                "--set",
                "lr_schedule=compressed",
                "--set",
                "erm_epochs=2",
                "--set",
                "data.eval_splits=[dev]",
                "--budget",
                "erm:0.5",
                "-o",
                out,
            ]
        )
        trained = [r for r in log_records(out) if "train/loss" in r]
        runs[accum] = (
            [r["train/loss"] for r in trained],
            [r["train/lr"] for r in trained],
            json.loads((out / "cost.json").read_text()),
        )
    (losses, lrs, cost), (accumulated, accumulated_lrs, accumulated_cost) = runs[1], runs[2]
    assert len(losses) == cost["optimizer_steps"] == accumulated_cost["optimizer_steps"] == 15  # erm:0.5 of 2 x 15
    assert accumulated_cost["train_examples"] == cost["train_examples"] == 120
    assert accumulated == pytest.approx(losses, rel=1e-5)
    assert accumulated_lrs == lrs and lrs[-1] == pytest.approx(lrs[-2] / 2) and max(lrs) == pytest.approx(5e-5)
