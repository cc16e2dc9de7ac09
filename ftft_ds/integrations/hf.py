"""FTFT inside a Hugging Face `Trainer` script: record a data map, then train on the chosen subset.

Many fine-tuning scripts already run `transformers.Trainer` (with DeepSpeed through
`TrainingArguments(deepspeed=...)`). Two pieces let them use FTFT without switching trainers:

- `DynamicsCallback`, a `TrainerCallback` that records the training dynamics of the run it joins
  (the logits of every example's training forward pass, once per epoch) and saves them as a
  dynamics store that `ftft map` and `ftft select` read, exactly like `ftft reference` writes;
- `subset_of(dataset, subset_file)`, the training rows an `ftft select` subset names, for the
  main run's `Trainer`.

How examples are recognised. The Trainer's data pipeline drops columns the model does not take
and shuffles with its own sampler, so the callback cannot be told which row a batch holds.
Instead it recognises each example by its tokens: a forward hook hashes every sequence's
non-padding token ids on the device (the same arithmetic as for the dataset's rows at the start,
so either padding side gives the same key), keeps hashes and logits on the device, and maps them
to rows once per epoch, after gathering them from every rank. Nothing in the step waits for the
device. Rows with identical tokens are the same input, so which of them a sighting goes to does
not matter.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch
import transformers

from ..collectives import gather_rows
from ..dynamics.recorder import DynamicsRecorder
from ..dynamics.select import Subset
from ..dynamics.store import Dynamics
from ..errors import FtftError, require

_HASH_BASE = 1_000_003  # odd: multiplication modulo 2**64 stays a bijection


def token_hashes(input_ids: torch.Tensor, attention_mask: Optional[torch.Tensor]) -> torch.Tensor:
    """One int64 per sequence from its non-padding tokens in order, whichever side pads.

    sum over kept tokens of (id + 1) * BASE**position, with position counted among kept tokens and
    int64 arithmetic wrapping around identically on CPU and GPU.
    """
    ids = input_ids.long()
    keep = torch.ones_like(ids) if attention_mask is None else attention_mask.long()
    position = (keep.cumsum(-1) - 1).clamp(min=0)
    powers = _powers(int(ids.shape[-1]), ids.device)[position]
    return ((ids + 1) * powers * keep).sum(-1)


_POWERS: dict = {}
"""device -> BASE**i for i below the widest batch seen so far on it."""


def _powers(length: int, device: torch.device) -> torch.Tensor:
    """BASE**i for i < length on `device`: a slice of one table per device, which grows (doubling)
    only when a wider batch arrives. Dynamic padding gives a new width almost every step, so a
    table per width would be rebuilt, and copied to the device, at most steps."""
    table = _POWERS.get(device)
    if table is None or len(table) < length:
        size = max(length, 2 * len(table) if table is not None else 128)
        powers = torch.ones(size, dtype=torch.long)
        for i in range(1, size):
            powers[i] = powers[i - 1] * _HASH_BASE  # wraps modulo 2**64, as on every device
        table = _POWERS[device] = powers.to(device)
    return table[: max(length, 1)]


class DynamicsCallback(transformers.TrainerCallback):
    """Record a `Trainer` run's training dynamics and save them to `output_dir` (a dynamics store).

    `train_dataset` is the tokenized dataset the Trainer trains on (`input_ids` and a label column);
    `uids` name its rows in the store (default: the row numbers as strings; pass your own ids to
    select across tokenizers and models, as FTFT does). Each finished epoch adds one column of
    logits; a partial last epoch is dropped. Under DeepSpeed or DDP every rank records what it saw
    and the epoch is gathered on rank 0, which saves the store at the end of training.
    """

    def __init__(
        self, train_dataset, output_dir: str | Path, uids: Optional[Sequence[str]] = None, label_column: str = "labels"
    ):
        columns = train_dataset.column_names
        if label_column not in columns and "label" in columns:
            label_column = "label"
        require(
            "input_ids" in columns and label_column in columns,
            f"DynamicsCallback needs a tokenized train_dataset with input_ids and {label_column!r} columns, "
            f"got {', '.join(columns)}",
        )
        self.output_dir = Path(output_dir)
        self.labels = np.asarray(train_dataset[label_column], dtype=np.int64)
        self.uids = [str(i) for i in range(len(self.labels))] if uids is None else [str(u) for u in uids]
        require(
            len(self.uids) == len(self.labels) and len(set(self.uids)) == len(self.uids),
            f"uids must name each of the {len(self.labels)} rows once, got {len(self.uids)} "
            f"({len(set(self.uids))} distinct)",
        )
        self._rows_by_hash = self._index(train_dataset["input_ids"])
        self._recorder: Optional[DynamicsRecorder] = None
        self._hook = None
        self._batches: list = []

    @staticmethod
    def _index(sequences, chunk: int = 4096) -> dict:
        """Token hash -> the dataset rows with those tokens, in order (padded a chunk at a time)."""
        rows = defaultdict(list)
        for start in range(0, len(sequences), chunk):
            part = sequences[start : start + chunk]
            for row, key in enumerate(token_hashes(_padded(part), _mask(part)).tolist(), start):
                rows[key].append(row)
        return dict(rows)

    # -- Trainer events --------------------------------------------------------------------------

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        logits_size = getattr(getattr(model, "config", None), "num_labels", None)
        require(logits_size is not None, "DynamicsCallback needs a sequence-classification model")
        self._recorder = DynamicsRecorder(range(len(self.labels)), logits_size)
        self._hook = model.register_forward_hook(self._record, with_kwargs=True)

    def on_epoch_end(self, args, state, control, **kwargs):
        if self._batches:
            self._end_epoch()

    def on_train_end(self, args, state, control, **kwargs):
        self._batches.clear()  # a partial last epoch is never recorded
        if self._hook is not None:
            self._hook.remove()
        if state.is_world_process_zero and self._recorder.num_epochs:
            Dynamics.create(
                self.uids,
                self.labels,
                self._recorder.logits(),
                source="hf_trainer",
                model=getattr(args, "run_name", None),
                extra={"trainer_seed": args.seed, "epochs": self._recorder.num_epochs},
            ).save(self.output_dir)

    # -- recording ------------------------------------------------------------------------------

    def _record(self, module, args, kwargs, output) -> None:
        if not module.training or "input_ids" not in kwargs:
            return  # evaluation and prediction passes are not training dynamics
        hashes = token_hashes(kwargs["input_ids"], kwargs.get("attention_mask"))
        self._batches.append((hashes, output.logits.detach()))

    def _end_epoch(self) -> None:
        """Gather the epoch's (hash, logits) from every rank, map hashes to rows, keep the epoch.

        The i-th sighting of a hash in the gathered order is the i-th row with those tokens;
        sightings beyond them are the distributed sampler's padded repeats, which count once.
        """
        hashes, logits = gather_rows(
            torch.cat([h for h, _ in self._batches]), torch.cat([lg for _, lg in self._batches]).float()
        )
        self._batches.clear()
        seen: dict = defaultdict(int)
        rows = np.empty(len(hashes), dtype=np.int64)
        for i, key in enumerate(hashes.tolist()):
            candidates = self._rows_by_hash.get(key)
            if candidates is None:
                raise FtftError(
                    "DynamicsCallback saw a training example that is not in its train_dataset; "
                    "pass the dataset the Trainer trains on"
                )
            rows[i] = candidates[min(seen[key], len(candidates) - 1)]
            seen[key] += 1
        self._recorder.add_epoch(rows, logits)


def _padded(sequences) -> torch.Tensor:
    width = max(len(s) for s in sequences)
    return torch.tensor([list(s) + [0] * (width - len(s)) for s in sequences], dtype=torch.long)


def _mask(sequences) -> torch.Tensor:
    width = max(len(s) for s in sequences)
    return torch.tensor([[1] * len(s) + [0] * (width - len(s)) for s in sequences], dtype=torch.long)


def subset_of(dataset, subset_file: str | Path, uids: Optional[Sequence[str]] = None):
    """The rows of `dataset` that an `ftft select` subset names (by `uids`, default row numbers)."""
    subset = Subset.load(subset_file)
    names = [str(i) for i in range(len(dataset))] if uids is None else [str(u) for u in uids]
    require(len(names) == len(dataset), f"uids name {len(names)} rows but the dataset has {len(dataset)}")
    position = {name: row for row, name in enumerate(names)}
    missing = [u for u in subset.uids if u not in position]
    require(
        not missing,
        f"{len(missing)} of the subset's {len(subset.uids)} uids are not in the dataset "
        f"(first: {missing[0] if missing else ''!r}); pass the uids the dynamics were recorded with",
    )
    return dataset.select(sorted(position[u] for u in subset.uids))
