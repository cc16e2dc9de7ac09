"""`ftft sweep`, `ftft report` and `ftft status`: seed sweeps with early stopping, what they show, and
where a recipe's or a sweep's runs stand."""

from __future__ import annotations

import click

from ..errors import FtftError
from . import cli, executor_options


@cli.command()
@click.argument("config", type=click.Path(dir_okay=False))
@click.option("-o", "--output-dir", type=click.Path(file_okay=False), help="Overrides the config's output_dir.")
@click.option(
    "--set",
    "overrides",
    multiple=True,
    metavar="KEY=VALUE",
    help="Override any sweep field, e.g. --set policy=halving:t=8,eta=2,min=0.125.",
)
@executor_options
def sweep(config, output_dir, overrides, executor, detach):
    """Run (or resume) a seed sweep: WI x DO trials stopped early by a policy."""
    from ..config import load_config
    from ..sweep.runner import SweepConfig, run_sweep

    overrides = (*overrides, f"executor.kind={executor}") if executor else overrides
    summary = run_sweep(
        load_config(SweepConfig, config, overrides, output_dir=output_dir), echo=click.echo, detach=detach
    )
    click.echo(
        f"compute: {summary['budget_full_runs']:.2f} full runs "
        f"(policy budget {summary['policy_budget_full_runs']:.2f}); winner: trial {summary['winner']}"
    )


@cli.command()
@click.argument("sweep_dir", type=click.Path(file_okay=False))
@click.option(
    "--compare",
    metavar="POLICY",
    help="Replay this early-stopping policy on a sweep trained to the end, against full training.",
)
@click.option("--bootstrap", default=1000, show_default=True, type=int, help="Bootstrap resamples for the bands.")
def report(sweep_dir, compare, bootstrap):
    """Expected-max curves, seed attribution and early-stopping analyses of a finished sweep."""
    from ..sweep.report import write_sweep_report

    result = write_sweep_report(sweep_dir, compare=compare, bootstrap=bootstrap)
    click.echo(result["markdown"])
    for name, path in result["figures"].items():
        click.echo(f"{name:>9}: {path}")


@cli.command()
@click.argument("run_dir", type=click.Path(exists=True, file_okay=False))
def status(run_dir):
    """What is done, running, queued and failed in a recipe's or a sweep's folder: job ids, disk use, logs."""
    from ..jobs.status import folder_states, status_table

    rows = folder_states(run_dir)
    if not rows:
        raise FtftError(f"{run_dir} holds no stages or trials; expected the output_dir of ftft run or ftft sweep")
    click.echo(status_table(rows))
