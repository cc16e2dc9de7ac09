"""Will it fit? Per-GPU memory of a model under each ZeRO stage, before anything is loaded.

Parameters are counted from the model's config on the meta device (no weights are read or
allocated, so a 70B model is planned in a second). Model-state memory (parameters, gradients,
optimizer states) is DeepSpeed's own estimate, from `estimate_zero2_model_states_mem_needs` and
`estimate_zero3_model_states_mem_needs`: bf16/fp16 mixed precision with Adam, i.e. per parameter
2 bytes of 16-bit weights, 2 + 4 of 16- and 32-bit gradients, 4 of fp32 master weights and 8 of Adam
moments, the last three (four under ZeRO-2, all under ZeRO-3) divided among the GPUs. ZeRO-3 also
holds the largest layer gathered in full. DeepSpeed has no stage-1 estimator; stage 1 divides only
the fp32 states, so its figure is the stage-2 one with the 16-bit gradients kept whole.

Activations are not model states and DeepSpeed does not estimate them; `activation_bytes` gives
the usual transformer figure (Korthikanti et al. 2022) for a micro-batch, so that the table also
shows what gradient checkpointing saves.
"""

from __future__ import annotations

import dataclasses
from typing import Optional

import torch

from ..errors import FtftError, warn
from .models import count_parameters, meta_model

GIB = 1024**3
BYTES_16BIT_PARAMS = 2
BYTES_GRADIENTS = 2 + 4  # 16-bit gradients, their fp32 copy for the optimizer
BYTES_OPTIMIZER = 4 + 8  # fp32 master weights, Adam's two moments
ACTIVATION_BYTES_PER_TOKEN_HIDDEN = 34
"""16-bit activations a transformer layer keeps per token and hidden unit for the backward pass
(Korthikanti et al. 2022, table 2), with a fused attention kernel that never stores the score matrix."""


@dataclasses.dataclass(frozen=True)
class ModelShape:
    """What memory depends on, read from a model's config without materialising it."""

    parameters: int
    trainable: int
    """Of `parameters`, those that train (all but under LoRA): only they have gradients and
    optimizer states; frozen ones hold their 16-bit weights alone."""
    largest_layer: int
    """Parameters of the largest single module (what ZeRO-3 gathers at once)."""
    num_layers: int
    hidden_size: int


def model_shape(model: str, num_labels: int = 2, num_layers: Optional[int] = None, lora=None) -> ModelShape:
    """Count `model`'s parameters (as a sequence classifier, with LoRA's adapters if `lora`) on the
    meta device."""
    module = meta_model(model, num_labels, num_layers, lora)
    config = module.config
    parameters = count_parameters(module)
    trainable = sum(p.numel() for p in module.parameters() if p.requires_grad)
    largest = max(sum(p.numel() for p in m.parameters(recurse=False)) for m in module.modules())
    layers, hidden = getattr(config, "num_hidden_layers", None), getattr(config, "hidden_size", None)
    if not layers or not hidden:
        raise FtftError(f"model {model!r} has no num_hidden_layers/hidden_size in its config to plan with")
    return ModelShape(parameters, trainable, largest, layers, hidden)


@dataclasses.dataclass(frozen=True)
class StagePlan:
    """Per-GPU bytes of one ZeRO set-up (and CPU bytes per node when states are offloaded)."""

    name: str
    stage: int
    offload: bool
    parameters: float
    gradients: float
    optimizer: float
    model_states: int
    """DeepSpeed's estimate (or its stage-2 formula adapted, for stage 1)."""
    cpu_per_node: int

    def total(self, activations: float) -> float:
        return self.model_states + activations


