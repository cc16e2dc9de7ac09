"""Saving what a run's dynamics recorder collected, keyed by uid, as a dynamics store.

Reference runs always record; main runs do when asked (`record_dynamics`, the DM baseline's
own-dynamics probe). Both write the same store through `write_dynamics`.
"""

from __future__ import annotations

from pathlib import Path

from ..config import OptimConfig, to_dict
from ..dynamics.recorder import DynamicsRecorder
from ..dynamics.store import Dynamics
from ..train.runtime import DistEnv
from .prepare import PreparedRun


def write_dynamics(
    path: Path,
    run: PreparedRun,
    cfg: OptimConfig,
    env: DistEnv,
    recorder: DynamicsRecorder,
    eval_recorder: DynamicsRecorder | None = None,
    **extra,
) -> None:
    """Save what `recorder` collected as a dynamics store, keyed by uid (rank 0 only)."""
    rows = recorder.rows.tolist()
    picked = run.split.dataset.select(rows)
    Dynamics.create(
        picked["uid"],
        picked["label"],
        recorder.logits(),
        eval_logits=eval_recorder.logits() if eval_recorder is not None else None,
        dataset_fingerprint=run.split.fingerprint,
        model=cfg.model,
        seeds={"init_seed": cfg.init_seed, "data_seed": cfg.data_seed, "dropout_seed": cfg.dropout_seed},
        source=extra.pop("source", "reference"),
        extra={
            "dataset": to_dict(cfg.data),
            "num_layers": cfg.num_layers,
            "num_parameters": run.num_parameters,
            "label_names": list(run.split.label_names) if run.split.label_names else None,
            "world_size": env.world_size,
            "zero_stage": run.ds_config.get("zero_optimization", {}).get("stage", 0),
            **extra,
        },
    ).save(path)
