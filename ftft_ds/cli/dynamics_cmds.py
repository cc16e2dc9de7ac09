"""`ftft map`, `ftft select`, `ftft dynamics import|export`: everything that reads recorded dynamics."""

from __future__ import annotations

from pathlib import Path

import click

from ..errors import require
from . import cli

_OUT_FILE = click.Path(dir_okay=False, writable=True, path_type=Path)
_OUT_DIR = click.Path(file_okay=False, writable=True, path_type=Path)
_ANY = click.Path(path_type=Path)
_FORMATS = click.Choice(["cartography", "ftft"])


def _load_dynamics(path: Path):
    from ..dynamics.store import Dynamics

    return Dynamics.load(path)


@cli.command("map")
@click.argument("dynamics", type=_ANY)
@click.option(
    "-o",
    "--output",
    type=_OUT_FILE,
    help="Write per-example metrics here as JSON lines (cartography's td_metrics keys "
    "plus correctness_fraction, aum, label), with a manifest beside it.",
)
@click.option("--plot", type=_OUT_FILE, help="Write the data map (variability vs confidence) here as PNG.")
@click.option(
    "--tensorboard",
    type=_OUT_DIR,
    help="Also log the data map to TensorBoard event files in this directory (tag dynamics/data_map).",
)
@click.option(
    "--variability",
    type=click.Choice(["population", "ci"]),
    default="population",
    show_default=True,
    help="Population std of the gold probability, or cartography's include_ci variant.",
)
@click.option("--burn-out", type=int, metavar="E", help="Use only the first E epochs (1 <= E <= recorded epochs).")
@click.option(
    "--eval-pass",
    is_flag=True,
    help="Use the logits of the eval-mode pass recorded at each epoch end instead of the training pass.",
)
def map_cmd(dynamics: Path, output, plot, tensorboard, variability: str, burn_out, eval_pass: bool) -> None:
    """Compute the data map of the dynamics in directory DYNAMICS and print a summary."""
    from ..dynamics.metrics import compute_metrics, write_metrics_jsonl

    dyn = _load_dynamics(dynamics)
    metrics = compute_metrics(dyn, variability=variability, burn_out=burn_out, eval_pass=eval_pass)
    summary = metrics.summary()
    click.echo(
        f"{summary['examples']:,} examples, {summary['epochs']} epochs, {dyn.num_labels} classes: "
        f"mean confidence {summary['mean_confidence']:.4f}, variability {summary['mean_variability']:.4f}, "
        f"correctness {summary['mean_correctness']:.4f}, AUM {summary['mean_aum']:.4f}; "
        f"never learnt {summary['never_learnt']:,}"
    )
    if output is not None:
        click.echo(f"metrics -> {write_metrics_jsonl(metrics, output)}")
    if plot is not None or tensorboard is not None:
        from ..dynamics.plot import data_map_figure, plot_data_map

        if plot is not None:
            click.echo(f"data map -> {plot_data_map(metrics, plot)}")
        if tensorboard is not None:
            from torch.utils.tensorboard import SummaryWriter

            with SummaryWriter(log_dir=str(tensorboard)) as writer:
                writer.add_figure("dynamics/data_map", data_map_figure(metrics))
            click.echo(f"data map -> TensorBoard {tensorboard} (dynamics/data_map)")


@cli.command("select")
@click.argument("source", type=_ANY)
@click.option(
    "--region",
    required=True,
    type=click.Choice(["ambiguous", "hard", "easy", "random", "both-ends"]),
    help="ambiguous: highest variability; hard/easy: lowest/highest confidence; random: seeded "
    "sample; both-ends: half from the easy end, the rest from the hard end.",
)
@click.option("--fraction", type=float, help="Share of all examples to select, in (0, 1]; rounded half up.")
@click.option("--count", type=int, help="Number of examples to select.")
@click.option("--stratify", is_flag=True, help="Keep each label's share of the examples (largest remainder quotas).")
@click.option(
    "--burn-out", type=int, metavar="E", help="Compute metrics from the first E epochs (dynamics sources only)."
)
@click.option(
    "--variability",
    type=click.Choice(["population", "ci"]),
    help="Variability for metrics computed from dynamics (default population).",
)
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the random region.")
@click.option(
    "-o", "--output", required=True, type=_OUT_FILE, help="Write the subset (manifest and uids) here as JSON."
)
def select_cmd(
    source: Path, region: str, fraction, count, stratify: bool, burn_out, variability, seed: int, output: Path
) -> None:
    """Select a training subset from SOURCE: a dynamics directory or a metrics JSON-lines file
    (ours or cartography's td_metrics.jsonl)."""
    from ..dynamics.metrics import read_metrics_jsonl
    from ..dynamics.select import select_subset

    require(
        source.exists(), f"selection source not found: {source} (expected a dynamics directory or a metrics .jsonl)"
    )
    data = _load_dynamics(source) if source.is_dir() else read_metrics_jsonl(source)
    subset = select_subset(
        data,
        region,
        fraction=fraction,
        count=count,
        stratify=stratify,
        seed=seed,
        burn_out=burn_out,
        variability=variability,
    )
    subset.save(output)
    m = subset.manifest
    click.echo(f"selected {m['num_selected']:,} of {m['num_total']:,} examples ({region}) -> {output}")
    if "counts_per_label" in m:
        click.echo("per label: " + ", ".join(f"{k}: {v:,}" for k, v in m["counts_per_label"].items()))


