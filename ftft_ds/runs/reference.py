"""Reference runs: fine-tune on the full training split for E epochs and record training dynamics.

This is the first half of the FTFT recipe. The run can be one process (CPU or one GPU) or several
ranks under the `deepspeed` launcher; either way it writes, under `output_dir`:

- `dynamics/`: the dynamics store (N × E × C logits, labels, uids, manifest);
- `config.json`: the resolved run config;
- `metrics.json`: the reference's own evaluation on the eval splits (unless `evaluate` is off),
  with each split's majority-class rate to judge it against;
- `cost.json`: the run's cost ledger (the same units as main runs, so a recipe's costs add up);
- `log.jsonl` and `tensorboard/reference/`: loss, learning rate, accuracy, throughput and cost.

While it trains it checkpoints as a main run does (`checkpoint_every`, `checkpoint_minutes`, and on
a SLURM time limit), the dynamics recorded so far included, so an interrupted reference resumes
(`resume`) where it stopped and records what a straight run would. A finished reference deletes its
checkpoints: its dynamics are all that is used of it.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Callable

import torch.distributed as dist

from ..config import ReferenceConfig, save_config
from ..dynamics.recorder import DynamicsRecorder
from ..io import write_json
from ..train.budget import Budget
from ..train.checkpoint import Checkpointer
from ..train.evaluate import predict
from ..train.runtime import DistEnv, init_distributed, run_folder
from ..train.trainer import Trainer
from .prepare import PreparedRun, check_before_start, frozen_backbone, prepare_run, rank_0_decides_how_to_start
from .record import write_dynamics

JOB_NAME = "reference"


def run_reference(cfg: ReferenceConfig, env: DistEnv | None = None, on_step_end: Callable | None = None) -> Path:
    """Run a reference model and return the path of the dynamics store it wrote. Without `env` the
    config is checked (`check_before_start`) before this process joins the process group.
    `on_step_end(trainer)` is called after every optimizer step (see `Trainer`)."""
    if env is None:
        check_before_start(cfg)
        env = init_distributed()
    cfg = rank_0_decides_how_to_start(cfg, env)
    with run_folder(cfg, env):
        return _run_reference(cfg, env, on_step_end)


def _run_reference(cfg: ReferenceConfig, env: DistEnv, on_step_end: Callable | None) -> Path:
    out = Path(cfg.output_dir)
    run = prepare_run(
        cfg,
        env,
        budget=Budget("epochs", cfg.epochs),
        job_name=JOB_NAME,
        eval_splits=cfg.data.eval_splits if cfg.evaluate else (),
    )
    rows = range(len(run.train))
    recorder = DynamicsRecorder(rows, run.split.num_labels)
    eval_recorder = DynamicsRecorder(rows, run.split.num_labels) if cfg.eval_pass else None

    evaluator = run.evaluator(env)
    trainer = Trainer(
        run.engine,
        run.loader,
        run.sampler,
        run.ledger,
        run.stop_rule,
        env,
        log_every=cfg.log_every,
        evaluator=evaluator,
        checkpointer=Checkpointer(out / "checkpoints", env, backbone=frozen_backbone(cfg)),
        checkpoint_every=cfg.checkpoint_every,
        checkpoint_minutes=cfg.checkpoint_minutes,
        recorder=recorder,
        rank_state={"eval_recorder": eval_recorder} if eval_recorder is not None else None,
        on_epoch_end=None if eval_recorder is None else lambda: _eval_pass(run, eval_recorder, env),
        on_step_end=on_step_end,
        log_path=out / "log.jsonl",
        desc="reference",
    )
    if cfg.resume:
        trainer.resume()
    elif env.is_main:
        (out / "log.jsonl").unlink(missing_ok=True)
    final = trainer.fit()

    store = out / "dynamics"
    if env.is_main:
        write_dynamics(
            store, run, cfg, env, recorder, eval_recorder, source="reference", wall_seconds=run.ledger.run_seconds()
        )
        majority = {name: evaluator.majority_rate(name) for name in run.eval_data} if evaluator else {}
        write_json(out / "metrics.json", {"final": final, "majority_rate": majority, "steps": trainer.state.step})
        save_config(cfg, out / "config.json")
        run.ledger.save(out / "cost.json", kind="reference", model=cfg.model, num_layers=cfg.num_layers)
    if dist.is_initialized():
        dist.barrier()
    if env.is_main:
        shutil.rmtree(out / "checkpoints", ignore_errors=True)
    return store


def _eval_pass(run: PreparedRun, recorder: DynamicsRecorder, env: DistEnv) -> None:
    """Record eval-mode logits of every training example (every rank joins: ZeRO-3 needs it)."""
    loader = run.loading.split_loader(run.train, run.collate, env)
    recorder.add_epoch(*predict(run.engine, loader, env, run.ledger))