def plan_stage(shape: ModelShape, stage: int, offload: bool, gpus_per_node: int, nodes: int) -> StagePlan:
    """Memory of `shape` under ZeRO `stage` (1-3), optimizer states (and ZeRO-3 parameters) on CPU if `offload`."""
    from deepspeed.runtime.zero.stage3 import estimate_zero3_model_states_mem_needs
    from deepspeed.runtime.zero.stage_1_and_2 import estimate_zero2_model_states_mem_needs

    if stage not in (1, 2, 3):
        raise FtftError(f"ZeRO stage must be 1, 2 or 3, got {stage!r}")
    if stage == 1 and offload:
        raise FtftError("DeepSpeed offloads optimizer states under ZeRO-2 and ZeRO-3 only, not stage 1")
    for name, value in (("gpus per node", gpus_per_node), ("nodes", nodes)):
        if not (isinstance(value, int) and value >= 1):
            raise FtftError(f"{name} must be a positive integer, got {value!r}")
    # DeepSpeed's estimates cover the parameters that train; frozen ones (LoRA's backbone) add
    # their 16-bit weights only: divided among the GPUs under ZeRO-3 (on the CPU with offload),
    # whole on every GPU below it.
    n, gpus = shape.trainable, gpus_per_node * nodes
    frozen = BYTES_16BIT_PARAMS * (shape.parameters - shape.trainable)
    name = f"zero{stage}" + ("_offload" if offload else "")
    if stage == 3:
        cpu, gpu, gathered = estimate_zero3_model_states_mem_needs(
            n, shape.largest_layer, gpus_per_node, nodes, cpu_offload=offload, cpu_offload_params=offload
        )
        on_gpu = 0.0 if offload else 1.0
        return StagePlan(
            name,
            3,
            offload,
            gathered + on_gpu * (BYTES_16BIT_PARAMS * n + frozen) / gpus,
            on_gpu * (BYTES_GRADIENTS - 2) * n / gpus,
            on_gpu * BYTES_OPTIMIZER * n / gpus,
            int(gpu + on_gpu * frozen / gpus),
            int(cpu + (1 - on_gpu) * frozen / nodes),
        )
    cpu, gpu = estimate_zero2_model_states_mem_needs(n, gpus_per_node, nodes, cpu_offload=offload)
    if offload:
        return StagePlan(name, stage, True, BYTES_16BIT_PARAMS * n + frozen, 0.0, 0.0, int(gpu + frozen), int(cpu))
    whole_16bit_gradients = 2 * n * (1 - 1 / gpus) if stage == 1 else 0
    gradients = BYTES_GRADIENTS * n / gpus + whole_16bit_gradients
    return StagePlan(
        name,
        stage,
        False,
        BYTES_16BIT_PARAMS * n + frozen,
        gradients,
        BYTES_OPTIMIZER * n / gpus,
        int(gpu + whole_16bit_gradients + frozen),
        int(cpu),
    )


def activation_bytes(shape: ModelShape, micro_batch_size: int, max_length: int, checkpointing: bool) -> float:
    """Activation memory of one micro-batch of `max_length`-token examples, per GPU.

    Without checkpointing every layer keeps 34 bytes per token and hidden unit; with it, each layer
    keeps only its 16-bit input and one layer at a time is recomputed in full.
    """
    per_layer = ACTIVATION_BYTES_PER_TOKEN_HIDDEN * micro_batch_size * max_length * shape.hidden_size
    if not checkpointing:
        return per_layer * shape.num_layers
    return 2 * micro_batch_size * max_length * shape.hidden_size * shape.num_layers + per_layer


def check_fits(plan: StagePlan, activations: float, gpu_memory: float, model: str) -> Optional[str]:
    """Refuse (`FtftError`) a plan whose model states exceed `gpu_memory` bytes; return a warning
    line when model states and activations together do, else None."""
    if plan.model_states > gpu_memory:
        raise FtftError(
            f"model {model!r} needs {plan.model_states / GIB:.2f} GiB per GPU for its model states under "
            f"{plan.name}, more than the {gpu_memory / GIB:.2f} GiB a GPU has; use more GPUs, a higher ZeRO "
            f"stage or offload (see `ftft plan`)"
        )
    if plan.total(activations) > gpu_memory:
        return (
            f"model {model!r} under {plan.name} needs about {plan.total(activations) / GIB:.1f} GiB per GPU "
            f"with activations, more than the {gpu_memory / GIB:.1f} GiB a GPU has: lower micro_batch_size "
            f"or max_length, or set gradient_checkpointing"
        )
    return None


