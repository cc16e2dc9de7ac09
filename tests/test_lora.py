"""LoRA main runs: adapters train and the backbone does not, FLOPs as an independent counter counts
them, checkpoints the size of the adapter that resume exactly, and an adapter that plain `peft`
loads onto the base model and that predicts like the run's selected step."""

import json

import numpy as np
import pytest
import torch

from ftft_ds.config import LoraConfig, MainConfig, load_config
from ftft_ds.data.load import DataConfig, load_split
from ftft_ds.data.tokenize import Collator, tokenize_split
from ftft_ds.errors import FtftError
from ftft_ds.runs.main import run_main
from ftft_ds.train.cost import train_flops_per_token
from ftft_ds.train.evaluate import classification_metrics
from ftft_ds.train.lora import apply_lora
from ftft_ds.train.models import build_model, count_flops_parameters, load_tokenizer

from .helpers import assert_same_losses, deepspeed_launch, save_tiny_decoder, tail
from .test_core import _config as core_config

pytestmark = pytest.mark.xdist_group("test_lora")  # its module fixtures are built once, on one worker


def _config(out, **fields):
    """test_core's tiny-bert main run, with rank-4 adapters at a learning rate adapters take."""
    return core_config(
        out, **{"lr": 1e-2, "lora": {"r": 4}, "data": {"embedded_train_size": 96, "eval_splits": ["dev"]}, **fields}
    )


def _base_name(name: str) -> str:
    """The base model's name of a parameter of peft's LoRA model: `base_model.model.X.base_layer.weight`
    for an adapted layer, `base_model.model.X.original_module.weight` for the head's frozen original."""
    return name.removeprefix("base_model.model.").replace(".base_layer.", ".").replace(".original_module.", ".")


def _losses(out) -> list:
    return [
        (r["step"], r["train/loss"])
        for r in map(json.loads, (out / "log.jsonl").read_text().splitlines())
        if "train/loss" in r
    ]


def test_adapters_and_head_train_while_the_backbone_stays_bit_identical(world, tmp_path):
    trained = {}

    def keep_weights(trainer):
        trained.update({name: p.detach().clone() for name, p in trainer.engine.module.named_parameters()})

    out = tmp_path / "run"
    minilm = {"model": "minilm", "lr": 1e-3, "data": {"embedded_train_size": 200, "eval_splits": ["dev"]}}
    run_main(_config(out, budget="steps:48", **minilm), world, on_step_end=keep_weights)
    initial = dict(build_model("minilm", 3, init_seed=0).named_parameters())
    adapters = {name: p for name, p in trained.items() if ".lora_" in name}
    head = {name: p for name, p in trained.items() if ".modules_to_save." in name}
    backbone = {_base_name(name): p for name, p in trained.items() if name not in adapters and name not in head}
    assert adapters and head and set(backbone) == set(initial)  # every base weight is there, frozen
    assert all(torch.equal(p, initial[name]) for name, p in backbone.items())
    lora_b = [p for name, p in adapters.items() if ".lora_B." in name]
    assert lora_b and all(p.abs().sum() > 0 for p in lora_b)  # initialised at zero, so B learnt
    assert not torch.equal(
        head["base_model.model.classifier.modules_to_save.default.weight"], initial["classifier.weight"]
    )
    losses = [loss for _, loss in _losses(out)]
    assert np.mean(losses[-8:]) < np.mean(losses[:8]) - 0.1
    cost = json.loads((out / "cost.json").read_text())
    assert 0 < cost["trainable_flops_parameters"] < cost["flops_parameters"]
    assert (
        cost["train_flops"]
        == train_flops_per_token(cost["flops_parameters"], cost["trainable_flops_parameters"]) * cost["train_tokens"]
    )


