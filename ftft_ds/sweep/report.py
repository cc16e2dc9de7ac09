"""`ftft report SWEEP_DIR`: what a sweep says about seeds, early stopping and expected best scores.

Reads `sweep.json` and writes `report.md`, `report.json` and figures into the sweep folder:

- expected maximum validation score against the number of trials, with both estimators (Dodge et
  al. 2019's with replacement, and the unbiased one without) and bootstrap bands, over the trials
  trained to the end; and against compute (full runs);
- for a complete WI x DO grid trained to the end: the heatmap and the share of the variance each
  seed kind explains, with permutation-test p-values;
- the rank correlation between early (best so far at each evaluation, listed at each policy rung)
  and final scores, which is what justifies stopping at a fraction f, as a curve over training;
- when every trial was trained to the end (`none` policy): the early-stopping policy `compare`
  replayed on the recorded trials against training fewer trials to the end at the same compute.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from ..errors import FtftError
from ..io import atomic_path, write_json
from .analysis import (
    best_so_far,
    compare_policy_vs_full,
    early_final_rank_correlation,
    heatmap,
    seed_variance_attribution,
)
from .estimators import expected_max_curve, expected_max_vs_budget
from .policy import parse

METHODS = ("with_replacement", "unbiased")
# Where early/final correlations are listed when no policy in play stops trials early.
DEFAULT_EARLY_FRACTIONS = (0.1, 0.25, 0.5)


def _curves_figure(curves: dict, xlabel: str, metric: str) -> Figure:
    figure = Figure(figsize=(6, 4.2), dpi=110)
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    for method, curve in curves.items():
        x = np.asarray(curve.budgets if curve.budgets is not None else curve.ns, dtype=float)
        axes.plot(x, curve.mean, marker="o", label=method.replace("_", " "))
        if curve.lower is not None:
            axes.fill_between(x, curve.lower, curve.upper, alpha=0.2)
    axes.set_xlabel(xlabel)
    axes.set_ylabel(f"expected best {metric}")
    axes.grid(alpha=0.3)
    axes.legend()
    figure.tight_layout()
    return figure


def _spearman_by_fraction(finished: list[dict], fractions) -> dict[float, float | None]:
    """Rank correlation of each trial's best score by each fraction of training with its final score.

    None where it is undefined (every trial tied, e.g. all still at majority level) or where a
    trial has no evaluation by then.
    """
    final = [r["final"] for r in finished]
    out = {}
    for fraction in fractions:
        early = [best_so_far(r["early"], fraction) for r in finished]
        value = np.nan if np.any(np.isnan(early)) else early_final_rank_correlation(early, final)
        out[float(fraction)] = None if np.isnan(value) else value
    return out


def _spearman_figure(curve: dict, metric: str) -> Figure:
    figure = Figure(figsize=(6, 4.2), dpi=110)
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    x = list(curve)
    axes.plot(x, [np.nan if v is None else v for v in curve.values()], marker="o")
    axes.axhline(0.0, color="grey", linewidth=0.8)
    axes.set_ylim(-1.05, 1.05)
    axes.set_xlabel("fraction of training")
    axes.set_ylabel(f"Spearman(best {metric} so far, final)")
    axes.grid(alpha=0.3)
    figure.tight_layout()
    return figure


def _save(figure: Figure, path: Path) -> Path:
    with atomic_path(path) as tmp:
        figure.savefig(tmp, format="png")
    return path


def write_sweep_report(sweep_dir: str | Path, compare: str | None = None, bootstrap: int = 1000) -> dict:
    """Analyse the sweep in `sweep_dir`; return the report's contents (also written as JSON)."""
    folder = Path(sweep_dir)
    summary_path = folder / "sweep.json"
    if not summary_path.is_file():
        raise FtftError(f"{folder} holds no sweep.json; is it the output_dir of `ftft sweep`?")
    sweep = json.loads(summary_path.read_text())
    metric, rows = sweep["metric"], sweep["trials"]
    finished = [r for r in rows if r["final"] is not None]
    report = {
        "policy": sweep["policy"],
        "metric": metric,
        "trials": len(rows),
        "finished": len(finished),
        "diverged": sum(r["diverged"] for r in rows),
        "budget_full_runs": sweep["budget_full_runs"],
        "winner": sweep["winner"],
        "figures": {},
    }
    lines = [
        "# Sweep report\n",
        f"policy `{sweep['policy']}`: {len(rows)} trials, {len(finished)} trained to the end, "
        f"{report['diverged']} diverged; compute {sweep['budget_full_runs']:.2f} full runs "
        f"(policy budget {sweep['policy_budget_full_runs']:.2f}).\n",
    ]
    if finished:
        scores = [r["final"] for r in finished]
        curves = {m: expected_max_curve(scores, method=m, bootstrap=bootstrap) for m in METHODS}
        report["expected_max"] = {m: c.to_dict() for m, c in curves.items()}
        report["figures"]["trials"] = str(
            _save(_curves_figure(curves, "trials", metric), folder / "expected_max_trials.png")
        )
        budgets = np.arange(1, len(finished) + 1, dtype=float)
        by_cost = {
            m: expected_max_vs_budget(scores, [1.0] * len(scores), budgets, method=m, bootstrap=bootstrap)
            for m in METHODS
        }
        report["expected_max_vs_compute"] = {m: c.to_dict() for m, c in by_cost.items()}
        report["figures"]["compute"] = str(
            _save(_curves_figure(by_cost, "compute (full runs)", metric), folder / "expected_max_compute.png")
        )
        lines.append("| trials n | E[max] with replacement | E[max] unbiased |\n|---|---|---|")
        for n, a, b in zip(curves[METHODS[0]].ns, curves[METHODS[0]].mean, curves[METHODS[1]].mean):
            lines.append(f"| {n} | {a:.4f} | {b:.4f} |")
        lines.append("")
    if len(finished) == len(rows) and len(rows) >= 4:
        try:
            attribution = seed_variance_attribution(finished)
            report["seed_attribution"] = attribution.to_dict()
            report["figures"]["heatmap"] = str(heatmap(finished, folder / "wi_do_heatmap.png"))
            lines.append(
                f"WI explains {attribution.wi_share:.1%} of the variance (p = {attribution.wi_p:.3f}), "
                f"DO {attribution.do_share:.1%} (p = {attribution.do_p:.3f}).\n"
            )
        except FtftError as exc:  # not a complete grid: the analysis does not apply
            report["seed_attribution"] = str(exc)
    fractions = sorted({float(f) for r in finished for f in r["early"]} - {1.0})
    if len(finished) >= 3 and fractions:
        rungs = {rung for spec in (sweep["policy"], compare) if spec for rung in parse(spec).rungs()[:-1]}
        correlations = _spearman_by_fraction(finished, sorted(rungs) or DEFAULT_EARLY_FRACTIONS)
        curve = _spearman_by_fraction(finished, fractions)
        report["early_final_spearman"] = correlations
        report["early_final_spearman_curve"] = curve
        report["figures"]["early_final"] = str(
            _save(_spearman_figure(curve, metric), folder / "early_final_spearman.png")
        )
        lines += [
            f"Spearman(best {metric} by {f:g} of training, final) = "
            + ("undefined (all tied)" if c is None else f"{c:.3f}")
            for f, c in correlations.items()
        ] + [""]
    if compare and len(finished) == len(rows):
        comparison = compare_policy_vs_full(finished, compare)
        report["policy_vs_full"] = comparison.to_dict()
        lines.append(
            f"Policy `{comparison.policy}` ({comparison.budget:.2f} full runs): expected best "
            f"{comparison.policy_mean:.4f} ± {comparison.policy_std:.4f}; training {comparison.full_trials} "
            f"trials to the end: {comparison.full_mean:.4f} ± {comparison.full_std:.4f}.\n"
        )
    with atomic_path(folder / "report.md") as tmp:
        tmp.write_text("\n".join(lines) + "\n", encoding="utf-8")
    write_json(folder / "report.json", report)
    report["markdown"] = "\n".join(lines)
    return report
