"""The data map: variability (x) against confidence (y), one point per example.

Laid out as in dataset cartography (Swayamdipta et al., 2020): points coloured by how many epochs
predicted them correctly, the easy-to-learn (high confidence, low variability), hard-to-learn
(low confidence, low variability) and ambiguous (high variability) regions shaded and named, and
optionally histograms of confidence, variability and correctness underneath. The shaded regions
sit at the terciles of the metrics, as a guide to the eye; selections rank the exact
metrics instead.

Figures are built on matplotlib's object API with the Agg canvas, so no display and no global
pyplot state are involved. Above `max_points` examples a seeded random sample is drawn, which
keeps the figure fast and identical from run to run; the histograms use every example.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from ..io import atomic_path
from .metrics import Metrics

DPI = 110


def data_map_figure(
    metrics: Metrics,
    *,
    histograms: bool = True,
    title: str | None = None,
    max_points: int = 25000,
    seed: int = 0,
) -> Figure:
    """The data map of `metrics` as a matplotlib Figure (for a PNG or `SummaryWriter.add_figure`)."""
    n = metrics.num_examples
    shown = np.arange(n)
    if n > max_points:
        shown = np.sort(np.random.default_rng(seed).choice(n, size=max_points, replace=False))
    variability = np.asarray(metrics.variability)
    confidence = np.asarray(metrics.confidence)
    correctness = np.asarray(metrics.correctness)

    fig = Figure(figsize=(11, 9.5) if histograms else (9, 6), dpi=DPI)
    FigureCanvasAgg(fig)
    grid = fig.add_gridspec(2 if histograms else 1, 3, height_ratios=[3.2, 1] if histograms else [1])
    ax = fig.add_subplot(grid[0, :])

    # One discrete colour per number of correct epochs, from red (never) to blue (always).
    most = metrics.num_epochs or max(1, int(correctness.max()))
    levels = np.unique(correctness[shown])
    palette = colormaps["turbo"]
    colour = {int(k): palette(0.92 - 0.8 * k / most) for k in range(most + 1)}
    ax.scatter(
        variability[shown],
        confidence[shown],
        s=6,
        alpha=0.6,
        linewidths=0,
        c=[colour[int(k)] for k in correctness[shown]],
        rasterized=True,
    )
    x_end = max(1e-3, float(variability.max()) * 1.05)
    _shade_regions(ax, variability, confidence, x_end)
    name = "correct." if metrics.num_epochs else "correct (epochs)"
    handles = [
        Line2D(
            [],
            [],
            marker="o",
            linestyle="",
            color=colour[int(k)],
            label=f"{k / metrics.num_epochs:.1f}" if metrics.num_epochs else f"{int(k)}",
        )
        for k in levels
    ]
    ax.legend(handles=handles, title=name, loc="center left", bbox_to_anchor=(1.01, 0.5), frameon=False)
    ax.set_xlabel("variability")
    ax.set_ylabel("confidence")
    ax.set_ylim(0, 1)
    ax.set_xlim(0, x_end)
    epochs = f", {metrics.num_epochs} epochs" if metrics.num_epochs else ""
    sample = f", {shown.size:,} shown" if shown.size < n else ""
    ax.set_title(title or f"Data map ({n:,} examples{epochs}{sample})")

    if histograms:
        panels = [fig.add_subplot(grid[1, i]) for i in range(3)]
        panels[0].hist(confidence, bins=30, color="#622a87")
        panels[0].set_xlabel("confidence")
        panels[0].set_ylabel("examples")
        panels[1].hist(variability, bins=30, color="teal")
        panels[1].set_xlabel("variability")
        counts = np.bincount(correctness, minlength=most + 1)
        ticks = np.arange(counts.size)
        panels[2].bar(ticks, counts, color="#86bf91")
        panels[2].set_xticks(ticks, [f"{k / most:.1f}" for k in ticks] if metrics.num_epochs else ticks)
        panels[2].set_xlabel("correctness")
    fig.tight_layout()
    return fig


def _shade_regions(ax, variability: np.ndarray, confidence: np.ndarray, x_end: float) -> None:
    """Shade and name the three regions, bounded by the terciles of variability and confidence."""
    v_high = float(np.quantile(variability, 2 / 3))
    c_low, c_high = (float(q) for q in np.quantile(confidence, [1 / 3, 2 / 3]))
    regions = [
        ("easy-to-learn", (0, v_high), (c_high, 1), "tab:red"),
        ("hard-to-learn", (0, v_high), (0, c_low), "tab:blue"),
        ("ambiguous", (v_high, x_end), (0, 1), "black"),
    ]
    for label, (x0, x1), (y0, y1), colour in regions:
        ax.fill_between([x0, x1], y0, y1, color=colour, alpha=0.07, linewidth=0, zorder=0)
        ax.annotate(
            label,
            xy=((x0 + x1) / 2, (y0 + y1) / 2),
            ha="center",
            va="center",
            fontsize=12,
            bbox=dict(boxstyle="round,pad=0.3", ec=colour, lw=2, fc="white", alpha=0.85),
        )


def plot_data_map(
    metrics: Metrics,
    path: str | os.PathLike,
    histograms: bool = True,
    title: str | None = None,
    max_points: int = 25000,
) -> Path:
    """Write the data map of `metrics` to `path` as a PNG, atomically."""
    fig = data_map_figure(metrics, histograms=histograms, title=title, max_points=max_points)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    return Path(path)
