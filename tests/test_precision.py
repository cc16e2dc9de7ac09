"""Precision on the bf16 path: float32 weights whatever a checkpoint's dtype, float32 logits from
the classification head, gradients accumulated in fp32."""

import json

import numpy as np
import torch

from ftft_ds.train.ds_config import read_ds_config
from ftft_ds.train.models import Float32Linear, build_model

from .helpers import ran_in_process, tail


def test_a_bf16_checkpoint_loads_in_float32(tmp_path):
    model = build_model("tiny-bert", 3)
    assert isinstance(model.classifier, Float32Linear)
    model.to(torch.bfloat16).save_pretrained(tmp_path / "bf16")
    from ftft_ds.train.models import load_tokenizer

    load_tokenizer("tiny-bert").save_pretrained(tmp_path / "bf16")
    loaded = build_model(str(tmp_path / "bf16"), 3)
    assert {p.dtype for p in loaded.parameters()} == {torch.float32}


def test_bf16_run_records_float32_logits(world, tmp_path):
    """Under bf16 (DeepSpeed's CPU accelerator runs it; `bf16=true` turns the bundled configs'
    `"auto"` on without a GPU) with 2 micro-batches accumulated, the recorded logits are float32
    values, not bf16 ones widened."""
    out = tmp_path / "ref"
    run = ran_in_process(
        [
            "reference",
            "--model",
            "tiny-bert",
            "--ds-config",
            "zero1",
            "--set",
            "bf16=true",
            "--set",
            "epochs=1",
            "--set",
            "data.embedded_train_size=64",
            "--set",
            "micro_batch_size=8",
            "--set",
            "grad_accum=2",
            "--set",
            "evaluate=false",
            "-o",
            out,
        ]
    )
    # DeepSpeed's BF16 optimizer is what ZeRO-1 builds for bf16 weights with fp32 gradient accumulation.
    assert "begin bf16_optimizer" in run.stdout
    logits = torch.from_numpy(np.load(out / "dynamics" / "logits.npy"))
    widened = logits.bfloat16().float()
    assert (logits != widened).float().mean() > 0.9


def probe(tmp_path, **config) -> dict:
    """What DeepSpeed built for a run of `config` (see tests/scripts/engine_probe.py)."""
    import subprocess
    import sys

    from .helpers import REPO, quiet_env

    base = {
        "model": "tiny-bert",
        "output_dir": str(tmp_path / "probe"),
        "overwrite": True,
        "data": {"embedded_train_size": 40, "eval_splits": []},
    }
    proc = subprocess.run(
        [sys.executable, str(REPO / "tests/scripts/engine_probe.py"), json.dumps({**base, **config})],
        cwd=REPO,
        env=quiet_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    lines = [line for line in proc.stdout.splitlines() if line.startswith("PROBE ")]
    assert proc.returncode == 0 and lines, tail(proc)
    return json.loads(lines[0][len("PROBE ") :])


def test_bf16_under_zero_accumulates_gradients_in_fp32(tmp_path):
    config = read_ds_config("zero2")
    config["bf16"] = {"enabled": True}
    (tmp_path / "bf16.json").write_text(json.dumps(config))
    built = probe(tmp_path, ds_config=str(tmp_path / "bf16.json"), grad_accum=2)
    assert built["model_dtype"] == "torch.bfloat16" and built["grad_accum_dtype"] == "torch.float32"
    assert built["optimizer"] == "torch.optim.adamw.AdamW" and built["compiled_ops"] == []
