"""Running real multi-rank jobs through the `deepspeed` launcher, on CPU, from tests."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from pathlib import Path

from ftft_ds.jobs.local import child_environment
from ftft_ds.train.runtime import free_port

REPO = Path(__file__).resolve().parents[1]


TEST_ENV = {
    "TOKENIZERS_PARALLELISM": "false",
    "OMP_NUM_THREADS": "1",
    "HF_HUB_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
    "PYTHONUNBUFFERED": "1",
}
"""What every process of the suite runs with: one thread each (the suite's workers and their ranks
share the machine's cores, and OpenMP threads that outnumber them spin while they wait), offline.
The test workers set it for themselves too (conftest), so it reaches the children of the
orchestrators they run in-process."""


def quiet_env(**extra) -> dict:
    """This process's environment for a child: a world of its own (`child_environment`), with
    `TEST_ENV` and `extra` added."""
    return {**child_environment(), **TEST_ENV, **extra}


def launcher_command(script: str, args: list, num_ranks: int = 2, launcher_args: tuple = ()) -> list:
    """`deepspeed --num_gpus N script args` on CPU ranks, on a free port, as a command line."""
    return [
        sys.executable,
        "-m",
        "deepspeed.launcher.runner",
        "--num_gpus",
        str(num_ranks),
        "--master_port",
        str(free_port()),
        *launcher_args,
        str(REPO / script),
        *map(str, args),
    ]


def deepspeed_launch(
    script: str, args: list, num_ranks: int = 2, timeout: int = 600, launcher_args: tuple = (), **env
) -> subprocess.CompletedProcess:
    """`launcher_command` run to its end, with `env` added; output captured."""
    cmd = launcher_command(script, args, num_ranks, launcher_args)
    return subprocess.run(cmd, cwd=REPO, env=quiet_env(**env), capture_output=True, text=True, timeout=timeout)


def ftft(args: list, timeout: int = 600, cwd: Path = REPO, **env) -> subprocess.CompletedProcess:
    """The `ftft` command in a fresh process (a world of one), in folder `cwd`, with `env` added."""
    cmd = [sys.executable, "-m", "ftft_ds", *map(str, args)]
    return subprocess.run(cmd, cwd=cwd, env=quiet_env(**env), capture_output=True, text=True, timeout=timeout)


@contextlib.contextmanager
def world_of_one():
    """A process group of one (gloo) in this test process, for runs trained in-process: no
    interpreter to start, which on a small CPU is most of a tiny run's cost. Removed afterwards,
    DeepSpeed's references to it included, and the environment restored, so that later tests'
    child processes do not inherit it."""
    import deepspeed.comm

    from ftft_ds.train.runtime import init_distributed

    saved = dict(os.environ)
    os.environ.update(
        RANK="0", LOCAL_RANK="0", WORLD_SIZE="1", LOCAL_SIZE="1", MASTER_ADDR="127.0.0.1", MASTER_PORT=str(free_port())
    )
    try:
        yield init_distributed()
    finally:
        if deepspeed.comm.is_initialized():
            deepspeed.comm.destroy_process_group()
        os.environ.clear()
        os.environ.update(saved)


def processes_mentioning(text: str) -> list[int]:
    """PIDs whose command line contains `text`."""
    pids = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            if text in cmdline.read_bytes().replace(b"\0", b" ").decode(errors="replace"):
                pids.append(int(cmdline.parent.name))
        except OSError:
            continue
    return pids


def tail(proc: subprocess.CompletedProcess, lines: int = 40) -> str:
    return "\n".join((proc.stdout + proc.stderr).splitlines()[-lines:])


DECODER_FAMILIES = ("llama", "gpt_neox", "qwen2")


def save_tiny_decoder(
    family: str,
    path: Path,
    num_layers: int = 3,
    hidden_size: int = 32,
    intermediate_size: int = 64,
    num_heads: int = 4,
    vocab_size: int | None = None,
    max_positions: int = 128,
) -> Path:
    """A random decoder-only LM saved the way real checkpoints are: a causal-LM model and a
    byte-level BPE tokenizer (trained here on the embedded task's words) with no padding token.

    Tiny by default; the sizes build bigger ones (`bench/bench_memory.py`), and `vocab_size` sets
    the embedding table's rows (at least the tokenizer's 400) as a real vocabulary would."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import AutoConfig, AutoModelForCausalLM, PreTrainedTokenizerFast

    from ftft_ds.data.task import vocabulary

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    bpe.train_from_iterator(
        [" ".join(vocabulary())] * 10,
        trainers.BpeTrainer(
            vocab_size=400, special_tokens=["<s>", "</s>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
        ),
    )
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=bpe, bos_token="<s>", eos_token="</s>")
    assert tokenizer.pad_token is None
    config = AutoConfig.for_model(
        family,
        vocab_size=max(len(tokenizer), vocab_size or 0),
        hidden_size=hidden_size,
        intermediate_size=intermediate_size,
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
        max_position_embeddings=max_positions,
        bos_token_id=0,
        eos_token_id=1,
        **({} if family == "gpt_neox" else {"num_key_value_heads": num_heads // 2}),
    )
    AutoModelForCausalLM.from_config(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


GPU_LOSS_RTOL = 2e-3
"""How closely two runs that walk one trajectory (a straight run and a killed-and-resumed one) agree
on a GPU, where kernels are not bit-reproducible (atomic adds in reductions, bf16). On CPU they
agree bit for bit."""


def assert_same_losses(a: list, b: list) -> None:
    """`a` and `b` (losses, or (step, loss) pairs) are one trajectory: equal on CPU, within
    `GPU_LOSS_RTOL` on a GPU."""
    import pytest
    import torch

    if not torch.cuda.is_available():
        assert a == b
        return
    assert len(a) == len(b)
    for x, y in zip(a, b):
        x, y = (x, y) if isinstance(x, tuple) else ((None, x), (None, y))
        assert x[0] == y[0] and x[1] == pytest.approx(y[1], rel=GPU_LOSS_RTOL)


def in_process(args: list):
    """`ftft ARGS` run in this process through click's test runner (no interpreter to start): for
    commands that start no process group, such as select, map and mistakes refused up front."""
    from click.testing import CliRunner

    from ftft_ds.cli import _register, cli

    _register()
    return CliRunner().invoke(cli, [str(arg) for arg in args])


def ran_in_process(args: list):
    """`ftft ARGS` in this process (`in_process`) for a run that must finish: asserts exit code 0,
    with the run's traceback when it failed, and returns click's result (`.stdout`, `.stderr`).
    A run that trains joins a process group: the `world` fixture's (`world_of_one`); an orchestrator
    (`ftft run`, `ftft sweep`) runs outside one, since its child processes inherit the environment.
    """
    import traceback

    import torch.distributed

    joined = torch.distributed.is_initialized()
    result = in_process(args)
    failure = "".join(traceback.format_exception(result.exception)) if result.exception else ""
    assert result.exit_code == 0, result.output[-3000:] + failure
    assert torch.distributed.is_initialized() == joined, "a run started a process group: train in world_of_one"
    return result


def refused_in_process(args: list) -> list:
    """`ftft ARGS` in this process (`in_process`), for a mistake refused before any process group
    starts: asserts exit code 2 and no traceback, returns the stderr lines."""
    result = in_process(args)
    assert result.exit_code == 2, result.output
    assert isinstance(result.exception, SystemExit), result.exception
    return result.stderr.strip().splitlines()


def save_without_dropout(path: Path, num_labels: int = 3, init_seed: int = 0, train_rows: int = 0) -> Path:
    """tiny-bert with its dropout off, saved with its tokenizer as a model folder: a model whose
    training-mode logits are its eval-mode ones, for row-by-row comparisons. With `train_rows`, it
    first takes 4 epochs of Adam steps on that many embedded training rows, so that its predictions
    differ from row to row (a fresh model gives every row the same class)."""
    import torch

    from ftft_ds.data.load import DataConfig, load_split
    from ftft_ds.data.tokenize import Collator, tokenize_split
    from ftft_ds.train.models import build_model, load_tokenizer

    model = build_model("tiny-bert", num_labels, init_seed=init_seed)
    model.config.hidden_dropout_prob = model.config.attention_probs_dropout_prob = 0.0
    tokenizer = load_tokenizer("tiny-bert")
    if train_rows:
        for module in model.modules():
            if isinstance(module, torch.nn.Dropout):
                module.p = 0.0
        rows = tokenize_split(load_split(DataConfig(embedded_train_size=train_rows), "train"), tokenizer, 64)
        optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
        collate = Collator(tokenizer)
        starts = [start for _ in range(4) for start in range(0, len(rows), 16)]  # 4 epochs
        for start in starts:
            batch = collate([rows[i] for i in range(start, min(start + 16, len(rows)))])
            loss = model(
                input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], labels=batch["labels"]
            ).loss
            loss.backward()
            optimizer.step()
            optimizer.zero_grad()
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def forward_alone(model_path: Path, split, max_length: int | None = None):
    """Logits (rows x labels, numpy) of the model in `model_path` on each row of `split` alone, in
    one process, in eval mode: what every rank's share of a run must reproduce."""
    import torch
    from transformers import AutoModelForSequenceClassification

    from ftft_ds.config import ReferenceConfig
    from ftft_ds.data.tokenize import tokenize_split
    from ftft_ds.train.models import load_tokenizer

    model = AutoModelForSequenceClassification.from_pretrained(model_path).eval()
    rows = tokenize_split(split, load_tokenizer(str(model_path)), max_length or ReferenceConfig().max_length)
    inputs = [name for name in ("input_ids", "token_type_ids", "attention_mask") if name in rows.column_names]
    with torch.no_grad():
        return torch.cat([model(**{name: torch.tensor([row[name]]) for name in inputs}).logits for row in rows]).numpy()
