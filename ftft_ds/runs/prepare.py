"""Everything a run needs before its first step: data, sampler, model, engine, ledger, step plan, stop rule.

Reference runs and main runs differ only in which rows they train on, their budget and what they
do around the loop, so both are set up here.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import torch
import torch.distributed as dist
from torch.utils.data import DataLoader

from ..config import OptimConfig
from ..data.handoff import prepare_once
from ..data.load import Split, load_splits
from ..data.sampler import ShardedSampler
from ..data.tokenize import Collator, row_lengths, tokenize_split
from ..errors import warn
from ..io import check_output_dir
from ..train.budget import Budget
from ..train.cost import CostLedger, train_flops_per_token
from ..train.ds_config import check_ds_config, read_ds_config
from ..train.engine import build_model_for, initialize_engine, run_ds_config, take_monitor
from ..train.evaluate import Evaluator, LoaderSettings
from ..train.lora import backbone_fingerprint
from ..train.memory import refuse_if_it_cannot_fit
from ..train.models import (
    check_max_length,
    count_flops_parameters,
    count_parameters,
    load_tokenizer,
    model_depth,
    weights_source,
)
from ..train.runtime import DistEnv, reset_memory_peaks
from ..train.stop import StopRule
from .plan import StepPlan, plan_steps


@dataclass
class PreparedRun:
    split: Split
    train: object  # the tokenized training split (a datasets.Dataset)
    eval_data: dict  # name -> tokenized evaluation split
    eval_splits: dict  # name -> the evaluation split in canonical form (uids, labels, texts)
    tokenizer: object
    collate: Collator
    loading: LoaderSettings
    sampler: ShardedSampler
    loader: DataLoader
    engine: object
    ds_config: dict
    num_parameters: int
    ledger: CostLedger
    stop_rule: StopRule  # the budget's; a main run adds patience and divergence
    plan: StepPlan
    warmup_steps: int  # as the DeepSpeed config has it (a user's config may fix its own)

    def evaluator(self, env: DistEnv) -> Evaluator | None:
        """An evaluator over the tokenized eval splits (None when there are none)."""
        if not self.eval_data:
            return None
        return Evaluator(self.eval_data, self.split.num_labels, self.loading, self.collate, env)

    def training_step_flops(self, env: DistEnv, grad_accum: int) -> float:
        """An upper bound on one optimizer step's training FLOPs: every example of the step as long
        as the longest row this run trains on."""
        longest = int(row_lengths(self.train)[self.sampler.rows.numpy()].max())
        examples = self.loader.batch_size * grad_accum * env.world_size
        totals = self.ledger.totals
        return train_flops_per_token(totals.flops_parameters, totals.trainable_flops_parameters) * examples * longest


def check_before_start(cfg: OptimConfig) -> None:
    """Refuse, before a process group starts or any data loads, what set-up would trip over later:
    a DeepSpeed config that cannot be read or names a bad stage or optimizer, a model that cannot
    be found, a `max_length` beyond its positions, an output folder that cannot be used (a file, or
    an earlier run's without resume or overwrite). Every rank checks the same and stops with the
    same line, and on a cluster a typo costs no process-group start-up."""
    check_output_dir(cfg.output_dir, resume=cfg.resume, overwrite=cfg.overwrite)
    check_ds_config(read_ds_config(cfg.ds_config))
    check_max_length(cfg.model, cfg.max_length, load_tokenizer(cfg.model))


def rank_0_decides_how_to_start(cfg: OptimConfig, env: DistEnv) -> OptimConfig:
    """Every rank takes rank 0's `resume` and `overwrite`. A job that restarts decides them from its
    folder (`jobs.task`) on every rank; on a shared file system whose caches disagree for a while,
    one rank could find a checkpoint another does not, and the ranks would start from different
    states, or hang."""
    if env.world_size == 1 or not dist.is_initialized():
        return cfg
    decision = [(cfg.resume, cfg.overwrite)]
    dist.broadcast_object_list(decision, src=0)
    resume, overwrite = decision[0]
    return dataclasses.replace(cfg, resume=resume, overwrite=overwrite)


def frozen_backbone(cfg: OptimConfig) -> dict | None:
    """The fingerprint of the base model a LoRA run's checkpoints leave out (None: full fine-tuning)."""
    if cfg.lora is None:
        return None
    return backbone_fingerprint(weights_source(cfg.model), cfg.num_layers, cfg.init_seed)


def seed_dropout(seed: int, env: DistEnv) -> None:
    """Seed the global generator, which only dropout draws from (data order and head init have their own)."""
    torch.manual_seed(seed * 10_007 + env.rank)


def prepare_run(
    cfg: OptimConfig,
    env: DistEnv,
    budget: Budget,
    job_name: str,
    select_rows: Callable[[Split], Sequence[int]] | None = None,
    erm_epochs: float = 1.0,
    schedule: str = "compressed",
    eval_splits: Sequence[str] = (),
    schedule_budget: Budget | None = None,
) -> PreparedRun:
    """Set a run up.

    `select_rows(train_split)` returns the training rows (None: all of them); `schedule` is
    `compressed` (the LR schedule spans the budget) or `truncated` (it spans the ERM budget and is
    cut where the run stops), unless `schedule_budget` names the budget it spans; `eval_splits`
    are tokenized for evaluation.
    """
    started = time.time()  # the run's wall time (`CostTotals.run_seconds`) counts its set-up too
    seed_dropout(cfg.dropout_seed, env)
    tokenizer = load_tokenizer(cfg.model)

    def load_and_tokenize() -> tuple[dict, dict]:
        splits = load_splits(cfg.data, [cfg.data.train_split, *eval_splits])
        names = dict.fromkeys([cfg.data.train_split, *eval_splits])
        return splits, {name: tokenize_split(splits[name], tokenizer, cfg.max_length) for name in names}

    splits, tokenized = prepare_once(Path(cfg.output_dir), env.rank, env.world_size, load_and_tokenize)
    split = splits[cfg.data.train_split]
    rows = None if select_rows is None else select_rows(split)
    train = tokenized[cfg.data.train_split]
    eval_data = {name: tokenized[name] for name in eval_splits}
    loading = LoaderSettings.of(cfg, env, model_depth(cfg.model, split.num_labels, cfg.num_layers))
    collate = Collator(tokenizer, loading.pad_to_multiple_of)
    rows = range(len(train)) if rows is None else rows
    sampler = ShardedSampler(rows, env.world_size, env.rank, seed=cfg.data_seed)
    loader = loading.loader(train, cfg.micro_batch_size, sampler, collate, persistent=True)

    plan = plan_steps(
        len(rows),
        len(train),
        env.world_size,
        cfg.micro_batch_size,
        cfg.grad_accum,
        budget,
        erm_epochs,
        schedule,
        schedule_budget,
        cfg.warmup_ratio,
    )
    if plan.max_steps is not None and plan.max_steps > plan.schedule_steps:
        warn(
            f"budget {budget} means {plan.max_steps} steps but the learning-rate schedule spans "
            f"{plan.schedule_steps} (the {'ERM budget' if schedule == 'truncated' else 'schedule budget'}), "
            f"so the last {plan.max_steps - plan.schedule_steps} steps train at learning rate 0; raise "
            f"erm_epochs or use lr_schedule=compressed"
        )
    ds_config = run_ds_config(cfg, env, split.num_labels, plan.schedule_steps, plan.warmup_steps)
    refuse_if_it_cannot_fit(cfg, ds_config, split.num_labels, env.world_size, env.device)
    monitor = take_monitor(ds_config, Path(cfg.output_dir) / "tensorboard", job_name)
    model = build_model_for(cfg, split.num_labels, ds_config)
    num_parameters = count_parameters(model)
    engine = initialize_engine(model, ds_config)
    ledger = CostLedger(
        count_flops_parameters(model),
        env.world_size,
        env.device,
        monitor=monitor,
        started=started,
        trainable_flops_parameters=count_flops_parameters(model, trainable=True),
    )
    reset_memory_peaks(env.device)  # the run's peaks measure training, not loading and set-up
    return PreparedRun(
        split=split,
        train=train,
        eval_data=eval_data,
        eval_splits={name: splits[name] for name in eval_splits},
        tokenizer=tokenizer,
        collate=collate,
        loading=loading,
        sampler=sampler,
        loader=loader,
        engine=engine,
        ds_config=ds_config,
        num_parameters=num_parameters,
        ledger=ledger,
        stop_rule=StopRule(budget, plan.max_steps),
        plan=plan,
        warmup_steps=ds_config.get("scheduler", {}).get("params", {}).get("warmup_num_steps", 0),
    )
