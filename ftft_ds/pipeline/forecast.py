"""The cost forecast of a recipe, before anything trains.

FTFT saves compute only when its reference is cheap next to the main model: a reference a third of
the main model's size trained for 3 epochs against ERM's 2 already costs half of ERM before the
main run starts. This module projects each method's training FLOPs from the same analytic count
the cost ledger uses (6 × non-embedding parameters × non-padding tokens), with parameters counted
on the meta device (no weights are loaded) and tokens measured on a sample of the training split
with each model's own tokenizer. Early-stopping methods get a range (their reference plus anything
up to their cap) and a point estimate: the main run stopping where FTFT's main runs stopped in this
tool's measured recipes (`BENCH_STOP_SHARES`), printed with that estimate's error on those runs and
with the evaluation by which FTFT's main run must stop for FTFT to cost at most half of ERM.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import torch

from ..config import MainConfig, OptimConfig, ReferenceConfig
from ..data.tokenize import encode_texts
from ..runs.plan import plan_steps
from ..train.budget import Budget
from ..train.models import count_flops_parameters, load_tokenizer, model_config

TOKEN_SAMPLE = 2000
"""Training rows tokenized to measure the mean tokens per example."""
BENCH_STOP_SHARES = (0.413, 0.496, 0.331, 0.936, 0.851, 1.0, 0.498, 0.664, 0.332, 0.830, 0.747, 0.681, 0.766, 0.766)
"""Where FTFT's main runs stopped, as shares of their cap (steps run / the cap's steps), in the
README's measured recipes: vader (3 seeds); the demo's recipe before its main runs froze the token
embeddings and trained in bf16 (3 seeds), and with ERM at 10 epochs (5 seeds); the demo's recipe
as it is (3 seeds: steps 192, 216 and 216 of 282)."""
EXPECTED_STOP_SHARE = float(np.median(BENCH_STOP_SHARES))
"""The point estimate's stop: the median of `BENCH_STOP_SHARES`."""
STOP_SHARE_ERROR = float(np.mean(np.abs(np.array(BENCH_STOP_SHARES) - EXPECTED_STOP_SHARE)))
"""The point estimate's mean absolute error on those runs, as a share of the cap."""
DEFAULT_REFERENCE_SHARE = 10.0
"""The most a default reference may cost, as a share of ERM's training FLOPs (%), if one layer fewer
can do it: the FTFT paper's reference costs about 15% of its main model, and the reference is paid
before the main run's early stop saves anything."""
DEFAULT_REFERENCE_LAYERS = 2
"""The deepest default reference: the first 2 layers of the main model, as the paper's cheapest
transfers (and DeBERTaV3-small's 6 of large's 24 layers, in depth share)."""
REFERENCE_WARN_SHARE = 25.0
"""A reference costing more than this share of ERM (%) is warned about: FTFT's saving comes from a
cheap reference (the paper's costs about 15% of its main model) and an early stop."""


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

    @property
    def expected(self) -> float:
        """The point estimate: the reference plus the main run to its cap, or, stopping early, to
        `EXPECTED_STOP_SHARE` of it."""
        return self.reference + (EXPECTED_STOP_SHARE if self.stops_early else 1.0) * self.main


@dataclasses.dataclass
class Forecast:
    erm_flops: float
    methods: list
    warnings: list
    half_cost_stop: str | None = None
    """What FTFT at no more than half of ERM's training FLOPs needs of its early stop (None: no FTFT)."""

    def relative(self, flops: float) -> float:
        return 100.0 * flops / self.erm_flops

    def table(self) -> str:
        lines = ["| method | reference | main run | total (ERM=100) | expected |", "|---|---|---|---|---|"]
        for m in self.methods:
            main = f"≤ {self.relative(m.main):.0f}" if m.stops_early else f"{self.relative(m.main):.0f}"
            total = (
                f"{self.relative(m.reference):.0f} to {self.relative(m.reference + m.main):.0f}"
                if m.stops_early
                else f"{self.relative(m.reference + m.main):.0f}"
            )
            expected = (
                f"{self.relative(m.expected):.0f} ± {self.relative(STOP_SHARE_ERROR * m.main):.0f}"
                if m.stops_early
                else f"{self.relative(m.expected):.0f}"
            )
            lines.append(f"| {m.method} | {self.relative(m.reference):.0f} | {main} | {total} | {expected} |")
        if any(m.stops_early for m in self.methods):
            lines.append(
                f"\nexpected: an early-stopping main run stopping at {100 * EXPECTED_STOP_SHARE:.0f}% of its cap, "
                f"the median of {len(BENCH_STOP_SHARES)} FTFT main runs measured with this tool (README, "
                f'"Measured"; they stopped at {100 * min(BENCH_STOP_SHARES):.0f}-{100 * max(BENCH_STOP_SHARES):.0f}%); '
                f"on those runs the estimate was off by {100 * STOP_SHARE_ERROR:.0f}% of the cap on average (±)."
            )
        if self.half_cost_stop:
            lines.append(self.half_cost_stop)
        return "\n".join(lines) + "\n"

    def to_json(self) -> dict:
        return {
            "erm_flops": self.erm_flops,
            "warnings": self.warnings,
            "half_cost_stop": self.half_cost_stop,
            "expected_stop_share": EXPECTED_STOP_SHARE,
            "stop_share_error": STOP_SHARE_ERROR,
            "methods": [
                {
                    **dataclasses.asdict(m),
                    "relative_reference": self.relative(m.reference),
                    "relative_main_cap": self.relative(m.main),
                    "relative_expected": self.relative(m.expected),
                }
                for m in self.methods
            ],
        }


