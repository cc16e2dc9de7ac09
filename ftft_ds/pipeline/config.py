"""The config of `ftft run`: one task, a few references, the methods to compare, the seeds."""
from __future__ import annotations

import dataclasses
import typing

from ..config import from_dict, reject_reserved
from ..data.load import DataConfig
from ..errors import FtftError
from ..train.budget import Budget

METHODS = ("erm", "erm_es", "dm", "random", "ftft")
REGIONS = ("ambiguous", "hard", "easy", "random", "both-ends")


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
class RecipeConfig:
    """`ftft run`: reference run(s) → selection → main runs, with the papers' baselines side by side.

    Methods:
    - `erm`: the main model on the full training split, full ERM budget;
    - `erm_es`: the same, stopped at FTFT's budget (plain training with the same early stopping);
    - `dm`: dataset cartography as first published: the main model itself is the reference, and
      the main model trains on its own ambiguous subset for the full ERM budget;
    - `random`: a random subset of the same size, FTFT's budget;
    - `ftft`: the cheap reference's subset, FTFT's (aggressive) budget.
    """

    output_dir: str = "runs/recipe"
    """Folder for every stage and the results table."""
    data: typing.Any = dataclasses.field(default_factory=DataConfig)
    """The task (a `DataConfig`), shared by every stage."""
    main: dict = dataclasses.field(default_factory=lambda: {"model": "minilm"})
    """Fields of the main runs' `MainConfig` (model, lr, micro_batch_size, ds_config, erm_epochs, ...)."""
    reference: dict = dataclasses.field(default_factory=lambda: {"model": "minilm", "num_layers": 2})
    """Fields of FTFT's cheap reference run (`ReferenceConfig`)."""
    selection: typing.Any = dataclasses.field(default_factory=SelectionConfig)
    """How subsets are chosen from dynamics (a `SelectionConfig`)."""
    methods: tuple = ("erm", "ftft")
    """Methods to compare (erm, erm_es, dm, random, ftft)."""
    seeds: tuple = (0,)
    """Seeds of the main runs; each sets the weight-init, data-order and dropout seeds of a run."""
    erm_budget: str = "erm:1"
    """Budget of `erm` and `dm`."""
    ftft_budget: str = "erm:0.5"
    """Budget of `ftft`, `erm_es` and `random` (FTFT's aggressive early stopping)."""
    num_ranks: int = 2
    """Ranks (GPUs; CPU processes without GPUs) per main run, through the `deepspeed` launcher."""
    weak_reference_accuracy: float = 0.6
    """Warn when a reference's own accuracy on the first eval split is below this."""

    def __post_init__(self):
        if isinstance(self.data, dict):
            self.data = from_dict(DataConfig, self.data, where="data.")
        if isinstance(self.selection, dict):
            self.selection = from_dict(SelectionConfig, self.selection, where="selection.")
        self.methods = tuple(self.methods)
        self.seeds = tuple(int(s) for s in self.seeds)
        unknown = [m for m in self.methods if m not in METHODS]
        if unknown or not self.methods:
            raise FtftError(f"methods must be some of {', '.join(METHODS)}, got {list(self.methods)}")
        if not self.seeds or len(set(self.seeds)) != len(self.seeds):
            raise FtftError(f"seeds must be a non-empty list of distinct integers, got {list(self.seeds)}")
        Budget.parse(self.erm_budget)
        Budget.parse(self.ftft_budget)
        if self.num_ranks < 1:
            raise FtftError(f"num_ranks must be at least 1, got {self.num_ranks}")
        for name, fields in (("main", self.main), ("reference", self.reference)):
            if not isinstance(fields, dict):
                raise FtftError(f"{name} must be a mapping of run options, got {fields!r}")
            reject_reserved(fields, {"data", "output_dir", "subset", "budget", "resume"}, name, "recipe")
