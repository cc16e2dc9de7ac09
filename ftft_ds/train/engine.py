"""Building the model and its DeepSpeed engine, the same way for every kind of run."""

from __future__ import annotations

import contextlib
from pathlib import Path

import torch

from ..config import OptimConfig
from .ds_config import TrainArgs, resolve_ds_config, zero_stage
from .models import build_model, model_config
from .runtime import DistEnv

MONITOR_SECTIONS = ("tensorboard", "wandb", "csv_monitor", "comet")


def run_ds_config(cfg: OptimConfig, env: DistEnv, num_labels: int, schedule_steps: int, warmup_steps: int) -> dict:
    """The run's DeepSpeed config with `"auto"` filled in.

    The learning-rate schedule (`warmup_steps` of linear warm-up, then linear decay) spans
    `schedule_steps` steps (see `runs.plan`).
    """
    hidden = getattr(model_config(cfg.model, num_labels, cfg.num_layers), "hidden_size", None)
    args = TrainArgs(
        micro_batch_size=cfg.micro_batch_size,
        grad_accum=cfg.grad_accum,
        world_size=env.world_size,
        lr=cfg.lr,
        weight_decay=cfg.weight_decay,
        warmup_steps=warmup_steps,
        total_steps=schedule_steps,
        hidden_size=hidden,
        bf16=cfg.bf16,
    )
    return resolve_ds_config(cfg.ds_config, args)


def take_monitor(ds_config: dict, tensorboard_dir: Path, job_name: str):
    """Move the config's monitor sections into a DeepSpeed monitor of our own (TensorBoard on by default).

    Left in the engine's config, the monitor would write (and flush) the learning rate inside
    every `engine.step()`; owned by the cost ledger it writes only at log points, and any
    wandb/csv/comet sections a user configured keep working.
    """
    from deepspeed.monitor.config import get_monitor_config
    from deepspeed.monitor.monitor import MonitorMaster

    sections = {name: ds_config.pop(name) for name in MONITOR_SECTIONS if name in ds_config}
    sections.setdefault("tensorboard", {"enabled": True, "output_path": str(tensorboard_dir), "job_name": job_name})
    return MonitorMaster(get_monitor_config(sections))


def build_model_for(cfg: OptimConfig, num_labels: int, ds_config: dict) -> torch.nn.Module:
    """Build the model; under ZeRO-3 its parameters are partitioned as they are created.

    Transformers' DeepSpeed integration does this when an `HfDeepSpeedConfig` is alive during
    `from_pretrained`/`from_config`: each rank materialises only its shard, pretrained weights
    included, so a model larger than one device's memory can still be loaded.
    """
    context = contextlib.nullcontext()
    if zero_stage(ds_config) == 3:
        from transformers.integrations.deepspeed import HfDeepSpeedConfig

        keep_alive = HfDeepSpeedConfig(ds_config)  # transformers holds only a weak reference
        context = contextlib.nullcontext(keep_alive)
    with context:
        return build_model(
            cfg.model,
            num_labels,
            cfg.num_layers,
            cfg.init_seed,
            attn_implementation=cfg.attn_implementation,
            gradient_checkpointing=cfg.gradient_checkpointing,
            freeze_embeddings=cfg.freeze_embeddings,
            lora=cfg.lora,
        )


def initialize_engine(model: torch.nn.Module, ds_config: dict):
    import deepspeed

    engine, _, _, _ = deepspeed.initialize(
        model=model,
        model_parameters=[p for p in model.parameters() if p.requires_grad],
        config=ds_config,
    )
    return engine


def to_device(batch: dict, device: torch.device) -> dict:
    """Move a collated batch to `device` without blocking the host where the device allows it."""
    return {k: v.to(device, non_blocking=True) for k, v in batch.items()}


def current_lr(engine) -> float:
    return float(engine.get_lr()[0])
