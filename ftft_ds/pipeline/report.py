"""The results of a recipe: the table, its plots, and the transfer diagnostics.

Costs are training FLOPs from the runs' cost ledgers, relative to ERM = 100: a method's cost is
its main run plus the reference run it needed (FTFT's cheap reference, DM's main-model reference).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from ..dynamics.metrics import compute_metrics
from ..dynamics.select import Subset
from ..dynamics.store import Dynamics
from ..io import atomic_path, read_json, write_json


def collect_rows(runs: dict) -> list[dict]:
    """One row per main run: its metrics and its cost including the reference it used.

    `runs` maps (method, seed) to (main run folder, reference folder or None).
    """
    rows = []
    for (method, seed), (folder, reference) in runs.items():
        metrics = read_json(folder / "metrics.json")
        cost = read_json(folder / "cost.json")
        ref_cost = read_json(reference / "cost.json") if reference is not None else None
        rows.append({
            "method": method, "seed": seed, **{k: v for k, v in metrics["final"].items() if k != "step"},
            "steps": metrics["steps"], "train_rows": metrics["train_rows"],
            "main_flops": cost["train_flops"], "reference_flops": ref_cost["train_flops"] if ref_cost else 0.0,
            "wall_seconds": cost["wall_seconds"] + (ref_cost["wall_seconds"] if ref_cost else 0.0),
        })
    erm = [r["main_flops"] for r in rows if r["method"] == "erm"]
    base = float(np.mean(erm)) if erm else None
    for row in rows:
        total = row["main_flops"] + row["reference_flops"]
        row["relative_cost"] = 100.0 * total / base if base else None
    return rows


def summarize(rows: list[dict], methods, metric_keys) -> list[dict]:
    """Mean and std over seeds per method, in `methods` order."""
    summary = []
    for method in methods:
        mine = [r for r in rows if r["method"] == method]
        entry = {"method": method, "seeds": len(mine)}
        for key in [*metric_keys, "relative_cost", "wall_seconds", "steps"]:
            values = np.array([r[key] for r in mine if r.get(key) is not None], dtype=float)
            entry[key] = {"mean": float(values.mean()), "std": float(values.std(ddof=1)) if values.size > 1 else 0.0} \
                if values.size else None
        summary.append(entry)
    return summary


def markdown_table(summary: list[dict], metric_keys) -> str:
    def cell(value, scale=100.0, digits=1):
        if value is None:
            return "–"
        return f"{value['mean'] * scale:.{digits}f} ± {value['std'] * scale:.{digits}f}"

    header = ["method", "seeds", *metric_keys, "cost (ERM=100)", "wall s"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for entry in summary:
        lines.append("| " + " | ".join([
            entry["method"], str(entry["seeds"]), *(cell(entry[k]) for k in metric_keys),
            cell(entry["relative_cost"], scale=1.0), cell(entry["wall_seconds"], scale=1.0, digits=0),
        ]) + " |")
    return "\n".join(lines) + "\n"


def plot_cost_vs_metric(summary: list[dict], metric: str, path: Path) -> Path:
    """The trade-off at a glance: an OOD metric against relative cost, one point per method."""
    figure = Figure(figsize=(6, 4.2), dpi=110)
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    for entry in summary:
        if entry["relative_cost"] is None or entry[metric] is None:
            continue
        axes.errorbar(entry["relative_cost"]["mean"], 100 * entry[metric]["mean"],
                      xerr=entry["relative_cost"]["std"], yerr=100 * entry[metric]["std"],
                      fmt="o", capsize=3, label=entry["method"])
        axes.annotate(entry["method"], (entry["relative_cost"]["mean"], 100 * entry[metric]["mean"]),
                      textcoords="offset points", xytext=(6, 4))
    axes.set_xlabel("cost (training FLOPs, ERM = 100)")
    axes.set_ylabel(f"{metric} (%)")
    axes.grid(alpha=0.3)
    axes.set_title(f"{metric} against cost")
    figure.tight_layout()
    with atomic_path(path) as tmp:
        figure.savefig(tmp, format="png")
    return path


def transfer_diagnostics(references: dict, subsets: dict, first_eval: str, weak_below: float) -> dict:
    """How much a reference can be trusted to pick the main model's training examples.

    - each reference's own accuracy on `first_eval` (a weak reference is flagged);
    - overlap (Jaccard) of the subsets chosen by different references;
    - rank correlation of variability between the cheap reference and the main model's own
      dynamics (DM's reference), over all training examples, when both were recorded.
    """
    from ..sweep.analysis import early_final_rank_correlation as spearman

    out = {"reference_accuracy": {}, "weak_references": [], "subset_overlap": {}, "variability_spearman": {}}
    for name, folder in references.items():
        accuracy = read_json(folder / "metrics.json")["final"].get(f"{first_eval}/accuracy")
        out["reference_accuracy"][name] = accuracy
        if accuracy is not None and accuracy < weak_below:
            out["weak_references"].append(name)
    names = sorted(subsets)
    uid_sets = {name: set(Subset.load(subsets[name]).uids) for name in names}
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            union = uid_sets[a] | uid_sets[b]
            out["subset_overlap"][f"{a}~{b}"] = len(uid_sets[a] & uid_sets[b]) / len(union) if union else 1.0
    if "small" in references and "main" in references:
        small = compute_metrics(Dynamics.load(references["small"] / "dynamics"))
        main = compute_metrics(Dynamics.load(references["main"] / "dynamics"))
        order = {uid: i for i, uid in enumerate(main.uids)}
        common = [(i, order[uid]) for i, uid in enumerate(small.uids) if uid in order]
        left, right = (np.array(side) for side in zip(*common))
        out["variability_spearman"]["small~main"] = float(
            spearman(np.asarray(small.variability)[left], np.asarray(main.variability)[right]))
    return out


def write_report(out: Path, rows: list[dict], summary: list[dict], metric_keys, diagnostics: dict,
                 ood_metric: str) -> dict:
    """results.json, results.md, the cost plot and TensorBoard hparams; return the file paths."""
    table = markdown_table(summary, metric_keys)
    notes = []
    for name in diagnostics["weak_references"]:
        notes.append(f"warning: reference '{name}' reaches only {diagnostics['reference_accuracy'][name]:.1%} "
                     "on its own task; a weak reference is a poor guide (the FTFT paper saw very small ones fail)")
    markdown = table + "".join(f"\n{note}\n" for note in notes)
    with atomic_path(out / "results.md") as tmp:
        tmp.write_text(markdown, encoding="utf-8")
    write_json(out / "results.json", {"rows": rows, "summary": summary, "diagnostics": diagnostics})
    files = {"table": out / "results.md", "json": out / "results.json"}
    if ood_metric in metric_keys:
        files["plot"] = plot_cost_vs_metric(summary, ood_metric, out / "cost_vs_ood.png")

    from torch.utils.tensorboard import SummaryWriter

    with SummaryWriter(log_dir=str(out / "tensorboard" / "results")) as writer:
        for row in rows:
            writer.add_hparams(
                {"method": row["method"], "seed": row["seed"]},
                {f"hparam/{k}": row[k] for k in [*metric_keys, "relative_cost"] if row.get(k) is not None},
                run_name=f"{row['method']}-seed{row['seed']}",
            )
    files["tensorboard"] = out / "tensorboard" / "results"
    return {"markdown": markdown, **files}
