"""The cost forecast of a recipe, before anything trains.

FTFT saves compute only when its reference is cheap next to the main model: a reference a third of
the main model's size trained for 3 epochs against ERM's 2 already costs half of ERM before the
main run starts. This module projects each method's training FLOPs from the same analytic count
the cost ledger uses (6 × non-embedding parameters × non-padding tokens), with parameters counted
on the meta device (no weights are loaded) and tokens measured on a sample of the training split
with each model's own tokenizer. Early-stopping methods get a range: their reference plus anything
up to their cap.
"""

from __future__ import annotations

import dataclasses
import math

import torch

from ..config import MainConfig, ReferenceConfig
from ..data.tokenize import encode_texts
from ..runs.plan import plan_steps
from ..train.budget import Budget
from ..train.models import count_flops_parameters, load_tokenizer, model_config

TOKEN_SAMPLE = 2000
"""Training rows tokenized to measure the mean tokens per example."""


def flops_parameters(model: str, num_labels: int, num_layers: int | None) -> int:
    """Non-embedding parameters of a model, counted without materialising its weights."""
    from transformers import AutoModelForSequenceClassification

    with torch.device("meta"):
        module = AutoModelForSequenceClassification.from_config(model_config(model, num_labels, num_layers))
    return count_flops_parameters(module)


def mean_tokens(split, model: str, max_length: int) -> float:
    """Mean non-padding tokens per training example (after truncation) under `model`'s tokenizer."""
    tokenizer = load_tokenizer(model)
    rows = split.dataset.select(range(min(TOKEN_SAMPLE, len(split)))).to_dict()
    encoded = encode_texts(tokenizer, rows["text"], rows.get("text_pair"), max_length)
    return sum(len(ids) for ids in encoded["input_ids"]) / max(1, len(rows["text"]))


@dataclasses.dataclass
class MethodForecast:
    method: str
    reference: float  # FLOPs of the reference run the method needs (0: none)
    main: float  # FLOPs of the main run at its budget (the cap, for early-stopping methods)
    stops_early: bool


@dataclasses.dataclass
class Forecast:
    erm_flops: float
    methods: list
    warnings: list

    def relative(self, flops: float) -> float:
        return 100.0 * flops / self.erm_flops

    def table(self) -> str:
        lines = ["| method | reference | main run | total (ERM=100) |", "|---|---|---|---|"]
        for m in self.methods:
            main = f"≤ {self.relative(m.main):.0f}" if m.stops_early else f"{self.relative(m.main):.0f}"
            total = (
                f"{self.relative(m.reference):.0f} to {self.relative(m.reference + m.main):.0f}"
                if m.stops_early
                else f"{self.relative(m.reference + m.main):.0f}"
            )
            lines.append(f"| {m.method} | {self.relative(m.reference):.0f} | {main} | {total} |")
        return "\n".join(lines) + "\n"

    def to_json(self) -> dict:
        return {
            "erm_flops": self.erm_flops,
            "warnings": self.warnings,
            "methods": [
                {
                    **dataclasses.asdict(m),
                    "relative_reference": self.relative(m.reference),
                    "relative_main_cap": self.relative(m.main),
                }
                for m in self.methods
            ],
        }


def _examples(budget: Budget, rows: int, full_rows: int, cfg: MainConfig, world_size: int) -> float:
    """Examples a main run of `budget` on `rows` of `full_rows` training rows passes forward."""
    plan = plan_steps(rows, full_rows, world_size, cfg.micro_batch_size, cfg.grad_accum, budget, cfg.erm_epochs)
    # FLOPs or time budgets: as long as the ERM budget, the best guess.
    steps = plan.erm_steps if plan.max_steps is None else plan.max_steps
    return steps / plan.steps_per_epoch * rows


def forecast(recipe, split) -> Forecast:
    """Project every method's training FLOPs relative to ERM (see the module docstring)."""
    from . import SUBSET_METHODS
    from .config import EARLY_STOPPING_METHODS

    main = recipe.main
    n = len(split)
    subset_rows = max(1, math.floor(recipe.selection.fraction * n + 0.5))
    per_token_main = (
        6.0
        * flops_parameters(main.model, split.num_labels, main.num_layers)
        * mean_tokens(split, main.model, main.max_length)
    )
    erm = per_token_main * _examples(recipe.erm_budget, n, n, main, recipe.num_ranks)

    def reference_flops(ref: ReferenceConfig) -> float:
        per_example = (
            6.0
            * flops_parameters(ref.model, split.num_labels, ref.num_layers)
            * mean_tokens(split, ref.model, ref.max_length)
        )
        return per_example * ref.epochs * n

    from . import reference_configs

    references = {name: reference_flops(ref) for name, ref in reference_configs(recipe).items()}
    methods = []
    for method in recipe.methods:
        stops_early = method in EARLY_STOPPING_METHODS
        rows = subset_rows if method in SUBSET_METHODS else n
        budget = recipe.ftft_budget if stops_early else recipe.erm_budget
        reference = references.get({"ftft": "small", "dm": "main"}.get(method), 0.0)
        methods.append(
            MethodForecast(
                method, reference, per_token_main * _examples(budget, rows, n, main, recipe.num_ranks), stops_early
            )
        )
    warnings = []
    if "small" in references:
        share = 100.0 * references["small"] / erm
        if share >= 100:
            warnings.append(
                f"FTFT cannot come in under ERM: its reference alone costs {share:.0f}% of ERM "
                "(use a smaller reference, fewer reference epochs or a shorter max_length)"
            )
        elif share >= 50:
            warnings.append(
                f"FTFT's reference alone costs {share:.0f}% of ERM: FTFT stays under ERM only if "
                f"its main run stops before {100 - share:.0f}% of ERM's cost"
            )
    return Forecast(erm, methods, warnings)
