"""Checkpoints on the paths multi-rank runs take: the best weights kept and exported under ZeRO-2
and ZeRO-3 (whose parameters are partitioned), and `latest` after a slow rank."""

import json
import subprocess
import time

import numpy as np
import pytest
import torch

from ftft_ds.data.load import DataConfig, load_split
from ftft_ds.data.tokenize import Collator, tokenize_split
from ftft_ds.train.evaluate import classification_metrics

from .helpers import REPO, deepspeed_launch, launcher_command, quiet_env, tail

pytestmark = [pytest.mark.launcher, pytest.mark.xdist_group("test_checkpoint")]  # module fixtures: built once


def patience_run(stage: str, out):
    """54 steps on 2 ranks under `stage`, evaluated every 6 steps, the best by dev accuracy kept."""
    proc = deepspeed_launch(
        "launch/main.py",
        [
            "--model",
            "tiny-bert",
            "--ds-config",
            stage,
            "--budget",
            "steps:54",
            "--set",
            "data.embedded_train_size=400",
            "--set",
            "micro_batch_size=4",
            "--set",
            "lr=3e-3",
            "--set",
            "eval_every=6",
            "--set",
            "patience=100",
            "--set",
            "patience_metric=dev/accuracy",
            "--set",
            "data.eval_splits=[dev]",
            "-o",
            out,
        ],
    )
    assert proc.returncode == 0, tail(proc)
    return out


@pytest.fixture(scope="module")
def zero2_run(tmp_path_factory):
    return patience_run("zero2", tmp_path_factory.mktemp("zero2"))


@pytest.fixture(scope="module")
def zero3_run(tmp_path_factory):
    return patience_run("zero3", tmp_path_factory.mktemp("zero3"))


@pytest.mark.parametrize("stage", ["zero2", "zero3"])
def test_patience_reports_and_exports_the_selected_steps_weights(request, stage):
    """The selected evaluation is the one logged at the selected step, metric for metric, and the
    exported model predicts like that step's weights, not the last step's (ZeRO-3 reported the
    last weights once; ZeRO-1 is covered in one process by test_main_errors)."""
    out = request.getfixturevalue(f"{stage}_run")
    metrics = json.loads((out / "metrics.json").read_text())
    logged = {r["step"]: r for r in map(json.loads, (out / "log.jsonl").read_text().splitlines()) if "dev/mcc" in r}
    step = metrics["selected_step"]
    assert step < metrics["steps"] == 54  # the best checkpoint is not the last step
    assert logged[step]["dev/mcc"] != logged[metrics["steps"]]["dev/mcc"]  # the two weights tell apart
    selected = {key: value for key, value in metrics["selected"].items() if key != "step"}
    assert selected == {key: logged[step][key] for key in selected}
    assert sorted(p.name for p in (out / "checkpoints").glob("best_step_*")) == [f"best_step_{step}"]
    assert not (out / ".prepared-data").exists()  # rank 0's data for rank 1, removed at the end
    # 16 bytes per parameter of optimizer state stay out of the best checkpoint: weights only.
    best_bytes = sum(f.stat().st_size for f in (out / "checkpoints" / f"best_step_{step}").iterdir())
    full_bytes = sum(f.stat().st_size for f in (out / "checkpoints" / f"step_{metrics['steps']}").iterdir())
    assert best_bytes < full_bytes / 2

    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    model = AutoModelForSequenceClassification.from_pretrained(out / "model").eval()
    tokenizer = AutoTokenizer.from_pretrained(out / "model")
    dev = load_split(DataConfig(embedded_train_size=400), "dev")
    rows = tokenize_split(dev, tokenizer, 64)
    collate = Collator(tokenizer)
    with torch.no_grad():
        logits = torch.cat(
            [
                model(
                    **{
                        k: v
                        for k, v in collate([rows[i] for i in range(s, min(s + 16, len(rows)))]).items()
                        if k not in ("labels", "index")
                    }
                ).logits
                for s in range(0, len(rows), 16)
            ]
        )
    exported = classification_metrics(logits.argmax(-1).numpy(), np.asarray(rows["labels"]), dev.num_labels)
    assert exported["accuracy"] == pytest.approx(selected["dev/accuracy"], abs=1e-9)
    assert exported["mcc"] == pytest.approx(selected["dev/mcc"], abs=1e-6)


