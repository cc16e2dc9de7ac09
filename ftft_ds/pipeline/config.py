"""The config of `ftft run`: one task, a few references, the methods to compare, the seeds."""

from __future__ import annotations

import dataclasses
import typing

from ..config import MainConfig, ReferenceConfig, derive
from ..data.load import DataConfig
from ..errors import FtftError
from ..jobs import ExecutorConfig
from ..train.budget import Budget

METHODS = ("erm", "erm_es", "dm", "random", "ftft")
REGIONS = ("ambiguous", "hard", "easy", "random", "both-ends")
EARLY_STOPPING_METHODS = ("erm_es", "random", "ftft")
"""Methods whose main runs stop by patience under the `ftft_budget` cap; `erm` and `dm` train
their whole `erm_budget` and report their last step."""
GATE_MODES = ("warn", "refuse", "off")
MAIN_OWNED = frozenset(
    {
        "data",
        "output_dir",
        "subset",
        "budget",
        "resume",
        "init_seed",
        "data_seed",
        "dropout_seed",
        "patience",
        "select_best",
        "patience_metric",
        "eval_every",
        "evals_per_schedule",
        "eval_sample",
        "max_flops",
    }
)
"""`MainConfig` fields the recipe sets for every main run: the task, folders and subsets, budgets
(`erm_budget`, `ftft_budget`, `cost_target`), the seeds (`seeds`) and the evaluation and stopping
points (`early_stopping`)."""
REFERENCE_OWNED = frozenset({"data", "output_dir", "resume"})
"""`ReferenceConfig` fields the recipe sets for every reference run."""


@dataclasses.dataclass
class SelectionConfig:
    """How references' dynamics become training subsets."""

    region: str = "ambiguous"
    """Region of the data map to keep (ambiguous, hard, easy, random, both-ends)."""
    fraction: float = 0.33
    """Share of the training split to keep."""
    stratify: bool = False
    """Keep each label's share in the subset."""

    def __post_init__(self):
        if self.region not in REGIONS:
            raise FtftError(f"selection.region must be one of {', '.join(REGIONS)}, got {self.region!r}")
        if not 0 < self.fraction <= 1:
            raise FtftError(f"selection.fraction must be in (0, 1], got {self.fraction}")


