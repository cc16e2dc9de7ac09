"""The results of a recipe: the table, its plots, and the transfer diagnostics.

A method's cost is its main run up to where it stopped plus the reference run it needed (FTFT's
cheap reference, DM's main-model reference), from the runs' cost ledgers, relative to ERM = 100,
three ways:
- training FLOPs (`relative_cost`), the FTFT paper's measure;
- FLOPs with evaluations (`relative_total_flops`, what a `cost_target` bounds): training and the
  evaluations that steer a run (choose its checkpoint, stop it; the reference's, which the gate
  reads), from the ledgers' `cost_flops`; on small data they are not small. The closing report of
  every split, which every method pays alike, is not a cost of producing the model (`report_flops`);
- wall time (`relative_wall_time`), set-up, every evaluation and checkpoints included: small models
  are bound by per-step overhead, so a reference with 2% of ERM's FLOPs can take a third of its time.
Metrics are each run's selected evaluation: the best checkpoint's for early-stopping runs, the
last step's otherwise.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from scipy import stats

from ..io import atomic_path, read_json, write_json
from .gate import gate_markdown


def collect_rows(runs: dict, plan) -> list[dict]:
    """One row per main run: its selected metrics (the best checkpoint's for early-stopping runs),
    its cost up to where it stopped, including the reference it used, and what `plan` (the recipe's
    `CostPlan`) allowed it.

    `runs` maps (method, seed) to (main run folder, reference folder or None).
    """
    rows = []
    for (method, seed), (folder, reference) in runs.items():
        metrics = read_json(folder / "metrics.json")
        cost = read_json(folder / "cost.json")
        ref_cost = read_json(reference / "cost.json") if reference is not None else None
        predicted = metrics.get("predicted_classes", {})
        rows.append(
            {
                "method": method,
                "seed": seed,
                **{k: v for k, v in metrics["selected"].items() if k != "step"},
                "steps": metrics["steps"],
                "selected_step": metrics["selected_step"],
                "stopped": metrics["stopped"],
                "one_class": bool(predicted) and all(count == 1 for count in predicted.values()),
                "planned_relative_cost": plan.relative_train(plan.method(method)),
                "planned_relative_total_flops": plan.relative_total(plan.method(method)),
                "train_rows": metrics["train_rows"],
                "main_flops": cost["train_flops"],
                "reference_flops": ref_cost["train_flops"] if ref_cost else 0.0,
                "total_flops": cost["cost_flops"] + (ref_cost["cost_flops"] if ref_cost else 0.0),
                "report_flops": cost["report_flops"],
                "wall_seconds": cost["run_seconds"] + (ref_cost["run_seconds"] if ref_cost else 0.0),
            }
        )
    erm = [r for r in rows if r["method"] == "erm"]
    for key, base_key, total in (
        ("relative_cost", "main_flops", lambda r: r["main_flops"] + r["reference_flops"]),
        ("relative_total_flops", "total_flops", lambda r: r["total_flops"]),
        ("relative_wall_time", "wall_seconds", lambda r: r["wall_seconds"]),
    ):
        base = float(np.mean([r[base_key] for r in erm])) if erm else None
        for row in rows:
            row[key] = 100.0 * total(row) / base if base else None
    return rows


COSTS = {
    "relative_cost": "training FLOPs",
    "relative_total_flops": "FLOPs with evaluations",
    "relative_wall_time": "wall time",
}
"""The three relative costs (ERM = 100) every row, summary and comparison carries."""
PLANNED = {"relative_cost": "planned_relative_cost", "relative_total_flops": "planned_relative_total_flops"}
"""The costs the plan decided before the main runs, beside the actual ones."""


def summarize(rows: list[dict], methods, metric_keys) -> list[dict]:
    """Mean and sample std over seeds per method, in `methods` order (std None with one seed), and
    how many of its seeds' models predict a single class."""
    summary = []
    for method in methods:
        mine = [r for r in rows if r["method"] == method]
        entry = {"method": method, "seeds": len(mine), "one_class": sum(bool(r.get("one_class")) for r in mine)}
        for key in [*metric_keys, *COSTS, *PLANNED.values(), "wall_seconds", "steps"]:
            values = np.array([r[key] for r in mine if r.get(key) is not None], dtype=float)
            entry[key] = (
                {"mean": float(values.mean()), "std": float(values.std(ddof=1)) if values.size > 1 else None}
                if values.size
                else None
            )
        summary.append(entry)
    return summary


def compare(rows: list[dict], method: str, metric: str, baseline: str = "erm") -> dict | None:
    """`method` against `baseline` on `metric`, paired by seed: per-seed differences, their mean
    and a 95% t-interval (from 2 seeds on), the mean relative cost, and the seeds on which either
    side's model predicts a single class (a comparison of such models compares nothing).

    The interval uses Student's t rather than the normal quantile because a recipe runs a handful
    of seeds, too few for the sample standard deviation to stand in for the true one.
    """
    by_seed = {r["seed"]: r for r in rows if r["method"] == baseline and r.get(metric) is not None}
    mine = [r for r in rows if r["method"] == method and r["seed"] in by_seed and r.get(metric) is not None]
    if not mine:
        return None
    differences = np.array([r[metric] - by_seed[r["seed"]][metric] for r in mine])
    out = {
        "method": method,
        "baseline": baseline,
        "metric": metric,
        "seeds": [r["seed"] for r in mine],
        "differences": differences.tolist(),
        "mean_difference": float(differences.mean()),
        "method_mean": float(np.mean([r[metric] for r in mine])),
        "baseline_mean": float(np.mean([by_seed[r["seed"]][metric] for r in mine])),
        "ci95": None,
        "one_class": {
            name: [r["seed"] for r in side if r.get("one_class")]
            for name, side in ((method, mine), (baseline, [by_seed[r["seed"]] for r in mine]))
        },
        **{key: float(np.mean([r[key] for r in mine if r.get(key) is not None] or [np.nan])) for key in COSTS},
    }
    if len(mine) > 1:
        half = stats.t.ppf(0.975, len(mine) - 1) * stats.sem(differences)
        out["ci95"] = [float(differences.mean() - half), float(differences.mean() + half)]
    return out


def outcome(c: dict) -> str:
    """`better`, `worse` or `tied` for `c`'s method against its baseline: by the 95% interval where
    there is one (a tie when it holds zero: those seeds cannot tell them apart), else by the one
    seed's sign (`better` when not below)."""
    if c["ci95"] is not None:
        low, high = c["ci95"]
        return "better" if low > 0 else "worse" if high < 0 else "tied"
    return "better" if c["mean_difference"] >= 0 else "worse"


def comparison_line(c: dict, target: float | None = None, weak_reference: str | None = None) -> str:
    """One line a newcomer understands: the method against its baseline on the headline metric, its
    three costs and a verdict. The verdict on accuracy follows the 95% interval of the per-seed
    differences (with one seed, its sign); on cost, the cost target (FLOPs with evaluations,
    reference included) where there is one, else training FLOPs at half of the baseline's, the
    paper's claim. It compares nothing where a model predicts one class, and says so of a subset
    from a reference the gate found weak (`weak_reference`: the gate's summary)."""
    seeds = len(c["seeds"])
    spread = (
        f", 95% CI [{100 * c['ci95'][0]:+.1f}, {100 * c['ci95'][1]:+.1f}] over {seeds} seeds"
        if c["ci95"]
        else " with one seed: run more seeds before trusting a difference"
    )
    if target is None:
        cheap = c["relative_cost"] <= 50
        budget = f"at {'no more' if cheap else 'more'} than half of {c['baseline']}'s training FLOPs"
    else:
        cheap = c["relative_total_flops"] <= 100 * target
        budget = (
            f"{'within' if cheap else 'over'} its cost target ({100 * target:.0f}% of erm's FLOPs with evaluations)"
        )
    stuck = {name: seeds for name, seeds in c.get("one_class", {}).items() if seeds}
    method, baseline, result = c["method"], c["baseline"], outcome(c)
    if stuck:
        verdict = (
            "no verdict: "
            + " and ".join(
                f"{name} predicts a single class on seed(s) {', '.join(map(str, s))}" for name, s in stuck.items()
            )
            + ", so it learnt nothing there to compare; give it more to learn from (a learning rate that fits the "
            "model, more epochs, more training data)"
        )
    elif baseline != "erm":  # erm_es: ERM cut at the same cap, the same evaluations
        verdict = {
            "better": f"the subset, not the shorter run, earned {method}'s result",
            "worse": f"{baseline}, cut at the same step, does better without a subset",
            "tied": "these seeds cannot tell the subset's effect from the shorter run's",
        }[result]
    else:
        verdict = {
            "better": f"{method} matches or beats {baseline} {'' if cheap else 'but '}{budget}",
            "worse": f"{method} falls short of {baseline}",
            "tied": f"these seeds cannot tell {method} from {baseline}; it runs {budget}",
        }[result]
    if weak_reference and not stuck:
        verdict += f"; its subset came from a reference the gate found weak ({weak_reference})"
    return (
        f"{method} vs {baseline}: {c['metric']} {100 * c['method_mean']:.1f} vs "
        f"{100 * c['baseline_mean']:.1f} ({100 * c['mean_difference']:+.1f} points{spread}) "
        f"at {c['relative_cost']:.0f}% of erm's training FLOPs ({c['relative_total_flops']:.0f}% of its FLOPs with "
        f"evaluations, {c['relative_wall_time']:.0f}% of its wall time): {verdict}."
    )


def markdown_table(summary: list[dict], metric_keys) -> str:
    """The results table: metrics, then each cost actual and, for FLOPs, as planned (≤: a cap that
    patience may stop short of)."""

    def cell(value, scale=100.0, digits=1):
        if value is None:
            return "–"
        if value["std"] is None:
            return f"{value['mean'] * scale:.{digits}f}"
        return f"{value['mean'] * scale:.{digits}f} ± {value['std'] * scale:.{digits}f}"

    costs = []
    for key, name in COSTS.items():
        costs.append(f"{name} (ERM=100)")
        if key in PLANNED:
            costs.append("planned")
    header = ["method", "seeds", *metric_keys, *costs, "steps", "wall s"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for entry in summary:
        cost_cells = []
        for key in COSTS:
            cost_cells.append(cell(entry[key], scale=1.0))
            if key in PLANNED:
                cost_cells.append(cell(entry[PLANNED[key]], scale=1.0))
        name = entry["method"]
        if entry.get("one_class"):
            name += f" (predicts one class: {entry['one_class']} of {entry['seeds']} seeds)"
        lines.append(
            "| "
            + " | ".join(
                [
                    name,
                    str(entry["seeds"]),
                    *(cell(entry[k]) for k in metric_keys),
                    *cost_cells,
                    cell(entry["steps"], scale=1.0, digits=0),
                    cell(entry["wall_seconds"], scale=1.0, digits=0),
                ]
            )
            + " |"
        )
    return "\n".join(lines) + "\n"


def plot_cost_vs_metric(summary: list[dict], metric: str, path: Path) -> Path:
    """The trade-off at a glance: an OOD metric against each relative cost (training FLOPs, all
    FLOPs, wall time), one point per method, one panel per cost."""
    figure = Figure(figsize=(13, 4.2), dpi=110)
    FigureCanvasAgg(figure)
    for index, (key, name) in enumerate(COSTS.items()):
        axes = figure.add_subplot(1, len(COSTS), index + 1)
        for entry in summary:
            if entry[key] is None or entry[metric] is None:
                continue
            x, y = entry[key]["mean"], 100 * entry[metric]["mean"]
            axes.errorbar(
                x,
                y,
                xerr=entry[key]["std"] or 0.0,
                yerr=100 * (entry[metric]["std"] or 0.0),
                fmt="o",
                capsize=3,
                label=entry["method"],
            )
            axes.annotate(entry["method"], (x, y), textcoords="offset points", xytext=(6, 4))
        axes.axvline(100, color="grey", linewidth=0.8, linestyle=":")
        axes.set_xlabel(f"{name}, ERM = 100")
        axes.set_ylabel(f"{metric} (%)")
        axes.grid(alpha=0.3)
        axes.set_title(f"{metric} against {name}")
    figure.tight_layout()
    with atomic_path(path) as tmp:
        figure.savefig(tmp, format="png")
    return path


def write_report(
    out: Path, rows: list[dict], summary: list[dict], metric_keys, gate: dict, ood_metric: str, plan
) -> dict:
    """results.json, results.md, the cost plot and TensorBoard hparams; return the file paths.

    The markdown holds the table, one comparison line per method against ERM on `ood_metric` (and
    FTFT's against `erm_es`, ERM cut at FTFT's cap, where it ran: whether the subset, not the
    shorter run, earned the result), the verdict for FTFT last, the plan, and the reference gate.
    """
    methods = [entry["method"] for entry in summary]
    pairs = [(m, "erm") for m in methods if m != "erm" and "erm" in methods]
    if "ftft" in methods and "erm_es" in methods:
        pairs.append(("ftft", "erm_es"))
    comparisons = [c for c in (compare(rows, m, ood_metric, b) for m, b in pairs) if c is not None]
    comparisons.sort(key=lambda c: c["method"] == "ftft")
    weak = next((v["summary"] for v in gate["verdicts"] if v["reference"] == "small" and not v["sound"]), None)
    lines = [comparison_line(c, plan.target, weak if c["method"] == "ftft" else None) for c in comparisons]
    markdown = (
        markdown_table(summary, metric_keys)
        + "\n"
        + "".join(f"{line}\n" for line in lines)
        + "\n"
        + plan.table()
        + "\n"
        + gate_markdown(gate)
    )
    with atomic_path(out / "results.md") as tmp:
        tmp.write_text(markdown, encoding="utf-8")
    write_json(
        out / "results.json",
        {"rows": rows, "summary": summary, "comparisons": comparisons, "gate": gate, "plan": plan.to_json()},
    )
    files = {"table": out / "results.md", "json": out / "results.json"}
    if ood_metric in metric_keys:
        files["plot"] = plot_cost_vs_metric(summary, ood_metric, out / "cost_vs_ood.png")

    from torch.utils.tensorboard import SummaryWriter

    with SummaryWriter(log_dir=str(out / "tensorboard" / "results")) as writer:
        for row in rows:
            writer.add_hparams(
                {"method": row["method"], "seed": row["seed"]},
                {f"hparam/{k}": row[k] for k in [*metric_keys, *COSTS] if row.get(k) is not None},
                run_name=f"{row['method']}-seed{row['seed']}",
            )
    files["tensorboard"] = out / "tensorboard" / "results"
    return {"markdown": markdown, **files}