@pytest.mark.parametrize("lora", [None, LoraConfig()], ids=["full", "lora"])
def test_training_flops_per_token_agree_with_an_independent_flop_counter(lora):
    """`torch.utils.flop_counter` counts the matrix multiplies autograd really runs, on an 8-layer
    BERT's layers (the head sees one token per row, which the ledger, like 6N, does not model).
    Attention's own products (`bmm`) are left out, as 6N leaves them out. What remains: the ledger
    counts biases and norms as multiply parameters, and the bottom layer's input gradients, which
    autograd skips below frozen weights: a few per cent over, where 6N would be 40% over under LoRA."""
    from torch.utils.flop_counter import FlopCounterMode
    from transformers import AutoModelForSequenceClassification, BertConfig

    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=100, hidden_size=64, num_hidden_layers=8, num_attention_heads=4, intermediate_size=128, num_labels=3
    )
    model = AutoModelForSequenceClassification.from_config(config, attn_implementation="eager")
    if lora is not None:
        model = apply_lora(model, lora)
    ids = torch.randint(5, 100, (4, 64))  # no padding: every token counts
    with FlopCounterMode(display=False) as counter:
        model(input_ids=ids, attention_mask=torch.ones_like(ids), labels=torch.tensor([0, 1, 2, 0])).loss.backward()
    counts = counter.get_flop_counts()
    layers = next(key for key in counts if key.endswith("bert.encoder"))
    counted = sum(n for op, n in counts[layers].items() if str(op).split(".")[-1] in ("mm", "addmm"))
    encoder = model.get_submodule(layers.split(".", 1)[1])
    parameters, trainable = count_flops_parameters(encoder), count_flops_parameters(encoder, trainable=True)
    assert (trainable < parameters / 4) == (lora is not None)
    ledger = train_flops_per_token(parameters, trainable) * ids.numel()
    assert 1.0 <= ledger / counted < 1.05
    if lora is not None:
        assert 6 * parameters * ids.numel() / counted > 1.35


def test_step_checkpoints_hold_the_adapter_and_a_resume_onto_another_backbone_is_refused(world, tmp_path):
    def size(folder):
        return sum(f.stat().st_size for f in folder.iterdir() if f.name.endswith("_states.pt"))

    run_main(_config(tmp_path / "lora", budget="steps:2", lora={"r": 1}), world)
    run_main(_config(tmp_path / "full", budget="steps:2", lora=None), world)
    adapter, full = (
        size(tmp_path / "lora" / "checkpoints" / "step_2"),
        size(tmp_path / "full" / "checkpoints" / "step_2"),
    )
    assert 0 < adapter < full / 10
    # tiny-bert's weights are drawn from init_seed: another seed is another backbone
    with pytest.raises(FtftError, match="trained on base model random init .* fingerprint"):
        run_main(_config(tmp_path / "lora", budget="steps:3", lora={"r": 1}, resume=True, init_seed=1), world)


def test_lora_options_are_checked():
    with pytest.raises(FtftError, match="lora.r must be at least 1, got 0"):
        load_config(MainConfig, None, ["lora.r=0"])
    with pytest.raises(FtftError, match="unknown option lora.'rank'"):
        load_config(MainConfig, None, ["lora.rank=4"])
    with pytest.raises(
        FtftError, match=r"lora.target_modules \['q_proj'\] do not fit .* end in: dense, key, query, value"
    ):
        build_model("tiny-bert", 3, lora=LoraConfig(target_modules=("q_proj",)))


# -- two ranks, ZeRO-3 ----------------------------------------------------------------------------

ZERO3_ARGS = [
    "--model", "minilm", "--ds-config", "zero3",
    "--set", "data.embedded_train_size=200", "--set", "data.eval_splits=[dev]",
    "--set", "micro_batch_size=4", "--set", "lr=1e-3", "--set", "log_every=1", "--set", "lora={r: 4}",
    "--set", "eval_every=4", "--set", "select_best=true", "--set", "erm_epochs=1",
]  # fmt: skip


@pytest.fixture(scope="module")
def zero3_runs(tmp_path_factory):
    """On 2 ranks under ZeRO-3: 16 steps straight (adapter and merged model exported), and 8 steps
    then resumed to 16."""
    root = tmp_path_factory.mktemp("lora_zero3")
    for name, budget, extra in (
        ("straight", "steps:16", ["--set", "lora.export_merged=true"]),
        ("resumed", "steps:8", []),
        ("resumed", "steps:16", ["--set", "resume=true"]),
    ):
        proc = deepspeed_launch("launch/main.py", [*ZERO3_ARGS, "--budget", budget, *extra, "-o", root / name])
        assert proc.returncode == 0, tail(proc)
    return root


