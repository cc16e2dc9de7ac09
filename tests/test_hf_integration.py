"""FTFT from a Hugging Face `Trainer` script: the data-map callback and training on a subset."""

import numpy as np
import pytest
import torch
import transformers

from ftft_ds.config import LoraConfig
from ftft_ds.data.load import DataConfig, load_split
from ftft_ds.data.tokenize import Collator, tokenize_split
from ftft_ds.dynamics.select import Subset, select_subset
from ftft_ds.dynamics.store import Dynamics
from ftft_ds.errors import FtftError
from ftft_ds.integrations.hf import DynamicsCallback, subset_of, token_hashes
from ftft_ds.train.models import build_model, load_tokenizer

from .helpers import deepspeed_launch, forward_alone, in_process, save_without_dropout, tail

pytestmark = pytest.mark.xdist_group("test_hf_integration")  # its module fixtures are built once, on one worker

ROWS = 50  # not a multiple of the batch: the last batch of an epoch is short


@pytest.fixture(scope="module")
def data():
    split = load_split(DataConfig(embedded_train_size=ROWS), "train")
    tokenizer = load_tokenizer("tiny-bert")
    train = tokenize_split(split, tokenizer, 40).remove_columns(["index"])
    return split, tokenizer, train


def trainer_for(model, train, tokenizer, tmp_path, callback, lr: float, epochs: int = 2):
    collate = Collator(tokenizer)

    def collate_inputs(examples):
        return {k: v for k, v in collate([{**e, "index": 0} for e in examples]).items() if k != "index"}

    args = transformers.TrainingArguments(
        output_dir=str(tmp_path / "hf"),
        num_train_epochs=epochs,
        per_device_train_batch_size=8,
        learning_rate=lr,
        report_to=[],
        save_strategy="no",
        logging_strategy="no",
        use_cpu=True,
        seed=3,
        dataloader_num_workers=0,
    )
    return transformers.Trainer(
        model=model, args=args, train_dataset=train, data_collator=collate_inputs, callbacks=[callback]
    )


def test_hashes_ignore_padding_on_either_side():
    ids = torch.tensor([[5, 6, 7, 0, 0], [0, 0, 5, 6, 7], [5, 6, 7, 8, 0]])
    mask = torch.tensor([[1, 1, 1, 0, 0], [0, 0, 1, 1, 1], [1, 1, 1, 1, 0]])
    hashes = token_hashes(ids, mask).tolist()
    assert hashes[0] == hashes[1] != hashes[2]
    assert hashes[0] == token_hashes(torch.tensor([[5, 6, 7]]), None).item()


def test_hash_powers_are_one_table_per_device_whatever_the_batch_width():
    """Dynamic padding gives a new batch width almost every step: the powers must not be rebuilt."""
    from ftft_ds.integrations import hf

    widest_first = range(297, 2, -7)
    tables = {hf._powers(width, torch.device("cpu")).data_ptr() for width in widest_first}
    assert len(tables) == 1  # every narrower batch reads a slice of the same table
    expected, power = [], 1
    for _ in range(5):
        expected.append(power)
        power = (power * hf._HASH_BASE) % 2**64
    signed = [p - 2**64 if p >= 2**63 else p for p in expected]
    assert hf._powers(5, torch.device("cpu")).tolist() == signed


@pytest.mark.parametrize("lora", [None, LoraConfig()], ids=["full", "lora"])
def test_callback_records_each_rows_own_logits_every_epoch(data, tmp_path, lora):
    """With learning rate 0 and no dropout the model never changes, so every recorded logit must be
    exactly what the model gives that row alone: the rows were recognised correctly, on a plain
    model and on peft's LoRA model alike."""
    split, tokenizer, train = data
    model = build_model("tiny-bert", 3, init_seed=1, lora=lora)
    model.config.hidden_dropout_prob = model.config.attention_probs_dropout_prob = 0.0
    for module in model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
    uids = list(split.dataset["uid"])
    callback = DynamicsCallback(train, tmp_path / "dynamics", uids=uids)
    trainer_for(model, train, tokenizer, tmp_path, callback, lr=0.0).train()

    dynamics = Dynamics.load(tmp_path / "dynamics")
    assert dynamics.uid_strings() == uids and dynamics.logits.shape == (ROWS, 2, 3)
    np.testing.assert_array_equal(dynamics.labels, np.asarray(split.dataset["label"]))
    model.eval()
    with torch.no_grad():
        alone = torch.cat(
            [
                model(input_ids=torch.tensor([ids]), token_type_ids=torch.tensor([types])).logits
                for ids, types in zip(train["input_ids"], train["token_type_ids"])
            ]
        ).numpy()
    for epoch in range(2):
        np.testing.assert_allclose(dynamics.logits[:, epoch], alone, atol=1e-5)


