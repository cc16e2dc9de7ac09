"""`ftft sweep` and `ftft report`: seed sweeps with early stopping, and what they show."""
from __future__ import annotations

import click

from . import cli


@cli.command()
@click.argument("config", type=click.Path(dir_okay=False))
@click.option("-o", "--output-dir", type=click.Path(file_okay=False), help="Overrides the config's output_dir.")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
              help="Override any sweep field, e.g. --set policy=halving:t=8,eta=2,min=0.125.")
def sweep(config, output_dir, overrides):
    """Run (or resume) a seed sweep: WI x DO trials stopped early by a policy."""
    from ..config import load_config
    from ..sweep.runner import SweepConfig, run_sweep

    summary = run_sweep(load_config(SweepConfig, config, overrides, output_dir=output_dir), echo=click.echo)
    click.echo(f"compute: {summary['budget_full_runs']:.2f} full runs "
               f"(policy budget {summary['policy_budget_full_runs']:.2f}); winner: trial {summary['winner']}")


@cli.command()
@click.argument("sweep_dir", type=click.Path(file_okay=False))
@click.option("--compare", metavar="POLICY",
              help="Replay this early-stopping policy on a sweep trained to the end, against full training.")
@click.option("--bootstrap", default=1000, show_default=True, type=int, help="Bootstrap resamples for the bands.")
def report(sweep_dir, compare, bootstrap):
    """Expected-max curves, seed attribution and early-stopping analyses of a finished sweep."""
    from ..sweep.report import write_sweep_report

    result = write_sweep_report(sweep_dir, compare=compare, bootstrap=bootstrap)
    click.echo(result["markdown"])
    for name, path in result["figures"].items():
        click.echo(f"{name:>9}: {path}")