def _predict(model, tokenizer, split) -> np.ndarray:
    rows = tokenize_split(split, tokenizer, 64)
    collate = Collator(tokenizer)
    with torch.no_grad():
        batches = [collate([rows[i] for i in range(s, min(s + 16, len(rows)))]) for s in range(0, len(rows), 16)]
        logits = [model(**{k: v for k, v in b.items() if k not in ("labels", "index")}).logits for b in batches]
    return classification_metrics(torch.cat(logits).argmax(-1).numpy(), np.asarray(rows["labels"]), split.num_labels)


def test_zero3_lora_run_resumes_exactly_and_exports_an_adapter_plain_peft_loads(zero3_runs):
    from peft import PeftModel
    from transformers import AutoModelForSequenceClassification

    straight, resumed = zero3_runs / "straight", zero3_runs / "resumed"
    assert_same_losses(_losses(straight), _losses(resumed))
    metrics = json.loads((straight / "metrics.json").read_text())
    selected = metrics["selected"]
    assert metrics["selected_step"] < 16 and selected["dev/mcc"] > 0.05  # not one class, and an earlier step
    # the adapter, in peft's format, with plain peft onto the base model as it ships; B, zero at
    # first, learnt on every adapted layer
    from safetensors.torch import load_file

    adapter = load_file(straight / "model" / "adapter_model.safetensors")
    lora_b = [t for name, t in adapter.items() if ".lora_B." in name]
    assert len(lora_b) == 6 * 6 + 1 and all(t.abs().sum() > 0 for t in lora_b)  # 6 per layer, and the pooler
    config = json.loads((straight / "model" / "adapter_config.json").read_text())
    base = AutoModelForSequenceClassification.from_pretrained(config["base_model_name_or_path"], num_labels=3)
    dev = load_split(DataConfig(embedded_train_size=200), "dev")
    tokenizer = load_tokenizer("minilm")
    merged = AutoModelForSequenceClassification.from_pretrained(straight / "model" / "merged")
    for exported in (PeftModel.from_pretrained(base, straight / "model"), merged):
        scores = _predict(exported.eval(), tokenizer, dev)
        assert scores["accuracy"] == pytest.approx(selected["dev/accuracy"], abs=1e-9)
        assert scores["mcc"] == pytest.approx(selected["dev/mcc"], abs=1e-6)
    assert merged.config.id2label[0] == dev.label_names[0]
    # checkpoints: adapters, head and their optimizer states, a sliver of the model's 16 bytes per parameter
    step = straight / "checkpoints" / "step_16"
    saved = sum(f.stat().st_size for f in step.iterdir() if f.name.endswith("_states.pt"))
    assert saved < metrics["num_parameters"] * 16 / 10


def test_decoder_lora_trains_on_two_ranks_under_zero2(tmp_path):
    """The tiny Llama: adapters on its projections, the new `score` head trained in full, and an
    adapter that plain peft loads onto the saved causal-LM checkpoint."""
    from peft import PeftModel
    from transformers import AutoModelForSequenceClassification

    base = save_tiny_decoder("llama", tmp_path / "llama")
    out = tmp_path / "run"
    proc = deepspeed_launch(
        "launch/main.py",
        [
            "--model", base, "--ds-config", "zero2", "--budget", "steps:12",
            "--set", "data.embedded_train_size=200", "--set", "data.eval_splits=[dev]",
            "--set", "micro_batch_size=4", "--set", "lr=1e-2", "--set", "lora={r: 4}", "-o", out,
        ],
    )  # fmt: skip
    assert proc.returncode == 0, tail(proc)
    config = json.loads((out / "model" / "adapter_config.json").read_text())
    assert set(config["target_modules"]) == {
        "q_proj",
        "k_proj",
        "v_proj",
        "o_proj",
        "gate_proj",
        "up_proj",
        "down_proj",
    }
    assert "score" in config["modules_to_save"]
    base_model = AutoModelForSequenceClassification.from_pretrained(base, num_labels=3)
    base_model.config.pad_token_id = 1
    model = PeftModel.from_pretrained(base_model, out / "model").eval()
    dev = load_split(DataConfig(embedded_train_size=200), "dev")
    metrics = json.loads((out / "metrics.json").read_text())
    assert _predict(model, load_tokenizer(str(base)), dev)["accuracy"] == pytest.approx(
        metrics["selected"]["dev/accuracy"], abs=1e-9
    )
