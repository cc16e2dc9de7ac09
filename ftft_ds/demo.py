"""`ftft demo`: the FTFT recipe on the embedded task, on a laptop-sized machine, in minutes.

Stages (each writes under `output_dir`):

1. `reference/`: a cheap reference (the pretrained MiniLM cut to its first 2 layers) fine-tuned on
   the full training split, recording its training dynamics;
2. `map/`: the data-map metrics (`metrics.jsonl`) and plot (`data_map.png`);
3. `subset.json`: the 33% most ambiguous examples (highest variability), for the main model.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import click

from .config import ReferenceConfig
from .data.load import DataConfig
from .dynamics.metrics import compute_metrics, write_metrics_jsonl
from .dynamics.plot import plot_data_map
from .dynamics.select import select_subset
from .dynamics.store import Dynamics
from .reference import run_reference


@dataclass
class DemoConfig:
    """Sizes of the demo; the defaults finish in minutes on 2 CPU cores."""

    output_dir: str = "runs/demo"
    """Folder for every stage's outputs."""
    train_size: int = 2000
    """Training examples of the embedded task."""
    reference_model: str = "minilm"
    """Reference model (a name `ftft reference --model` accepts)."""
    reference_layers: int = 2
    """Transformer layers kept from the reference model (cheaper, still pretrained)."""
    reference_epochs: int = 3
    """Epochs of the reference run, i.e. columns of training dynamics."""
    fraction: float = 0.33
    """Share of the training split the main model will train on."""
    extra: dict = field(default_factory=dict)
    """Further reference-config fields (e.g. {"lr": 1e-4})."""


def reference_config(cfg: DemoConfig) -> ReferenceConfig:
    return ReferenceConfig(
        model=cfg.reference_model, num_layers=cfg.reference_layers, epochs=cfg.reference_epochs,
        data=DataConfig(embedded_train_size=cfg.train_size), output_dir=str(Path(cfg.output_dir) / "reference"),
        lr=1e-4, micro_batch_size=32, max_length=48, **cfg.extra,
    )


def run_demo(cfg: DemoConfig) -> dict:
    """Run the stages in order and return where their outputs are."""
    out = Path(cfg.output_dir)
    click.echo(f"[1/3] reference run: {cfg.reference_model} (first {cfg.reference_layers} layers), "
               f"{cfg.reference_epochs} epochs on {cfg.train_size} embedded examples")
    store = run_reference(reference_config(cfg))

    click.echo("[2/3] data map")
    dynamics = Dynamics.load(store)
    metrics = compute_metrics(dynamics)
    metrics_path = write_metrics_jsonl(metrics, out / "map" / "metrics.jsonl")
    plot_path = plot_data_map(metrics, out / "map" / "data_map.png")

    click.echo(f"[3/3] selection: the {cfg.fraction:.0%} most ambiguous examples")
    subset = select_subset(dynamics, "ambiguous", fraction=cfg.fraction)
    subset_path = subset.save(out / "subset.json")
    return {
        "dynamics": store, "metrics": metrics_path, "data_map": plot_path, "subset": subset_path,
        "counts_per_label": subset.manifest.get("counts_per_label"), "summary": metrics.summary(),
        "tensorboard": out / "reference" / "tensorboard",
    }
