"""Training throughput: ftft_ds main runs vs a bare DeepSpeed loop vs the Hugging Face Trainer.

Three ways to train the same model on the same data with the same DeepSpeed config:

- `ftft`: what `deepspeed launch/main.py` does, i.e. `run_main(MainConfig(...))` and its `Trainer`
  loop: cost ledger, progress bar, a log point every `--log-every` steps, DeepSpeed's TensorBoard
  monitor, the stop rule. ERM on the embedded task with a `steps:N` budget; no evaluation splits and
  no model export (they only happen before or after the timed steps);
- `bare`: `for batch in loader: loss = engine(**batch).loss; engine.backward(loss); engine.step()`
  with no logging, recording or evaluation;
- `hf`: `transformers.Trainer` with `TrainingArguments(deepspeed=<config dict>)`, logging, saving
  and evaluation off;
- `lora` (on request): `ftft` with LoRA adapters of rank `--lora-r` on every linear layer of a
  frozen backbone, the head trained in full: its step time and memory against full fine-tuning's
  (`--variants ftft,lora`), whose rows then also show each run's training memory (rank 0's peak
  resident set on CPU, the allocator's peak on GPU) and the cost ledger's FLOPs per token.

All three use the model of `build_model_for`, the DeepSpeed config of `run_ds_config`, the
tokenized training split, the micro-batch size and, batch for batch, the same examples: `bare`
iterates the `ShardedSampler` that `ftft` builds, and `hf` gets the rows in the order that its
sequential sampler, whose batches Accelerate deals round-robin to the ranks, turns into exactly
those per-rank batches. Padding, hence the work of every step, is the same for all three.

Method. Every measurement is a fresh process (ranks started by `python -m
deepspeed.launcher.runner` with `--ranks 2`), so no variant inherits another's memory, threads or
caches, and the variants alternate (ftft, bare, hf, ftft, bare, hf, ...) so that a noisy machine
slows them alike. Each process trains `--warmup` + `--steps` optimizer steps. Start-up (imports,
data, model load, engine init) and the warm-up steps come before the timed window, the final
checkpoint and clean-up after it. The window is cut into blocks of `--log-every` steps, marked
right after an optimizer step has been fully handled: for `ftft` in the trainer's `on_step_end` hook
(so a block holds everything the loop does, exactly one log point included), for `hf` in
`TrainerCallback.on_step_end`, for `bare` after `engine.step()`. A mark is `time.perf_counter()`
on CPU and a CUDA event on GPU, read after the run, so the window has no synchronisation added.

A measurement's throughput is micro-batch x ranks x block steps / its median block time (rank 0's
clock; ranks run in lockstep): a burst of load from another process spoils one block, not the
figure. The table shows the median over `--repeats` measurements, tokens/s (non-padding tokens of
the window's examples, the same for the three variants), the ratios of medians and, per target
(ftft/bare >= 0.97, ftft/hf >= 1.0), also the median of the per-repeat ratios, whose two terms ran
one after the other. On CUDA the DeepSpeed config's bf16 "auto" turns bf16 on and the table adds
model FLOPs utilisation, MFU = F x tokens/s / (ranks x peak FLOP/s), with F the cost ledger's training
FLOPs per token: 6 x N, N the parameters outside the embedding tables (4 x N + 2 x the trainable ones
under LoRA).

On CPU, unless they are set already, every process gets OMP_NUM_THREADS=1 and fixed glibc malloc
thresholds. With two threads per process on a shared 2-core machine, step times swing by up to 5x
whenever another process wants a core; one thread per rank slows down in proportion instead, and
its process CPU time, reported in a second table, is a clock that other load hardly moves. Left
to itself, glibc returns large freed blocks to the system and moves its threshold for doing so as
a process allocates, so per-step page faults, hence step time, depend on each process's allocation
history: tiny-bert's ftft runs came out 8% faster than its bare runs for that reason alone; with
the thresholds fixed they are 2-4% slower, as the ftft loop's extra work per step predicts.

    python bench/bench_trainer.py                          # minilm, ZeRO-2, 1 rank: ~5 min on 2 cores
    python bench/bench_trainer.py --ranks 2
    python bench/bench_trainer.py --model tiny-bert --steps 100 --repeats 5
    python bench/bench_trainer.py --variants ftft,lora           # LoRA against full fine-tuning

Decoder-only LLMs built from a config (random weights, saved as a causal-LM checkpoint with a
byte-level tokenizer without a padding token, as real ones ship): `--model llama-0.5b` (0.47B
parameters: 16 layers of width 1536) or `--model llama-1b` (0.91B: 18 layers of width 2048), e.g.
on one GPU, bf16 under ZeRO-2 and then ZeRO-3:

    python bench/bench_trainer.py --model llama-1b --ds-config zero2 --batch 8 --max-length 256 --steps 30
    python bench/bench_trainer.py --model llama-1b --ds-config zero3 --batch 8 --max-length 256 --steps 30
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
VARIANTS = ("ftft", "bare", "hf", "lora")
DECODERS = {  # name: (layers, width); Llama-style, 32,000-row vocabulary, MLP 2.75x wide
    "llama-0.5b": (16, 1536),
    "llama-1b": (18, 2048),
}
TARGETS = {"bare": 0.97, "hf": 1.0}  # minimum ftft / variant throughput ratio
LAUNCH_ENV = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_SIZE", "MASTER_ADDR", "MASTER_PORT")


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--model",
        default="minilm",
        help=f"minilm (pretrained), tiny-bert, a model path, or a decoder built here: {', '.join(DECODERS)}",
    )
    parser.add_argument("--num-layers", type=int, default=None, help="keep only the model's first K layers")
    parser.add_argument("--freeze-embeddings", action="store_true", help="keep the token embeddings fixed")
    parser.add_argument("--bf16", action="store_true", help="bf16 even without a GPU (the config's bf16 'auto')")
    parser.add_argument("--ds-config", default="zero2", help="bundled DeepSpeed config name or JSON path")
    parser.add_argument("--ranks", type=int, choices=(1, 2), default=1)
    parser.add_argument("--steps", type=int, default=30, help="timed optimizer steps (a multiple of --log-every)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed optimizer steps before the window")
    parser.add_argument("--batch", type=int, default=8, help="micro-batch size per rank")
    parser.add_argument("--max-length", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3, help="measurements per variant, interleaved")
    parser.add_argument(
        "--log-every",
        type=int,
        default=10,
        help="ftft steps between log points (the library default) and steps per timed block",
    )
    parser.add_argument(
        "--train-size",
        type=int,
        default=None,
        help="embedded training examples (default: the task's default, or the run's examples if more)",
    )
    parser.add_argument("--variants", default="ftft,bare,hf", help="comma-separated subset of ftft,bare,hf,lora")
    parser.add_argument("--lora-r", type=int, default=8, help="rank of the lora variant's adapters")
    parser.add_argument("--timeout", type=int, default=1800, help="seconds before a measurement is stopped")
    parser.add_argument(
        "--peak-tflops", type=float, default=989.0, help="peak dense TFLOP/s per GPU for MFU (H100 bf16: 989)"
    )
    # Given to the measuring processes only.
    parser.add_argument("--variant", choices=VARIANTS, help=argparse.SUPPRESS)
    parser.add_argument("--workdir", help=argparse.SUPPRESS)
    parser.add_argument("--local_rank", "--local-rank", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    args.variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    if not args.variants or set(args.variants) - set(VARIANTS):
        parser.error(f"--variants takes names from {','.join(VARIANTS)}, got {args.variants}")
    for name in ("steps", "warmup", "batch", "repeats", "log_every", "lora_r"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    if args.steps % args.log_every:
        parser.error(f"--steps ({args.steps}) must be a multiple of --log-every ({args.log_every})")
    args.total_steps = args.warmup + args.steps
    needed = args.total_steps * args.batch * args.ranks
    if args.train_size is None:
        from ftft_ds.data.load import DataConfig

        args.train_size = max(DataConfig.embedded_train_size, needed)
    elif args.train_size < needed:
        parser.error(
            f"--train-size must hold the {args.total_steps} steps x {args.batch} x {args.ranks} ranks "
            f"= {needed} examples of the run"
        )
    return args


def option_argv(args) -> list:
    """The options that define a measurement, as command-line arguments."""
    return [
        "--model",
        args.model,
        *(["--num-layers", str(args.num_layers)] if args.num_layers else []),
        *(["--freeze-embeddings"] if args.freeze_embeddings else []),
        *(["--bf16"] if args.bf16 else []),
        "--ds-config",
        args.ds_config,
        "--ranks",
        str(args.ranks),
        "--steps",
        str(args.steps),
        "--warmup",
        str(args.warmup),
        "--batch",
        str(args.batch),
        "--max-length",
        str(args.max_length),
        "--log-every",
        str(args.log_every),
        "--train-size",
        str(args.train_size),
        "--lora-r",
        str(args.lora_r),
    ]


def main_config(args, output_dir: Path, lora: bool = False):
    """The main-run config that every variant takes its model, data and DeepSpeed config from (with
    `lora`, LoRA adapters of rank `--lora-r`)."""
    from ftft_ds.config import LoraConfig, MainConfig
    from ftft_ds.data.load import DataConfig
    from ftft_ds.train.budget import Budget

    return MainConfig(
        model=args.model,
        num_layers=args.num_layers,
        freeze_embeddings=args.freeze_embeddings,
        lora=LoraConfig(r=args.lora_r) if lora else None,
        bf16=args.bf16 or None,
        ds_config=args.ds_config,
        micro_batch_size=args.batch,
        max_length=args.max_length,
        log_every=args.log_every,
        output_dir=str(output_dir),
        budget=Budget("steps", args.total_steps),
        lr_schedule="compressed",
        export_model=False,
        data=DataConfig(source="embedded", embedded_train_size=args.train_size, eval_splits=()),
    )


# -- inside a measuring process (every rank) ----------------------------------------------------


class StepClock:
    """Marks the end of optimizer steps `warmup`, `warmup + block`, ..., `warmup + steps`.

    `tick(step)` goes right after each optimizer step. On CUDA a mark is an event recorded on the
    current stream and read after the run; on CPU it is `time.perf_counter()` together with
    `time.process_time()`.
    """

    def __init__(self, warmup: int, steps: int, block: int, device: torch.device):
        self.edges = range(warmup, warmup + steps + 1, block)
        self.total = warmup + steps
        self.cuda = device.type == "cuda"
        self.marks: dict = {}

    def tick(self, step: int) -> None:
        if step in self.edges and step not in self.marks:
            if self.cuda:
                self.marks[step] = torch.cuda.Event(enable_timing=True)
                self.marks[step].record()
            else:
                self.marks[step] = (time.perf_counter(), time.process_time())

    def block_seconds(self) -> dict:
        """Wall-clock seconds of each block and, on CPU, the process's CPU seconds."""
        marks = [self.marks[step] for step in self.edges]
        pairs = list(zip(marks, marks[1:]))
        if self.cuda:
            torch.cuda.synchronize()
            return {"wall": [start.elapsed_time(end) / 1e3 for start, end in pairs]}
        return {"wall": [end[0] - start[0] for start, end in pairs], "cpu": [end[1] - start[1] for start, end in pairs]}


