"""Checkpoints that resume exactly, and the final model in Hugging Face format.

DeepSpeed's own checkpoints hold the (sharded) model, optimizer and scheduler states; we add the
trainer's position (sampler epoch and offset, step, patience state), the cost ledger's totals and
every rank's random-number state, so a resumed run continues with the very next example and the
same dropout masks. Each rank writes its RNG file before DeepSpeed writes `latest`, and DeepSpeed
writes `latest` last, so `latest` only ever names a complete checkpoint: a run killed mid-save
resumes from the previous one.

To restart on a different number of ranks or nodes, convert the ZeRO checkpoint to DeepSpeed's
universal format (`python -m deepspeed.checkpoint.ds_to_universal --input_folder
CKPT/step_N --output_folder CKPT/step_N_universal`), write that tag into `CKPT/latest`, and set
`"checkpoint": {"load_universal": true}` in the DeepSpeed config (see the README).
"""
from __future__ import annotations

import shutil
from pathlib import Path

import torch
import torch.distributed as dist

from ..errors import FtftError
from ..io import atomic_path
from .runtime import DistEnv

LATEST = "latest"
BEST_TAG = "best"


def _rng_state() -> dict:
    state = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def _set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])


class Checkpointer:
    """Saves and restores a run under `directory` (every rank must call `save` and `load`)."""

    def __init__(self, directory: str | Path, env: DistEnv, keep_last: int = 1):
        self.directory = Path(directory)
        self.env = env
        self.keep_last = keep_last

    def has_checkpoint(self) -> bool:
        return (self.directory / LATEST).is_file()

    def save(self, engine, tag: str, client_state: dict, latest: bool = True) -> None:
        rng_path = self.directory / tag / f"rng_rank{self.env.rank}.pt"
        rng_path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(rng_path) as tmp:
            torch.save(_rng_state(), tmp)
        engine.save_checkpoint(str(self.directory), tag=tag, client_state=client_state, save_latest=latest)
        if latest:
            self._prune(keep={tag, BEST_TAG})

    def load(self, engine, tag: str | None = None) -> dict:
        """Restore engine, optimizer, scheduler and RNG; return the trainer's client state."""
        if tag is None and not self.has_checkpoint():
            raise FtftError(f"--resume: no checkpoint found in {self.directory}")
        path, client_state = engine.load_checkpoint(str(self.directory), tag=tag)
        if path is None:
            raise FtftError(f"--resume: could not load the checkpoint in {self.directory}")
        tag = tag or (self.directory / LATEST).read_text().strip()
        rng_path = self.directory / tag / f"rng_rank{self.env.rank}.pt"
        if rng_path.is_file():
            _set_rng_state(torch.load(rng_path, weights_only=False))
        return client_state

    def load_weights(self, engine, tag: str) -> None:
        """Restore only the model weights saved under `tag` (e.g. the best checkpoint, to export it)."""
        path, _ = engine.load_checkpoint(str(self.directory), tag=tag, load_module_only=True,
                                         load_optimizer_states=False, load_lr_scheduler_states=False)
        if path is None:
            raise FtftError(f"could not load the checkpoint '{tag}' in {self.directory}")

    def _prune(self, keep: set) -> None:
        """Delete step checkpoints older than the last `keep_last` (rank 0, after everyone saved)."""
        if dist.is_initialized():
            dist.barrier()
        if not self.env.is_main:
            return
        steps = sorted(
            (p for p in self.directory.iterdir() if p.is_dir() and p.name.startswith("step_")),
            key=lambda p: int(p.name.split("_")[1]),
        )
        for old in steps[:-self.keep_last]:
            if old.name not in keep:
                shutil.rmtree(old, ignore_errors=True)


def export_hf_model(engine, tokenizer, path: str | Path, env: DistEnv, label_names=()) -> None:
    """Write the trained model in Hugging Face format (consolidated from ZeRO-3 shards if needed),
    its config naming the classes (`id2label`) after the data's `label_names`."""
    module = engine.module
    if label_names:
        module.config.id2label = dict(enumerate(label_names))
        module.config.label2id = {name: i for i, name in enumerate(label_names)}
    if engine.zero_optimization_partition_weights():
        state_dict = engine._zero3_consolidated_16bit_state_dict()  # a collective; rank 0 gets it
    else:
        state_dict = module.state_dict() if env.is_main else None
    if env.is_main:
        with atomic_path(path, is_dir=True) as tmp:
            module.save_pretrained(tmp, state_dict=state_dict)
            tokenizer.save_pretrained(tmp)
    if dist.is_initialized():
        dist.barrier()
