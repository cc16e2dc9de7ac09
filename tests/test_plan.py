"""`ftft plan`: memory per GPU from a model's config, against DeepSpeed's estimators on the live model."""

import pytest
from deepspeed.runtime.zero.stage3 import estimate_zero3_model_states_mem_needs, model_to_params
from deepspeed.runtime.zero.stage_1_and_2 import estimate_zero2_model_states_mem_needs

from ftft_ds.errors import FtftError
from ftft_ds.train.ds_config import read_ds_config
from ftft_ds.train.memory import GIB, activation_bytes, check_fits, model_shape, plan_memory
from ftft_ds.train.models import build_model

from .helpers import in_process, refused_in_process, save_tiny_decoder

pytestmark = pytest.mark.xdist_group("test_plan")  # its module fixtures are built once, on one worker


@pytest.fixture(scope="module")
def qwen2(tmp_path_factory):
    return str(save_tiny_decoder("qwen2", tmp_path_factory.mktemp("qwen2")))


@pytest.mark.parametrize("model", ["minilm", "qwen2"])
def test_plan_from_the_config_agrees_with_deepspeed_on_the_live_model(model, qwen2):
    name = qwen2 if model == "qwen2" else model
    live_total, live_largest = model_to_params(build_model(name, 3))
    shape = model_shape(name, 3)
    assert (shape.parameters, shape.largest_layer) == (live_total, live_largest)
    gpus_per_node, nodes = 4, 2
    result = plan_memory(name, read_ds_config("zero3"), gpus_per_node, nodes, 8, 128, num_labels=3)
    plans = {p.name: p for p in result.plans}
    assert result.chosen is plans["zero3"]
    _, zero3_gpu, _ = estimate_zero3_model_states_mem_needs(
        live_total, live_largest, gpus_per_node, nodes, cpu_offload=False, cpu_offload_params=False
    )
    _, zero2_gpu = estimate_zero2_model_states_mem_needs(live_total, gpus_per_node, nodes, cpu_offload=False)
    assert plans["zero3"].model_states == int(zero3_gpu)
    assert plans["zero2"].model_states == int(zero2_gpu)
    for plan in plans.values():  # the parts add up to DeepSpeed's total
        assert plan.parameters + plan.gradients + plan.optimizer == pytest.approx(plan.model_states, abs=8)
    # Stage 1 keeps 16-bit gradients whole; offload leaves only parameters on the GPU.
    assert plans["zero1"].model_states > plans["zero2"].model_states > plans["zero2_offload"].model_states
    assert plans["zero3_offload"].model_states < plans["zero3"].model_states
    # ZeRO-3 gathers the largest layer whole: MiniLM's word embeddings are half the model, so on
    # 8 GPUs it holds more than ZeRO-2; the decoder's layers are small, so ZeRO-3 holds least.
    assert (plans["zero3"].model_states < plans["zero2"].model_states) == (model == "qwen2")


def test_checkpointing_shrinks_activations_and_fit_checks_refuse_or_warn():
    shape = model_shape("minilm", 2)
    plain = activation_bytes(shape, 8, 512, checkpointing=False)
    assert plain == 34 * 8 * 512 * 384 * 6
    assert activation_bytes(shape, 8, 512, checkpointing=True) < plain / 3
    result = plan_memory("minilm", read_ds_config("zero2"), 1, 1, 8, 512)
    states = result.chosen.model_states
    assert check_fits(result.chosen, plain, states + plain + 1, "minilm") is None
    assert "gradient_checkpointing" in check_fits(result.chosen, plain, states + 1, "minilm")
    assert states == 20 * shape.parameters  # one GPU: 2 bytes of 16-bit weights + 18 of the rest
    with pytest.raises(FtftError, match=f"needs {states / GIB:.2f} GiB per GPU for its model states under zero2"):
        check_fits(result.chosen, plain, states - 1, "minilm")


def test_plan_command_prints_every_stage_and_refuses_what_cannot_fit(qwen2):
    proc = in_process(["plan", "--model", "minilm", "--ds-config", "zero3", "--gpus-per-node", "8", "--gpu-memory", 80])
    assert proc.exit_code == 0, proc.output
    assert "22.7M parameters" in proc.output and "| zero3 (chosen) ✓ |" in proc.output
    assert "zero3 fits in 80 GiB per GPU" in proc.output
    refused = refused_in_process(["plan", "--model", qwen2, "--gpu-memory", "0.00001"])
    assert refused[-1].startswith(f"error: model '{qwen2}' needs")
    bad = refused_in_process(["plan", "--model", "minilm", "--ds-config", "zero1", "--nodes", "0"])
    assert "nodes must be a positive integer, got 0" in bad[-1]


def test_lora_plans_frozen_weights_at_their_16_bits_and_states_for_what_trains(qwen2):
    """Under LoRA the frozen backbone holds its 16-bit weights only; gradients and Adam's states
    are the trainable parameters' (counted on the live peft model)."""
    from ftft_ds.config import LoraConfig

    lora = LoraConfig(r=4)
    live = build_model(qwen2, 3, lora=lora)
    trainable = sum(p.numel() for p in live.parameters() if p.requires_grad)
    shape = model_shape(qwen2, 3, lora=lora)
    assert shape.trainable == trainable < shape.parameters / 5
    full = {p.name: p for p in plan_memory(qwen2, read_ds_config("zero2"), 2, 1, 8, 128, num_labels=3).plans}
    plans = {p.name: p for p in plan_memory(qwen2, read_ds_config("zero2"), 2, 1, 8, 128, 3, None, lora).plans}
    assert plans["zero2"].optimizer == 12 * trainable / 2 and plans["zero2"].gradients == 6 * trainable / 2
    assert plans["zero2"].parameters == 2 * shape.parameters  # every weight, 16-bit, on every GPU
    # on the GPUs, the states saved outweigh the adapters added (with offload, both keep 16-bit weights only)
    assert all(plans[name].model_states < full[name].model_states for name in ("zero1", "zero2", "zero3"))
    lines = in_process(["plan", "--model", qwen2, "--num-labels", "3", "--lora-r", "4"]).output.splitlines()
    assert "LoRA rank 4: " in lines[0] and "of them train" in lines[0]
    assert refused_in_process(["plan", "--model", qwen2, "--lora-target", "q_proj"]) == [
        "error: --lora-target q_proj needs --lora-r (the adapters' rank)"
    ]
