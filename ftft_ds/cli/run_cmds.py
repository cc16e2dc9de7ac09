"""`ftft reference`: the commands that train models (also reached through `launch/*.py`)."""
from __future__ import annotations

import click

from . import cli

CONFIG_HELP = "YAML/JSON run config; options given here override it."


def _common_options(fn):
    """Options every training command shares, mapped onto config fields."""
    for decorator in reversed([
        click.argument("config", required=False, type=click.Path(dir_okay=False)),
        click.option("--model", help="minilm, tiny-bert, a Hugging Face name or a local path."),
        click.option("--num-layers", type=int, help="Keep only the first K layers of the model."),
        click.option("--data", "data_source", help="embedded, a Hugging Face dataset name, or a local file/folder."),
        click.option("-o", "--output-dir", type=click.Path(file_okay=False), help="Folder for the run's outputs."),
        click.option("--ds-config", help="zero1, zero2, zero3, zero3_offload or a DeepSpeed JSON path."),
        click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
                     help="Override any config field, e.g. --set lr=3e-5 --set data.embedded_train_size=2000."),
        click.option("--local_rank", "--local-rank", type=int, hidden=True,
                     help="Appended by the deepspeed launcher; the rank is read from the environment."),
    ]):
        fn = decorator(fn)
    return fn


def _values(config, model, num_layers, data_source, output_dir, ds_config, overrides, **extra) -> dict:
    values = dict(model=model, num_layers=num_layers, output_dir=output_dir, ds_config=ds_config, **extra)
    overrides = list(overrides)
    if data_source is not None:
        overrides.insert(0, f"data.source={data_source}")
    return dict(path=config, overrides=overrides, **values)


@cli.command()
@_common_options
@click.option("--epochs", type=int, help="Epochs over the full training split.")
@click.option("--eval-pass/--no-eval-pass", default=None,
              help="Also record an eval-mode pass over the training split after each epoch.")
def reference(config, model, num_layers, data_source, output_dir, ds_config, overrides, local_rank,
              epochs, eval_pass):
    """Fine-tune a (cheap) reference model on the full training split and record its dynamics.

    Runs as one process, or under `deepspeed --num_gpus N launch/reference.py` on several ranks.
    """
    from ..config import ReferenceConfig, load_config
    from ..reference import run_reference
    from ..train.runtime import init_distributed

    cfg = load_config(ReferenceConfig, **_values(config, model, num_layers, data_source, output_dir,
                                                 ds_config, overrides, epochs=epochs, eval_pass=eval_pass))
    env = init_distributed()
    store = run_reference(cfg, env)
    if env.is_main:
        click.echo(f"dynamics: {store}")
        click.echo(f"tensorboard: {store.parent / 'tensorboard'}")
