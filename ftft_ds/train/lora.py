"""LoRA adapters through `peft`: wrapping a classifier, naming its backbone, exporting its adapter.

A LoRA run trains the adapters `peft` adds to the backbone's linear layers and the task's
classification head; every other weight stays as the base model has it. Three things follow from
that, and each lives where it is used:
- the cost ledger counts no weight gradients for frozen weights (`cost.train_flops_per_token`);
- checkpoints hold trainable parameters and their optimizer states only (`checkpoint.Checkpointer`),
  and name the base model they need by `backbone_fingerprint`, so that a resume onto other frozen
  weights is refused rather than silently wrong;
- `model/` holds the adapter in peft's own format (`export_adapter`), small, loadable with
  `PeftModel.from_pretrained` onto the base model, and on request the merged model beside it.

The head is one of `HEAD_NAMES` on the classifier (peft's own names for sequence-classification
heads), trained in full through peft's `modules_to_save`, so that the adapter file carries it.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch

from ..config import LoraConfig
from ..errors import FtftError
from ..io import atomic_path

HEAD_NAMES = ("classifier", "score")
"""Attribute names of a sequence classifier's head (BERT-like encoders: `classifier`; decoders: `score`)."""
FINGERPRINT_BYTES = 1 << 20
"""Of each weight file, the first MiB is hashed with its name and size: a safetensors header lists
every tensor's name, shape and offset, so another checkpoint of the same size still differs there."""


def _linear_types() -> tuple:
    from transformers.pytorch_utils import Conv1D  # GPT-2's linear layers

    return (torch.nn.Linear, Conv1D)


def head_name(model: torch.nn.Module) -> str:
    """The attribute that holds `model`'s classification head."""
    for name in HEAD_NAMES:
        if isinstance(getattr(model, name, None), torch.nn.Module):
            return name
    raise FtftError(
        f"{type(model).__name__} has no classification head named {' or '.join(HEAD_NAMES)}; "
        f"LoRA needs to know which module to train in full"
    )


def apply_lora(model: torch.nn.Module, lora: LoraConfig):
    """Wrap a sequence classifier in peft's LoRA: adapters on the backbone's linear layers (all of
    them, or `lora.target_modules`), the head trained in full, every other weight frozen.

    The adapters' initial values come from the global generator, so the caller draws them from the
    weight-initialisation seed, as it does the head.
    """
    import peft

    head = head_name(model)
    linears = [name for name, module in model.named_modules() if isinstance(module, _linear_types())]
    in_head = [name for name in linears if name == head or name.startswith(head + ".")]
    backbone = [name for name in linears if name not in in_head]
    if not backbone:
        raise FtftError(f"{type(model).__name__} has no linear layers outside its head for LoRA to adapt")
    # peft matches a target by the end of a module's name, so the layers' last names reach every
    # backbone layer; the head's own linear layers (RoBERTa's `classifier.dense`) are excluded by name.
    targets = list(lora.target_modules) if lora.target_modules else sorted({n.rsplit(".", 1)[-1] for n in backbone})
    config = peft.LoraConfig(
        task_type=peft.TaskType.SEQ_CLS,
        r=lora.r,
        lora_alpha=lora.alpha,
        lora_dropout=lora.dropout,
        target_modules=targets,
        exclude_modules=in_head or None,
        modules_to_save=[head],
    )
    try:
        return peft.get_peft_model(model, config)
    except ValueError as exc:
        text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise FtftError(
            f"lora.target_modules {targets} do not fit {type(model).__name__}: {text} (its linear layers end in: "
            f"{', '.join(sorted({n.rsplit('.', 1)[-1] for n in backbone}))})"
        ) from None


def is_peft_model(model: torch.nn.Module) -> bool:
    try:
        import peft
    except ImportError:
        return False
    return isinstance(model, peft.PeftModel)


def backbone_fingerprint(source: str | None, num_layers: int | None, init_seed: int) -> dict:
    """What names the frozen weights a LoRA run trains on: the base model's folder (`source`, None
    for a model built from a config, whose weights `init_seed` draws), its depth, and a hash of its
    config and weight files' names, sizes and first MiB."""
    digest = hashlib.sha256()
    if source is None:
        digest.update(f"random init_seed={init_seed}".encode())
    else:
        folder = Path(source)
        for path in sorted(folder.iterdir()) if folder.is_dir() else ():
            if path.name == "config.json" or path.suffix in (".safetensors", ".bin", ".pt", ".pth"):
                digest.update(f"{path.name}:{path.stat().st_size}:".encode())
                with path.open("rb") as handle:
                    digest.update(handle.read(FINGERPRINT_BYTES))
    return {"source": source, "num_layers": num_layers, "sha256": digest.hexdigest()[:16]}


def check_backbone(saved: dict | None, current: dict, where: Path) -> None:
    """Refuse to resume adapters onto frozen weights other than those they were trained on."""
    if saved is None or saved == current:
        return
    raise FtftError(
        f"the checkpoint in {where} was trained on base model {saved.get('source') or 'random init'} "
        f"({saved.get('num_layers') or 'all'} layers, fingerprint {saved.get('sha256')}); this run's is "
        f"{current.get('source') or 'random init'} ({current.get('num_layers') or 'all'} layers, fingerprint "
        f"{current.get('sha256')}): resume with the same base model, or start over"
    )


def trainable_state_dict(engine) -> dict | None:
    """The trainable parameters' current values, whole, on rank 0 (None elsewhere): under ZeRO-3
    only they are gathered (a collective), never the frozen backbone."""
    import torch.distributed as dist

    if engine.zero_optimization_partition_weights():
        return engine._zero3_consolidated_16bit_state_dict(exclude_frozen_parameters=True)
    if dist.is_initialized() and dist.get_rank() != 0:
        return None
    return {name: p.detach().cpu() for name, p in engine.module.named_parameters() if p.requires_grad}


def export_adapter(engine, tokenizer, path: str | Path, is_main: bool, label_names=(), merged=None) -> None:
    """Write the adapter and the trained head in peft's format (`adapter_config.json`,
    `adapter_model.safetensors`), the tokenizer and `labels.json` to `path` (every rank calls).

    The values are the module's, in its training dtype: the very weights the run evaluated. With
    `merged` (a function that builds the base model in CPU memory), rank 0 also loads the adapter
    back onto that base with plain peft, merges it, and writes the result to `path/merged` in
    Hugging Face format.
    """
    state = trainable_state_dict(engine)
    if not is_main:
        return
    module = engine.module
    with atomic_path(path, is_dir=True) as tmp:
        module.save_pretrained(tmp, state_dict=state)
        tokenizer.save_pretrained(tmp)
        if label_names:
            (Path(tmp) / "labels.json").write_text(json.dumps({"id2label": dict(enumerate(label_names))}, indent=1))
        if merged is not None:
            from peft import PeftModel

            base = merged()
            if label_names:
                base.config.id2label = dict(enumerate(label_names))
                base.config.label2id = {name: i for i, name in enumerate(label_names)}
            full = PeftModel.from_pretrained(base, tmp).merge_and_unload()
            full.save_pretrained(Path(tmp) / "merged")
            tokenizer.save_pretrained(Path(tmp) / "merged")
