"""The cost plan of a recipe: what every method may spend, decided before any main run starts.

A recipe's `cost_target` (a share of ERM's FLOPs with evaluations, reference included) becomes
the early-stopping methods' step cap, their evaluation points and each main run's FLOPs ceiling:

    cap = the most steps S such that  reference + train(S) + evals x one evaluation
          + a step and an evaluation to spare  <=  cost_target x ERM

all in the cost ledger's units (6 x non-embedding parameters x non-padding tokens to train, 2 x to
evaluate; `CostTotals.cost_flops`: training and the evaluations that steer a run, not the closing
report of every split, which every method pays alike), with tokens counted row by row under each
model's own tokenizer, and the reference's cost as measured once it has run (its forecast before,
in `--dry-run`). The `evals` evaluation points fall every ceil(S / evals) steps, the last at the
cap itself; every early-stopping method gets the same cap and points (FTFT's, the tightest, as it
alone pays for a reference), so `erm_es` is plain ERM cut where FTFT is. Patience, if set, may
stop a run sooner, never later; each run also gets its allotment as `max_flops`, which its stop
rule weighs after every step, so the target holds whatever the draw of long or short examples. A
reference that leaves too little room is refused in one line.

Without a target the early-stopping methods keep their `ftft_budget` cap and evaluate `evals` times
over the ERM schedule, and the plan says what that may cost.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from ..config import OptimConfig, ReferenceConfig
from ..data.load import fixed_sample
from ..data.tokenize import encode_texts
from ..errors import FtftError
from ..runs.plan import examples_seen, plan_steps
from ..train.budget import Budget
from ..train.cost import EVAL_FLOPS_PER_PARAM_TOKEN, train_flops_per_token
from ..train.evaluate import evaluation_tokens
from ..train.models import count_flops_parameters, load_tokenizer, meta_model, model_config
from .config import EARLY_STOPPING_METHODS

TOKEN_SAMPLE = 100_000
"""Training rows tokenized to count tokens; beyond them, their mean stands for the rest (each
main run's `max_flops` keeps the target whatever that mean misses)."""
ENCODE_CHUNK = 5_000
"""Rows tokenized at a time (bounds the memory of the token lists)."""
DEFAULT_REFERENCE_SHARE = 10.0
"""The most a default reference may cost, as a share of ERM's training FLOPs (%), if one layer fewer
can do it: the FTFT paper's reference costs about 15% of its main model, and the reference is paid
before the main run's early stop saves anything."""
DEFAULT_REFERENCE_LAYERS = 2
"""The deepest default reference: the first 2 layers of the main model, as the paper's cheapest
transfers (and DeBERTaV3-small's 6 of large's 24 layers, in depth share)."""
REFERENCE_WARN_SHARE = 25.0
"""A reference costing more than this share of ERM (%) is warned about without a cost target."""
REFERENCE_METHODS = {"ftft": "small", "dm": "main"}
"""Which reference run each method needs."""
SUBSET_METHODS = {"dm": "main", "ftft": "small", "random": "random"}
"""Which subset each method trains on (none: the full training split)."""


def flops_parameters(run: OptimConfig, num_labels: int) -> tuple[int, int]:
    """Non-embedding parameters of a run's model, and those of them that train (fewer under LoRA),
    counted without materialising its weights."""
    module = meta_model(run.model, num_labels, run.num_layers, run.lora)
    return count_flops_parameters(module), count_flops_parameters(module, trainable=True)


def token_lengths(split, tokenizer, max_length: int, rows: int | None = None) -> np.ndarray:
    """Tokens of each of the first `rows` rows of a canonical split (all: None), after truncation."""
    count = len(split) if rows is None else min(rows, len(split))
    lengths = []
    for start in range(0, count, ENCODE_CHUNK):
        chunk = split.dataset.select(range(start, min(count, start + ENCODE_CHUNK))).to_dict()
        encoded = encode_texts(tokenizer, chunk["text"], chunk.get("text_pair"), max_length)
        lengths.extend(len(ids) for ids in encoded["input_ids"])
    return np.asarray(lengths, dtype=np.int64)


@dataclasses.dataclass(frozen=True)
class ModelTokens:
    """What one model makes of a recipe's splits: its FLOPs parameters, and tokens per row."""

    flops_parameters: int
    trainable_flops_parameters: int
    """Of `flops_parameters`, those that train (see `train.cost.train_flops_per_token`)."""
    train: np.ndarray
    """Tokens of each training row (of the first `TOKEN_SAMPLE` of a larger split)."""
    train_rows: int
    evals: dict
    """Split name -> tokens of each of its rows."""

    @classmethod
    def measure(cls, run: OptimConfig, splits: dict, train_split: str) -> "ModelTokens":
        tokenizer = load_tokenizer(run.model)
        train = splits[train_split]
        return cls(
            *flops_parameters(run, train.num_labels),
            token_lengths(train, tokenizer, run.max_length, TOKEN_SAMPLE),
            len(train),
            {
                name: token_lengths(split, tokenizer, run.max_length)
                for name, split in splits.items()
                if name != train_split
            },
        )

    def _measured(self, rows) -> np.ndarray:
        """Tokens of the measured rows among `rows` (all measured rows: None, or none of them measured)."""
        if rows is None:
            return self.train
        rows = np.asarray(rows, dtype=np.int64)
        measured = self.train[rows[rows < len(self.train)]]
        return measured if measured.size else self.train

    def rows_total(self, rows=None) -> float:
        """Tokens of one pass over `rows` (None: the whole training split)."""
        count = self.train_rows if rows is None else len(rows)
        return float(self._measured(rows).mean()) * count

    def longest(self, rows=None) -> int:
        return int(self._measured(rows).max())

    def training_flops(self, steps: int, rows, run: OptimConfig, world_size: int) -> float:
        """Training FLOPs of `steps` optimizer steps over `rows` (None: all): whole epochs' rows, then the
        epoch under way at the rows' mean length."""
        count = self.train_rows if rows is None else len(rows)
        epochs, partial = examples_seen(steps, count, world_size, run.micro_batch_size, run.grad_accum)
        tokens = epochs * self.rows_total(rows) + partial * self.rows_total(rows) / count
        return self.train_flops_per_token * tokens

    def step_flops_bound(self, rows, run: OptimConfig, world_size: int) -> float:
        """An upper bound on one step's training FLOPs: every example as long as the longest row."""
        examples = run.micro_batch_size * run.grad_accum * world_size
        return self.train_flops_per_token * examples * self.longest(rows)

    @property
    def train_flops_per_token(self) -> float:
        return train_flops_per_token(self.flops_parameters, self.trainable_flops_parameters)

    def evaluation_flops(self, world_size: int, samples: dict | None = None, names=None) -> float:
        """FLOPs of one evaluation of the splits `names` (None: every eval split), each on its rows in
        `samples` (default: all), as the ledger will count it."""
        samples = samples or {}
        names = list(self.evals) if names is None else names
        tokens = sum(evaluation_tokens(self.evals[n], samples.get(n), world_size) for n in names)
        return float(EVAL_FLOPS_PER_PARAM_TOKEN) * self.flops_parameters * tokens


@dataclasses.dataclass(frozen=True)
class RunCost:
    """FLOPs of a run: training, and training with evaluations."""

    train: float
    total: float
    measured: bool = False
    """True: read from the run's cost ledger; False: planned."""

    @classmethod
    def of_ledger(cls, cost: dict) -> "RunCost":
        return cls(cost["train_flops"], cost["cost_flops"], measured=True)


def reference_cost(ref: ReferenceConfig, splits: dict, train_split: str) -> RunCost:
    """A reference run's FLOPs before it runs: every training row every epoch on one rank, and its
    evaluation of every eval split when it evaluates (the gate reads it: it steers the recipe)."""
    evaluated = ref.data.eval_splits if ref.evaluate else ()
    tokens = ModelTokens.measure(ref, {name: splits[name] for name in (train_split, *evaluated)}, train_split)
    train = tokens.train_flops_per_token * ref.epochs * tokens.rows_total()
    evaluation = tokens.evaluation_flops(1)
    return RunCost(train, train + evaluation)


@dataclasses.dataclass(frozen=True)
class MainPlan:
    """One method's main runs: their cap, evaluation points and planned FLOPs at the cap."""

    steps: int
    eval_every: int | None
    """Steps between evaluations while training (None: the run evaluates only at its end)."""
    evals: int
    """Evaluations while training, up to the cap."""
    train: float
    total: float
    max_flops: float | None = None
    """The ceiling the runs are given (None: none)."""


@dataclasses.dataclass(frozen=True)
class MethodPlan:
    method: str
    reference: RunCost | None
    main: MainPlan
    stops_early: bool

    @property
    def train(self) -> float:
        return self.main.train + (self.reference.train if self.reference else 0.0)

    @property
    def total(self) -> float:
        return self.main.total + (self.reference.total if self.reference else 0.0)


@dataclasses.dataclass
class CostPlan:
    target: float | None
    erm: MainPlan
    methods: list
    watched: str | None
    """What the early-stopping methods evaluate while training: `split` or `N rows of split`."""
    warnings: list

    def method(self, name: str) -> MethodPlan | None:
        return next((m for m in self.methods if m.method == name), None)

    def relative_train(self, plan: MethodPlan | None) -> float | None:
        return None if plan is None else 100.0 * plan.train / self.erm.train

    def relative_total(self, plan: MethodPlan | None) -> float | None:
        return None if plan is None else 100.0 * plan.total / self.erm.total

    def run_fields(self, method: str) -> dict:
        """The `MainConfig` fields this plan sets on a method's main runs."""
        plan = self.method(method)
        if not plan.stops_early:
            return {}
        return {
            "budget": Budget("steps", plan.main.steps),
            "eval_every": plan.main.eval_every,
            "max_flops": plan.main.max_flops,
        }

    def table(self) -> str:
        """The plan as a user reads it before anything trains (and in results.md)."""
        if self.target is None:
            head = "cost plan (no cost_target: early-stopping methods may spend up to their ftft_budget cap):"
        else:
            head = (
                f"cost plan (cost_target {self.target:g}: every early-stopping method's FLOPs with evaluations, "
                f"reference included, at most {100 * self.target:g}% of ERM's):"
            )
        lines = [
            head,
            "| method | reference (ERM=100) | main run | evaluations while training | training FLOPs (ERM=100) "
            "| FLOPs with evaluations (ERM=100) | of which evaluations |",
            "|---|---|---|---|---|---|---|",
        ]
        for plan in self.methods:
            reference = "–"
            if plan.reference is not None:
                reference = f"{100 * plan.reference.total / self.erm.total:.1f} " + (
                    "(measured)" if plan.reference.measured else "(forecast)"
                )
            bound = "≤ " if plan.stops_early else ""
            evals = (
                f"{plan.main.evals}, every {plan.main.eval_every} steps, on {self.watched}"
                if plan.stops_early and plan.main.eval_every
                else "at the end only"
            )
            evaluations = 100.0 * (plan.total - plan.train) / self.erm.total
            lines.append(
                f"| {plan.method} | {reference} | {bound}{plan.main.steps} steps | {evals} | "
                f"{bound}{self.relative_train(plan):.1f} | {bound}{self.relative_total(plan):.1f} | "
                f"{bound}{evaluations:.1f} |"
            )
        return "\n".join(lines) + "\n"

    def to_json(self) -> dict:
        return {
            "target": self.target,
            "erm": dataclasses.asdict(self.erm),
            "watched": self.watched,
            "warnings": self.warnings,
            "methods": [
                {
                    **dataclasses.asdict(m),
                    "relative_train": self.relative_train(m),
                    "relative_total": self.relative_total(m),
                }
                for m in self.methods
            ],
        }


def subset_size(fraction: float, rows: int) -> int:
    """Rows a selection of `fraction` keeps: round(fraction x rows), half up (as `select_subset`)."""
    return max(1, math.floor(fraction * rows + 0.5))


def plan_costs(
    recipe, splits: dict, references: dict, subsets: dict | None = None, tokens: ModelTokens | None = None
) -> CostPlan:
    """The recipe's cost plan (see the module docstring).

    `splits`: the training split and every eval split, canonical; `references`: reference name ->
    its `RunCost` (measured or forecast); `subsets`: method -> the training rows its subset holds
    (None before selection: rows of the split's mean length, as many as `selection.fraction` keeps);
    `tokens`: the main model's `ModelTokens` of these splits, if already measured.
    """
    tokens = tokens or ModelTokens.measure(recipe.main, splits, recipe.data.train_split)
    return _Planner(recipe, tokens, splits, references, subsets).plan()


class _Planner:
    """The arithmetic of one plan, over one tokenization of the recipe's data by the main model."""

    def __init__(self, recipe, tokens: ModelTokens, splits: dict, references: dict, subsets: dict | None):
        self.recipe, self.main, self.world = recipe, recipe.main, recipe.num_ranks
        self.references, self.subsets, self.tokens = references, subsets, tokens
        erm_steps = self.steps(recipe.erm_budget, None)
        erm_train = self.tokens.training_flops(erm_steps, None, self.main, self.world)
        self.erm = MainPlan(erm_steps, None, 0, erm_train, erm_train)  # its one evaluation only reports
        self.early = [m for m in recipe.methods if m in EARLY_STOPPING_METHODS]
        self.watched, self.eval_flops = None, 0.0
        if self.early:
            split = recipe.stopping_metric().partition("/")[0]
            size = recipe.stopping.eval_sample
            sample = fixed_sample(splits[split].uids(), size)
            self.eval_flops = self.tokens.evaluation_flops(self.world, {split: sample}, [split])
            self.watched = f"{len(sample)} rows of {split}" if len(sample) < len(splits[split]) else split

    def rows(self, method: str):
        """The training rows of `method`'s main runs (None: the whole split)."""
        if method not in SUBSET_METHODS:
            return None
        if self.subsets is not None and method in self.subsets:
            return self.subsets[method]
        count = subset_size(self.recipe.selection.fraction, self.tokens.train_rows)
        return np.linspace(0, self.tokens.train_rows - 1, count).round().astype(np.int64)

    def reference(self, method: str) -> RunCost | None:
        name = REFERENCE_METHODS.get(method)
        return self.references.get(name) if name else None

    def steps(self, budget: Budget, rows) -> int:
        """Steps of `budget` over `rows`; a FLOPs or time budget counts as long as the ERM budget."""
        n = self.tokens.train_rows
        count = n if rows is None else len(rows)
        main = self.main
        plan = plan_steps(count, n, self.world, main.micro_batch_size, main.grad_accum, budget, main.erm_epochs)
        return plan.erm_steps if plan.max_steps is None else plan.max_steps

    def schedule(self, rows):
        main, n = self.main, self.tokens.train_rows
        count = n if rows is None else len(rows)
        return plan_steps(
            count,
            n,
            self.world,
            main.micro_batch_size,
            main.grad_accum,
            self.recipe.ftft_budget,
            main.erm_epochs,
            main.lr_schedule,
            None,
            main.warmup_ratio,
        )

    def limit(self, method: str) -> float:
        """What `method`'s main run may spend under the target: the target less its reference."""
        reference = self.reference(method)
        return self.recipe.cost_target * self.erm.total - (reference.total if reference else 0.0)

    def most_steps(self, method: str) -> int:
        """The longest cap that keeps `method`'s main run, with its `evals` evaluations, within its
        limit with a step and an evaluation to spare; refused when it would
        leave less than a step between evaluations."""
        rows, evals = self.rows(method), self.recipe.stopping.evals
        fixed = evals * self.eval_flops
        margin = self.tokens.step_flops_bound(rows, self.main, self.world) + self.eval_flops
        limit = self.limit(method)

        def fits(steps: int) -> bool:
            return self.tokens.training_flops(steps, rows, self.main, self.world) + fixed + margin <= limit

        low, high = 0, self.steps(self.recipe.ftft_budget, rows)
        while low < high:  # the longest cap that fits: the cost grows with it
            middle = (low + high + 1) // 2
            low, high = (middle, high) if fits(middle) else (low, middle - 1)
        if low < evals:
            reference = self.reference(method)
            share = 100.0 * (reference.total if reference else 0.0) / self.erm.total
            raise FtftError(
                f"cost_target {self.recipe.cost_target:g} leaves {method}'s main run no room: its reference costs "
                f"{share:.1f}% of ERM's FLOPs with evaluations and its {evals} evaluations "
                f"{100.0 * fixed / self.erm.total:.1f}%, leaving {100.0 * (limit - fixed) / self.erm.total:.1f}% "
                f"for training, less than a step between evaluations; use a cheaper reference, a higher "
                f"cost_target, fewer early_stopping.evals or a smaller early_stopping.eval_sample"
            )
        return low

    def evaluation_points(self) -> dict:
        """method -> (cap, steps between evaluations, evaluations while training, max_flops). Under a
        target the `evals` evaluations fall every ceil(cap / evals) steps, the last at the cap itself
        (a run evaluates where it ends), so the cap wastes no step on rounding."""
        recipe = self.recipe
        if recipe.cost_target is None:
            points = {}
            for method in self.early:
                cap = self.steps(recipe.ftft_budget, self.rows(method))
                every = self.schedule(self.rows(method)).evals_every(recipe.stopping.evals)
                points[method] = (cap, every, math.ceil(cap / every), None)  # the last at the cap
            return points
        if not self.early:
            return {}
        cap = min(self.most_steps(m) for m in self.early)
        every = math.ceil(cap / recipe.stopping.evals)
        warmup = self.schedule(None).warmup_steps
        if self.main.lr_schedule == "truncated" and cap <= warmup:
            raise FtftError(
                f"cost_target {recipe.cost_target:g} caps the early-stopping main runs at {cap} steps, no more "
                f"than the {warmup} steps of the ERM schedule's warm-up: they would stop before their learning "
                f"rate peaked; raise cost_target, use a cheaper reference or lr_schedule: compressed"
            )
        return {m: (cap, every, math.ceil(cap / every), self.limit(m)) for m in self.early}

    def plan(self) -> CostPlan:
        points = self.evaluation_points()
        methods = []
        for method in self.recipe.methods:
            rows = self.rows(method)
            if method in points:
                cap, every, evals, limit = points[method]
                train = self.tokens.training_flops(cap, rows, self.main, self.world)
                main = MainPlan(cap, every, evals, train, train + evals * self.eval_flops, limit)
            else:
                steps = self.steps(self.recipe.erm_budget, rows)
                train = self.tokens.training_flops(steps, rows, self.main, self.world)
                main = MainPlan(steps, None, 0, train, train)
            methods.append(MethodPlan(method, self.reference(method), main, method in points))
        plan = CostPlan(self.recipe.cost_target, self.erm, methods, self.watched, [])
        plan.warnings.extend(_reference_warnings(plan))
        return plan


def _reference_warnings(plan: CostPlan) -> list:
    warnings = []
    for method in plan.methods:
        if method.method != "ftft" or method.reference is None:
            continue
        share = 100.0 * method.reference.train / plan.erm.train
        if share >= 100:
            warnings.append(
                f"FTFT cannot come in under ERM: its reference alone costs {share:.0f}% of ERM "
                "(use a smaller reference, fewer reference epochs or a shorter max_length)"
            )
        elif plan.target is None and share > REFERENCE_WARN_SHARE:
            warnings.append(
                f"FTFT's reference alone costs {share:.0f}% of ERM, more than a quarter: FTFT's saving comes from "
                f"a cheap reference (the paper's costs about 15% of its main model) and an early stop; use a "
                f"smaller reference (reference.num_layers, a smaller model) or fewer reference epochs"
            )
    return warnings


def default_reference(recipe, splits: dict) -> tuple[ReferenceConfig, float]:
    """FTFT's reference when the recipe names none, and its forecast cost (% of ERM's training FLOPs).

    The main model cut to its first `DEFAULT_REFERENCE_LAYERS` layers, or to one layer where two
    would cost more than `DEFAULT_REFERENCE_SHARE` of ERM; trained with the main runs' options
    (model, lr, batch, max_length, DeepSpeed config) for `ReferenceConfig`'s 3 epochs, the fewest
    the gate accepts. A reference of k of L layers for 3 epochs against ERM's E costs about
    (k / L) x (3 / E) of ERM: 2 of 24 layers, 8%; 1 of 12, 8%; 1 of 6 (MiniLM), 17%, as low as
    the main model's own layers go.
    """
    main, train_split = recipe.main, recipe.data.train_split
    split = splits[train_split]
    depth = main.num_layers or model_config(main.model, split.num_labels).num_hidden_layers
    optim = {f.name: getattr(main, f.name) for f in dataclasses.fields(OptimConfig)}
    tokens = ModelTokens.measure(main, {train_split: split}, train_split)
    budget = plan_steps(
        len(split),
        len(split),
        recipe.num_ranks,
        main.micro_batch_size,
        main.grad_accum,
        recipe.erm_budget,
        main.erm_epochs,
    )
    erm = tokens.training_flops(budget.max_steps or budget.erm_steps, None, main, recipe.num_ranks)
    choice = None
    for layers in range(min(DEFAULT_REFERENCE_LAYERS, depth), 0, -1):
        reference = ReferenceConfig(**{**optim, "num_layers": layers})
        training = dataclasses.replace(reference, evaluate=False)  # its training alone is the share
        share = 100.0 * reference_cost(training, {train_split: split}, train_split).train / erm
        choice = (reference, share)
        if share <= DEFAULT_REFERENCE_SHARE:
            break
    return choice
