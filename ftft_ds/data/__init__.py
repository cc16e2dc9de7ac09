"""Data: the embedded task, loading any source into canonical splits, and tokenization."""

from .load import DataConfig, Split, content_hash, load_split, load_splits
from .task import CONSTRUCTIONS, LABEL_NAMES, generate_task, shortcut_label, vocabulary
from .tokenize import Collator, build_task_vocab, task_tokenizer, tokenize_split

__all__ = [
    "CONSTRUCTIONS",
    "Collator",
    "DataConfig",
    "LABEL_NAMES",
    "Split",
    "build_task_vocab",
    "content_hash",
    "generate_task",
    "load_split",
    "load_splits",
    "shortcut_label",
    "task_tokenizer",
    "tokenize_split",
    "vocabulary",
]
