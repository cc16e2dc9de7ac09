"""Reference runs: fine-tune on the full training split for E epochs and record training dynamics.

This is the first half of the FTFT recipe. The run can be one process (CPU or one GPU) or several
ranks under the `deepspeed` launcher; either way it writes, under `output_dir`:

- `dynamics/`: the dynamics store (N × E × C logits, labels, uids, manifest);
- `config.json`: the resolved run config;
- `metrics.json`: the reference's own evaluation on the eval splits (unless `evaluate` is off),
  with each split's majority-class rate to judge it against;
- `cost.json`: the run's cost ledger (the same units as main runs, so a recipe's costs add up);
- `log.jsonl` and `tensorboard/reference/`: loss, learning rate, accuracy, throughput and cost.
"""

from __future__ import annotations

import time
from pathlib import Path

import torch.distributed as dist

from ..config import ReferenceConfig, save_config
from ..dynamics.recorder import DynamicsRecorder
from ..io import write_json
from ..train.budget import Budget
from ..train.evaluate import predict
from ..train.runtime import DistEnv, init_distributed, run_folder
from ..train.trainer import Trainer
from .prepare import PreparedRun, check_before_start, prepare_run
from .record import write_dynamics

JOB_NAME = "reference"


def run_reference(cfg: ReferenceConfig, env: DistEnv | None = None) -> Path:
    """Run a reference model and return the path of the dynamics store it wrote. Without `env` the
    config is checked (`check_before_start`) before this process joins the process group."""
    if env is None:
        check_before_start(cfg)
        env = init_distributed()
    with run_folder(cfg, env):
        return _run_reference(cfg, env)


def _run_reference(cfg: ReferenceConfig, env: DistEnv) -> Path:
    out = Path(cfg.output_dir)
    started = time.time()
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
        recorder=recorder,
        log_path=out / "log.jsonl",
        desc="reference",
        on_epoch_end=None if eval_recorder is None else lambda: _eval_pass(run, eval_recorder, env),
    )
    if env.is_main:
        (out / "log.jsonl").unlink(missing_ok=True)
    final = trainer.fit()

    store = out / "dynamics"
    if env.is_main:
        write_dynamics(
            store, run, cfg, env, recorder, eval_recorder, source="reference", wall_seconds=time.time() - started
        )
        majority = {name: evaluator.majority_rate(name) for name in run.eval_data} if evaluator else {}
        write_json(out / "metrics.json", {"final": final, "majority_rate": majority, "steps": trainer.state.step})
        save_config(cfg, out / "config.json")
        run.ledger.save(out / "cost.json", kind="reference", model=cfg.model, num_layers=cfg.num_layers)
    if dist.is_initialized():
        dist.barrier()
    return store


def _eval_pass(run: PreparedRun, recorder: DynamicsRecorder, env: DistEnv) -> None:
    """Record eval-mode logits of every training example (every rank joins: ZeRO-3 needs it)."""
    loader = run.loading.split_loader(run.train, run.collate, env)
    recorder.add_epoch(*predict(run.engine, loader, env, run.ledger))