def test_a_selected_subset_trains_in_the_trainer(data, tmp_path):
    split, tokenizer, train = data
    uids = list(split.dataset["uid"])
    callback = DynamicsCallback(train, tmp_path / "dynamics", uids=uids)
    trainer_for(build_model("tiny-bert", 3), train, tokenizer, tmp_path, callback, lr=1e-3, epochs=3).train()
    subset = select_subset(Dynamics.load(tmp_path / "dynamics"), "ambiguous", fraction=0.33)
    subset.save(tmp_path / "subset.json")

    rows = subset_of(train, tmp_path / "subset.json", uids=uids)
    assert len(rows) == 17  # 0.33 x 50 = 16.5, rounded half up
    chosen = {uids[i] for i, ids in enumerate(train["input_ids"]) if ids in rows["input_ids"]}
    assert set(Subset.load(tmp_path / "subset.json").uids) <= chosen
    trainer_for(build_model("tiny-bert", 3), rows, tokenizer, tmp_path, transformers.TrainerCallback(), lr=1e-3).train()

    with pytest.raises(FtftError, match="uids are not in the dataset"):
        subset_of(train, tmp_path / "subset.json")  # recorded with uids, asked with row numbers
    with pytest.raises(FtftError, match="needs a tokenized train_dataset with input_ids"):
        DynamicsCallback(split.dataset, tmp_path / "x")


TWO_RANK_SCRIPT = """
import sys, transformers
from ftft_ds.config import LoraConfig
from ftft_ds.data.load import DataConfig, load_split
from ftft_ds.data.tokenize import Collator, tokenize_split
from ftft_ds.integrations.hf import DynamicsCallback
from ftft_ds.train.models import load_tokenizer
from ftft_ds.train.ds_config import TrainArgs, resolve_ds_config

model_path, out = sys.argv[-2:]
split = load_split(DataConfig(embedded_train_size=51), "train")
tokenizer = load_tokenizer("tiny-bert")
train = tokenize_split(split, tokenizer, 40).remove_columns(["index"])
collate = Collator(tokenizer)
ds = resolve_ds_config("zero2", TrainArgs(micro_batch_size=8, grad_accum=1, world_size=2, lr=0.0,
                                          weight_decay=0.0, warmup_steps=1, total_steps=8))
args = transformers.TrainingArguments(output_dir=out + "/hf", num_train_epochs=2, per_device_train_batch_size=8,
                                      learning_rate=0.0, weight_decay=0.0, max_grad_norm=1.0, warmup_steps=1,
                                      deepspeed=ds, report_to=[], save_strategy="no", logging_strategy="no",
                                      use_cpu=True, dataloader_num_workers=0)
callback = DynamicsCallback(train, out + "/dynamics", uids=list(split.dataset["uid"]))
model = transformers.AutoModelForSequenceClassification.from_pretrained(model_path)  # dropout off
transformers.Trainer(model=model, args=args, train_dataset=train, callbacks=[callback],
                     data_collator=lambda rows: {k: v for k, v in collate([{**r, "index": 0} for r in rows]).items()
                                                 if k != "index"}).train()
"""


@pytest.mark.launcher
def test_callback_under_deepspeed_on_two_ranks(tmp_path):
    """51 rows on 2 ranks: each rank sees 26 (one padded repeat). At learning rate 0 with dropout
    off, the store holds each row once per epoch, with the logits one process gives that row."""
    script = tmp_path / "train_hf.py"
    script.write_text(TWO_RANK_SCRIPT)
    model = save_without_dropout(tmp_path / "model", train_rows=307)
    proc = deepspeed_launch(str(script), [model, tmp_path])
    assert proc.returncode == 0, tail(proc)
    dynamics = Dynamics.load(tmp_path / "dynamics")
    split = load_split(DataConfig(embedded_train_size=51), "train")
    assert dynamics.uid_strings() == list(split.dataset["uid"]) and dynamics.logits.shape == (51, 2, 3)
    np.testing.assert_array_equal(dynamics.labels, np.asarray(split.dataset["label"]))
    alone = forward_alone(model, split, max_length=40)
    assert len(set(alone.argmax(axis=1))) > 1  # rows mixed up would show
    for epoch in range(2):
        np.testing.assert_allclose(dynamics.logits[:, epoch], alone, atol=1e-5)
    # The store feeds `ftft select` unchanged, and selects exactly as our own selection does.
    selected = in_process(
        ["select", tmp_path / "dynamics", "--region", "ambiguous", "--fraction", "0.33", "-o", tmp_path / "subset.json"]
    )
    assert selected.exit_code == 0, selected.output
    expected = select_subset(dynamics, "ambiguous", fraction=0.33).uids
    assert Subset.load(tmp_path / "subset.json").uids == expected and len(expected) == 17