@cli.group("dynamics")
def dynamics_group() -> None:
    """Convert dynamics to and from other tools' formats."""


@dynamics_group.command("import")
@click.option(
    "--from",
    "fmt",
    required=True,
    type=_FORMATS,
    help="cartography: a run directory holding training_dynamics/dynamics_epoch_<e>.jsonl; "
    "ftft: a torch file {uid: tensor (epochs, classes)}.",
)
@click.argument("source", type=_ANY)
@click.option(
    "--labels", type=_ANY, help='For --from ftft: JSON {uid: label} or JSON lines {"uid": ..., "label": ...}.'
)
@click.option(
    "--data",
    "data_source",
    help="For --from ftft: take labels from this dataset's training split instead (embedded, "
    "a Hugging Face name or a local file/folder); the store is then tied to its fingerprint.",
)
@click.option(
    "--set",
    "overrides",
    multiple=True,
    metavar="KEY=VALUE",
    help="With --data: dataset options, e.g. --set id_column=idx --set train_split=train.",
)
@click.option("-o", "--output", required=True, type=_OUT_DIR, help="Write the dynamics store to this directory.")
def import_cmd(fmt: str, source: Path, labels, data_source, overrides, output: Path) -> None:
    """Import dynamics recorded by another tool from SOURCE into a dynamics store."""
    from ..dynamics import interop

    if fmt == "cartography":
        require(
            labels is None and data_source is None,
            "--labels/--data are only for --from ftft: cartography files carry their gold labels",
        )
        dyn = interop.import_cartography(source)
    else:
        require(
            (labels is None) != (data_source is None),
            "--from ftft needs exactly one of --labels FILE or --data DATASET to know each uid's label",
        )
        if labels is not None:
            dyn = interop.import_ftft(source, interop.read_labels_by_uid(labels))
        else:
            dyn = _import_ftft_with_dataset(source, data_source, overrides)
    dyn.save(output)
    click.echo(f"{dyn.num_examples:,} examples x {dyn.num_epochs} epochs x {dyn.num_labels} classes -> {output}")


def _import_ftft_with_dataset(source: Path, data_source: str, overrides):
    """Import FTFT-format logits with labels from a dataset's training split.

    When the file covers exactly that split's uids, the store records the split's fingerprint, so
    later stages can check that they are given the same dataset.
    """
    from ..config import load_config
    from ..data.load import DataConfig, load_split
    from ..dynamics import interop

    data = load_config(DataConfig, None, [f"source={data_source}", *overrides])
    split = load_split(data, data.train_split)
    labels = split.labels_by_uid()
    dyn = interop.import_ftft(source, labels)
    if set(dyn.uid_strings()) == set(labels):
        dyn.manifest["dataset_fingerprint"] = split.fingerprint
    return dyn


@dynamics_group.command("export")
@click.option(
    "--to",
    "fmt",
    required=True,
    type=_FORMATS,
    help="cartography: a directory with training_dynamics/dynamics_epoch_<e>.jsonl; "
    "ftft: a torch file {uid: tensor (epochs, classes)}.",
)
@click.argument("dynamics", type=_ANY)
@click.option("-o", "--output", required=True, type=_ANY, help="The directory (cartography) or file (ftft) to write.")
def export_cmd(fmt: str, dynamics: Path, output: Path) -> None:
    """Export the dynamics store DYNAMICS for another tool."""
    from ..dynamics import interop

    dyn = _load_dynamics(dynamics)
    written = interop.export_cartography(dyn, output) if fmt == "cartography" else interop.export_ftft(dyn, output)
    click.echo(f"{dyn.num_examples:,} examples x {dyn.num_epochs} epochs -> {written}")
