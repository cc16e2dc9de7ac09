"""Evaluation on in-distribution and OOD splits, with every rank taking part.

Under ZeRO-3 each rank holds only a shard of the parameters, so a forward pass needs all ranks:
evaluation is sharded like training (each rank a disjoint share of the rows), and the logits are
gathered back by row index. Rows the sampler padded in twice are counted once.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import DataLoader

from ..collectives import gather_rows
from ..data.sampler import ShardedSampler
from ..data.tokenize import row_lengths
from .engine import to_device
from .runtime import DistEnv


def classification_metrics(predictions: np.ndarray, labels: np.ndarray, num_labels: int) -> dict:
    """Accuracy, macro-F1 and the multi-class Matthews correlation coefficient (Gorodkin's R_K)."""
    confusion = np.zeros((num_labels, num_labels), dtype=np.float64)
    np.add.at(confusion, (labels, predictions), 1)
    total = confusion.sum()
    correct = np.trace(confusion)
    true_per_class = confusion.sum(axis=1)
    predicted_per_class = confusion.sum(axis=0)
    tp = np.diag(confusion)
    denominator = true_per_class + predicted_per_class
    f1 = np.divide(2 * tp, denominator, out=np.zeros_like(tp), where=denominator > 0)
    covariance = correct * total - predicted_per_class @ true_per_class
    scale = np.sqrt(
        (total**2 - predicted_per_class @ predicted_per_class) * (total**2 - true_per_class @ true_per_class)
    )
    return {
        "accuracy": float(correct / total) if total else 0.0,
        "macro_f1": float(f1.mean()),
        "mcc": float(covariance / scale) if scale > 0 else 0.0,
    }


EVAL_BATCH_FACTOR = 8
"""The most an evaluation batch outgrows a training micro-batch by default."""


@dataclass(frozen=True)
class LoaderSettings:
    """How a run's data loaders batch and feed its rows, resolved for the device it runs on."""

    eval_batch_size: int
    pad_to_multiple_of: int | None
    num_workers: int
    pin_memory: bool

    @classmethod
    def of(cls, cfg, env: DistEnv, num_layers: int) -> "LoaderSettings":
        """`cfg`'s loader options (an `OptimConfig`), their None defaults filled in for `env`'s
        device and a model of `num_layers` layers (see `OptimConfig.eval_batch_size`)."""
        on_gpu = env.device.type == "cuda"
        return cls(
            eval_batch_size=cfg.eval_batch_size or cfg.micro_batch_size * min(max(num_layers, 2), EVAL_BATCH_FACTOR),
            pad_to_multiple_of=cfg.pad_to_multiple_of
            if cfg.pad_to_multiple_of is not None
            else (8 if on_gpu else None),
            num_workers=cfg.num_workers if cfg.num_workers is not None else (2 if on_gpu else 0),
            pin_memory=on_gpu,
        )

    def loader(self, data, batch_size: int, sampler, collate, persistent: bool = False) -> DataLoader:
        """A loader over `data` in `sampler`'s order. It has a generator of its own: without one,
        every pass would draw its base seed from the global stream that dropout uses, and a run
        that evaluates would train differently from one that does not. Pinned batches let
        `to_device`'s non-blocking copies overlap with compute on GPUs."""
        return DataLoader(
            data,
            batch_size=batch_size,
            sampler=sampler,
            collate_fn=collate,
            generator=torch.Generator(),
            num_workers=self.num_workers,
            pin_memory=self.pin_memory,
            persistent_workers=persistent and self.num_workers > 0,
        )

    def split_loader(self, data, collate, env: DistEnv, rows=None) -> DataLoader:
        """A loader over this rank's share of `data`'s `rows` (default: all), longest rows first,
        for evaluation-style passes: their order does not matter (logits are gathered back by row),
        and batches of rows of like length carry little padding, which on a CPU is compute spent
        for nothing."""
        sampler = evaluation_sampler(row_lengths(data), rows, env.world_size, env.rank)
        return self.loader(data, self.eval_batch_size, sampler, collate)


def evaluation_sampler(lengths: np.ndarray, rows, world_size: int, rank: int = 0) -> ShardedSampler:
    """The sampler of an evaluation-style pass over `rows` (default: all) of a split whose rows have
    `lengths` tokens: longest first, each rank every world_size-th row (see `LoaderSettings.split_loader`)."""
    rows = np.arange(len(lengths)) if rows is None else np.asarray(rows, dtype=np.int64)
    by_length = rows[np.argsort(-lengths[rows], kind="stable")]
    return ShardedSampler(by_length, world_size, rank, seed=0, shuffle=False)


def evaluation_tokens(lengths: np.ndarray, rows, world_size: int) -> int:
    """Tokens one evaluation pass over `rows` passes forward on `world_size` ranks, the rows the
    sampler adds to even out the ranks' shares included: what the cost ledger will count for it."""
    order = evaluation_sampler(lengths, rows, world_size).epoch_order(0).numpy()
    return int(lengths[order].sum())


@torch.no_grad()
def predict(engine, loader: DataLoader, env: DistEnv, ledger=None) -> tuple[np.ndarray, np.ndarray]:
    """Eval-mode logits of every row `loader` covers, gathered from all ranks, one per row, by row.

    A collective: every rank must call it (under ZeRO-3 a forward pass needs every rank).
    """
    was_training = engine.training
    engine.eval()
    indices, logits = [], []
    for batch in loader:
        indices.append(batch.pop("index"))  # row numbers stay on the host
        batch.pop("labels")
        batch = to_device(batch, env.device)
        logits.append(engine(**batch).logits.float())
        if ledger is not None:
            ledger.count_eval(batch["attention_mask"])
    if was_training:
        engine.train()
    rows, gathered = gather_rows(torch.cat(indices), torch.cat(logits))
    rows, first = np.unique(rows, return_index=True)
    return rows, gathered[first]


class Evaluator:
    """Evaluates a DeepSpeed engine on named, tokenized splits (on a fixed sample of a split's
    rows where `samples` names one)."""

    def __init__(
        self, splits: dict, num_labels: int, loading: LoaderSettings, collate, env: DistEnv, samples: dict | None = None
    ):
        self.num_labels = num_labels
        self.env = env
        self.splits = splits
        self.loading = loading
        self.collate = collate
        self.samples = samples or {}
        self.loaders = {
            name: loading.split_loader(data, collate, env, self.samples.get(name)) for name, data in splits.items()
        }
        self.labels = {name: np.asarray(data["labels"]) for name, data in splits.items()}
        self.predicted_classes: dict = {}
        """Split -> how many classes the last evaluation predicted: 1 means the model learnt nothing
        there but which class to always say."""

    def only(self, names, samples: dict | None = None) -> "Evaluator":
        """This evaluator over some of its splits, each on the rows `samples` names (default: all):
        a run stopped by patience watches only its validation split while it trains, maybe a fixed
        sample of it, and evaluates every split in full once, on its best checkpoint."""
        return Evaluator(
            {name: self.splits[name] for name in names},
            self.num_labels,
            self.loading,
            self.collate,
            self.env,
            samples,
        )

    def tokens(self) -> int:
        """Tokens one evaluation passes forward over every split (or its sample), as the ledger counts them."""
        return sum(
            evaluation_tokens(row_lengths(data), self.samples.get(name), self.env.world_size)
            for name, data in self.splits.items()
        )

    def majority_rate(self, name: str) -> float:
        """Accuracy of always predicting split `name`'s most frequent label."""
        return float(np.bincount(self.labels[name], minlength=self.num_labels).max() / len(self.labels[name]))

    def evaluate(self, engine, ledger=None) -> dict:
        """`{"<split>/<metric>": value}` for every split (a collective: every rank must call)."""
        results = {}
        for name, loader in self.loaders.items():
            rows, logits = predict(engine, loader, self.env, ledger)
            predictions = logits.argmax(-1)
            self.predicted_classes[name] = int(np.unique(predictions).size)
            metrics = classification_metrics(predictions, self.labels[name][rows], self.num_labels)
            results.update({f"{name}/{metric}": value for metric, value in metrics.items()})
        return results
