"""Main runs: the expensive model, trained on the selected subset (FTFT) or on everything (ERM).

Launched with `deepspeed launch/main.py` across GPUs and nodes (or `ftft train` in one process).
The dataset is never copied: the sampler walks the subset's rows. The run stops exactly at its
budget on every rank, evaluates on the ID and OOD splits, checkpoints, resumes, and writes under
`output_dir`:

- `metrics.json`: the selected evaluation on every eval split (with patience or `select_best`,
  the best checkpoint's; else the last step's), the final one (then of the followed split only),
  steps, budget, why it stopped, the classes each split's selected evaluation predicted,
  parameters per rank;
- `cost.json`: the cost ledger; `log.jsonl` + `tensorboard/main/`: the curves;
- `checkpoints/`: resumable DeepSpeed checkpoints, and the best step's weights when it keeps it
  (`best_step_N/`);
- `model/`: the selected model in Hugging Face format (consolidated from ZeRO-3 shards);
- `config.json`: the resolved config.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Callable

import torch.distributed as dist

from ..config import MainConfig, save_config
from ..data.load import fixed_sample
from ..dynamics.recorder import DynamicsRecorder
from ..dynamics.select import Subset
from ..errors import FtftError
from ..io import versions, write_json
from ..train.checkpoint import Checkpointer, export_hf_model
from ..train.cost import EVAL_FLOPS_PER_PARAM_TOKEN
from ..train.evaluate import Evaluator
from ..train.models import build_model
from ..train.runtime import DistEnv, init_distributed, peak_memory_bytes, run_folder
from ..train.stop import Divergence, FlopsCeiling, Patience
from ..train.trainer import Trainer
from .prepare import check_before_start, frozen_backbone, prepare_run, rank_0_decides_how_to_start
from .record import write_dynamics

JOB_NAME = "main"


def subset_rows(path: str):
    """`select_rows` for `prepare_run`: the training rows of the subset's uids, checked against the split."""
    subset = Subset.load(path)

    def select(split) -> list[int]:
        uid_to_index = split.uid_to_index()
        subset.check_dataset(split.fingerprint, uid_to_index.keys())
        return sorted(uid_to_index[uid] for uid in subset.uids)

    return select


def run_main(cfg: MainConfig, env: DistEnv | None = None, on_step_end: Callable | None = None) -> dict:
    """Run a main model to its budget; return the metrics written to `metrics.json`.

    `on_step_end(trainer)` is called after every optimizer step (see `Trainer`). Without `env` the
    config is checked (`check_before_start`) before this process joins the process group."""
    if env is None:
        check_before_start(cfg)
        env = init_distributed()
    cfg = rank_0_decides_how_to_start(cfg, env)
    with run_folder(cfg, env):
        return _run_main(cfg, env, on_step_end)


