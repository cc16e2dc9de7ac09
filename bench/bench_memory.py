"""Per-rank peak memory of a main run of a few-hundred-million-parameter decoder: 1 rank, ZeRO-2, ZeRO-3.

A Llama-style decoder (default about 270M parameters: 20 layers of width 1024, a 32,000-row
vocabulary) is built from a config with random weights and saved as a causal-LM checkpoint, as a
real one would be. `deepspeed launch/main.py` then trains it for a few optimizer steps on the
embedded task in each set-up, and each rank reports its memory in `metrics.json`: the largest
resident set at a log point while training (`training_memory_mib_per_rank`; the allocator's peak
on GPU) and the process's peak over the whole run, set-up and final checkpoint included
(`peak_memory_mib_per_rank`), beside the parameter values it holds (`parameters_per_rank`).

On CPU the training is fp32 with Adam, so model states take 16 bytes per parameter (weights,
gradients, two moments) whole on one rank; ZeRO-2 divides gradients and optimizer states between
the ranks, ZeRO-3 the weights too. Resident sets also hold the libraries (about 0.35 GiB) and
loading buffers, so the table prints the model-state bytes that theory expects beside them.

Every rank runs with glibc's mmap threshold fixed at 64 KiB (`MALLOC_MMAP_THRESHOLD_`), so freed
large blocks go back to the system. Left to itself glibc raises that threshold as a process frees
large blocks, and ZeRO-3, which gathers and frees each layer's full weights at every step, then
fragments the heap: its resident set grows by about 0.3 GiB a step (measured: 4.5, 4.9, 5.4 GiB
after steps 1-3 against a flat 3.0 with the fixed threshold). The last row shows that default.
GPU memory comes from PyTorch's caching allocator instead, which this does not concern.

    python bench/bench_memory.py                   # ~270M parameters, 4 set-ups, about 6 minutes
    python bench/bench_memory.py --layers 4 --hidden 256   # a quick look
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.helpers import deepspeed_launch, save_tiny_decoder, tail  # noqa: E402

FIXED_MMAP_THRESHOLD = {"MALLOC_MMAP_THRESHOLD_": str(64 << 10)}
SETUPS = (  # label, ranks, DeepSpeed config, extra environment
    ("1 rank, ZeRO-2", 1, "zero2", FIXED_MMAP_THRESHOLD),
    ("2 ranks, ZeRO-2", 2, "zero2", FIXED_MMAP_THRESHOLD),
    ("2 ranks, ZeRO-3", 2, "zero3", FIXED_MMAP_THRESHOLD),
    ("2 ranks, ZeRO-3, glibc's default threshold", 2, "zero3", {}),
)
BYTES_FP32_ADAM = 16  # fp32 weights, gradients and Adam's two moments, per parameter


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, default=20)
    parser.add_argument("--hidden", type=int, default=1024)
    parser.add_argument("--vocab", type=int, default=32000)
    parser.add_argument("--steps", type=int, default=3, help="optimizer steps per set-up")
    parser.add_argument("--workdir", help="keep the checkpoint and the runs here (default: a temporary folder)")
    return parser.parse_args(argv)


def expected_model_states(parameters: int, ranks: int, stage: int) -> float:
    """Bytes of fp32 model states one rank holds: weights whole below ZeRO-3, the rest divided."""
    weights = 4 * parameters / (ranks if stage == 3 else 1)
    return weights + (BYTES_FP32_ADAM - 4) * parameters / ranks


def main(argv=None) -> None:
    args = parse_args(argv)
    work = Path(args.workdir or tempfile.mkdtemp(prefix="bench_memory."))
    model = work / "decoder"
    if not (model / "config.json").is_file():
        save_tiny_decoder(
            "llama",
            model,
            num_layers=args.layers,
            hidden_size=args.hidden,
            intermediate_size=int(2.75 * args.hidden),
            num_heads=max(2, args.hidden // 64),
            vocab_size=args.vocab,
        )
    rows = []
    for index, (label, ranks, ds_config, env) in enumerate(SETUPS):
        out = work / f"setup{index}"
        started = time.perf_counter()
        proc = deepspeed_launch(
            "launch/main.py",
            [
                "--model",
                model,
                "--ds-config",
                ds_config,
                "--budget",
                f"steps:{args.steps}",
                "-o",
                out,
                "--set",
                "data.embedded_train_size=64",
                "--set",
                "micro_batch_size=2",
                "--set",
                "max_length=32",
                "--set",
                "export_model=false",
                "--set",
                "log_every=1",
                "--set",
                "data.eval_splits=[]",
                "--overwrite",
            ],
            num_ranks=ranks,
            timeout=3600,
            **env,
        )
        if proc.returncode != 0:
            raise SystemExit(f"{label} failed:\n{tail(proc)}")
        metrics = json.loads((out / "metrics.json").read_text())
        rows.append((label, ranks, metrics, time.perf_counter() - started))
    parameters = rows[0][2]["num_parameters"]
    print(f"\nLlama-style decoder, {parameters / 1e6:.0f}M parameters, fp32 + Adam on CPU, {args.steps} steps\n")
    print(
        "| set-up | parameters held per rank | model states expected per rank, GiB "
        "| RSS while training per rank, GiB | vs 1 rank | peak RSS per rank, GiB | vs 1 rank | wall s |"
    )
    print("|---|---|---|---|---|---|---|---|")
    single = {key: max(rows[0][2][key]) for key in ("training_memory_mib_per_rank", "peak_memory_mib_per_rank")}
    for label, ranks, metrics, seconds in rows:
        held = " / ".join(f"{n / 1e6:.0f}M" for n in metrics["parameters_per_rank"])
        cells = []
        for key, one_rank in single.items():
            cells += [" / ".join(f"{m / 1024:.2f}" for m in metrics[key]), f"{max(metrics[key]) / one_rank:.2f}"]
        print(
            f"| {label} | {held} | {expected_model_states(parameters, ranks, metrics['zero_stage']) / 2**30:.2f} "
            f"| {' | '.join(cells)} | {seconds:.0f} |"
        )


if __name__ == "__main__":
    main()
