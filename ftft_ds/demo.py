"""`ftft demo`: the whole FTFT recipe on the embedded task, sized for 2 CPU cores.

The FTFT protocol as `ftft run` applies it, with a cost target of half of ERM's FLOPs with
evaluations: a cheap reference records training dynamics; the 33% most ambiguous examples are
selected; the pretrained MiniLM then trains under ZeRO-2 on 2 ranks, once on everything for the
ERM budget (ERM), and once on the subset on the same learning-rate schedule, cut at the step cap
the target leaves it once the reference is paid for, evaluated 6 times up to it on 200 rows of the
OOD validation split, its best checkpoint kept (FTFT). The table compares ID and OOD test accuracy
and cost, planned and actual, reference included; the last line is the verdict.

It trains in fp32 on every CPU, so that its numbers do not depend on whether the CPU computes bf16
(AVX512-BF16 or AMX), and keeps MiniLM's token embeddings frozen: the table is half of MiniLM's
parameters, and its gradient, Adam step and ZeRO traffic a fifth of a step's time on 2 CPU ranks.

The reference is `tiny-bert` (2 layers, 32 wide, trained from scratch: 0.2% of MiniLM's FLOPs per
token) for 30 epochs in batches of 64, on one rank without ZeRO (`zero0`). On this task what makes
an example ambiguous is a cue word that names the wrong label: a model flips such an example from
wrong to right only once it has learnt the rule or memorised the example. The tiny model memorises
them one by one over its 30 epochs, so their gold probability swings and they fill its ambiguous
third (42% of it on average over three reference seeds, against 22% of the training split). Its
batches of 64 were chosen on that share, on the training split alone: batches of 16 gave 40% in
twice the time, since a 32-wide model's step is mostly per-step overhead.
"""

from __future__ import annotations

from .config import load_config
from .pipeline import RecipeConfig

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
        "bf16": False,
    },
    "reference": {
        "model": "tiny-bert",
        "ds_config": "zero0",
        "epochs": 30,
        "micro_batch_size": 64,
        "lr": 3.0e-3,
        "max_length": 40,
        "log_every": 50,
    },
    "selection": {"region": "ambiguous", "fraction": 0.33},
    "methods": ["erm", "ftft"],
    "seeds": [0],
    "erm_budget": "erm:1",
    "cost_target": 0.5,
    "early_stopping": {"evals": 6, "eval_sample": 200},
    "num_ranks": 2,
}
"""The demo's recipe; `ftft demo --set key=value` changes any of it."""


def demo_config(output_dir: str | None = None, overrides=()) -> RecipeConfig:
    """The demo's recipe, written to `output_dir`, with `key=value` overrides applied."""
    return load_config(RecipeConfig, None, overrides, **{**DEMO, "output_dir": output_dir or DEMO["output_dir"]})
