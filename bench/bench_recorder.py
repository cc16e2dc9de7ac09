"""Overhead of recording training dynamics, per training step.

One process, one DeepSpeed engine, one fixed batch: blocks of training steps with and without
`DynamicsRecorder.record` are interleaved (ABAB...) so that machine noise hits both alike, and the
median step times are compared. The end-of-epoch gather is timed separately and reported amortised
over an epoch of `--epoch-steps` steps.

    python bench/bench_recorder.py [--model minilm] [--batch 32] [--seq 64] [--blocks 10] [--steps 10]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from ftft_ds.dynamics.recorder import DynamicsRecorder
from ftft_ds.train.ds_config import TrainArgs, resolve_ds_config
from ftft_ds.train.engine import initialize_engine
from ftft_ds.train.models import build_model
from ftft_ds.train.runtime import init_distributed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="minilm")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--seq", type=int, default=64)
    parser.add_argument("--blocks", type=int, default=60, help="blocks per variant (interleaved)")
    parser.add_argument("--steps", type=int, default=1, help="steps per block")
    parser.add_argument("--epoch-steps", type=int, default=1000, help="steps per epoch, to amortise the gather")
    args = parser.parse_args()

    env = init_distributed()
    torch.manual_seed(0)
    model = build_model(args.model, 3)
    ds_config = resolve_ds_config(
        "zero1",
        TrainArgs(
            micro_batch_size=args.batch,
            grad_accum=1,
            world_size=1,
            lr=1e-5,
            weight_decay=0.0,
            warmup_steps=0,
            total_steps=10_000,
        ),
    )
    engine = initialize_engine(model, ds_config)
    vocab = model.config.vocab_size
    batch = {
        "input_ids": torch.randint(1000, vocab, (args.batch, args.seq), device=env.device),
        "attention_mask": torch.ones(args.batch, args.seq, dtype=torch.long, device=env.device),
        "labels": torch.randint(0, 3, (args.batch,), device=env.device),
    }
    num_examples = args.batch * args.epoch_steps
    recorder = DynamicsRecorder(range(num_examples), 3)

    def step(record: bool, position: int) -> None:
        output = engine(**batch)
        if record:
            indices = torch.arange(position * args.batch, (position + 1) * args.batch, device=env.device)
            recorder.record(indices, output.logits)
        engine.backward(output.loss)
        engine.step()

    for i in range(5):  # warm-up
        step(False, i)
    times = {False: [], True: []}
    position = 0
    for _ in range(args.blocks):
        for record in (False, True):
            for _ in range(args.steps):
                if env.device.type == "cuda":
                    torch.cuda.synchronize()
                start = time.perf_counter()
                step(record, position % args.epoch_steps)
                if env.device.type == "cuda":
                    torch.cuda.synchronize()
                times[record].append(time.perf_counter() - start)
                if record:
                    position += 1
    recorder.discard_epoch()

    # The gather at an epoch's end, for an epoch of `epoch_steps` recorded batches.
    logits = torch.randn(args.batch, 3, device=env.device)
    for i in range(args.epoch_steps):
        recorder.record(torch.arange(i * args.batch, (i + 1) * args.batch, device=env.device), logits)
    start = time.perf_counter()
    recorder.end_epoch()
    gather_s = time.perf_counter() - start

    base, rec = statistics.median(times[False]), statistics.median(times[True])
    print(
        f"model={args.model} batch={args.batch} seq={args.seq} device={env.device} "
        f"steps/variant={args.blocks * args.steps}"
    )
    print(f"median step without recording: {base * 1e3:9.2f} ms")
    print(f"median step with recording:    {rec * 1e3:9.2f} ms")
    print(f"per-step overhead:             {100 * (rec - base) / base:+9.2f} %  (target <= 1 %)")
    print(
        f"end-of-epoch gather ({args.epoch_steps} steps, {num_examples} examples): {gather_s * 1e3:.1f} ms "
        f"= {100 * gather_s / (args.epoch_steps * base):.3f} % of the epoch"
    )


if __name__ == "__main__":
    main()
