"""Checkpoints that resume exactly, the best weights a patience run reports, and the final model in
Hugging Face format.

DeepSpeed's own checkpoints hold the (sharded) model, optimizer and scheduler states; we add the
trainer's position (sampler epoch and offset, step, patience state), the cost ledger's totals and,
in a file per rank, that rank's random-number state and what it alone holds (the part of an epoch
its dynamics recorder has seen), so a resumed run continues with the very next example, the same
dropout masks and the same recorded dynamics. `latest` is written by rank 0 alone, atomically,
and only after a barrier that every rank reaches once its shards are on disk, so it only ever names
a complete checkpoint: a run killed mid-save (a preempted node among many) resumes from the
previous one. (DeepSpeed's own `save_latest` writes it after rank 0's shards alone, before that
barrier.)

A LoRA run (`lora.py`) saves its trainable parameters (adapters, head) and their optimizer states
only: the frozen backbone, all but a few per cent of the weights, comes back from the base model,
which the checkpoint names by fingerprint, and a resume onto another is refused.

The best checkpoint of a patience run holds the module's trainable weights only: the run never
trains on from it, so optimizer states (12 of the 16 bytes per parameter of mixed-precision Adam)
would be written at every new best for nothing, and frozen weights never change. Under ZeRO-3 each
rank saves and loads its own partition, so neither the save nor the load gathers the model (a run
resumed on another number of ranks cuts the saved partitions again for its own); it is read back by
its own folder name, which DeepSpeed's module-only loading under ZeRO-3 does not do (it reads
whatever `latest` names).

To restart on a different number of ranks or nodes, convert the ZeRO checkpoint to DeepSpeed's
universal format (`python -m deepspeed.checkpoint.ds_to_universal --input_folder
CKPT/step_N --output_folder CKPT/step_N_universal`), write that tag into `CKPT/latest`, and set
`"checkpoint": {"load_universal": true}` in the DeepSpeed config (see docs/main-runs.md).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import torch
import torch.distributed as dist

from ..errors import FtftError
from ..io import atomic_path
from .lora import check_backbone, export_adapter, is_peft_model
from .runtime import DistEnv

LATEST = "latest"
RESUMABLE = f"checkpoints/{LATEST}"
"""The file in a run's `output_dir` that names its latest complete checkpoint: a run with it can resume."""
BEST_PREFIX = "best_step_"


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
    """Saves and restores a run under `directory` (every rank must call `save`, `load`, `save_best`
    and `load_best`)."""

    def __init__(self, directory: str | Path, env: DistEnv, keep_last: int = 1, backbone: dict | None = None):
        """`backbone`: the frozen base model's fingerprint (`lora.backbone_fingerprint`) for a run
        that trains adapters on it, whose checkpoints then leave the frozen weights out; None: a
        run that trains every weight, whose checkpoints hold all of them."""
        self.directory = Path(directory)
        self.env = env
        self.keep_last = keep_last
        self.backbone = backbone

    def has_checkpoint(self) -> bool:
        return (self.directory / LATEST).is_file()

    def save(
        self, engine, tag: str, client_state: dict, best_step: int | None = None, rank_state: dict | None = None
    ) -> None:
        """Save a resumable checkpoint under `tag` and point `latest` at it once every rank has
        written its part; older step checkpoints and best weights other than `best_step`'s go.
        `rank_state`: what this rank alone holds (every rank saves its own)."""
        rank_path = self._rank_path(tag)
        rank_path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(rank_path) as tmp:
            torch.save({"rng": _rng_state(), "world_size": self.env.world_size, "state": rank_state or {}}, tmp)
        if self.backbone is not None:
            client_state = {**client_state, "backbone": self.backbone}
        engine.save_checkpoint(
            str(self.directory),
            tag=tag,
            client_state=client_state,
            save_latest=False,
            exclude_frozen_parameters=self.backbone is not None,
        )
        _barrier()  # every rank's shards are on disk
        if self.env.is_main:
            with atomic_path(self.directory / LATEST) as tmp:
                tmp.write_text(tag)
        self._prune(keep={tag, best_folder(best_step)})

    def load(self, engine, tag: str | None = None) -> tuple[dict, dict]:
        """Restore engine, optimizer, scheduler and RNG; return the trainer's client state and this
        rank's own state (`save`'s `rank_state`)."""
        if tag is None and not self.has_checkpoint():
            raise FtftError(f"--resume: no checkpoint found in {self.directory}")
        # Frozen weights are not in a LoRA run's checkpoint: the module keeps the base model's.
        path, client_state = engine.load_checkpoint(
            str(self.directory), tag=tag, load_module_strict=self.backbone is None
        )
        if path is None:
            raise FtftError(f"--resume: could not load the checkpoint in {self.directory}")
        if self.backbone is not None:
            check_backbone(client_state.get("backbone"), self.backbone, self.directory)
        tag = tag or (self.directory / LATEST).read_text().strip()
        rank_path = self._rank_path(tag)
        if not rank_path.is_file():  # a universal checkpoint, or one saved by fewer ranks: no state of this rank's
            return client_state, {}
        saved = torch.load(rank_path, weights_only=False)
        _set_rng_state(saved["rng"])
        if saved["state"] and saved["world_size"] != self.env.world_size:
            raise FtftError(
                f"--resume: the checkpoint in {self.directory} was saved by {saved['world_size']} ranks, each "
                f"holding part of an epoch of dynamics; resume it on {saved['world_size']} ranks, not "
                f"{self.env.world_size}"
            )
        return client_state, saved["state"]

    def _rank_path(self, tag: str) -> Path:
        return self.directory / tag / f"rank{self.env.rank}.pt"

    def save_best(self, engine, step: int) -> None:
        """Save the module's trainable weights at `step` as the best so far: each rank its ZeRO-3
        partition, or, below ZeRO-3, rank 0 the whole (replicated) values."""
        folder = self.directory / best_folder(step)
        folder.mkdir(parents=True, exist_ok=True)
        trained = [(name, p) for name, p in engine.module.named_parameters() if p.requires_grad]
        if engine.zero_optimization_partition_weights():
            # Parameters small enough to persist (stage3_param_persistence_threshold) stay whole on
            # every rank and are used as such, so their whole value is kept besides the partition.
            weights = {name: p.ds_tensor.detach().cpu() for name, p in trained}
            weights.update(
                {f"{name}:whole": p.data.detach().cpu() for name, p in trained if getattr(p, "ds_persist", False)}
            )
            target = folder / f"weights_rank{self.env.rank}.pt"
        else:
            weights = {name: p.detach().cpu() for name, p in trained} if self.env.is_main else None
            target = folder / "weights.pt"
        if weights is not None:
            with atomic_path(target) as tmp:
                torch.save({"world_size": self.env.world_size, "weights": weights}, tmp)
        _barrier()

    def load_best(self, engine, step: int) -> None:
        """Put the weights `save_best` saved at `step` back into the module (optimizer untouched)."""
        folder = self.directory / best_folder(step)
        trained = [(name, p) for name, p in engine.module.named_parameters() if p.requires_grad]
        if engine.zero_optimization_partition_weights():
            saved = self._own_partitions(folder, trained)
        else:
            saved = _read_best(folder / "weights.pt")["weights"]
        with torch.no_grad():
            for name, p in trained:
                if hasattr(p, "ds_tensor"):
                    p.ds_tensor.copy_(saved[name])
                    if getattr(p, "ds_persist", False) and p.data.numel():  # else gathered from ds_tensor when used
                        p.data.copy_(saved[f"{name}:whole"])
                else:
                    p.copy_(saved[name])
        _barrier()

    def _own_partitions(self, folder: Path, trained: list) -> dict:
        """This rank's ZeRO-3 partition of every weight saved in `folder`. Saved by as many ranks, it
        is this rank's file. Saved by another number (a run resumed on other nodes through a
        universal checkpoint), each weight is put back together from every rank's partition and cut
        again as DeepSpeed cuts it for this world (evenly, the last partition padded with zeros);
        the files are memory-mapped, so a rank reads only what it takes."""
        first = _read_best(folder / "weights_rank0.pt", mmap=True)
        if first["world_size"] == self.env.world_size:
            return _read_best(folder / f"weights_rank{self.env.rank}.pt")["weights"]
        files = [first] + [_read_best(folder / f"weights_rank{r}.pt", mmap=True) for r in range(1, first["world_size"])]
        own = {}
        for name, p in trained:
            whole = torch.cat([f["weights"][name] for f in files])[: p.ds_numel]
            size = p.ds_tensor.numel()
            part = whole[self.env.rank * size : (self.env.rank + 1) * size]
            own[name] = torch.cat([part, part.new_zeros(size - part.numel())])
            if getattr(p, "ds_persist", False):
                own[f"{name}:whole"] = first["weights"][f"{name}:whole"]
        return own

    def _prune(self, keep: set) -> None:
        """Delete step checkpoints older than the last `keep_last` and best weights not in `keep`
        (rank 0, after everyone saved)."""
        _barrier()
        if not self.env.is_main:
            return
        steps = sorted(
            (p for p in self.directory.iterdir() if p.is_dir() and p.name.startswith("step_")),
            key=lambda p: int(p.name.split("_")[1]),
        )
        old = [*steps[: -self.keep_last], *self.directory.glob(BEST_PREFIX + "*")]
        for folder in old:
            if folder.name not in keep:
                shutil.rmtree(folder, ignore_errors=True)


