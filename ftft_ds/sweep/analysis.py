"""Analyses of a finished seed sweep, after Dodge et al. (2020).

A sweep table has one row per trial, as a list of dicts or a dict of equally long columns:

    wi_seed   the weight-initialisation seed (the new classifier head)
    do_seed   the data-order seed
    final     the score reported at the end of training
    early     the best score so far early in training: one number (taken as the score at every
              decision before the end, which suits a one-decision policy such as start-stop-
              continue), or a mapping from fractions of training to scores (keys may be text, as
              in JSON) when several points were recorded
    cost      the trial's compute, in any unit (read by the runner's budget curves, not here)

The analyses ask whether the two seeds matter (`seed_variance_attribution`, `heatmap`), whether
early scores predict final ones (`early_final_rank_correlation`, the argument for stopping at a
fraction f), and whether an early-stopping policy buys a better best score than training fewer
trials to the end with the same compute (`compare_policy_vs_full`).
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from scipy import stats

from ..errors import FtftError
from ..io import atomic_path
from .policy import Policy, parse

# Permuted grids are scored in blocks of at most this many cells, to bound memory.
PERMUTATION_BLOCK = 1 << 22
# Early scores recorded within this of a rung count as recorded at the rung.
FRACTION_TOLERANCE = 1e-9
DPI = 110


@dataclass
class VarianceAttribution:
    """Shares of the score variance over a WI x DO grid explained by each seed, with p-values.

    A share is the seed's main-effect sum of squares over the total sum of squares (two-way ANOVA
    with one trial per cell); `residual_share` is what is left, the interaction of the two seeds.
    A p-value is the fraction of rearrangements without that seed's effect (see
    `seed_variance_attribution`) whose share is at least the observed one, counting the observed
    arrangement, so it is never 0. `permutations` is the number of random rearrangements asked
    for; a grid with no more distinct rearrangements than that gets them all, and an exact p-value.
    """

    wi_share: float
    do_share: float
    residual_share: float
    wi_p: float
    do_p: float
    wi_means: dict
    do_means: dict
    permutations: int

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class PolicyComparison:
    """Best final score of an early-stopping policy against full training at the same compute.

    Means are over simulated sweeps drawn from the recorded trials; `*_std` is the spread of the
    best score from one sweep to the next, and `difference_se` the standard error of the mean
    difference (policy minus full), which pairs each simulated policy sweep with a full sweep over
    the same trial order.
    """

    policy: str
    budget: float
    full_trials: int
    policy_mean: float
    policy_std: float
    full_mean: float
    full_std: float
    difference_mean: float
    difference_se: float
    simulations: int

    def to_dict(self) -> dict:
        return asdict(self)


def seed_variance_attribution(
    table, score: str = "final", permutations: int = 2000, seed: int = 0
) -> VarianceAttribution:
    """How much of the variance of `score` over a full WI x DO grid each seed explains.

    The permutation tests rearrange scores within the grid `permutations` times, seeded by `seed`.
    For WI, each DO seed's scores are shuffled across the WI seeds: that destroys any WI effect but
    keeps the DO effect, so a strong DO effect cannot hide or fake a WI one (and likewise for DO,
    shuffling within each WI seed). Such shuffles leave the total sum of squares unchanged, so
    ranking shares ranks the main-effect sums of squares themselves. Both tests draw from one
    generator, WI first, so a seed fixes both p-values.
    """
    if isinstance(permutations, bool) or not isinstance(permutations, (int, np.integer)) or permutations < 1:
        raise FtftError(f"permutations must be a whole number >= 1, got {permutations!r}")
    wi_levels, do_levels, grid = _grid(_rows(table), score)
    if np.ptp(grid) == 0:
        raise FtftError(f"{score} is the same for every trial; there is no variance to attribute")
    wi_share, do_share = (float(s) for s in _shares(grid))

    rng = np.random.default_rng(seed)
    wi_p = _row_effect_p(grid, int(permutations), rng)
    do_p = _row_effect_p(grid.T, int(permutations), rng)
    return VarianceAttribution(
        wi_share=wi_share,
        do_share=do_share,
        residual_share=max(0.0, 1.0 - wi_share - do_share),
        wi_p=wi_p,
        do_p=do_p,
        wi_means={_plain(s): float(m) for s, m in zip(wi_levels, grid.mean(axis=1))},
        do_means={_plain(s): float(m) for s, m in zip(do_levels, grid.mean(axis=0))},
        permutations=int(permutations),
    )


def early_final_rank_correlation(early, final) -> float:
    """Spearman's rank correlation of early and final scores (ties get their average rank).

    High values mean the early ranking already picks the trials that finish best, which is what
    stopping at a fraction f relies on. NaN when either side is constant: the correlation is
    undefined, and callers read NaN as "no information" (e.g. every trial still at majority level).
    """
    a = _finite(early, "early")
    b = _finite(final, "final")
    if a.shape != b.shape or a.size < 2:
        raise FtftError(f"early and final must be paired lists of >= 2 scores, got {a.size} and {b.size}")
    if np.ptp(a) == 0 or np.ptp(b) == 0:
        return math.nan
    return float(stats.spearmanr(a, b).statistic)


def compare_policy_vs_full(table, policy: Policy | str, simulations: int = 2000, seed: int = 0) -> PolicyComparison:
    """Expected best final score of `policy` against full training of floor(budget) trials.

    Each simulation (seeded by `seed`) puts the recorded trials in a random order. The policy
    starts the first t of them, decides at each rung from their early scores (the best recorded
    score at or before the rung) and ends with the best final score among its survivors; full
    training with the policy's budget, in full runs, trains the first floor(budget) of the same
    order to the end and takes their best final score. The trial ids the policy sees are
    positions in the order, so ties between equal scores fall randomly across simulations.
    """
    if isinstance(policy, str):
        policy = parse(policy)
    if isinstance(simulations, bool) or not isinstance(simulations, (int, np.integer)) or simulations < 1:
        raise FtftError(f"simulations must be a whole number >= 1, got {simulations!r}")
    rows = _rows(table)
    final = _finite([_field(row, "final", i) for i, row in enumerate(rows)], "final")
    if policy.t > final.size:
        raise FtftError(f"policy {policy} starts t={policy.t} trials but the sweep recorded only {final.size}")
    rungs = policy.rungs()
    at_rung = np.column_stack([_early_at(rows, rung, policy) for rung in rungs[:-1]] + [final])
    budget = policy.budget_in_full_runs()
    full_trials = min(final.size, max(1, math.floor(budget + FRACTION_TOLERANCE)))

    rng = np.random.default_rng(seed)
    policy_best = np.empty(simulations)
    full_best = np.empty(simulations)
    for s in range(simulations):
        order = rng.permutation(final.size)
        alive = list(range(policy.t))
        for index in range(len(rungs)):
            alive = policy.survivors({pos: at_rung[order[pos], index] for pos in alive}, index)
        policy_best[s] = final[order[alive[0]]]
        full_best[s] = final[order[:full_trials]].max()
    difference = policy_best - full_best
    return PolicyComparison(
        policy=str(policy),
        budget=float(budget),
        full_trials=int(full_trials),
        policy_mean=float(policy_best.mean()),
        policy_std=_std(policy_best),
        full_mean=float(full_best.mean()),
        full_std=_std(full_best),
        difference_mean=float(difference.mean()),
        difference_se=_std(difference) / math.sqrt(simulations),
        simulations=int(simulations),
    )


def heatmap_figure(table, score: str = "final", title: str | None = None) -> Figure:
    """The WI x DO grid of `score` as an annotated heatmap (rows: WI seeds, columns: DO seeds)."""
    wi_levels, do_levels, grid = _grid(_rows(table), score)
    rows, cols = grid.shape
    fig = Figure(figsize=(max(4.0, 0.7 * cols + 2.0), max(3.0, 0.5 * rows + 1.5)), dpi=DPI)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    image = ax.imshow(grid, cmap="viridis", aspect="auto")
    fig.colorbar(image, ax=ax, label=score)
    low, high = float(grid.min()), float(grid.max())
    middle = (low + high) / 2.0
    fontsize = 8 if max(rows, cols) <= 12 else 6
    for (i, j), value in np.ndenumerate(grid):
        # viridis is dark at the low end: white text there, black text on the bright end.
        colour = "white" if value < middle or low == high else "black"
        ax.text(j, i, f"{value:.3g}", ha="center", va="center", color=colour, fontsize=fontsize)
    ax.set_xticks(np.arange(cols), [str(_plain(s)) for s in do_levels])
    ax.set_yticks(np.arange(rows), [str(_plain(s)) for s in wi_levels])
    ax.set_xlabel("data-order seed")
    ax.set_ylabel("weight-initialisation seed")
    ax.set_title(title or f"{score} by seed ({rows} WI x {cols} DO)")
    fig.tight_layout()
    return fig


def heatmap(table, path: str | os.PathLike, score: str = "final", title: str | None = None) -> Path:
    """Write the WI x DO heatmap of `score` to `path` as a PNG, atomically."""
    fig = heatmap_figure(table, score=score, title=title)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    return Path(path)


def _rows(table) -> list[Mapping]:
    """The table as a list of row mappings, from rows or from equally long columns."""
    if isinstance(table, Mapping):
        lengths = {name: len(column) for name, column in table.items()}
        if len(set(lengths.values())) > 1:
            raise FtftError(f"sweep table columns must be equally long, got lengths {lengths}")
        size = next(iter(lengths.values()), 0)
        rows = [{name: column[i] for name, column in table.items()} for i in range(size)]
    else:
        rows = list(table)
    if not rows:
        raise FtftError("sweep table is empty; expected one row per trial")
    for i, row in enumerate(rows):
        if not isinstance(row, Mapping):
            raise FtftError(f"sweep table row {i} must be a dict, got {row!r}")
    return rows


def _field(row: Mapping, name: str, index: int):
    if name not in row:
        raise FtftError(f"sweep table row {index} has no {name!r}; it has {', '.join(map(str, row))}")
    return row[name]


def _finite(values, name: str) -> np.ndarray:
    try:
        arr = np.asarray(values, dtype=float)
    except (TypeError, ValueError):
        raise FtftError(f"{name} scores must be numbers, got {values!r}") from None
    if arr.ndim != 1:
        raise FtftError(f"{name} scores must be a 1-D list of numbers, got shape {arr.shape}")
    bad = np.flatnonzero(~np.isfinite(arr))
    if bad.size:
        raise FtftError(f"{name} scores must be finite numbers, got {arr[bad[0]]} at index {bad[0]}")
    return arr


def _grid(rows: list[Mapping], score: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(WI seeds, DO seeds, scores[wi, do]) for a full grid with exactly one trial per cell."""
    wi = np.asarray([_field(row, "wi_seed", i) for i, row in enumerate(rows)])
    do = np.asarray([_field(row, "do_seed", i) for i, row in enumerate(rows)])
    values = _finite([_field(row, score, i) for i, row in enumerate(rows)], score)
    wi_levels, wi_index = np.unique(wi, return_inverse=True)
    do_levels, do_index = np.unique(do, return_inverse=True)
    if wi_levels.size < 2 or do_levels.size < 2:
        raise FtftError(
            f"a WI x DO grid needs >= 2 seeds of each kind, got {wi_levels.size} WI and {do_levels.size} DO"
        )
    cell = wi_index.ravel() * do_levels.size + do_index.ravel()
    counts = np.bincount(cell, minlength=wi_levels.size * do_levels.size)
    if counts.max() > 1:
        i, j = divmod(int(np.argmax(counts > 1)), do_levels.size)
        raise FtftError(
            f"the sweep has {counts.max()} trials with wi_seed={wi_levels[i]}, do_seed={do_levels[j]}; expected one"
        )
    if counts.min() == 0:
        i, j = divmod(int(np.argmin(counts)), do_levels.size)
        raise FtftError(
            f"the sweep has no trial with wi_seed={wi_levels[i]}, do_seed={do_levels[j]}; a full WI x DO grid is needed"
        )
    grid = np.empty(counts.size)
    grid[cell] = values
    return wi_levels, do_levels, grid.reshape(wi_levels.size, do_levels.size)


