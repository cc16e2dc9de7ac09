"""`ftft reference` and `ftft train`: the commands that train models (also reached through `launch/*.py`)."""

from __future__ import annotations

import click

from . import cli, executor_options

CONFIG_HELP = "YAML/JSON run config; options given here override it."


def _common_options(fn):
    """Options every training command shares, mapped onto config fields."""
    for decorator in reversed(
        [
            click.argument("config", required=False, type=click.Path(dir_okay=False)),
            click.option("--model", help="minilm, mpnet, tiny-bert, a Hugging Face name or a local path."),
            click.option("--num-layers", type=int, help="Keep only the first K layers of the model."),
            click.option(
                "--data", "data_source", help="embedded, a Hugging Face dataset name, or a local file/folder."
            ),
            click.option("-o", "--output-dir", type=click.Path(file_okay=False), help="Folder for the run's outputs."),
            click.option("--ds-config", help="zero0, zero1, zero2, zero3, zero3_offload or a DeepSpeed JSON path."),
            click.option(
                "--overwrite/--no-overwrite",
                default=None,
                help="Replace an earlier run's artefacts in OUTPUT_DIR (refused otherwise).",
            ),
            click.option(
                "--resume/--no-resume", default=None, help="Continue from the latest checkpoint in OUTPUT_DIR."
            ),
            click.option(
                "--set",
                "overrides",
                multiple=True,
                metavar="KEY=VALUE",
                help="Override any config field, e.g. --set lr=3e-5 --set data.embedded_train_size=2000.",
            ),
            click.option(
                "--local_rank",
                "--local-rank",
                type=int,
                hidden=True,
                help="Appended by the deepspeed launcher; the rank is read from the environment.",
            ),
        ]
    ):
        fn = decorator(fn)
    return fn


def _is_rank_zero() -> bool:
    """Whether this process prints a run's summary: rank 0 of the job that just ran."""
    import torch.distributed as dist

    return not dist.is_initialized() or dist.get_rank() == 0


def _load(config_class, config, data_source, overrides, fields: dict):
    """The run config: CONFIG's values, then the options given (their names are the config's
    fields; None: not given), then each `--set`, the `--data` source first."""
    from ..config import load_config

    overrides = list(overrides)
    if data_source is not None:
        overrides.insert(0, f"data.source={data_source}")
    return load_config(config_class, path=config, overrides=overrides, **fields)


@cli.command()
@_common_options
@click.option("--epochs", type=int, help="Epochs over the full training split.")
@click.option(
    "--eval-pass/--no-eval-pass",
    default=None,
    help="Also record an eval-mode pass over the training split after each epoch.",
)
def reference(config, data_source, overrides, local_rank, **fields):
    """Fine-tune a (cheap) reference model on the full training split and record its dynamics.

    Runs as one process, or under `deepspeed --num_gpus N launch/reference.py` on several ranks.
    """
    from ..config import ReferenceConfig
    from ..runs.reference import run_reference

    cfg = _load(ReferenceConfig, config, data_source, overrides, fields)
    store = run_reference(cfg)
    if _is_rank_zero():
        click.echo(f"dynamics: {store}")
        click.echo(f"tensorboard: {store.parent / 'tensorboard'}")


@cli.command()
@_common_options
@click.option("--subset", type=click.Path(dir_okay=False), help="Subset file from `ftft select`; omit for ERM.")
@click.option("--budget", help="steps:N, epochs:E, erm:F, flops:X or seconds:T.")
def train(config, data_source, overrides, local_rank, **fields):
    """Train the main model on a subset (FTFT) or on everything (ERM) until the budget is spent.

    Runs as one process, or under `deepspeed [--num_gpus N | --hostfile H] launch/main.py`.
    """
    from ..config import MainConfig
    from ..runs.main import run_main

    cfg = _load(MainConfig, config, data_source, overrides, fields)
    metrics = run_main(cfg)
    if _is_rank_zero():
        selected = ", ".join(f"{k}={v:.4f}" for k, v in metrics["selected"].items() if k != "step")
        click.echo(
            f"stopped by {metrics['stopped']} after {metrics['steps']} steps; "
            f"at step {metrics['selected_step']}: {selected}"
        )
        click.echo(f"outputs: {cfg.output_dir}")


@cli.command()
@click.option("-o", "--output-dir", default="runs/demo", show_default=True, type=click.Path(file_okay=False))
@click.option(
    "--set",
    "overrides",
    multiple=True,
    metavar="KEY=VALUE",
    help="Change the demo's recipe, e.g. --set methods=[erm,ftft,dm] --set seeds=[0,1].",
)
@click.option("--dry-run", is_flag=True, help="Print the cost plan of every method and stop.")
def demo(output_dir, overrides, dry_run):
    """The embedded default: the whole FTFT recipe (reference, selection, ERM and FTFT main runs
    on 2 ranks) on the built-in task, with the results table."""
    from ..demo import demo_config
    from ..pipeline import run_recipe

    _print_report(run_recipe(demo_config(output_dir, overrides), echo=click.echo, dry_run=dry_run))