def zero_setup(ds_config: dict) -> tuple[int, bool]:
    """(ZeRO stage, whether optimizer states are offloaded) of a DeepSpeed config."""
    zero = ds_config.get("zero_optimization", {})
    offload = zero.get("offload_optimizer", {}).get("device", "none") in ("cpu", "nvme")
    return zero.get("stage", 0), offload


SETUPS = ((1, False), (2, False), (3, False), (2, True), (3, True))
"""The ZeRO set-ups a plan compares: each stage on the GPUs, then stages 2 and 3 with offload."""


@dataclasses.dataclass
class MemoryPlan:
    """Every set-up's memory for one model, GPU count and micro-batch, and the chosen one."""

    model: str
    shape: ModelShape
    plans: list
    chosen: StagePlan
    activations: float
    activations_checkpointed: float

    def table(self, gpu_memory_gib: Optional[float] = None) -> str:
        """The plans as a markdown table, GiB per GPU, the chosen one marked."""

        def gib(value: float) -> str:
            return f"{value / GIB:.2f}"

        head = (
            "| ZeRO | parameters | gradients | optimizer states | model states (DeepSpeed) "
            "| + activations | + activations, checkpointed | CPU per node |"
        )
        lines = [head, "|" + "---|" * 8]
        for p in self.plans:
            mark = " (chosen)" if p.name == self.chosen.name else ""
            fits = ""
            if gpu_memory_gib is not None:
                fits = " ✓" if p.total(self.activations_checkpointed) <= gpu_memory_gib * GIB else " ✗"
            lines.append(
                f"| {p.name}{mark}{fits} | {gib(p.parameters)} | {gib(p.gradients)} | {gib(p.optimizer)} "
                f"| {gib(p.model_states)} | {gib(p.total(self.activations))} "
                f"| {gib(p.total(self.activations_checkpointed))} | {gib(p.cpu_per_node)} |"
            )
        return "\n".join(lines)


def plan_memory(
    model: str,
    ds_config: dict,
    gpus_per_node: int,
    nodes: int,
    micro_batch_size: int,
    max_length: int,
    num_labels: int = 2,
    num_layers: Optional[int] = None,
    lora=None,
) -> MemoryPlan:
    """Plan `model` (with LoRA's adapters on a frozen backbone if `lora`) under every set-up of
    `SETUPS`; the chosen one is `ds_config`'s."""
    stage, offload = zero_setup(ds_config)
    if stage not in (1, 2, 3):
        raise FtftError(f"the DeepSpeed config's ZeRO stage must be 1, 2 or 3 to plan, got {stage!r}")
    for name, value in (("micro_batch_size", micro_batch_size), ("max_length", max_length)):
        if not (isinstance(value, int) and value >= 1):
            raise FtftError(f"{name} must be a positive integer, got {value!r}")
    shape = model_shape(model, num_labels, num_layers, lora)
    plans = [plan_stage(shape, s, o, gpus_per_node, nodes) for s, o in SETUPS]
    chosen = next(p for p in plans if (p.stage, p.offload) == (stage, offload))
    return MemoryPlan(
        model,
        shape,
        plans,
        chosen,
        activation_bytes(shape, micro_batch_size, max_length, checkpointing=False),
        activation_bytes(shape, micro_batch_size, max_length, checkpointing=True),
    )


def refuse_if_it_cannot_fit(cfg, ds_config: dict, num_labels: int, world_size: int, device: torch.device) -> None:
    """Before a model is loaded onto a GPU: stop with one line if its model states cannot fit there,
    warn if its activations would tip it over. Other devices (and ZeRO stage 0) are not checked."""
    stage, _ = zero_setup(ds_config)
    if device.type != "cuda" or stage not in (1, 2, 3):
        return
    gpus_per_node = min(world_size, torch.cuda.device_count())
    result = plan_memory(
        cfg.model,
        ds_config,
        gpus_per_node,
        max(1, world_size // gpus_per_node),
        cfg.micro_batch_size,
        cfg.max_length,
        num_labels,
        cfg.num_layers,
        cfg.lora,
    )
    activations = result.activations_checkpointed if cfg.gradient_checkpointing else result.activations
    warning = check_fits(result.chosen, activations, torch.cuda.get_device_properties(device).total_memory, cfg.model)
    if warning:
        warn(warning)
