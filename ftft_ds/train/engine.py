"""Turning a model and a run config into a DeepSpeed engine, the same way for every kind of run."""
from __future__ import annotations

import math
from pathlib import Path

import torch

from ..config import OptimConfig
from .ds_config import TrainArgs, resolve_ds_config
from .runtime import DistEnv


def build_engine(model: torch.nn.Module, cfg: OptimConfig, env: DistEnv, total_steps: int,
                 tensorboard_dir: Path, job_name: str):
    """`deepspeed.initialize` with the run's DeepSpeed config, its `"auto"` values filled in.

    TensorBoard goes through DeepSpeed's own monitor (rank 0 only), into
    `tensorboard_dir/job_name`.
    """
    import deepspeed

    args = TrainArgs(
        micro_batch_size=cfg.micro_batch_size, grad_accum=cfg.grad_accum, world_size=env.world_size,
        lr=cfg.lr, weight_decay=cfg.weight_decay,
        warmup_steps=math.floor(cfg.warmup_ratio * total_steps), total_steps=total_steps,
        hidden_size=getattr(getattr(model, "config", None), "hidden_size", None),
    )
    ds_config = resolve_ds_config(cfg.ds_config, args)
    ds_config["tensorboard"] = {"enabled": True, "output_path": str(tensorboard_dir), "job_name": job_name}
    engine, _, _, _ = deepspeed.initialize(
        model=model, model_parameters=[p for p in model.parameters() if p.requires_grad],
        config=ds_config,
    )
    return engine, ds_config


def to_device(batch: dict, device: torch.device) -> dict:
    """Move a collated batch to `device` without blocking the host where the device allows it."""
    return {k: v.to(device, non_blocking=True) for k, v in batch.items()}


def current_lr(engine) -> float:
    return float(engine.get_lr()[0])
