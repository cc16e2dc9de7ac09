"""Tokenization of canonical splits, dynamic-padding collation, and an offline task tokenizer.

Splits are tokenized once, without padding; each batch is padded to its own longest example at
collate time, which wastes far less compute than padding everything to `max_length`. Every
tokenized row keeps `index`, its row position in the split, so training dynamics recorded per batch
can be written back to the right example whatever order the sampler chose.
"""

from __future__ import annotations

import hashlib
import json
import os
from typing import Iterable, Optional

import numpy as np
import torch

from ..errors import require
from ..io import atomic_path
from .load import Split, progress_bars

SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
"""Special tokens of the word-level task tokenizer, in vocabulary order (so [PAD] is id 0)."""

_MODEL_INPUTS = ("input_ids", "token_type_ids", "attention_mask")
# Narrow storage types: a million rows of int64 token ids would be needlessly large on disk.
_INPUT_TYPES = {"input_ids": "int32", "token_type_ids": "int8", "attention_mask": "int8"}


def tokenize_split(split: Split, tokenizer, max_length: int = 128):
    """The split as a `datasets.Dataset` of model inputs, `labels` and `index`, unpadded.

    Columns: `input_ids`, `attention_mask`, `token_type_ids` (when the tokenizer makes them),
    `labels` (int64) and `index` (int64 row position in `split`). Texts are truncated to
    `max_length` tokens (longest text first for pairs).
    """
    import datasets

    has_pair = "text_pair" in split.dataset.column_names
    require(
        isinstance(max_length, int) and max_length > tokenizer.num_special_tokens_to_add(pair=has_pair),
        f"max_length must be an integer larger than the tokenizer's "
        f"{tokenizer.num_special_tokens_to_add(pair=has_pair)} special tokens, got {max_length!r}",
    )
    probe = encode_texts(tokenizer, ["a"], ["a"] if has_pair else None, max_length)
    inputs = [name for name in _MODEL_INPUTS if name in probe]
    features = datasets.Features(
        {
            **{name: datasets.Sequence(datasets.Value(_INPUT_TYPES[name])) for name in inputs},
            "labels": datasets.Value("int64"),
            "index": datasets.Value("int64"),
        }
    )

    def encode(batch, indices):
        encoded = encode_texts(tokenizer, batch["text"], batch["text_pair"] if has_pair else None, max_length)
        out = {name: encoded[name] for name in inputs}
        out["labels"] = batch["label"]
        out["index"] = indices
        return out

    with progress_bars(len(split.dataset)):
        return split.dataset.map(
            encode,
            batched=True,
            batch_size=2000,
            with_indices=True,
            remove_columns=split.dataset.column_names,
            features=features,
            desc=f"tokenize {split.name}",
            new_fingerprint=_tokenized_fingerprint(split, tokenizer, max_length),
        )


def row_lengths(tokenized) -> np.ndarray:
    """Tokens of each row of a tokenized split (its non-padding length), in row order."""
    import pyarrow.compute as pc

    return pc.list_value_length(tokenized.with_format("arrow")["input_ids"]).to_numpy().astype(np.int64)


def _tokenized_fingerprint(split: Split, tokenizer, max_length: int) -> str:
    """What the tokenized split depends on: the split's content, the tokenizer and the truncation.

    Given to `datasets`, it spares it fingerprinting `encode` by pickling the tokenizer it holds,
    which takes about 0.6 s a split even for a small one, in every process that tokenizes.
    """
    vocabulary = tokenizer.get_vocab()
    key = json.dumps(
        [
            split.fingerprint,
            type(tokenizer).__name__,
            tokenizer.name_or_path,
            len(vocabulary),
            hashlib.sha256(json.dumps(sorted(vocabulary.items())).encode()).hexdigest(),
            tokenizer.padding_side,
            tokenizer.truncation_side,
            max_length,
        ]
    )
    return hashlib.sha256(key.encode()).hexdigest()[:32]