def training_data(cfg, env):
    """The tokenized training split, its collator and the sampler that `prepare_run` builds."""
    from ftft_ds.data.load import load_splits
    from ftft_ds.data.sampler import ShardedSampler
    from ftft_ds.data.tokenize import Collator, tokenize_split
    from ftft_ds.train.models import load_tokenizer

    split = load_splits(cfg.data, [cfg.data.train_split])[cfg.data.train_split]
    tokenizer = load_tokenizer(cfg.model)
    train = tokenize_split(split, tokenizer, cfg.max_length)
    sampler = ShardedSampler(range(len(train)), env.world_size, env.rank, seed=cfg.data_seed)
    return split.num_labels, train, Collator(tokenizer), sampler


def plain_ds_config(cfg, env, num_labels: int, steps: int) -> dict:
    """`run_ds_config`'s config for a run of `steps` steps (it has no monitor section: ftft's cost
    ledger owns the monitor)."""
    import math

    from ftft_ds.train.engine import run_ds_config

    return run_ds_config(cfg, env, num_labels, steps, math.floor(cfg.warmup_ratio * steps))


def build_model(cfg, env, num_labels: int, ds_config: dict):
    """The model as `prepare_run` builds it, after seeding dropout the same way."""
    from ftft_ds.runs.prepare import seed_dropout
    from ftft_ds.train.engine import build_model_for

    seed_dropout(cfg.dropout_seed, env)
    return build_model_for(cfg, num_labels, ds_config)