def _shares(grid: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Main-effect shares of the total sum of squares for grids shaped (..., WI, DO)."""
    rows, cols = grid.shape[-2:]
    grand = grid.mean(axis=(-2, -1), keepdims=True)
    total = ((grid - grand) ** 2).sum(axis=(-2, -1))
    wi = cols * ((grid.mean(axis=-1, keepdims=True) - grand) ** 2).sum(axis=(-2, -1))
    do = rows * ((grid.mean(axis=-2, keepdims=True) - grand) ** 2).sum(axis=(-2, -1))
    return wi / total, do / total


def _row_effect_p(grid: np.ndarray, permutations: int, rng: np.random.Generator) -> float:
    """Permutation p-value of the row seeds' share of `grid` (rows x columns).

    scipy's "samples" permutations rearrange the values of each observation across the samples;
    with the rows as samples, that shuffles each column's scores across the row seeds, which is
    the null of no row effect that keeps any column effect.
    """
    result = stats.permutation_test(
        tuple(grid),
        _row_share,
        permutation_type="samples",
        vectorized=True,
        n_resamples=permutations,
        batch=max(1, PERMUTATION_BLOCK // grid.size),
        alternative="greater",
        random_state=rng,
    )
    return float(result.pvalue)


def _row_share(*rows: np.ndarray, axis: int) -> np.ndarray:
    """The row seeds' share of the total sum of squares, for rows shaped (..., columns).

    scipy calls a vectorized statistic with the observations on the last axis, so `axis` is -1.
    """
    return _shares(np.stack(rows, axis=axis - 1))[0]


def best_so_far(early: Mapping, fraction: float) -> float:
    """A trial's best score recorded at or before `fraction` of training, from its {fraction: score}
    curve (keys may be strings, as JSON writes them); NaN if it has none that is a number yet."""
    seen = [float(v) for f, v in early.items() if float(f) <= fraction + FRACTION_TOLERANCE]
    finite = [v for v in seen if not math.isnan(v)]
    return max(finite) if finite else math.nan


def _early_at(rows: list[Mapping], rung: float, policy: Policy) -> np.ndarray:
    """Each trial's best score so far at `rung`: its one early score, or the best recorded by then.

    NaN scores (a trial that diverged) are kept: the policy ranks them last.
    """
    out = np.empty(len(rows))
    for i, row in enumerate(rows):
        early = row.get("early")
        if early is None:
            raise FtftError(f"sweep table row {i} has no 'early' score, which policy {policy} needs at {rung:g}")
        try:
            if isinstance(early, Mapping):
                if not any(float(f) <= rung + FRACTION_TOLERANCE for f in early):
                    raise FtftError(
                        f"sweep table row {i} records no early score at or before fraction {rung:g}, "
                        f"which policy {policy} needs; it has {', '.join(map(str, early))}"
                    )
                out[i] = best_so_far(early, rung)
            else:
                out[i] = float(early)
        except (TypeError, ValueError):
            raise FtftError(
                f"sweep table row {i}: early must be a number or a mapping of fractions to numbers, got {early!r}"
            ) from None
    return out


def _std(values: np.ndarray) -> float:
    """Sample standard deviation; 0 for a single value."""
    return float(values.std(ddof=1)) if values.size > 1 else 0.0


def _plain(value):
    """A numpy scalar as the Python value (so seeds stay JSON-friendly dict keys)."""
    return value.item() if isinstance(value, np.generic) else value