def test_latest_names_a_checkpoint_only_once_every_rank_wrote_it(tmp_path):
    """Rank 1 writes its checkpoint files 2 s after rank 0: `latest` must not name the new
    checkpoint before rank 1's files are there, and is never seen half-written."""
    out = tmp_path / "slow"
    cmd = launcher_command(
        "tests/scripts/slow_rank_save.py",
        [
            "--model",
            "tiny-bert",
            "--ds-config",
            "zero2",
            "--budget",
            "steps:9",
            "--set",
            "checkpoint_every=3",
            "--set",
            "data.embedded_train_size=64",
            "--set",
            "micro_batch_size=4",
            "--set",
            "data.eval_splits=[]",
            "--set",
            "export_model=false",
            "-o",
            out,
        ],
    )
    proc = subprocess.Popen(cmd, cwd=REPO, env=quiet_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    latest, seen, early = out / "checkpoints" / "latest", [], []
    while proc.poll() is None:
        try:
            tag = latest.read_text()
        except FileNotFoundError:
            time.sleep(0.01)
            continue
        if not seen or seen[-1] != tag:
            seen.append(tag)
            rank1 = out / "checkpoints" / tag / "zero_pp_rank_1_mp_rank_00_optim_states.pt"
            if not (tag and rank1.is_file()):
                early.append(tag)
        time.sleep(0.005)
    output = proc.communicate()[0]
    assert proc.returncode == 0, output[-3000:]
    assert seen and seen[-1] == "step_9", seen
    assert early == [], f"latest named {early} before rank 1 had written it"


def test_zero3_partitions_parameters_and_exports_a_consolidated_model(zero3_run):
    metrics = json.loads((zero3_run / "metrics.json").read_text())
    assert metrics["zero_stage"] == 3
    per_rank, total = metrics["parameters_per_rank"], metrics["num_parameters"]
    assert len(per_rank) == 2 and all(n < 0.6 * total for n in per_rank)
    assert total <= sum(per_rank) < total * 1.01  # shards (plus alignment padding) cover the model
    peaks = metrics["peak_memory_mib_per_rank"]
    training = metrics["training_memory_mib_per_rank"]
    assert len(peaks) == len(training) == 2
    assert all(isinstance(t, int) and 0 < t <= p for t, p in zip(training, peaks))
    if not torch.cuda.is_available():  # resident sets: torch alone is > 100 MiB
        assert min(training) > 100
    from transformers import AutoModelForSequenceClassification

    model = AutoModelForSequenceClassification.from_pretrained(zero3_run / "model")
    assert sum(p.numel() for p in model.parameters()) == total
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_a_zero3_best_checkpoint_saved_by_two_ranks_loads_on_one(zero3_run, world, tmp_path):
    """A run resumed on another number of ranks (through DeepSpeed's universal checkpoint) still
    loads the best weights its two ranks saved at the very end: one rank puts each weight back
    together from both partitions and then holds exactly the model the two-rank run exported."""
    import deepspeed
    from transformers import AutoModelForSequenceClassification

    from ftft_ds.config import MainConfig, from_dict
    from ftft_ds.train.checkpoint import Checkpointer
    from ftft_ds.train.engine import build_model_for, initialize_engine, run_ds_config

    cfg = from_dict(MainConfig, {"model": "tiny-bert", "ds_config": "zero3", "output_dir": str(tmp_path)})
    ds_config = run_ds_config(cfg, world, num_labels=3, schedule_steps=10, warmup_steps=1)
    engine = initialize_engine(build_model_for(cfg, 3, ds_config), ds_config)
    step = json.loads((zero3_run / "metrics.json").read_text())["selected_step"]
    Checkpointer(zero3_run / "checkpoints", world).load_best(engine, step)
    exported = AutoModelForSequenceClassification.from_pretrained(zero3_run / "model").state_dict()
    params = list(engine.module.named_parameters())
    with deepspeed.zero.GatheredParameters([p for _, p in params]):
        for name, p in params:
            torch.testing.assert_close(p.detach(), exported[name], rtol=0, atol=0, msg=name)
