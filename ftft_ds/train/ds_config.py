"""DeepSpeed configs: find them, read them, and fill their `"auto"` values from the training arguments.

The rules follow what Hugging Face users expect from `transformers`' DeepSpeed integration: `"auto"`
takes the value of the matching training argument, an explicit value must agree with it, and
`train_batch_size` is micro-batch × gradient accumulation × world size.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass
from pathlib import Path

import torch

from ..errors import FtftError, warn

_PACKAGE = Path(__file__).resolve().parents[1]
BUNDLED_DIR = _PACKAGE / "ds_configs" if (_PACKAGE / "ds_configs").is_dir() else _PACKAGE.parent / "ds_configs"
"""The bundled configs: inside the installed package (a wheel), else the source tree's ds_configs/."""


@dataclass(frozen=True)
class TrainArgs:
    """The training arguments that DeepSpeed's `"auto"` values are filled from."""

    micro_batch_size: int
    grad_accum: int
    world_size: int
    lr: float
    weight_decay: float
    warmup_steps: int
    total_steps: int
    hidden_size: int | None = None
    bf16: bool | None = None  # None: use bf16 when a CUDA device supports it

    @property
    def global_batch_size(self) -> int:
        return self.micro_batch_size * self.grad_accum * self.world_size


def find_ds_config(name_or_path: str) -> Path:
    """`zero2` names a bundled config in ds_configs/; anything else is a path to a JSON file."""
    path = Path(name_or_path)
    if not path.suffix and not path.exists():
        path = BUNDLED_DIR / f"{name_or_path}.json"
        if not path.is_file():
            bundled = sorted(p.stem for p in BUNDLED_DIR.glob("*.json"))
            raise FtftError(
                f"DeepSpeed config {name_or_path!r} not found; expected a JSON file or one of: "
                f"{', '.join(bundled) or '(no bundled configs found)'}"
            )
    if not path.is_file():
        raise FtftError(f"DeepSpeed config file not found: {path}")
    return path


def read_ds_config(name_or_path: str) -> dict:
    """Read a DeepSpeed config, turning a malformed one into one clear line."""
    path = find_ds_config(name_or_path)
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise FtftError(f"DeepSpeed config {path} is not valid JSON ({exc})") from None
    if not isinstance(config, dict):
        raise FtftError(f"DeepSpeed config {path} must be a JSON object, not {type(config).__name__}")
    return config


def zero_stage(config: dict) -> int:
    return int(config.get("zero_optimization", {}).get("stage", 0))


def _fill(node: dict, key: str, value, where: str) -> None:
    """Put `value` where the config says "auto" (or nothing); insist that explicit values agree."""
    current = node.get(key, "auto")
    if current == "auto" or value is None:
        if current == "auto" and value is not None:
            node[key] = value
        return
    if isinstance(value, float) or isinstance(current, float):
        agrees = abs(float(current) - float(value)) <= 1e-12 * max(1.0, abs(float(value)))
    else:
        agrees = current == value
    if not agrees:
        raise FtftError(
            f"DeepSpeed config sets {where}{key}={current!r} but the training arguments give {value!r}; "
            f'set it to "auto" or make them agree'
        )


MIN_BUCKET_ELEMENTS = 25 * 2**20 // 2
"""The fewest elements an `"auto"` ZeRO bucket holds: 25 MiB of bf16 values, PyTorch DDP's bucket
size. Hugging Face's hidden² rule alone gives MiniLM 147k-element buckets, hundreds of tiny
all-reduces per step, each paying a cross-node latency."""


def _bf16_available() -> bool:
    """Whether the GPU computes in bf16 natively. `torch.cuda.is_bf16_supported()` also says yes
    where bf16 is only emulated (V100, T4), which is slower than fp32 there."""
    if not torch.cuda.is_available():
        return False
    if torch.version.hip:
        return torch.cuda.is_bf16_supported()
    return torch.cuda.get_device_capability() >= (8, 0)


def check_ds_config(config: dict) -> None:
    """Refuse, in one line each, the values DeepSpeed would only trip over mid-initialisation:
    a ZeRO stage that is not 0-3 and an optimizer type it cannot build."""
    from deepspeed.runtime.config import DEEPSPEED_OPTIMIZERS

    stage = config.get("zero_optimization", {}).get("stage", 0)
    if isinstance(stage, bool) or stage not in (0, 1, 2, 3):
        raise FtftError(f"DeepSpeed config's zero_optimization.stage must be 0, 1, 2 or 3, got {stage!r}")
    name = config.get("optimizer", {}).get("type")
    if name is not None and not (
        isinstance(name, str)
        and (name.lower() in DEEPSPEED_OPTIMIZERS or isinstance(getattr(torch.optim, name, None), type))
    ):
        raise FtftError(
            f"DeepSpeed config's optimizer.type {name!r} is unknown; expected one of "
            f"{', '.join(DEEPSPEED_OPTIMIZERS)} or a torch.optim class name"
        )


