"""Collectives shared by training, evaluation and dynamics recording: gathering every rank's rows.

Kept apart from `train/` so that the dynamics recorder and the Hugging Face integration, which run
inside other training loops, do not depend on this package's own training runtime.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.distributed as dist


def _collective_device() -> torch.device:
    """Where tensors for collectives must live: the GPU under NCCL, the CPU under gloo."""
    if dist.get_backend() == "nccl":
        from deepspeed.accelerator import get_accelerator

        return torch.device(get_accelerator().current_device_name())
    return torch.device("cpu")


def gather_rows(indices: torch.Tensor, logits: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Concatenate every rank's (index, row) pairs, rank 0 first; ranks may hold different counts.

    A collective: every rank must call it.
    """
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return indices.cpu().numpy(), logits.cpu().numpy()
    device = _collective_device()
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