def _run_main(cfg: MainConfig, env: DistEnv, on_step_end: Callable | None) -> dict:
    out = Path(cfg.output_dir)
    budget = cfg.budget
    run = prepare_run(
        cfg,
        env,
        budget,
        JOB_NAME,
        select_rows=subset_rows(cfg.subset) if cfg.subset else None,
        erm_epochs=cfg.erm_epochs,
        schedule=cfg.lr_schedule,
        eval_splits=cfg.data.eval_splits,
        schedule_budget=cfg.schedule_budget,
    )
    recorder = DynamicsRecorder(run.sampler.rows, run.split.num_labels) if cfg.record_dynamics else None
    evaluator = run.evaluator(env)
    # Keeping the best checkpoint, only the followed split is evaluated while training; the kept checkpoint is
    # evaluated on every split at the end.
    selects_best = evaluator is not None and cfg.selects_best
    watched = _watched(cfg, run, evaluator) if selects_best else evaluator
    checkpointer = Checkpointer(out / "checkpoints", env, backbone=frozen_backbone(cfg))
    stop_rule = dataclasses.replace(
        run.stop_rule,
        patience=Patience(cfg.patience_metric, cfg.patience) if evaluator else None,
        divergence=_divergence_guard(cfg, run, watched),
        ceiling=_flops_ceiling(cfg, run, env, watched),
    )
    trainer = Trainer(
        run.engine,
        run.loader,
        run.sampler,
        run.ledger,
        stop_rule,
        env,
        log_every=cfg.log_every,
        evaluator=watched,
        eval_every=run.plan.evals_every(cfg.evals_per_schedule) if cfg.evals_per_schedule else cfg.eval_every,
        checkpointer=checkpointer,
        checkpoint_every=cfg.checkpoint_every,
        checkpoint_minutes=cfg.checkpoint_minutes,
        recorder=recorder,
        on_step_end=on_step_end,
        log_path=out / "log.jsonl",
        desc="main",
    )
    if cfg.resume:
        trainer.resume()
    elif env.is_main:
        (out / "log.jsonl").unlink(missing_ok=True)
    # A run that keeps its last step and evaluates only at its end evaluates to report, not to steer.
    with run.ledger.reporting(not selects_best and not trainer.eval_every):
        final = trainer.fit()
    training_memory = run.ledger.training_memory_bytes  # before the final save and evaluations
    trainer.save_checkpoint()
    state = trainer.state
    selected, selected_step = final, state.step
    if selects_best:
        if state.best_step is not None and state.best_step != state.step:
            checkpointer.load_best(run.engine, state.best_step)
            selected_step = state.best_step
        with run.ledger.reporting():
            selected = {"step": selected_step, **evaluator.evaluate(run.engine, run.ledger)}
        run.ledger.flush(state.step, write=False)
    if cfg.export_model:
        merged = None
        if cfg.lora is not None and cfg.lora.export_merged:

            def merged():
                return build_model(cfg.model, run.split.num_labels, cfg.num_layers, cfg.init_seed)

        export_hf_model(run.engine, run.tokenizer, out / "model", env, run.split.label_names, merged)

    peaks = peak_memory_bytes(env.device)
    metrics = {
        "final": final,
        # What the run reports: with patience or select_best, the best checkpoint (the model one keeps and exports,
        # chosen on the validation metric); without, the last step.
        "selected": selected,
        "selected_step": selected_step,
        # Per split, the classes the selected evaluation predicted and the majority-class rate:
        # a model that says one class everywhere learnt nothing, whatever its accuracy.
        "predicted_classes": dict(evaluator.predicted_classes) if evaluator else {},
        "majority_rate": {name: evaluator.majority_rate(name) for name in run.eval_data} if evaluator else {},
        "steps": state.step,
        "max_steps": run.plan.max_steps,
        "erm_steps": run.plan.erm_steps,
        "budget": str(budget),
        "stopped": state.stopped,
        "best": {"metric": cfg.patience_metric, "score": state.best_score, "step": state.best_step},
        "train_rows": len(run.sampler.rows),
        "train_split_size": len(run.train),
        "subset": cfg.subset,
        "dataset_fingerprint": run.split.fingerprint,
        "world_size": env.world_size,
        "zero_stage": run.ds_config.get("zero_optimization", {}).get("stage", 0),
        "parameters_per_rank": _per_rank(_local_parameters(run.engine)),
        # Peaks since set-up (loading the model is not training). GPU: the allocator's allocated
        # and reserved peaks; CPU: the process's resident set, libraries included. `peak` covers the
        # final save and evaluations too, `training` the steps up to the last log point.
        "peak_memory_mib_per_rank": _per_rank(_mib(max(peaks["allocated"], training_memory["allocated"]))),
        "peak_reserved_mib_per_rank": _per_rank(_mib(max(peaks["reserved"], training_memory["reserved"]))),
        "training_memory_mib_per_rank": _per_rank(_mib(training_memory["allocated"])),
        "num_parameters": run.num_parameters,
        "versions": versions(),
        "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    if env.is_main:
        if recorder is not None:
            write_dynamics(out / "dynamics", run, cfg, env, recorder, source="main")
        write_json(out / "metrics.json", metrics)
        save_config(cfg, out / "config.json")
        run.ledger.save(out / "cost.json", kind="main", model=cfg.model, num_layers=cfg.num_layers, subset=cfg.subset)
    if dist.is_initialized():
        dist.barrier()
    return metrics


def _watched(cfg: MainConfig, run, evaluator: Evaluator) -> Evaluator:
    """What a run that keeps its best checkpoint evaluates while it trains: the split it follows, or
    its fixed sample."""
    split = cfg.patience_metric.split("/")[0]
    samples = {split: fixed_sample(run.eval_splits[split].uids(), cfg.eval_sample)} if cfg.eval_sample else None
    return evaluator.only([split], samples)


def _flops_ceiling(cfg: MainConfig, run, env: DistEnv, watched) -> FlopsCeiling | None:
    """`max_flops` as the stop rule weighs it: what a step and an evaluation while training cost."""
    if cfg.max_flops is None:
        return None
    params = run.ledger.totals.flops_parameters
    ceiling = FlopsCeiling(
        cfg.max_flops,
        run.training_step_flops(env, cfg.grad_accum),
        EVAL_FLOPS_PER_PARAM_TOKEN * params * watched.tokens() if watched is not None else 0.0,
    )
    if not ceiling.allows(0.0):
        raise FtftError(
            f"max_flops {cfg.max_flops:.4g} leaves no room for one step and its evaluations "
            f"({ceiling.reserve:.4g} FLOPs); raise it, evaluate fewer rows (eval_sample) or train smaller batches"
        )
    return ceiling


def _divergence_guard(cfg: MainConfig, run, evaluator) -> Divergence | None:
    if cfg.divergence_margin is None or evaluator is None:
        return None
    split = cfg.patience_metric.split("/")[0]
    return Divergence(
        cfg.patience_metric, evaluator.majority_rate(split) + cfg.divergence_margin, after_step=run.warmup_steps
    )


def _local_parameters(engine) -> int:
    """How many parameter values this rank holds: all of them below ZeRO-3, a 1/world shard with it."""
    return sum(p.ds_tensor.numel() if hasattr(p, "ds_tensor") else p.numel() for p in engine.module.parameters())


def _mib(num_bytes: int) -> int:
    return round(num_bytes / 2**20)


def _per_rank(local: int) -> list[int]:
    """Every rank's value of `local`, rank 0 first (a collective)."""
    if not dist.is_initialized():
        return [local]
    values = [None] * dist.get_world_size()
    dist.all_gather_object(values, local)
    return values