def drop_optimizer_states(directory: str | Path) -> int:
    """Delete the optimizer states of every step checkpoint under `directory`, and the `latest` that
    would resume from them; return the bytes freed. For a run that will never train on (a sweep's
    stopped trial): its weights and best weights stay, the optimizer states (12 of the 16 bytes per
    parameter of mixed-precision Adam) go. ZeRO keeps them in files of their own; without ZeRO they
    sit in the model states file, which is rewritten without them."""
    directory = Path(directory)
    (directory / LATEST).unlink(missing_ok=True)  # first: what remains cannot be resumed
    freed = 0
    for step in directory.glob("step_*"):
        states = list(step.glob("*optim_states.pt"))
        for path in states:
            freed += path.stat().st_size
            path.unlink()
        if states:
            continue
        for path in step.glob("mp_rank_*_model_states.pt"):
            before = path.stat().st_size
            saved = torch.load(path, map_location="cpu", weights_only=False)
            if saved.get("optimizer") is None:
                continue
            saved["optimizer"] = None
            with atomic_path(path) as tmp:
                torch.save(saved, tmp)
            freed += before - path.stat().st_size
    return freed


def _read_best(path: Path, mmap: bool = False) -> dict:
    if not path.is_file():
        raise FtftError(f"the best checkpoint's weights are missing: {path}")
    return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)


def best_folder(step: int | None) -> str | None:
    """The name of the folder holding the best weights of `step` (None: no best yet)."""
    return None if step is None else f"{BEST_PREFIX}{step}"


def _barrier() -> None:
    if dist.is_initialized():
        dist.barrier()


def export_hf_model(engine, tokenizer, path: str | Path, env: DistEnv, label_names=(), merged=None) -> None:
    """Write the trained model in Hugging Face format (consolidated from ZeRO-3 shards if needed),
    its config naming the classes (`id2label`) after the data's `label_names`; a LoRA model as its
    adapter (`lora.export_adapter`, with `merged` building the base model for a merged copy)."""
    module = engine.module
    if is_peft_model(module):
        export_adapter(engine, tokenizer, path, env.is_main, label_names, merged)
        _barrier()
        return
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
    _barrier()
