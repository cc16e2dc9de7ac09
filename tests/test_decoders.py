"""Decoder-only LLMs as references and main models, and transfer from an encoder reference to a decoder.

The models are random, tiny and saved as real ones are (a causal-LM checkpoint and a byte-level BPE
tokenizer without a padding token), in three families whose configs and tokenizers differ.
"""

import json

import numpy as np
import pytest
import torch
import yaml

from ftft_ds.config import ReferenceConfig
from ftft_ds.data.load import DataConfig, load_split
from ftft_ds.data.tokenize import Collator, encode_texts
from ftft_ds.dynamics.select import Subset
from ftft_ds.dynamics.store import Dynamics
from ftft_ds.errors import FtftError
from ftft_ds.train.models import build_model, load_tokenizer, model_config

from .helpers import DECODER_FAMILIES, deepspeed_launch, ran_in_process, save_tiny_decoder, tail, world_of_one

pytestmark = pytest.mark.xdist_group("test_decoders")  # its module fixtures are built once, on one worker

TRAIN_SIZE = 120


@pytest.fixture(scope="module")
def decoders(tmp_path_factory):
    folder = tmp_path_factory.mktemp("decoders")
    return {family: str(save_tiny_decoder(family, folder / family)) for family in DECODER_FAMILIES}


@pytest.mark.parametrize("family", DECODER_FAMILIES)
def test_pooling_is_right_whichever_side_pads(decoders, family):
    """A padded batch gives each example the logits it gets alone, padded left or right."""
    path = decoders[family]
    tokenizer = load_tokenizer(path)
    assert tokenizer.pad_token_id is not None
    model = build_model(path, 3, init_seed=1).eval()
    assert model.config.pad_token_id == tokenizer.pad_token_id
    encoded = encode_texts(
        tokenizer,
        ["the dog saw the cat", "the tall doctor"],
        ["indeed the dog saw", "perhaps the short doctor met the owl near the park"],
        40,
    )
    with torch.no_grad():
        alone = torch.cat([model(input_ids=torch.tensor([ids])).logits for ids in encoded["input_ids"]])
        for side in ("right", "left"):
            tokenizer.padding_side = side
            batch = Collator(tokenizer)(
                [
                    {"input_ids": ids, "attention_mask": mask, "labels": 0, "index": i}
                    for i, (ids, mask) in enumerate(zip(encoded["input_ids"], encoded["attention_mask"]))
                ]
            )
            assert (batch["attention_mask"] == 0).any()  # the short example really is padded
            padded = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
            torch.testing.assert_close(padded, alone, atol=1e-5, rtol=1e-5)


def test_pairs_are_kept_apart_without_a_pair_template(decoders):
    tokenizer = load_tokenizer(decoders["gpt_neox"])
    newline = tokenizer("\n", add_special_tokens=False)["input_ids"]
    ids = encode_texts(tokenizer, ["the dog"], ["the cat"], 40)["input_ids"][0]
    assert (
        ids
        == tokenizer("the dog", add_special_tokens=False)["input_ids"]
        + newline
        + tokenizer("the cat", add_special_tokens=False)["input_ids"]
    )
    bert = load_tokenizer("tiny-bert")  # [SEP] already marks the pair: nothing added
    assert encode_texts(bert, ["the dog"], ["the cat"], 40)["input_ids"] == bert(["the dog"], ["the cat"])["input_ids"]


@pytest.mark.parametrize("family", DECODER_FAMILIES)
def test_truncated_decoder_keeps_its_first_pretrained_layers(decoders, family):
    path = decoders[family]
    full, cut = build_model(path, 3), build_model(path, 3, num_layers=1)
    assert cut.config.num_hidden_layers == 1
    assert len(getattr(cut.config, "layer_types", None) or [None]) == 1
    full_weights, cut_weights = full.state_dict(), cut.state_dict()
    kept = [name for name in cut_weights if ".0." in name]
    assert kept and all(torch.equal(cut_weights[name], full_weights[name]) for name in kept)
    assert not any(".1." in name for name in cut_weights)
    with pytest.raises(FtftError, match="between 1 and 3"):
        model_config(path, 3, num_layers=4)


def test_saved_head_of_another_size_is_replaced_with_one_warning(decoders, tmp_path, capfd):
    two_labels = build_model(decoders["llama"], 2, init_seed=1)
    two_labels.save_pretrained(tmp_path)
    load_tokenizer(decoders["llama"]).save_pretrained(tmp_path)
    capfd.readouterr()

    three = build_model(str(tmp_path), 3, init_seed=1)
    warning = capfd.readouterr().err.strip().splitlines()
    assert warning == [
        f"warning: model '{tmp_path}' was saved with a 2-label classification head; the data "
        "has 3 labels, so a new head is initialised (from init_seed)"
    ]
    assert three.score.weight.shape[0] == 3
    same = build_model(str(tmp_path), 2, init_seed=5)  # a matching head is kept, whatever the seed
    assert capfd.readouterr().err == ""
    torch.testing.assert_close(same.score.weight, two_labels.score.weight)


