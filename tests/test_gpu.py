"""The GPU path: bf16, PyTorch's fused AdamW (no compiled DeepSpeed kernel), NCCL across GPUs,
ZeRO-3 export, dropout streams that survive the model's build, and a reference plus main run.
Skipped without CUDA (see conftest.py); `make gpu-check` runs them."""

import json

import numpy as np
import pytest
import torch

from ftft_ds.train.ds_config import TrainArgs, resolve_ds_config
from ftft_ds.train.models import build_model

from .helpers import deepspeed_launch, ftft, tail
from .test_precision import probe

pytestmark = pytest.mark.gpu

TINY = ["--model", "tiny-bert", "--set", "data.embedded_train_size=200", "--set", "micro_batch_size=16"]


def test_bf16_auto_follows_the_hardware():
    args = TrainArgs(
        micro_batch_size=4, grad_accum=1, world_size=1, lr=1e-4, weight_decay=0.0, warmup_steps=1, total_steps=10
    )
    native = torch.cuda.get_device_capability() >= (8, 0)
    assert resolve_ds_config("zero2", args)["bf16"]["enabled"] is native


def test_engine_uses_fused_torch_adamw_in_bf16(tmp_path):
    built = probe(tmp_path, ds_config="zero2", grad_accum=2)
    assert built["device"].startswith("cuda") and built["optimizer"] == "torch.optim.adamw.AdamW"
    assert built["fused"] is True and built["compiled_ops"] == []
    if torch.cuda.get_device_capability() >= (8, 0):
        assert built["bf16"] is True and built["grad_accum_dtype"] == "torch.float32"


def test_building_a_model_leaves_the_cuda_dropout_stream_alone():
    torch.cuda.manual_seed_all(1234)
    before = torch.cuda.get_rng_state()
    build_model("tiny-bert", 3, init_seed=7)
    assert torch.equal(torch.cuda.get_rng_state(), before)


def test_reference_then_main_run_on_the_gpu(tmp_path):
    ref = tmp_path / "ref"
    proc = ftft(["reference", *TINY, "--set", "epochs=2", "-o", ref])
    assert proc.returncode == 0, tail(proc)
    logits = torch.from_numpy(np.load(ref / "dynamics" / "logits.npy"))
    assert logits.dtype == torch.float32 and (logits != logits.bfloat16().float()).any()
    proc = ftft(
        ["select", ref / "dynamics", "--region", "ambiguous", "--fraction", "0.33", "-o", tmp_path / "subset.json"]
    )
    assert proc.returncode == 0, tail(proc)
    main = tmp_path / "main"
    proc = ftft(
        [
            "train",
            *TINY,
            "--subset",
            tmp_path / "subset.json",
            "--budget",
            "steps:20",
            "--set",
            "eval_every=5",
            "--set",
            "patience=2",
            "-o",
            main,
        ]
    )
    assert proc.returncode == 0, tail(proc)
    metrics = json.loads((main / "metrics.json").read_text())
    assert metrics["peak_reserved_mib_per_rank"][0] >= metrics["peak_memory_mib_per_rank"][0] > 0


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs 2 GPUs")
def test_zero3_over_nccl_on_two_gpus_exports_a_whole_model(tmp_path):
    out = tmp_path / "zero3"
    proc = deepspeed_launch("launch/main.py", [*TINY, "--ds-config", "zero3", "--budget", "steps:10", "-o", out])
    assert proc.returncode == 0, tail(proc)
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["world_size"] == 2 and metrics["zero_stage"] == 3
    from transformers import AutoModelForSequenceClassification

    model = AutoModelForSequenceClassification.from_pretrained(out / "model")
    assert sum(p.numel() for p in model.parameters()) == metrics["num_parameters"]
