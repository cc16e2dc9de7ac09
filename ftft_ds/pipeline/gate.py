"""The recipe's reference gate: a verdict per reference before any main run is launched.

Each reference is judged by `dynamics.gate.assess_reference`; FTFT's cheap reference is also
compared with the main model's own dynamics (the probe) when the `dm` baseline recorded them. The
subsets' pairwise overlap (Jaccard) is reported beside what two random subsets of the same
fraction would share, f / (2 - f).
"""

from __future__ import annotations

from ..dynamics.gate import assess_reference
from ..dynamics.metrics import compute_metrics
from ..dynamics.select import Subset
from ..dynamics.store import Dynamics
from ..io import read_json
from .config import id_validation_split

GENERAL_REMEDY = (
    "give the reference more to learn from (more epochs or layers, a stronger model, a learning rate "
    "that fits its size)"
)
REMEDIES = {"label_skew": "select a stratified subset (selection.stratify: true: each label keeps its share)"}
"""What to change for a failed check that more training would not mend."""


def remedy(verdict: dict) -> str:
    """What to change about a weak reference (a verdict of `gate_references`), from the checks it failed."""
    failed = [check["name"] for check in verdict["checks"] if not check["passed"]]
    fixes = [REMEDIES[name] for name in failed if name in REMEDIES]
    if not fixes or any(name not in REMEDIES for name in failed):
        fixes.insert(0, GENERAL_REMEDY)
    return ", or ".join(fixes)


def gate_references(cfg, references: dict, subsets: dict) -> dict:
    """Verdicts for every reference (`references`: name -> run folder) and the subsets' overlaps."""
    dev = id_validation_split(cfg.data.eval_splits)
    dynamics = {name: Dynamics.load(folder / "dynamics") for name, folder in references.items()}
    uid_sets = {name: set(Subset.load(path).uids) for name, path in subsets.items()}
    verdicts = []
    if cfg.reference_gate != "off":
        metrics = {name: compute_metrics(dyn) for name, dyn in dynamics.items()}
        for name, folder in references.items():
            run_metrics = read_json(folder / "metrics.json")
            accuracy = run_metrics["final"].get(f"{dev}/accuracy") if dev else None
            majority = run_metrics.get("majority_rate", {}).get(dev) if dev else None
            probe = metrics.get("main") if name == "small" else None
            verdict = assess_reference(
                name,
                dynamics[name],
                uid_sets[name],
                accuracy,
                majority,
                cfg.gate,
                probe=probe,
                reference_metrics=metrics[name],
            )
            verdicts.append({**verdict.to_json(), "summary": verdict.summary()})

    names = sorted(subsets)
    overlap = {}
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            union = uid_sets[a] | uid_sets[b]
            overlap[f"{a}~{b}"] = len(uid_sets[a] & uid_sets[b]) / len(union) if union else 1.0
    fraction = cfg.selection.fraction
    return {
        "mode": cfg.reference_gate,
        "verdicts": verdicts,
        "subset_overlap": overlap,
        "random_overlap": fraction / (2 - fraction),
    }


def gate_markdown(gate: dict) -> str:
    """The gate's verdicts and the subsets' overlaps, for results.md."""
    lines = ["## Reference gate", ""]
    if not gate["verdicts"]:
        lines.append(f"(gate {gate['mode']})")
    for verdict in gate["verdicts"]:
        lines.append(f"- {verdict['summary']}")
    for pair, value in gate["subset_overlap"].items():
        lines.append(f"- subset overlap {pair}: Jaccard {value:.2f} (two random subsets: {gate['random_overlap']:.2f})")
    return "\n".join(lines) + "\n"