@dataclasses.dataclass
class EarlyStoppingConfig:
    """How the early-stopping methods choose their checkpoint: evaluate `evals` times on `metric`
    up to their cap, keep and report the best evaluation, and stop sooner after `patience`
    evaluations without improvement, if set. Unset fields take the defaults of the recipe's regime
    (`resolved`): under a cost target evaluations are part of what the target pays for, so they
    are fewer and cover a sample."""

    metric: typing.Optional[str] = None
    """`<split>/<accuracy|macro_f1|mcc>` to stop on; None picks the OOD validation split's accuracy
    (a split named like `ood_dev` / `ood_validation`) when the task has one, else the ID dev split's.
    Never a split you report as a test."""
    patience: typing.Optional[int] = None
    """Evaluations without improvement before a run stops. None: none under a `cost_target` (the
    planned cap ends the runs and the best evaluation is kept, as the FTFT code picks its checkpoint
    after training; patience on a noisy validation split stops runs in the dip where a shortcut has
    been learnt and the rule not yet), 2 without one (the cap is then ERM's budget)."""
    evals: typing.Optional[int] = None
    """Evaluations while a main run trains, at the same points for every early-stopping method:
    evenly up to the cap a `cost_target` plans (the last at the cap), or, without a target, over the
    ERM budget's schedule. None: 6 under a cost target, 12 without one (the FTFT code's)."""
    eval_sample: typing.Optional[int] = None
    """Rows of the stopping split each of those evaluations covers: a fixed sample, the same rows for
    every run (the kept checkpoint is then evaluated on every split in full). None: 200 under a
    cost target, all rows without one; a number at least the split's size covers it all."""

    def __post_init__(self):
        for name in ("patience", "evals", "eval_sample"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise FtftError(f"early_stopping.{name} must be an integer of at least 1 (or null), got {value!r}")

    def resolved(self, cost_target: typing.Optional[float]) -> "EarlyStoppingConfig":
        """This config with its unset fields at the regime's defaults (see each field); its
        `eval_sample` None then means every row."""
        targeted = cost_target is not None
        return dataclasses.replace(
            self,
            patience=self.patience if self.patience is not None else (None if targeted else 2),
            evals=self.evals or (6 if targeted else 12),
            eval_sample=self.eval_sample or (200 if targeted else None),
        )


@dataclasses.dataclass
class GateConfig:
    """When a reference's dynamics are judged too weak to choose training data (see `dynamics.gate`)."""

    min_accuracy_lift: float = 0.5
    """Least share of the gap from the majority-class rate to 100% the reference must close on its
    ID dev split: (accuracy - majority) / (1 - majority)."""
    min_train_accuracy: float = 0.8
    """Least training-pass accuracy at the reference's last epoch (has it learnt the training set?)."""
    max_label_skew: float = 0.25
    """Largest total-variation distance between the subset's label mix and the training split's."""
    max_learnt_late: float = 0.5
    """Largest share of the subset the reference got right only at its last epoch: such examples
    were learnt late, not found ambiguous."""
    min_epochs: int = 3
    """Fewest epochs of dynamics: with two, variability only says how fast an example was learnt."""
    min_probe_spearman: float = 0.2
    """Least rank correlation of variability with the main model's own dynamics, when `dm` ran."""


@dataclasses.dataclass
class RecipeConfig:
    """`ftft run`: reference run(s) → selection → main runs, with the papers' baselines side by side.

    Methods:
    - `erm`: the main model on the full training split, full ERM budget;
    - `erm_es`: ERM cut at FTFT's step cap, with its evaluations and checkpoint choice (separates
      the subset's effect from the shorter run's);
    - `dm`: dataset cartography as first published: the main model itself is the reference, and
      the main model trains on its own ambiguous subset for the full ERM budget;
    - `random`: a random subset of the same size, FTFT's early stopping;
    - `ftft`: the cheap reference's subset, FTFT's early stopping.

    The early-stopping methods (`erm_es`, `random`, `ftft`) evaluate `early_stopping.evals` times
    inside the step cap that `cost_target` leaves them (`pipeline.cost_plan`), may stop sooner by
    patience, and report their best checkpoint; `erm` and `dm` train their whole `erm_budget`.
    """

    output_dir: str = "runs/recipe"
    """Folder for every stage and the results table."""
    data: DataConfig = dataclasses.field(default_factory=DataConfig)
    """The task, shared by every stage."""
    main: MainConfig = dataclasses.field(default_factory=MainConfig)
    """Template of every main run (model, lr, micro_batch_size, ds_config, erm_epochs, ...); the
    fields in `MAIN_OWNED` are the recipe's."""
    reference: typing.Optional[ReferenceConfig] = None
    """Template of FTFT's cheap reference run; the fields in `REFERENCE_OWNED` are the recipe's.
    None: the main model cut to its first 2 layers, or 1 where 2 would cost more than 10% of ERM's
    training FLOPs, trained with the main runs' options for 3 epochs (`cost_plan.default_reference`)."""
    selection: SelectionConfig = dataclasses.field(default_factory=SelectionConfig)
    """How subsets are chosen from dynamics (a `SelectionConfig`)."""
    methods: tuple = ("erm", "ftft")
    """Methods to compare (erm, erm_es, dm, random, ftft)."""
    seeds: tuple = (0,)
    """Seeds of the main runs; each sets the weight-init, data-order and dropout seeds of a run."""
    erm_budget: Budget = Budget("erm", 1.0)
    """Budget of `erm` and `dm`."""
    ftft_budget: Budget = Budget("erm", 1.0)
    """Longest cap of `ftft`, `erm_es` and `random`, which stop earlier by patience (`early_stopping`)
    and, with a `cost_target`, at the cap it plans, if shorter."""
    cost_target: typing.Optional[float] = 0.5
    """The most each early-stopping method may spend, as a share of ERM's FLOPs with evaluations,
    its reference included: the recipe plans their step cap and evaluation points from it before
    any main run starts (`pipeline.cost_plan`), and patience may only stop them sooner. None: no
    target; they run up to `ftft_budget` unless patience stops them."""
    early_stopping: EarlyStoppingConfig = dataclasses.field(default_factory=EarlyStoppingConfig)
    """The early-stopping rule (an `EarlyStoppingConfig`)."""
    reference_gate: str = "refuse"
    """What a reference judged too weak does: `refuse` (stop before any main run is launched, with
    the reasons and exit code 2: a weak reference's subset costs the main runs and loses robustness,
    as the FTFT paper shows), `warn` (say why, train on its subset anyway) or `off` (do not judge)."""
    gate: GateConfig = dataclasses.field(default_factory=GateConfig)
    """The gate's thresholds (a `GateConfig`)."""
    num_ranks: int = 2
    """Ranks (GPUs; CPU processes without GPUs) per main run, through the `deepspeed` launcher
    (the local executor; SLURM main runs have `executor.nodes` x `executor.ranks_per_node`)."""
    executor: ExecutorConfig = dataclasses.field(default_factory=ExecutorConfig)
    """Where the runs execute: `local` child processes or `slurm` jobs (an `ExecutorConfig`)."""

    def __post_init__(self):
        if self.reference_gate not in GATE_MODES:
            raise FtftError(f"reference_gate must be one of {', '.join(GATE_MODES)}, got {self.reference_gate!r}")
        self.methods = tuple(self.methods)
        if not isinstance(self.seeds, (list, tuple)) or not all(
            isinstance(seed, int) and not isinstance(seed, bool) for seed in self.seeds
        ):
            raise FtftError(f"seeds must be a non-empty list of distinct integers, got {self.seeds!r}")
        self.seeds = tuple(self.seeds)
        unknown = [m for m in self.methods if m not in METHODS]
        if unknown or not self.methods:
            raise FtftError(f"methods must be some of {', '.join(METHODS)}, got {list(self.methods)}")
        if not self.seeds or len(set(self.seeds)) != len(self.seeds):
            raise FtftError(f"seeds must be a non-empty list of distinct integers, got {list(self.seeds)}")
        if self.num_ranks < 1:
            raise FtftError(f"num_ranks must be at least 1, got {self.num_ranks}")
        if self.cost_target is not None:
            if isinstance(self.cost_target, bool) or not 0 < self.cost_target <= 1:
                raise FtftError(
                    f"cost_target must be a share of ERM's cost in (0, 1] or null, got {self.cost_target!r}"
                )
            for name in ("erm_budget", "ftft_budget"):
                if not getattr(self, name).is_static:
                    raise FtftError(
                        f"{name} {getattr(self, name)} is not a number of steps known in advance, which a "
                        f"cost_target plans from; use steps:N, epochs:E or erm:F, or set cost_target: null"
                    )
        for name, template, cls in (("main", self.main, MainConfig), ("reference", self.reference, ReferenceConfig)):
            if not isinstance(template, cls) and not (name == "reference" and template is None):
                raise FtftError(f"{name} must be a mapping of {cls.__name__} options, got {template!r}")
        self.data.check_source()  # a missing folder is named before anything asks for its splits
        self.main_run(data=self.data)  # refuse a field the recipe owns now, not after a reference has trained
        if self.reference is not None:
            self.reference_run(self.reference, data=self.data)
        if any(m in EARLY_STOPPING_METHODS for m in self.methods):
            self.stopping_metric()  # refuse a task without a validation split now, not after training

    def main_run(self, **owned) -> MainConfig:
        """A main run: the `main` template with the fields the recipe owns (see `MAIN_OWNED`)."""
        return derive(self.main, MAIN_OWNED, "recipe", "main", **owned)

    def reference_run(self, template: ReferenceConfig, **owned) -> ReferenceConfig:
        """A reference run from `template` with the fields the recipe owns (see `REFERENCE_OWNED`)."""
        return derive(template, REFERENCE_OWNED, "recipe", "reference", **owned)

    @property
    def stopping(self) -> EarlyStoppingConfig:
        """`early_stopping` with its unset fields at this recipe's defaults (`EarlyStoppingConfig.resolved`)."""
        return self.early_stopping.resolved(self.cost_target)

    def stopping_metric(self) -> str:
        """The metric early stopping follows: the configured one, else an OOD validation split's
        accuracy, else the ID dev split's (see `EarlyStoppingConfig.metric`)."""
        if self.early_stopping.metric is not None:
            split = self.early_stopping.metric.partition("/")[0]
            if split not in self.data.eval_splits:
                raise FtftError(
                    f"early_stopping.metric {self.early_stopping.metric!r} must name one of the "
                    f"eval splits {list(self.data.eval_splits)}"
                )
            return self.early_stopping.metric
        split = validation_split(self.data.eval_splits)
        if split is None:
            raise FtftError(
                f"early stopping needs a validation split among data.eval_splits "
                f"{list(self.data.eval_splits)} (a name with dev or val in it), "
                "or set early_stopping.metric"
            )
        return f"{split}/accuracy"

    def reported_ood_split(self) -> typing.Optional[str]:
        """The OOD split the results lead with: the first split named ood that stopping does not use."""
        used = (
            self.stopping_metric().partition("/")[0] if any(m in EARLY_STOPPING_METHODS for m in self.methods) else None
        )
        return next((s for s in self.data.eval_splits if "ood" in s.lower() and s != used), None)


def _is_validation(name: str) -> bool:
    name = name.lower()
    return "dev" in name or "val" in name


def id_validation_split(eval_splits) -> typing.Optional[str]:
    """The first in-distribution validation split (dev/val in its name, no ood), else None."""
    return next((s for s in eval_splits if _is_validation(s) and "ood" not in s.lower()), None)


def validation_split(eval_splits) -> typing.Optional[str]:
    """An OOD validation split (a name with ood and dev/val in it), else an ID one, else None."""
    return next(
        (s for s in eval_splits if _is_validation(s) and "ood" in s.lower()),
        next((s for s in eval_splits if _is_validation(s)), None),
    )
