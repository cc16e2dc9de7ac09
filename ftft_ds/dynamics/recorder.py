"""Recording training dynamics: the logits of every example at every epoch, gathered across ranks.

The training forward pass already computes the logits (the cartography/FTFT convention records
exactly those), so recording costs a `detach` and a list append per micro-batch: no extra
forward pass, no host-device synchronisation inside the epoch. At the epoch's end the ranks
exchange what they saw; examples the distributed sampler padded in twice are kept once.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.distributed as dist

from ..errors import FtftError


class DynamicsRecorder:
    """Collects (dataset index, logits) per micro-batch and turns each finished epoch into (N, C)."""

    def __init__(self, num_examples: int, num_labels: int):
        self.num_examples = num_examples
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
            logits = torch.cat(self._logits).float()
        else:
            indices = torch.empty(0, dtype=torch.long)
            logits = torch.empty(0, self.num_labels, dtype=torch.float32)
        self.discard_epoch()
        indices, logits = _all_gather_rows(indices, logits)
        order = np.argsort(indices, kind="stable")
        indices, logits = indices[order], logits[order]
        unique, first = np.unique(indices, return_index=True)
        if unique.size != self.num_examples or (unique.size and (unique[0] != 0 or unique[-1] != self.num_examples - 1)):
            raise FtftError(
                f"epoch {self.num_epochs} saw {unique.size} of {self.num_examples} training examples; "
                "dynamics need every example once per epoch"
            )
        self._epochs.append(logits[first])

    def logits(self) -> np.ndarray:
        """All finished epochs as a float32 array of shape (N, E, C)."""
        if not self._epochs:
            return np.zeros((self.num_examples, 0, self.num_labels), dtype=np.float32)
        return np.stack(self._epochs, axis=1)


def _all_gather_rows(indices: torch.Tensor, logits: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Concatenate every rank's rows, rank 0 first (ranks may hold different numbers of rows)."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return indices.cpu().numpy(), logits.cpu().numpy()
    device = torch.device("cpu")
    if dist.get_backend() == "nccl":
        from deepspeed.accelerator import get_accelerator

        device = torch.device(get_accelerator().current_device_name())
    indices, logits = indices.to(device), logits.to(device)
    count = torch.tensor([indices.numel()], device=device)
    counts = [torch.zeros_like(count) for _ in range(dist.get_world_size())]
    dist.all_gather(counts, count)
    longest = int(max(c.item() for c in counts))
    pad = longest - indices.numel()
    padded_idx = torch.cat([indices, indices.new_full((pad,), -1)])
    padded_logits = torch.cat([logits, logits.new_zeros((pad, logits.shape[1]))])
    all_idx = [torch.empty_like(padded_idx) for _ in counts]
    all_logits = [torch.empty_like(padded_logits) for _ in counts]
    dist.all_gather(all_idx, padded_idx)
    dist.all_gather(all_logits, padded_logits)
    keep = [slice(0, int(c.item())) for c in counts]
    return (
        torch.cat([t[k] for t, k in zip(all_idx, keep)]).cpu().numpy(),
        torch.cat([t[k] for t, k in zip(all_logits, keep)]).cpu().numpy(),
    )
