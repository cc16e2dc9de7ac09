"""`ftft demo`: the whole FTFT recipe on the embedded task, sized for 2 CPU cores and a few minutes.

A cheap reference (the pretrained MiniLM cut to its first 2 layers, 2 epochs) records training
dynamics; the 33% most ambiguous examples are selected; the full pretrained MiniLM then trains
under ZeRO-2 on 2 ranks, once on everything for the ERM budget (ERM) and once on the subset for a
quarter of that budget (FTFT). The table compares in-distribution and OOD accuracy and cost.
"""
from __future__ import annotations

from .config import load_config
from .pipeline import RecipeConfig

DEMO = {
    "output_dir": "runs/demo",
    "data": {"source": "embedded", "embedded_train_size": 1200},
    "main": {"model": "minilm", "ds_config": "zero2", "micro_batch_size": 16, "lr": 1.0e-4,
             "max_length": 48, "erm_epochs": 2, "log_every": 5},
    "reference": {"model": "minilm", "num_layers": 2, "epochs": 2, "micro_batch_size": 32, "lr": 2.0e-4,
                  "max_length": 48, "log_every": 5},
    "selection": {"region": "ambiguous", "fraction": 0.33},
    "methods": ["erm", "ftft"],
    "seeds": [0],
    "erm_budget": "erm:1",
    "ftft_budget": "erm:0.25",
    "num_ranks": 2,
}
"""The demo's recipe; `ftft demo --set key=value` changes any of it."""


def demo_config(output_dir: str | None = None, overrides=()) -> RecipeConfig:
    """The demo's recipe, written to `output_dir`, with `key=value` overrides applied."""
    return load_config(RecipeConfig, None, overrides, **{**DEMO, "output_dir": output_dir or DEMO["output_dir"]})
