"""Evaluation on in-distribution and OOD splits, with every rank taking part.

Under ZeRO-3 each rank holds only a shard of the parameters, so a forward pass needs all ranks:
evaluation is sharded like training (each rank a disjoint share of the rows), and the logits are
gathered back by row index. Rows the sampler padded in twice are counted once.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import DataLoader

from ..collectives import gather_rows
from ..data.sampler import ShardedSampler
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


@dataclass(frozen=True)
class LoaderSettings:
    """How a run's data loaders batch and feed its rows, resolved for the device it runs on."""

    eval_batch_size: int
    pad_to_multiple_of: int | None
    num_workers: int
    pin_memory: bool

    @classmethod
    def of(cls, cfg, env: DistEnv) -> "LoaderSettings":
        """`cfg`'s loader options (an `OptimConfig`), their None defaults filled in for `env`'s device."""
        on_gpu = env.device.type == "cuda"
        return cls(
            eval_batch_size=cfg.eval_batch_size or 2 * cfg.micro_batch_size,
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

    def split_loader(self, data, collate, env: DistEnv) -> DataLoader:
        """A loader that walks this rank's share of `data` in order (for evaluation-style passes)."""
        sampler = ShardedSampler(range(len(data)), env.world_size, env.rank, seed=0, shuffle=False)
        return self.loader(data, self.eval_batch_size, sampler, collate)


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
    """Evaluates a DeepSpeed engine on named, tokenized splits."""

    def __init__(self, splits: dict, num_labels: int, loading: LoaderSettings, collate, env: DistEnv):
        self.num_labels = num_labels
        self.env = env
        self.loaders = {name: loading.split_loader(data, collate, env) for name, data in splits.items()}
        self.labels = {name: np.asarray(data["labels"]) for name, data in splits.items()}

    def only(self, names) -> "Evaluator":
        """The same evaluator over some of its splits: a run stopped by patience watches only the
        validation split during training and evaluates every split once, on its best checkpoint."""
        other = copy.copy(self)
        other.loaders = {name: self.loaders[name] for name in names}
        other.labels = {name: self.labels[name] for name in names}
        return other

    def majority_rate(self, name: str) -> float:
        """Accuracy of always predicting split `name`'s most frequent label."""
        return float(np.bincount(self.labels[name], minlength=self.num_labels).max() / len(self.labels[name]))

    def evaluate(self, engine, ledger=None) -> dict:
        """`{"<split>/<metric>": value}` for every split (a collective: every rank must call)."""
        results = {}
        for name, loader in self.loaders.items():
            rows, logits = predict(engine, loader, self.env, ledger)
            metrics = classification_metrics(logits.argmax(-1), self.labels[name][rows], self.num_labels)
            results.update({f"{name}/{metric}": value for metric, value in metrics.items()})
        return results
