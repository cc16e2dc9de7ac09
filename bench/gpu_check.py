"""`make gpu-check`: the GPU tests, then training throughput and the recorder's overhead on one GPU.

1. `pytest -m gpu tests`: bf16, fused AdamW without a compiled kernel, NCCL on 2 GPUs where there
   are 2, ZeRO-3 export, a reference plus main run;
2. `bench/bench_trainer.py` on the 1B Llama-style decoder (0.91B parameters, random weights) in
   bf16: under ZeRO-2, tokens/s and MFU of ftft's loop beside the bare DeepSpeed loop and the
   Hugging Face Trainer; under ZeRO-3, full fine-tuning beside LoRA (rank 8, every linear layer):
   step time, memory and FLOPs per token;
3. `bench/bench_recorder.py`: what recording training dynamics adds to a step.

Sized to finish in under 10 minutes on one H100-class GPU; each part has its own time limit, and
a part that runs out of it is reported as such while the others still run. Without a GPU it
refuses in one line (exit code 2).
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PARTS = (
    ("GPU tests", [sys.executable, "-m", "pytest", "-q", "-m", "gpu", "tests"], 240),
    (
        "trainer, llama-1b, ZeRO-2, bf16",
        [
            sys.executable,
            "bench/bench_trainer.py",
            "--model",
            "llama-1b",
            "--ds-config",
            "zero2",
            "--batch",
            "8",
            "--max-length",
            "256",
            "--steps",
            "20",
            "--warmup",
            "3",
            "--repeats",
            "1",
            "--log-every",
            "10",
        ],
        150,
    ),
    (
        "trainer, llama-1b, ZeRO-3, bf16, full fine-tuning and LoRA",
        [
            sys.executable,
            "bench/bench_trainer.py",
            "--model",
            "llama-1b",
            "--variants",
            "ftft,lora",
            "--ds-config",
            "zero3",
            "--batch",
            "8",
            "--max-length",
            "256",
            "--steps",
            "20",
            "--warmup",
            "3",
            "--repeats",
            "1",
            "--log-every",
            "10",
        ],
        150,
    ),
    ("recorder overhead, minilm", [sys.executable, "bench/bench_recorder.py", "--blocks", "20", "--steps", "5"], 60),
)


def main() -> int:
    import torch

    if not torch.cuda.is_available():
        print(
            f"error: gpu-check needs a CUDA GPU; torch {torch.__version__} sees none "
            f"(CUDA build: {torch.version.cuda or 'no'})",
            file=sys.stderr,
        )
        return 2
    print(f"gpu-check on {torch.cuda.device_count()} x {torch.cuda.get_device_name(0)}, torch {torch.__version__}")
    failed = []
    for name, command, limit in PARTS:
        print(f"\n== {name} (limit {limit} s): {' '.join(command[1:])}", flush=True)
        started = time.perf_counter()
        try:
            code = subprocess.run(command, cwd=REPO, timeout=limit).returncode
        except subprocess.TimeoutExpired:
            code = "timed out"
        print(f"== {name}: {'ok' if code == 0 else code} in {time.perf_counter() - started:.0f} s", flush=True)
        if code != 0:
            failed.append(name)
    print("\ngpu-check: " + ("all parts passed" if not failed else "failed: " + ", ".join(failed)))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
