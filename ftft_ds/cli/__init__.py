"""The `ftft` command line: one click group, one module per family of commands.

Each command parses and validates its options, calls one library function and prints where its
results went. User mistakes (`FtftError`) become one line on stderr and exit code 2.
"""

from __future__ import annotations

import sys

import click

from ..errors import FtftError


class _Group(click.Group):
    """A click group that reports `FtftError`, and click's own usage errors on a command's options,
    as one `error:` line instead of a traceback or a usage block."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except FtftError as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(2)
        except click.UsageError as exc:
            command = " ".join(filter(None, ["ftft", ctx.invoked_subcommand, "--help"]))
            click.echo(f"error: {exc.format_message()} (see {command})", err=True)
            sys.exit(2)


@click.group(cls=_Group)
@click.version_option(package_name="ftft_ds")
def cli() -> None:
    """ftft: fine-tuning by transferring training dynamics, on DeepSpeed."""


def executor_options(fn):
    """`--executor` and `--detach`, for the orchestrators (`ftft run`, `ftft sweep`)."""
    fn = click.option(
        "--detach",
        is_flag=True,
        help="On SIGINT/SIGTERM leave the SLURM jobs running; the same command later re-attaches to them.",
    )(fn)
    return click.option(
        "--executor",
        type=click.Choice(["local", "slurm"]),
        help="Where runs execute (overrides executor.kind): child processes here, or SLURM jobs.",
    )(fn)


def _register() -> None:
    # Imported here so that each family of commands stays in its own module.
    from . import config_reference, dynamics_cmds, run_cmds, sweep_cmds  # noqa: F401


def main(args=None) -> None:
    """The `ftft` console script (and `launch/*.py`, which pass their command name first)."""
    _register()
    cli(args=args)