def parameter_counts(model) -> dict:
    """All parameters, those the cost ledger counts FLOPs for (all but the embedding tables), and
    the ledger's training FLOPs per token (6 per parameter; fewer where weights are frozen)."""
    from ftft_ds.train.cost import train_flops_per_token
    from ftft_ds.train.models import count_flops_parameters, count_parameters

    flops = count_flops_parameters(model)
    return {
        "parameters": count_parameters(model),
        "flops_parameters": flops,
        "train_flops_per_token": train_flops_per_token(flops, count_flops_parameters(model, trainable=True)),
    }


def run_ftft(cfg, env, clock: StepClock, workdir: Path) -> dict:
    """`run_main`, marked once the trainer has handled an optimizer step."""
    from ftft_ds.runs.main import run_main

    trained = {}

    def mark(trainer) -> None:
        clock.tick(trainer.state.step)
        trained["model"] = trainer.engine.module

    metrics = run_main(cfg, env, on_step_end=mark)
    return {**parameter_counts(trained["model"]), "training_memory_mib": metrics["training_memory_mib_per_rank"][0]}


def run_bare(cfg, env, clock: StepClock, workdir: Path) -> dict:
    """The minimal DeepSpeed loop over the same sampler, collator and config."""
    from torch.utils.data import DataLoader

    from ftft_ds.train.engine import initialize_engine, to_device

    num_labels, train, collate, sampler = training_data(cfg, env)
    loader = DataLoader(train, batch_size=cfg.micro_batch_size, sampler=sampler, collate_fn=collate)
    ds_config = plain_ds_config(cfg, env, num_labels, clock.total)
    model = build_model(cfg, env, num_labels, ds_config)
    engine = initialize_engine(model, ds_config)
    for batch in loader:
        batch.pop("index")
        loss = engine(**to_device(batch, env.device)).loss
        engine.backward(loss)
        engine.step()
        clock.tick(engine.global_steps)
        if engine.global_steps == clock.total:
            break
    return parameter_counts(model)