def test_gradient_checkpointing_gives_the_same_gradients(decoders):
    path = decoders["llama"]
    batch = {"input_ids": torch.tensor([[5, 9, 30, 7, 2]]), "labels": torch.tensor([1])}
    grads = []
    for checkpointing in (False, True):
        model = build_model(path, 3, init_seed=3, attn_implementation="eager", gradient_checkpointing=checkpointing)
        model.train()
        model(**batch).loss.backward()
        grads.append([p.grad.clone() for p in model.parameters() if p.grad is not None])
    assert len(grads[0]) == len(grads[1])
    for plain, recomputed in zip(*grads):
        torch.testing.assert_close(plain, recomputed)
    with pytest.raises(FtftError, match="attn_implementation must be one of"):
        ReferenceConfig(model=path, attn_implementation="fast")


@pytest.mark.launcher
def test_decoder_reference_records_dynamics_on_one_and_two_ranks(decoders, tmp_path):
    split = load_split(DataConfig(embedded_train_size=TRAIN_SIZE), "train")
    args = [
        "--model",
        decoders["qwen2"],
        "--num-layers",
        "2",
        "--set",
        f"data.embedded_train_size={TRAIN_SIZE}",
        "--set",
        "micro_batch_size=8",
        "--set",
        "lr=1e-3",
        "--epochs",
        "2",
    ]
    with world_of_one():
        ran_in_process(["reference", *args, "-o", tmp_path / "one"])
    two = deepspeed_launch("launch/reference.py", [*args, "-o", tmp_path / "two"])
    assert two.returncode == 0, tail(two)
    for folder, world_size in (("one", 1), ("two", 2)):
        dynamics = Dynamics.load(tmp_path / folder / "dynamics")
        assert dynamics.uid_strings() == list(split.dataset["uid"])
        assert dynamics.logits.shape == (TRAIN_SIZE, 2, 3) and np.isfinite(dynamics.logits).all()
        assert dynamics.manifest["world_size"] == world_size


@pytest.mark.launcher
def test_encoder_reference_chooses_the_subset_of_a_zero3_decoder_main_run(decoders, tmp_path):
    """FTFT across families and tokenizers: tiny-bert (WordPiece) picks, a Llama (byte-level BPE) trains."""
    recipe = {
        "output_dir": str(tmp_path / "out"),
        "data": {"embedded_train_size": TRAIN_SIZE},
        "reference": {"model": "tiny-bert", "epochs": 3, "micro_batch_size": 8, "lr": 1.0e-3},
        "main": {
            "model": decoders["llama"],
            "ds_config": "zero3",
            "micro_batch_size": 8,
            "lr": 1.0e-3,
            "erm_epochs": 1,
            "gradient_checkpointing": True,
        },
        "methods": ["ftft"],
        "seeds": [0],
        "num_ranks": 2,
        "reference_gate": "off",
        "cost_target": None,  # a reference trained as long as ERM on a tiny task: cost is not the question here
        "early_stopping": {"patience": 2, "evals": 4},
    }
    (tmp_path / "recipe.yaml").write_text(yaml.safe_dump(recipe))
    ran_in_process(["run", tmp_path / "recipe.yaml"])
    out = tmp_path / "out"
    subset = Subset.load(next((out / "select").glob("*/subset.json")))
    main = out / "main" / "ftft" / "seed0"
    metrics = json.loads((main / "metrics.json").read_text())
    assert metrics["zero_stage"] == 3 and metrics["world_size"] == 2
    assert metrics["train_rows"] == len(subset.uids) == round(0.33 * TRAIN_SIZE)
    run_config = json.loads((main / "run_config.json").read_text())
    assert run_config["model"] == decoders["llama"] and run_config["subset"].endswith("subset.json")


@pytest.mark.launcher
def test_decoder_trains_under_zero3_with_cpu_offload(decoders, tmp_path):
    from transformers import AutoModelForSequenceClassification

    out = tmp_path / "offload"
    proc = deepspeed_launch(
        "launch/main.py",
        [
            "--model",
            decoders["llama"],
            "--ds-config",
            "zero3_offload",
            "--budget",
            "steps:4",
            "-o",
            out,
            "--set",
            f"data.embedded_train_size={TRAIN_SIZE}",
            "--set",
            "micro_batch_size=8",
            "--set",
            "data.eval_splits=[dev]",
        ],
    )
    assert proc.returncode == 0, tail(proc)
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["steps"] == 4 and metrics["zero_stage"] == 3
    assert all(n < 0.6 * metrics["num_parameters"] for n in metrics["parameters_per_rank"])
    exported = AutoModelForSequenceClassification.from_pretrained(out / "model")
    assert type(exported).__name__ == "LlamaForSequenceClassification"
    assert exported.config.pad_token_id == load_tokenizer(decoders["llama"]).pad_token_id
    assert all(torch.isfinite(p).all() for p in exported.parameters())
