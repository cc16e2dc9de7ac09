"""Reference runs: fine-tune on the full training split for E epochs and record training dynamics.

This is the first half of the FTFT recipe. The run can be one process (CPU or one GPU) or several
ranks under the `deepspeed` launcher; either way it writes, under `output_dir`:

- `dynamics/`: the dynamics store (N × E × C logits, labels, uids, manifest);
- `config.json`: the resolved run config;
- `cost.json`: the run's cost ledger;
- `tensorboard/reference/`: loss, learning rate, accuracy, throughput and cost.
"""
from __future__ import annotations

import math
import time
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from .config import ReferenceConfig, save_config, to_dict
from .cost import CostLedger
from .data.load import load_split
from .data.sampler import ShardedSampler
from .data.tokenize import Collator, tokenize_split
from .dynamics.recorder import DynamicsRecorder
from .dynamics.store import Dynamics
from .io import versions
from .models import build_model, count_parameters, load_tokenizer
from .train.engine import build_engine, current_lr, to_device
from .train.runtime import DistEnv, init_distributed

JOB_NAME = "reference"


def run_reference(cfg: ReferenceConfig, env: DistEnv | None = None) -> Path:
    """Run a reference model and return the path of the dynamics store it wrote."""
    env = env or init_distributed()
    out = Path(cfg.output_dir)
    torch.manual_seed(cfg.init_seed)

    split = load_split(cfg.data, cfg.data.train_split)
    tokenizer = load_tokenizer(cfg.model)
    train = tokenize_split(split, tokenizer, cfg.max_length)
    collate = Collator(tokenizer)
    num_examples = len(train)

    sampler = ShardedSampler(range(num_examples), env.world_size, env.rank, seed=cfg.data_seed)
    loader = DataLoader(train, batch_size=cfg.micro_batch_size, sampler=sampler, collate_fn=collate)
    steps_per_epoch = math.ceil(sampler.per_rank / cfg.micro_batch_size / cfg.grad_accum)

    model = build_model(cfg.model, split.num_labels, cfg.num_layers, cfg.init_seed)
    num_parameters = count_parameters(model)
    engine, ds_config = build_engine(model, cfg, env, steps_per_epoch * cfg.epochs, out / "tensorboard", JOB_NAME)
    ledger = CostLedger(num_parameters, env.world_size, env.device, monitor=engine.monitor)

    recorder = DynamicsRecorder(num_examples, split.num_labels)
    eval_recorder = DynamicsRecorder(num_examples, split.num_labels) if cfg.eval_pass else None
    eval_loader = DataLoader(
        train, batch_size=cfg.micro_batch_size, collate_fn=collate,
        sampler=ShardedSampler(range(num_examples), env.world_size, env.rank, seed=0, shuffle=False),
    )

    started = time.time()
    progress = tqdm(total=steps_per_epoch * cfg.epochs, desc="reference", disable=not env.is_main,
                    dynamic_ncols=True)
    for epoch in range(cfg.epochs):
        sampler.set_epoch(epoch)
        engine.train()
        for batch in loader:
            batch = to_device(batch, env.device)
            indices = batch.pop("index")
            output = engine(**batch)
            recorder.record(indices, output.logits)
            ledger.count_train(batch["attention_mask"], output.loss, output.logits, batch["labels"])
            engine.backward(output.loss)
            boundary = engine.is_gradient_accumulation_boundary()
            engine.step()
            if boundary:
                progress.update(1)
                if engine.global_steps % cfg.log_every == 0:
                    record = ledger.flush(engine.global_steps, current_lr(engine))
                    progress.set_postfix(loss=f"{record.get('train/loss', float('nan')):.3f}", epoch=epoch)
        recorder.end_epoch()
        if eval_recorder is not None:
            _eval_pass(engine, eval_loader, eval_recorder, ledger, env)
    ledger.flush(engine.global_steps, current_lr(engine))
    progress.close()

    store = out / "dynamics"
    if env.is_main:
        manifest = {
            "source": "reference",
            "dataset_fingerprint": split.fingerprint,
            "dataset": to_dict(cfg.data),
            "model": cfg.model,
            "num_layers": cfg.num_layers,
            "num_parameters": num_parameters,
            "seeds": {"init_seed": cfg.init_seed, "data_seed": cfg.data_seed},
            "num_epochs": cfg.epochs,
            "num_labels": split.num_labels,
            "num_examples": num_examples,
            "label_names": list(split.label_names) if split.label_names else None,
            "world_size": env.world_size,
            "zero_stage": ds_config.get("zero_optimization", {}).get("stage", 0),
            "versions": versions(),
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "wall_seconds": time.time() - started,
        }
        Dynamics(
            uids=np.array([u.encode("utf-8") for u in split.dataset["uid"]]),
            labels=np.asarray(split.dataset["label"], dtype=np.int64),
            logits=recorder.logits(),
            eval_logits=eval_recorder.logits() if eval_recorder is not None else None,
            manifest=manifest,
        ).save(store)
        save_config(cfg, out / "config.json")
        ledger.save(out / "cost.json", kind="reference", model=cfg.model, num_layers=cfg.num_layers)
    if dist.is_initialized():
        dist.barrier()
    return store


@torch.no_grad()
def _eval_pass(engine, loader, recorder: DynamicsRecorder, ledger: CostLedger, env: DistEnv) -> None:
    """Record eval-mode logits of every training example (every rank joins: ZeRO-3 needs it)."""
    engine.eval()
    for batch in loader:
        batch = to_device(batch, env.device)
        indices = batch.pop("index")
        batch.pop("labels")
        recorder.record(indices, engine(**batch).logits)
        ledger.count_eval(batch["attention_mask"])
    recorder.end_epoch()
    engine.train()