def pair_separator(tokenizer) -> str:
    """What starts the second text of a pair: nothing if the tokenizer's template marks it, else a newline.

    Encoder tokenizers put [SEP] (or </s>) between the texts of a pair. Many decoder tokenizers
    (GPT-NeoX, Qwen2) add nothing, so "premise" + "hypothesis" would run together into one text;
    a newline keeps them apart in a way a pretrained language model has seen often.
    """
    marked = tokenizer.num_special_tokens_to_add(pair=True) > tokenizer.num_special_tokens_to_add(pair=False)
    return "" if marked else "\n"


def encode_texts(tokenizer, texts: list, pairs: Optional[list], max_length: int):
    """Token ids of texts (and their pairs), truncated to `max_length`, longest text first."""
    if pairs is not None:
        separator = pair_separator(tokenizer)
        pairs = [separator + pair for pair in pairs] if separator else pairs
    return tokenizer(texts, pairs, truncation=True, max_length=max_length)


class Collator:
    """Pads a list of tokenized examples into a batch of LongTensors.

    Sequences are padded to the batch's longest one (rounded up to `pad_to_multiple_of` if given,
    which suits tensor cores) on the tokenizer's padding side. `labels` and `index` pass through.
    """

    def __init__(self, tokenizer, pad_to_multiple_of: Optional[int] = None):
        require(
            tokenizer.pad_token_id is not None,
            f"tokenizer {getattr(tokenizer, 'name_or_path', tokenizer)!r} has no padding token",
        )
        require(
            pad_to_multiple_of is None or (isinstance(pad_to_multiple_of, int) and pad_to_multiple_of >= 1),
            f"pad_to_multiple_of must be a positive integer or None, got {pad_to_multiple_of!r}",
        )
        self.pad_values = {"input_ids": tokenizer.pad_token_id, "token_type_ids": 0, "attention_mask": 0}
        self.left = tokenizer.padding_side == "left"
        self.multiple = pad_to_multiple_of or 1

    def __call__(self, examples: list) -> dict:
        lengths = [len(example["input_ids"]) for example in examples]
        width = -(-max(lengths) // self.multiple) * self.multiple
        batch = {}
        for name, pad in self.pad_values.items():
            if name not in examples[0]:
                continue
            array = np.full((len(examples), width), pad, dtype=np.int64)
            for row, (example, length) in enumerate(zip(examples, lengths)):
                if self.left:
                    array[row, width - length :] = example[name]
                else:
                    array[row, :length] = example[name]
            batch[name] = torch.from_numpy(array)
        for name in ("labels", "index"):
            batch[name] = torch.tensor([int(example[name]) for example in examples], dtype=torch.long)
        return batch


def build_task_vocab(words: Iterable[str]) -> list:
    """A word-level BERT vocabulary: the special tokens, then the distinct lower-cased words, sorted."""
    distinct = sorted({word.lower() for word in words} - {t.lower() for t in SPECIAL_TOKENS})
    require(distinct, "a task vocabulary needs at least one word")
    return [*SPECIAL_TOKENS, *distinct]


def task_tokenizer(path: str | os.PathLike, words: Optional[Iterable[str]] = None):
    """Save a word-level BERT tokenizer for `words` to folder `path` (replaced) and return it.

    Without `words` it covers the embedded task's vocabulary. Each word is one token, so a small
    randomly initialised model can learn the task with no pretrained tokenizer and no download;
    `AutoTokenizer.from_pretrained(path)` loads it again.
    """
    from transformers import BertTokenizerFast

    if words is None:
        from .task import vocabulary

        words = vocabulary()
    vocab = build_task_vocab(words)
    with atomic_path(path, is_dir=True) as folder:
        vocab_file = folder / "vocab.txt"
        vocab_file.write_text("\n".join(vocab) + "\n", encoding="utf-8")
        # Positional: the first parameter is `vocab_file` in transformers 4 and `vocab` in 5.
        BertTokenizerFast(str(vocab_file), do_lower_case=True).save_pretrained(str(folder))
    return BertTokenizerFast.from_pretrained(str(path))