def hf_row_order(sampler, batch: int) -> list:
    """Rows whose sequential batches, dealt round-robin to the ranks, are the sampler's batches.

    Global step s trains on rows order[s*batch*W : (s+1)*batch*W], rank r on every W-th of them
    from r; Accelerate gives rank r the sequential batches r, r + W, ... So each step's block of
    rows is transposed from (batch, W) to (W, batch).
    """
    order = sampler.epoch_order(0)
    block = batch * sampler.world_size
    usable = len(order) // block * block
    return order[:usable].view(-1, batch, sampler.world_size).transpose(1, 2).reshape(-1).tolist()


def run_hf(cfg, env, clock: StepClock, workdir: Path) -> dict:
    """`transformers.Trainer` on the same batches with the same DeepSpeed config."""
    from transformers import Trainer, TrainerCallback, TrainingArguments

    num_labels, train, collate, sampler = training_data(cfg, env)
    ds_config = plain_ds_config(cfg, env, num_labels, clock.total)
    args = TrainingArguments(
        output_dir=str(workdir / "hf"),
        deepspeed=ds_config,
        max_steps=clock.total,
        per_device_train_batch_size=cfg.micro_batch_size,
        gradient_accumulation_steps=cfg.grad_accum,
        learning_rate=cfg.lr,
        weight_decay=cfg.weight_decay,
        warmup_steps=ds_config.get("scheduler", {}).get("params", {}).get("warmup_num_steps", 0),
        max_grad_norm=ds_config["gradient_clipping"],
        bf16=ds_config["bf16"]["enabled"],
        logging_steps=10 * clock.total,
        save_strategy="no",
        eval_strategy="no",
        report_to=[],
        dataloader_num_workers=0,
        train_sampling_strategy="sequential",
        remove_unused_columns=False,
        seed=cfg.dropout_seed,
        use_cpu=not torch.cuda.is_available(),
    )
    model = build_model(cfg, env, num_labels, ds_config)

    class Marks(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            clock.tick(state.global_step)

    def collate_inputs(examples):
        batch = collate(examples)
        del batch["index"]
        return batch

    rows = train.select(hf_row_order(sampler, cfg.micro_batch_size))
    Trainer(model=model, args=args, train_dataset=rows, data_collator=collate_inputs, callbacks=[Marks()]).train()
    return parameter_counts(model)


RUNNERS = {"ftft": run_ftft, "bare": run_bare, "hf": run_hf, "lora": run_ftft}


def measure_here(args) -> None:
    """One measurement by this process (one rank of it); rank 0 writes `workdir/result.json`."""
    from ftft_ds.train.runtime import init_distributed

    env = init_distributed()
    workdir = Path(args.workdir)
    clock = StepClock(args.warmup, args.steps, args.log_every, env.device)
    cfg = main_config(args, workdir / "run", lora=args.variant == "lora")
    counts = RUNNERS[args.variant](cfg, env, clock, workdir)
    blocks = clock.block_seconds()
    if env.is_main:
        examples_per_block = args.log_every * args.batch * env.world_size
        result = {
            "variant": args.variant,
            **counts,
            "block_seconds": blocks,
            **{
                f"examples_per_{kind}_s": examples_per_block / statistics.median(seconds)
                for kind, seconds in blocks.items()
            },
        }
        (workdir / "result.json").write_text(json.dumps(result))


# -- the driver ---------------------------------------------------------------------------------


def child_env(cuda: bool) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in LAUNCH_ENV}
    env.update(TOKENIZERS_PARALLELISM="false", HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", PYTHONUNBUFFERED="1")
    if not cuda:
        env.setdefault("OMP_NUM_THREADS", "1")
        # glibc: keep freed tensor memory instead of unmapping it; see the module docstring.
        env.setdefault("MALLOC_MMAP_THRESHOLD_", str(32 << 20))
        env.setdefault("MALLOC_TRIM_THRESHOLD_", str(1 << 30))
    return env


def measure(args, variant: str, env: dict) -> dict:
    """One measurement in fresh process(es); rank 0's result."""
    from ftft_ds.train.runtime import free_port

    with tempfile.TemporaryDirectory(prefix=f"bench_trainer_{variant}_") as tmp:
        script = [str(Path(__file__).resolve()), "--variant", variant, "--workdir", tmp, *option_argv(args)]
        if args.ranks == 1:
            cmd = [sys.executable, *script]
        else:
            cmd = [
                sys.executable,
                "-m",
                "deepspeed.launcher.runner",
                "--num_gpus",
                str(args.ranks),
                "--master_port",
                str(free_port()),
                *script,
            ]
        log = Path(tmp) / "output.log"
        with open(log, "w") as out:
            # A session of its own, so that a hung launcher and its ranks can be stopped together.
            proc = subprocess.Popen(
                cmd, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )
            try:
                code = proc.wait(timeout=args.timeout)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                code = proc.wait()
        result = Path(tmp) / "result.json"
        if code != 0 or not result.is_file():
            tail = "\n".join(log.read_text(errors="replace").splitlines()[-40:])
            sys.exit(f"{variant} failed (exit code {code}; --timeout {args.timeout} s):\n{shlex.join(cmd)}\n{tail}")
        return json.loads(result.read_text())


def window_tokens_per_example(args) -> float:
    """Mean non-padding tokens of the examples trained on in the timed window (all ranks)."""
    from ftft_ds.data.load import load_splits
    from ftft_ds.data.sampler import ShardedSampler
    from ftft_ds.data.tokenize import tokenize_split
    from ftft_ds.train.models import load_tokenizer

    cfg = main_config(args, Path("unused"))
    split = load_splits(cfg.data, [cfg.data.train_split])[cfg.data.train_split]
    train = tokenize_split(split, load_tokenizer(cfg.model), cfg.max_length)
    lengths = [len(ids) for ids in train["input_ids"]]
    order = ShardedSampler(range(len(train)), args.ranks, 0, seed=cfg.data_seed).epoch_order(0).tolist()
    block = args.batch * args.ranks
    window = order[args.warmup * block : args.total_steps * block]
    return sum(lengths[i] for i in window) / len(window)


def precision(args) -> str:
    """What the DeepSpeed config's bf16 setting resolves to on this machine."""
    from ftft_ds.train.ds_config import TrainArgs, resolve_ds_config

    config = resolve_ds_config(
        args.ds_config,
        TrainArgs(
            micro_batch_size=args.batch,
            grad_accum=1,
            world_size=args.ranks,
            lr=5e-5,
            weight_decay=0.0,
            warmup_steps=1,
            total_steps=args.total_steps,
            bf16=args.bf16 or None,
        ),
    )
    return "bf16" if config["bf16"]["enabled"] else "fp32"


def print_table(args, results: dict, kind: str, unit: str, tokens_per_example: float, mfu: bool) -> None:
    """Medians over repeats of one clock's throughput, their ratios and the targets."""
    throughput = {v: [r[f"examples_per_{kind}_s"] for r in rs] for v, rs in results.items()}
    medians = {v: statistics.median(xs) for v, xs in throughput.items()}
    lora = "lora" in medians
    others = ("bare", "hf", "ftft") if lora else ("bare", "hf")
    header = f"{'variant':<8} {'examples/' + unit:>14} {'tokens/' + unit:>12}" + (f" {'MFU':>7}" if mfu else "")
    if lora:
        header += f" {'memory MiB':>10} {'FLOPs/token':>11}"
    print(header + "".join(f" {'vs ' + other:>8}" for other in others) + f"   examples/{unit} of each repeat")
    for variant, median in medians.items():
        tokens = median * tokens_per_example
        row = f"{variant:<8} {median:14.2f} {tokens:12.0f}"
        first = results[variant][0]
        if mfu:
            row += f" {100 * first['train_flops_per_token'] * tokens / (args.ranks * args.peak_tflops * 1e12):6.2f}%"
        if lora:
            memory = [r["training_memory_mib"] for r in results[variant] if "training_memory_mib" in r]
            row += (
                f" {statistics.median(memory) if memory else float('nan'):10.0f} {first['train_flops_per_token']:11.3g}"
            )
        for other in others:
            row += f" {median / medians[other]:8.3f}" if other in medians else f" {'-':>8}"
        print(row + "   " + " ".join(f"{x:.2f}" for x in throughput[variant]))
    for other, target in TARGETS.items():
        if "ftft" in medians and other in medians:
            ratio = medians["ftft"] / medians[other]
            paired = statistics.median(a / b for a, b in zip(throughput["ftft"], throughput[other]))
            print(
                f"target ftft/{other} >= {target:.2f}: {ratio:.3f} ({'met' if ratio >= target else 'NOT met'}); "
                f"median of per-repeat ratios {paired:.3f}"
            )


def report(args, results: dict, tokens_per_example: float, device: str, seconds: float) -> None:
    cuda = torch.cuda.is_available()
    counts = next(iter(results.values()))[0]
    print(
        f"\n{args.model}{f' cut to {args.num_layers} layers' if args.num_layers else ''}"
        f"{', frozen embeddings' if args.freeze_embeddings else ''} "
        f"({counts['parameters'] / 1e6:.3g}M parameters, {counts['flops_parameters'] / 1e6:.3g}M "
        f"outside embeddings), {args.ds_config}, {args.ranks} rank(s), "
        f"{device}, {precision(args)}; micro-batch {args.batch}, max length {args.max_length}, "
        f"{tokens_per_example:.1f} tokens/example; {args.steps} timed steps in blocks of {args.log_every} after "
        f"{args.warmup} warm-up; {args.repeats} interleaved repeats; {seconds:.0f} s in all"
    )
    print("\nWall clock:")
    print_table(args, results, "wall", "s", tokens_per_example, mfu=cuda)
    if not cuda:
        print("\nCPU time of rank 0's process (insensitive to other load on the machine):")
        print_table(args, results, "cpu", "CPU-s", tokens_per_example, mfu=False)
    options = [*option_argv(args), "--repeats", str(args.repeats), "--variants", ",".join(args.variants)]
    if cuda:
        options += ["--peak-tflops", f"{args.peak_tflops:g}"]
    print(f"\nreproduce: python bench/bench_trainer.py {shlex.join(options)}")


def built_decoder(name: str) -> str:
    """The folder of decoder `name` of `DECODERS`, built from its config on first use (cached)."""
    sys.path.insert(0, str(REPO))
    from tests.helpers import save_tiny_decoder

    layers, width = DECODERS[name]
    path = Path(tempfile.gettempdir()) / f"ftft_bench_{name}"
    if not (path / "config.json").is_file():
        save_tiny_decoder(
            "llama",
            path,
            num_layers=layers,
            hidden_size=width,
            intermediate_size=int(2.75 * width),
            num_heads=width // 128,
            vocab_size=32000,
            max_positions=4096,
        )
    return str(path)


def drive(args) -> None:
    if args.model in DECODERS:
        args.model = built_decoder(args.model)
    cuda = torch.cuda.is_available()
    device = torch.cuda.get_device_name(0) if cuda else f"CPU ({os.cpu_count()} cores)"
    started = time.perf_counter()
    tokens_per_example = window_tokens_per_example(args)
    env = child_env(cuda)
    results: dict = {v: [] for v in args.variants}
    for repeat in range(args.repeats):
        for variant in args.variants:
            result = measure(args, variant, env)
            results[variant].append(result)
            line = f"repeat {repeat + 1}/{args.repeats} {variant:<5} {result['examples_per_wall_s']:9.2f} examples/s"
            if not cuda:
                line += f", {result['examples_per_cpu_s']:9.2f} examples/CPU-s"
            blocks = " ".join(f"{s:.2f}" for s in result["block_seconds"]["wall"])
            print(f"{line}; blocks of {args.log_every} steps: {blocks} s", flush=True)
    report(args, results, tokens_per_example, device, time.perf_counter() - started)


def main() -> None:
    args = parse_args()
    if args.variant:
        measure_here(args)
    else:
        drive(args)


if __name__ == "__main__":
    main()
