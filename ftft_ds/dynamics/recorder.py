"""Recording training dynamics: the logits of every example at every epoch, gathered across ranks.

The training forward pass already computes the logits (the cartography/FTFT convention records
exactly those), so recording costs a `detach` and a list append per micro-batch: no extra
forward pass, no host-device synchronisation inside the epoch. At the epoch's end the ranks
exchange what they saw; examples the distributed sampler padded in twice are kept once.

A checkpoint keeps each rank's recorder as it stands (`state_dict`): the finished epochs and the
part of the current one this rank has seen, so a run resumed mid-epoch on the same ranks records
exactly what a straight run would, without an extra collective at save time.
"""

from __future__ import annotations

import numpy as np
import torch

from ..collectives import gather_rows
from ..errors import FtftError


class DynamicsRecorder:
    """Collects (row, logits) per micro-batch and turns each finished epoch into (len(rows), C).

    `rows` are the training rows of the run (all of the split for a reference run, the subset's
    for a main run), in ascending order; an epoch must show each of them and nothing else.
    """

    def __init__(self, rows, num_labels: int):
        self.rows = np.unique(np.asarray(rows, dtype=np.int64))
        self.num_labels = num_labels
        self._indices: list[torch.Tensor] = []
        self._logits: list[torch.Tensor] = []
        self._epochs: list[np.ndarray] = []

    @property
    def num_epochs(self) -> int:
        return len(self._epochs)

    def record(self, indices: torch.Tensor, logits: torch.Tensor) -> None:
        """Keep one micro-batch's logits; `indices` are the examples' rows in the full training split."""
        self._indices.append(indices.detach())
        self._logits.append(logits.detach())

    def discard_epoch(self) -> None:
        """Drop what the current epoch recorded: a partial epoch is never stored."""
        self._indices.clear()
        self._logits.clear()

    def end_epoch(self) -> None:
        """Gather the epoch from every rank and keep it (a collective: every rank must call)."""
        if self._logits:
            indices = torch.cat(self._indices).long()
            device = self._logits[-1].device  # a resumed epoch's first part comes back on the host
            logits = torch.cat([t.to(device) for t in self._logits]).float()
        else:
            indices = torch.empty(0, dtype=torch.long)
            logits = torch.empty(0, self.num_labels, dtype=torch.float32)
        self.discard_epoch()
        self.add_epoch(*gather_rows(indices, logits))

    def add_epoch(self, indices: np.ndarray, logits: np.ndarray) -> None:
        """Keep one whole epoch given as (row index, logits) pairs; duplicated rows count once."""
        unique, first = np.unique(indices, return_index=True)
        if not np.array_equal(unique, self.rows):
            unexpected = np.setdiff1d(unique, self.rows).size
            raise FtftError(
                f"epoch {self.num_epochs} saw {unique.size - unexpected} of {self.rows.size} training rows "
                f"and {unexpected} others; dynamics need every training row exactly once per epoch"
            )
        self._epochs.append(np.asarray(logits[first], dtype=np.float32))

    def state_dict(self) -> dict:
        """This rank's recorder: every finished epoch and its own part of the current one."""
        partial = (
            (torch.cat(self._indices).long(), torch.cat(self._logits).float().cpu())
            if self._logits
            else (torch.empty(0, dtype=torch.long), torch.empty(0, self.num_labels))
        )
        return {"rows": torch.from_numpy(self.rows), "epochs": torch.from_numpy(self.logits()), "partial": partial}

    def load_state_dict(self, state: dict) -> None:
        """Take what `state_dict` saved on this rank; the rows recorded must be this run's."""
        if not np.array_equal(state["rows"].numpy(), self.rows):
            raise FtftError(
                f"the checkpoint recorded dynamics of {len(state['rows'])} training rows, this run trains "
                f"{self.rows.size} others: resume with the same data and subset"
            )
        epochs = state["epochs"].numpy()
        self._epochs = [epochs[:, e].copy() for e in range(epochs.shape[1])]
        indices, logits = state["partial"]
        self._indices, self._logits = ([indices], [logits]) if len(indices) else ([], [])

    def logits(self) -> np.ndarray:
        """All finished epochs as a float32 array of shape (len(rows), E, C), rows ascending."""
        if not self._epochs:
            return np.zeros((self.rows.size, 0, self.num_labels), dtype=np.float32)
        return np.stack(self._epochs, axis=1)