@cli.command("run")
@click.argument("config", type=click.Path(dir_okay=False))
@click.option("-o", "--output-dir", type=click.Path(file_okay=False), help="Overrides the config's output_dir.")
@click.option(
    "--set",
    "overrides",
    multiple=True,
    metavar="KEY=VALUE",
    help="Override any recipe field, e.g. --set seeds=[0,1,2] --set main.lr=3e-5.",
)
@click.option(
    "--cost-target",
    type=click.FloatRange(0, 1, min_open=True),
    help="Overrides the recipe's cost_target: the most each early-stopping method may spend, as a share of "
    "ERM's FLOPs with evaluations, reference included (--set cost_target=null: no target).",
)
@click.option("--dry-run", is_flag=True, help="Print the cost plan of every method and stop.")
@executor_options
def run_cmd(config, output_dir, overrides, cost_target, dry_run, executor, detach):
    """The whole FTFT recipe with its baselines: references, selection, main runs, results table.

    Prints the cost plan first: each method's step cap and evaluations, planned from the cost target.
    Stages already done with the same config and inputs are skipped, jobs still queued or running
    re-attached to; changed or failed stages re-run.
    """
    from ..config import load_config
    from ..pipeline import RecipeConfig, run_recipe

    overrides = (*overrides, f"executor.kind={executor}") if executor else overrides
    _print_report(
        run_recipe(
            load_config(RecipeConfig, config, overrides, output_dir=output_dir, cost_target=cost_target),
            echo=click.echo,
            dry_run=dry_run,
            detach=detach,
        )
    )


def _print_report(report: dict) -> None:
    if "markdown" not in report:  # a dry run: the plan was the output
        return
    click.echo("\n" + report["markdown"])
    for key in ("table", "json", "plot", "tensorboard"):
        if key in report:
            click.echo(f"{key:>12}: {report[key]}")


@cli.command()
@click.option("--model", required=True, help="minilm, mpnet, tiny-bert, a Hugging Face name or a local path.")
@click.option("--num-layers", type=int, help="Keep only the first K layers of the model.")
@click.option("--num-labels", type=int, default=2, show_default=True, help="Classes of the task.")
@click.option(
    "--ds-config",
    default="zero2",
    show_default=True,
    help="The set-up to check: zero0, zero1, zero2, zero3, zero3_offload or a DeepSpeed JSON path.",
)
@click.option("--gpus-per-node", type=int, default=1, show_default=True)
@click.option("--nodes", type=int, default=1, show_default=True)
@click.option("--micro-batch-size", type=int, default=8, show_default=True, help="Examples per GPU per forward pass.")
@click.option("--max-length", type=int, default=512, show_default=True, help="Tokens per example.")
@click.option("--gpu-memory", type=float, help="GiB per GPU (default: this machine's GPU, if it has one).")
@click.option(
    "--lora-r", type=int, help="Plan LoRA adapters of this rank on a frozen backbone (default: full fine-tuning)."
)
@click.option(
    "--lora-target",
    multiple=True,
    help="A module name LoRA adapts (repeat it; default: every linear layer of the backbone). Needs --lora-r.",
)
def plan(
    model,
    num_layers,
    num_labels,
    ds_config,
    gpus_per_node,
    nodes,
    micro_batch_size,
    max_length,
    gpu_memory,
    lora_r,
    lora_target,
):
    """Per-GPU memory of MODEL under each ZeRO stage, from its config alone (no weights loaded).

    Parameters, gradients and optimizer states are DeepSpeed's own estimates for bf16 with Adam
    (under LoRA, for the adapters and the head; the frozen backbone adds its 16-bit weights);
    activations are the usual transformer estimate, with and without gradient checkpointing.
    Exits with an error when the chosen set-up's model states cannot fit in --gpu-memory.
    """
    import torch

    from ..config import LoraConfig
    from ..errors import FtftError
    from ..train.ds_config import read_ds_config
    from ..train.memory import GIB, check_fits, plan_memory

    if lora_target and lora_r is None:
        raise FtftError(f"--lora-target {lora_target[0]} needs --lora-r (the adapters' rank)")
    lora = None if lora_r is None else LoraConfig(r=lora_r, target_modules=lora_target or None)
    result = plan_memory(
        model,
        read_ds_config(ds_config),
        gpus_per_node,
        nodes,
        micro_batch_size,
        max_length,
        num_labels,
        num_layers,
        lora,
    )
    if gpu_memory is None and torch.cuda.is_available():
        gpu_memory = torch.cuda.get_device_properties(0).total_memory / GIB
    shape = result.shape
    click.echo(
        f"model {model!r}: {_count(shape.parameters)} parameters, largest layer "
        f"{_count(shape.largest_layer)}, {shape.num_layers} layers of width {shape.hidden_size}"
        + (f"; LoRA rank {lora_r}: {_count(shape.trainable)} of them train" if lora else "")
    )
    click.echo(
        f"{nodes} node(s) x {gpus_per_node} GPU(s); GiB per GPU; activations for a micro-batch of "
        f"{micro_batch_size} x {max_length} tokens\n"
    )
    click.echo(result.table(gpu_memory))
    if gpu_memory is not None:
        warning = check_fits(result.chosen, result.activations, gpu_memory * GIB, model)
        click.echo(
            f"\n{result.chosen.name} fits in {gpu_memory:.0f} GiB per GPU for its model states"
            + (f"; warning: {warning}" if warning else ".")
        )


def _count(number: int) -> str:
    """2.72B, 22.7M, 41.3K: a parameter count as people say it."""
    for scale, suffix in ((1e9, "B"), (1e6, "M"), (1e3, "K")):
        if number >= scale:
            return f"{number / scale:.3g}{suffix}"
    return str(number)