def half_cost_stop(reference_share: float, schedule_share: float, evals: int, patience: int) -> str:
    """The latest of the `evals` evaluations by which FTFT's main run must stop for FTFT to cost at
    most half of ERM's training FLOPs, its reference (`reference_share`, % of ERM) included.

    The evaluations are spread evenly over the steps of the main run's LR schedule, which cost
    `schedule_share` % of ERM (100 under `truncated`, the cap's share under `compressed`), so
    stopping at evaluation k costs k / evals of that; patience puts the best checkpoint `patience`
    evaluations before the stop.
    """
    stop = min(evals, math.floor((50.0 - reference_share) / schedule_share * evals + 1e-9))
    if stop - patience < 1:
        return (
            f"FTFT cannot cost half of ERM: with its reference at {reference_share:.0f}%, its main run "
            f"would have to stop by evaluation {max(stop, 0)} of {evals}, before patience ({patience}) allows."
        )
    return (
        f"FTFT at ≤ 50 needs its main run stopped by evaluation {stop} of {evals}: its best checkpoint by "
        f"evaluation {stop - patience} (patience {patience})."
    )


def default_reference(recipe, split) -> tuple[ReferenceConfig, float]:
    """FTFT's reference when the recipe names none, and its forecast cost (% of ERM's training FLOPs).

    The main model cut to its first `DEFAULT_REFERENCE_LAYERS` layers, or to one layer where two
    would cost more than `DEFAULT_REFERENCE_SHARE` of ERM; trained with the main runs' options
    (model, lr, batch, max_length, DeepSpeed config) for `ReferenceConfig`'s 3 epochs, the fewest
    the gate accepts. A reference of k of L layers for 3 epochs against ERM's E costs about
    (k / L) x (3 / E) of ERM: 2 of 24 layers, 8%; 1 of 12, 8%; 1 of 6 (MiniLM), 17%, as low as
    the main model's own layers go.
    """
    main = recipe.main
    depth = main.num_layers or model_config(main.model, split.num_labels).num_hidden_layers
    optim = {f.name: getattr(main, f.name) for f in dataclasses.fields(OptimConfig)}
    erm = example_flops(main, split) * _examples(recipe.erm_budget, len(split), len(split), main, recipe.num_ranks)
    choice = None
    for layers in range(min(DEFAULT_REFERENCE_LAYERS, depth), 0, -1):
        reference = ReferenceConfig(**{**optim, "num_layers": layers})
        share = 100.0 * reference_flops(reference, split) / erm
        choice = (reference, share)
        if share <= DEFAULT_REFERENCE_SHARE:
            break
    return choice


def example_flops(run: OptimConfig, split) -> float:
    """Training FLOPs per example of a run's model: 6 x non-embedding parameters x the split's mean
    tokens per example under its tokenizer (the cost ledger's count)."""
    return (
        6.0
        * flops_parameters(run.model, split.num_labels, run.num_layers)
        * mean_tokens(split, run.model, run.max_length)
    )


def reference_flops(ref: ReferenceConfig, split) -> float:
    """Training FLOPs of a reference run: every training row, every epoch."""
    return example_flops(ref, split) * ref.epochs * len(split)


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
    per_example = example_flops(main, split)  # the split tokenized once for every method
    erm = per_example * _examples(recipe.erm_budget, n, n, main, recipe.num_ranks)

    from . import reference_configs

    references = {name: reference_flops(ref, split) for name, ref in reference_configs(recipe).items()}
    methods = []
    for method in recipe.methods:
        stops_early = method in EARLY_STOPPING_METHODS
        rows = subset_rows if method in SUBSET_METHODS else n
        budget = recipe.ftft_budget if stops_early else recipe.erm_budget
        reference = references.get({"ftft": "small", "dm": "main"}.get(method), 0.0)
        main_run = per_example * _examples(budget, rows, n, main, recipe.num_ranks)
        methods.append(MethodForecast(method, reference, main_run, stops_early))
    warnings, half = [], None
    if "small" in references:
        share = 100.0 * references["small"] / erm
        if share >= 100:
            warnings.append(
                f"FTFT cannot come in under ERM: its reference alone costs {share:.0f}% of ERM "
                "(use a smaller reference, fewer reference epochs or a shorter max_length)"
            )
        elif share > REFERENCE_WARN_SHARE:
            warnings.append(
                f"FTFT's reference alone costs {share:.0f}% of ERM, more than a quarter: FTFT's saving comes from "
                f"a cheap reference (the paper's costs about 15% of its main model) and an early stop; use a "
                f"smaller reference (reference.num_layers, a smaller model) or fewer reference epochs"
            )
        ftft = next((m for m in methods if m.method == "ftft"), None)
        if ftft is not None:
            stopping = recipe.early_stopping
            schedule_share = 100.0 * ftft.main / erm if main.lr_schedule == "compressed" else 100.0
            half = half_cost_stop(share, schedule_share, stopping.evals, stopping.patience)
    return Forecast(erm, methods, warnings, half)
