"""DeepSpeed config resolution: "auto" filling, batch arithmetic and bad configs."""

import json

import pytest

from ftft_ds.errors import FtftError
from ftft_ds.train.ds_config import MIN_BUCKET_ELEMENTS, TrainArgs, find_ds_config, resolve_ds_config


def args(**kw):
    base = dict(
        micro_batch_size=4,
        grad_accum=2,
        world_size=3,
        lr=2e-5,
        weight_decay=0.01,
        warmup_steps=10,
        total_steps=100,
        hidden_size=32,
    )
    base.update(kw)
    return TrainArgs(**base)


@pytest.mark.parametrize("name", ["zero0", "zero1", "zero2", "zero3", "zero3_offload"])
def test_bundled_configs_resolve_without_auto(name):
    cfg = resolve_ds_config(name, args())
    assert cfg["train_batch_size"] == 4 * 2 * 3
    assert cfg["train_micro_batch_size_per_gpu"] == 4
    assert cfg["gradient_accumulation_steps"] == 2
    assert cfg["gradient_clipping"] == 1.0
    assert cfg["optimizer"]["params"]["lr"] == 2e-5
    assert cfg["scheduler"]["params"]["warmup_num_steps"] == 10
    assert cfg["scheduler"]["params"]["total_num_steps"] == 100
    assert "auto" not in json.dumps(cfg)


@pytest.mark.cpu_only
@pytest.mark.parametrize("name", ["zero1", "zero3_offload"])
def test_bf16_auto_is_off_without_a_gpu(name):
    assert resolve_ds_config(name, args())["bf16"]["enabled"] is False


def test_zero_buckets_follow_hidden_size_above_a_floor():
    small = resolve_ds_config("zero3", args(hidden_size=64))["zero_optimization"]
    assert small["reduce_bucket_size"] == small["stage3_prefetch_bucket_size"] == MIN_BUCKET_ELEMENTS
    assert small["stage3_param_persistence_threshold"] == 640
    large = resolve_ds_config("zero3", args(hidden_size=8192))["zero_optimization"]
    assert large["reduce_bucket_size"] == 8192 * 8192
    assert large["stage3_prefetch_bucket_size"] == int(0.9 * 8192 * 8192)


@pytest.mark.parametrize("name", ["zero1", "zero2", "zero3", "zero3_offload"])
def test_bf16_accumulates_gradients_in_fp32(name):
    assert resolve_ds_config(name, args(bf16=True))["data_types"]["grad_accum_dtype"] == "fp32"
    assert "data_types" not in resolve_ds_config(name, args(bf16=False))


def test_adam_needs_no_compiled_kernel_unless_asked(tmp_path):
    for name in ("zero2", "zero3_offload"):
        assert resolve_ds_config(name, args())["optimizer"]["params"]["torch_adam"] is True
    # Under optimizer offload DeepSpeed would refuse a PyTorch optimizer without this.
    assert resolve_ds_config("zero3_offload", args())["zero_force_ds_cpu_optimizer"] is False
    assert "zero_force_ds_cpu_optimizer" not in resolve_ds_config("zero2", args())
    own = json.loads(find_ds_config("zero3_offload").read_text())
    own["optimizer"]["params"]["torch_adam"] = False
    path = tmp_path / "ds.json"
    path.write_text(json.dumps(own))
    cfg = resolve_ds_config(str(path), args())
    assert cfg["optimizer"]["params"]["torch_adam"] is False and "zero_force_ds_cpu_optimizer" not in cfg


def test_explicit_batch_that_disagrees_is_refused(tmp_path):
    path = tmp_path / "ds.json"
    path.write_text(
        json.dumps(
            {"train_batch_size": 7, "train_micro_batch_size_per_gpu": "auto", "gradient_accumulation_steps": "auto"}
        )
    )
    with pytest.raises(FtftError, match="train_batch_size=7"):
        resolve_ds_config(str(path), args())


def test_explicit_value_that_agrees_is_kept(tmp_path):
    path = tmp_path / "ds.json"
    path.write_text(json.dumps({"train_batch_size": 24, "gradient_clipping": 0.5}))
    cfg = resolve_ds_config(str(path), args())
    assert cfg["train_batch_size"] == 24 and cfg["gradient_clipping"] == 0.5


def test_malformed_and_missing_configs(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(FtftError, match="not valid JSON"):
        resolve_ds_config(str(bad), args())
    with pytest.raises(FtftError, match="zero9.*zero1"):
        find_ds_config("zero9")
    with pytest.raises(FtftError, match="not found"):
        find_ds_config(str(tmp_path / "missing.json"))


def test_unfillable_auto_is_named(tmp_path):
    path = tmp_path / "ds.json"
    path.write_text(json.dumps({"fancy": {"knob": "auto"}}))
    with pytest.raises(FtftError, match="fancy.knob"):
        resolve_ds_config(str(path), args())


def test_zero_batch_is_refused():
    with pytest.raises(FtftError, match="micro_batch_size"):
        resolve_ds_config("zero1", args(micro_batch_size=0))


@pytest.mark.cpu_only
def test_adam_on_cpu_runs_pytorchs_fused_kernel_unless_the_config_names_one(tmp_path):
    import torch

    params = resolve_ds_config("zero0", args(grad_accum=1, world_size=1))["optimizer"]["params"]
    assert params["fused"] is True and "foreach" not in params
    # The kernel trains: the same weights every time, near the per-tensor loop's (it rounds its own way).
    kwargs = {k: params[k] for k in ("lr", "betas", "eps", "weight_decay")}
    weights = [torch.randn(5, 3, generator=torch.Generator().manual_seed(i)) for i in range(4)]
    trained = []
    for options in ({"fused": True}, {"fused": True}, {"foreach": False}):
        tensors = [w.clone().requires_grad_() for w in weights]
        optimizer = torch.optim.AdamW(tensors, **options, **kwargs)
        for step in range(3):
            sum(((t * (step + 1)) ** 2).sum() for t in tensors).backward()
            optimizer.step()
            optimizer.zero_grad()
        trained.append(tensors)
    assert all(torch.equal(a, b) for a, b in zip(trained[0], trained[1]))
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(trained[0], trained[2]))
    # A config's own choice is kept (PyTorch refuses fused and foreach together).
    for name in ("fused", "foreach"):
        own = json.loads(find_ds_config("zero0").read_text())
        own["optimizer"]["params"][name] = True
        path = tmp_path / f"{name}.json"
        path.write_text(json.dumps(own))
        chosen = resolve_ds_config(str(path), args())["optimizer"]["params"]
        assert chosen[name] is True and ({"fused", "foreach"} - {name}).isdisjoint(chosen)