def resolve_ds_config(name_or_path: str | dict, args: TrainArgs) -> dict:
    """A complete DeepSpeed config: `"auto"` filled from `args`, batch arithmetic checked."""
    config = copy.deepcopy(name_or_path) if isinstance(name_or_path, dict) else read_ds_config(name_or_path)
    check_ds_config(config)
    for name in ("micro_batch_size", "grad_accum", "world_size"):
        if getattr(args, name) < 1:
            raise FtftError(f"{name} must be at least 1, got {getattr(args, name)}")

    _fill(config, "train_micro_batch_size_per_gpu", args.micro_batch_size, "")
    _fill(config, "gradient_accumulation_steps", args.grad_accum, "")
    _fill(config, "train_batch_size", args.global_batch_size, "")
    if config["train_batch_size"] != args.global_batch_size:
        raise FtftError(
            f"train_batch_size {config['train_batch_size']} != micro-batch {args.micro_batch_size} "
            f"x gradient accumulation {args.grad_accum} x world size {args.world_size}"
        )
    config.setdefault("gradient_clipping", 1.0)

    optimizer = config.get("optimizer", {}).get("params")
    if optimizer is not None and str(config["optimizer"].get("type", "")).lower() in ("adam", "adamw"):
        _use_torch_adam(config, optimizer)
    if optimizer is not None:
        _fill(optimizer, "lr", args.lr, "optimizer.params.")
        _fill(optimizer, "weight_decay", args.weight_decay, "optimizer.params.")
    scheduler = config.get("scheduler", {}).get("params")
    if scheduler is not None:
        for key in ("warmup_max_lr", "max_lr"):
            if key in scheduler:
                _fill(scheduler, key, args.lr, "scheduler.params.")
        # DeepSpeed insists on at least one warm-up step.
        _fill(scheduler, "warmup_num_steps", max(1, args.warmup_steps), "scheduler.params.")
        if "total_num_steps" in scheduler:
            _fill(scheduler, "total_num_steps", max(args.total_steps, args.warmup_steps + 1, 2), "scheduler.params.")

    bf16 = config.setdefault("bf16", {"enabled": False})
    if bf16.get("enabled") == "auto":
        bf16["enabled"] = _bf16_available() if args.bf16 is None else args.bf16
    if bf16.get("enabled") is True:
        _accumulate_in_fp32(config, args.grad_accum)
    fp16 = config.get("fp16")
    if fp16 is not None and fp16.get("enabled") == "auto":
        fp16["enabled"] = False

    zero = config.get("zero_optimization", {})
    hidden = args.hidden_size
    for key, value in (
        ("reduce_bucket_size", max(hidden * hidden, MIN_BUCKET_ELEMENTS) if hidden else None),
        ("stage3_prefetch_bucket_size", max(int(0.9 * hidden * hidden), MIN_BUCKET_ELEMENTS) if hidden else None),
        ("stage3_param_persistence_threshold", 10 * hidden if hidden else None),
    ):
        if zero.get(key) == "auto":
            if value is None:
                del zero[key]  # let DeepSpeed use its own default
            else:
                zero[key] = value

    leftover = _find_auto(config)
    if leftover:
        raise FtftError(f'DeepSpeed config leaves {leftover} as "auto" and no training argument fills it')
    return config


def _use_torch_adam(config: dict, optimizer: dict) -> None:
    """PyTorch's AdamW unless the config says otherwise (`"torch_adam": false`).

    DeepSpeed's own Adam kernels (FusedAdam on GPUs, CPUAdam under optimizer offload) are compiled
    on first use: that needs nvcc and ninja matching torch's CUDA, and concurrent jobs stall on the
    shared extension lock. PyTorch's AdamW needs no build: its fused kernel on GPUs, its default
    one under offload and on CPUs (where it also resumes bit-exactly, which DeepSpeed's CPU Adam
    does not). Under offload DeepSpeed insists on its CPUAdam unless told otherwise.

    On CPUs it runs PyTorch's fused CPU kernel where this torch has one (2.4 and later), else
    `foreach`: PyTorch's default there is a loop over the tensors, each update a series of whole-
    tensor passes, which without ZeRO (one tensor per parameter, not ZeRO's flat partition) took
    37% of a 32-wide reference's step; the fused kernel does each tensor in one pass, and cut that
    reference's training loop from 43 s to 32 s (`bench/bench_trainer.py` measures steps). Fused
    and foreach round differently from each other, each the same way every run. A config that
    names either keeps it.
    """
    if not optimizer.setdefault("torch_adam", True):
        return
    offloaded = config.get("zero_optimization", {}).get("offload_optimizer", {}).get("device") in ("cpu", "nvme")
    if offloaded:
        config.setdefault("zero_force_ds_cpu_optimizer", False)
    if "fused" in optimizer or "foreach" in optimizer:
        return
    if torch.cuda.is_available():
        if not offloaded:
            optimizer["fused"] = True
    elif _fused_on_cpu():
        optimizer["fused"] = True
    else:
        optimizer["foreach"] = True


def _fused_on_cpu() -> bool:
    """Whether this torch has a fused AdamW kernel for CPU tensors."""
    try:
        from torch.utils._foreach_utils import _get_fused_kernels_supported_devices
    except ImportError:
        return False
    return "cpu" in _get_fused_kernels_supported_devices()


def _accumulate_in_fp32(config: dict, grad_accum: int) -> None:
    """Accumulate gradients in fp32 under bf16 (DeepSpeed's default is the model's dtype): summing
    micro-batches in bf16 loses low bits at every addition. ZeRO 1-3 support it; without ZeRO,
    DeepSpeed has only bf16 accumulation."""
    if zero_stage(config) >= 1:
        config.setdefault("data_types", {}).setdefault("grad_accum_dtype", "fp32")
    elif grad_accum > 1 and config.get("data_types", {}).get("grad_accum_dtype") is None:
        warn(
            f"bf16 without ZeRO accumulates the {grad_accum} micro-batches' gradients in bf16; "
            f"use a ZeRO stage (zero1 and up) to accumulate them in fp32"
        )


def _find_auto(node, where: str = "") -> str | None:
    if isinstance(node, dict):
        for key, value in node.items():
            found = _find_auto(value, f"{where}{key}.")
            if found:
                return found
    elif node == "auto":
        return where.rstrip(".")
    return None
