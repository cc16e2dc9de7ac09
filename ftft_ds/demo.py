"""`ftft demo`: the whole FTFT recipe on the embedded task, sized for 2 CPU cores.

The FTFT protocol as `ftft run` applies it: a cheap reference records training dynamics; the 33%
most ambiguous examples are selected; the full pretrained MiniLM then trains under ZeRO-2 on 2
ranks, once on everything for the ERM budget (ERM), and once on the subset under the same
learning-rate schedule, evaluated 12 times over it and stopped by patience on the OOD validation
split (FTFT). The table compares ID and OOD test accuracy and cost, reference included; the last
line is the verdict.

The main runs keep MiniLM's token embeddings frozen, and train in bf16 where the CPU computes it
natively (AVX512-BF16 or AMX; on GPUs bf16 follows the DeepSpeed config's "auto"): the embedding
table is half of MiniLM's parameters, and its gradient, Adam step and ZeRO traffic a fifth of a
step's time on 2 CPU ranks; once it is frozen, bf16 speeds the rest 1.5 times. Together the two
halve the step (`bench/bench_trainer.py`, README "Measured") with all of MiniLM's 6 layers kept.

The reference is `tiny-bert` (2 layers, 32 wide, trained from scratch: 0.2% of MiniLM's FLOPs per
token) for 30 epochs in batches of 16, on one rank without ZeRO (`zero0`): a 32-wide model's step is
mostly per-step overhead, and ZeRO's flat-buffer optimizer step, which partitions nothing on one
rank, took 29% of it (24.5 ms a step under `zero1`, 17.4 without ZeRO). On this task what makes an
example ambiguous is a cue word that names the wrong label: a model flips such an example from wrong
to right only once it has learnt the rule or memorised the example. The tiny model memorises them
one by one over its 30 epochs, so their gold probability swings; MiniLM cut to its first layer, in 3
epochs (already 18% of ERM's cost), does neither for most rules and leaves them at low confidence
("hard", not "ambiguous"), so its ambiguous third held fewer of them (README, "Measured").
"""

from __future__ import annotations

import torch

from .config import load_config
from .pipeline import RecipeConfig
from .train.ds_config import cpu_computes_bf16

DEMO = {
    "output_dir": "runs/demo",
    "data": {"source": "embedded", "embedded_train_size": 3000, "eval_splits": ["dev", "ood_dev", "ood"]},
    "main": {
        "model": "minilm",
        "ds_config": "zero2",
        "micro_batch_size": 16,
        "lr": 2.0e-4,
        "max_length": 40,
        "erm_epochs": 3,
        "log_every": 10,
        "export_model": False,
        "freeze_embeddings": True,
    },
    "reference": {
        "model": "tiny-bert",
        "ds_config": "zero0",
        "epochs": 30,
        "micro_batch_size": 16,
        "lr": 2.0e-3,
        "max_length": 40,
        "log_every": 50,
    },
    "selection": {"region": "ambiguous", "fraction": 0.33},
    "methods": ["erm", "ftft"],
    "seeds": [0],
    "erm_budget": "erm:1",
    "ftft_budget": "erm:1",
    "early_stopping": {"patience": 2, "evals": 12},
    "num_ranks": 2,
}
"""The demo's recipe; `ftft demo --set key=value` changes any of it."""


def demo_config(output_dir: str | None = None, overrides=()) -> RecipeConfig:
    """The demo's recipe, written to `output_dir`, with `key=value` overrides applied; its main runs
    in bf16 on a CPU that computes it natively (`main.bf16=false` turns that off)."""
    main = {**DEMO["main"], "bf16": True if not torch.cuda.is_available() and cpu_computes_bf16() else None}
    recipe = {**DEMO, "main": main, "output_dir": output_dir or DEMO["output_dir"]}
    return load_config(RecipeConfig, None, overrides, **recipe)
