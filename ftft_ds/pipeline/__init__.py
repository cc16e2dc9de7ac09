"""`ftft run`: reference run(s) → selection → main runs, with the papers' baselines side by side.

Every training run is a job of the recipe's executor (`jobs`): references one process (one GPU),
main runs on `num_ranks` ranks through the `deepspeed` launcher here, or SLURM jobs of
`executor.nodes` x `executor.ranks_per_node` ranks, submitted together. Each stage is a folder with
a manifest (see `stages.py`), so a re-run skips what is done, re-attaches to the jobs still queued
or running, and redoes what changed or failed.
"""

from __future__ import annotations

import dataclasses
import math
import time
from pathlib import Path

import numpy as np

from ..config import MainConfig, OptimConfig, ReferenceConfig, fields_set, save_config, to_dict
from ..data.load import load_splits
from ..dynamics.metrics import compute_metrics
from ..dynamics.plot import plot_data_map
from ..dynamics.select import Subset, select_subset
from ..dynamics.store import Dynamics
from ..errors import FtftError
from ..io import make_output_dir, read_json, write_json
from ..jobs import Job, make_executor, run_ranks
from ..train.checkpoint import RESUMABLE
from .config import EARLY_STOPPING_METHODS, RecipeConfig, id_validation_split
from .cost_plan import (
    REFERENCE_METHODS,
    SUBSET_METHODS,
    CostPlan,
    ModelTokens,
    RunCost,
    default_reference,
    plan_costs,
    reference_cost,
)
from .gate import gate_references, remedy
from .report import collect_rows, summarize, write_report
from .stages import Stage, file_digest

__all__ = ["RecipeConfig", "run_recipe"]


def reference_configs(cfg: RecipeConfig) -> dict:
    """The reference runs the chosen methods need: FTFT's cheap one, and DM's, which is the main
    model trained like ERM (its options, `erm_epochs` epochs) while it records its dynamics.

    A reference evaluates only the ID validation split the gate reads: its evaluation is part of
    FTFT's cost, and the test splits would tell the recipe nothing it uses."""
    templates = {}
    if "ftft" in cfg.methods:
        templates["small"] = cfg.reference
    if "dm" in cfg.methods:
        optim = {f.name: getattr(cfg.main, f.name) for f in dataclasses.fields(OptimConfig)}
        templates["main"] = ReferenceConfig(**optim, epochs=math.ceil(cfg.main.erm_epochs))
    dev = id_validation_split(cfg.data.eval_splits)
    data = dataclasses.replace(cfg.data, eval_splits=(dev,) if dev else (), validation_holdout=None)
    return {
        name: cfg.reference_run(template, data=data, output_dir=str(Path(cfg.output_dir) / "reference" / name))
        for name, template in templates.items()
    }


def main_config(cfg: RecipeConfig, plan: CostPlan, method: str, seed: int) -> MainConfig:
    """One main run of the recipe. Early-stopping methods keep their best evaluated checkpoint and
    stop at the cap the plan sets (with a cost target: its step cap, evaluation points and FLOPs
    ceiling; without: `ftft_budget`, evaluated over the ERM schedule), or sooner by patience where
    it is set; `erm` and `dm` train their whole `erm_budget`. Every early-stopping run evaluates at
    the same points."""
    fields = {"budget": cfg.erm_budget}
    if method in EARLY_STOPPING_METHODS:
        fields = {
            "patience": cfg.stopping.patience,
            "select_best": True,
            "patience_metric": cfg.stopping_metric(),
            "eval_sample": cfg.stopping.eval_sample,
            **(
                plan.run_fields(method)
                if cfg.cost_target is not None
                else {"budget": cfg.ftft_budget, "evals_per_schedule": cfg.stopping.evals}
            ),
        }
    return cfg.main_run(
        **fields,
        data=cfg.data,
        output_dir=str(Path(cfg.output_dir) / "main" / method / f"seed{seed}"),
        init_seed=seed,
        data_seed=seed,
        dropout_seed=seed,
    )


def run_recipe(cfg: RecipeConfig, echo=print, dry_run: bool = False, detach: bool = False) -> dict:
    """Run (or resume) the whole recipe and write the results table; return the report's paths.

    The cost plan is printed first; `dry_run` stops there. `detach`: a signal to this process
    leaves its SLURM jobs running (a later run re-attaches to them) instead of cancelling them.
    """
    cfg = dataclasses.replace(
        cfg, num_ranks=run_ranks(cfg.num_ranks, cfg.executor, "recipe", "num_ranks" in fields_set(cfg))
    )
    out = Path(cfg.output_dir)
    splits = load_splits(cfg.data)
    split = splits[cfg.data.train_split]
    data = {"config": to_dict(cfg.data), "fingerprint": split.fingerprint}
    if cfg.reference is None and "ftft" in cfg.methods:
        reference, share = default_reference(cfg, splits)
        cfg = dataclasses.replace(cfg, reference=reference)
        echo(
            f"reference (recipe.reference unset): the main model's first {reference.num_layers} layer(s), "
            f"{reference.epochs} epochs, {share:.0f}% of ERM's training FLOPs"
        )
    references = reference_configs(cfg)
    tokens = ModelTokens.measure(cfg.main, splits, cfg.data.train_split)
    forecast = {name: reference_cost(ref, splits, cfg.data.train_split) for name, ref in references.items()}
    plan = plan_costs(cfg, splits, forecast, tokens=tokens)
    echo(plan.table())
    for warning in [*plan.warnings, *stopping_warnings(cfg)]:
        echo(f"warning: {warning}")
    if dry_run:
        return {"plan": plan}
    make_output_dir(out)
    executor = make_executor(cfg.executor, out, echo, detach=detach)

    total = len(references) * 2 + ("random" in cfg.methods) + len(cfg.methods) * len(cfg.seeds)
    progress = {"done": 0}

    def execute(stage: Stage) -> None:
        progress["done"] += 1
        prefix = f"[{progress['done']}/{total}] {stage.name}"
        if stage.is_done():
            echo(f"{prefix}: done before, skipped")
            return
        resumes = stage.start(live=executor.live_job(stage.folder) is not None)
        echo(f"{prefix}: " + ("continues from its last checkpoint" if resumes else "running ..."))
        started = time.time()
        stage.run(stage.folder)
        seconds = time.time() - started
        stage.finish(seconds)
        echo(f"{prefix}: finished in {seconds:.0f} s")

    subsets = {}
    for name, ref in references.items():
        folder = Path(ref.output_dir)

        # DM's reference is the main model itself: it needs the main runs' ranks (a model that
        # takes ZeRO-3 across nodes does not fit one GPU); FTFT's cheap one runs on one.
        ranks = cfg.num_ranks if name == "main" else None

        def train_reference(folder: Path, ref=ref, ranks=ranks) -> None:
            # The folder holds a checkpoint only when the stage continues an interrupted run (`Stage.start`).
            resumes = (folder / RESUMABLE).is_file()
            save_config(dataclasses.replace(ref, resume=resumes), folder / "run_config.json")
            executor.run(
                [
                    Job(
                        "reference",
                        folder / "run_config.json",
                        folder,
                        folder / "log.txt",
                        f"reference run '{folder.name}'",
                        ranks,
                    )
                ],
                show_progress=True,
            )

        execute(
            Stage(
                f"reference/{name}",
                folder,
                {"config": to_dict(ref), "data": data},
                train_reference,
                ["dynamics/manifest.json", "cost.json", "metrics.json"],
                RESUMABLE,
            )
        )
        dynamics = Dynamics.load(folder / "dynamics")
        subsets[name] = _select_stage(execute, out / "select" / name, cfg, dynamics)
    if "random" in cfg.methods:
        subsets["random"] = _select_stage(execute, out / "select" / "random", cfg, None, split=split, data=data)

    gate = gate_references(cfg, {n: Path(r.output_dir) for n, r in references.items()}, subsets)
    for verdict in gate["verdicts"]:
        echo(("" if verdict["sound"] else "warning: ") + verdict["summary"])
    weak = [v for v in gate["verdicts"] if not v["sound"]]
    if weak and cfg.reference_gate == "refuse":
        write_json(out / "gate.json", gate)
        raise FtftError(
            f"{weak[0]['summary']}; no main run was launched (reference_gate: refuse): {remedy(weak[0])}, or set "
            f"reference_gate: warn to train on its subset anyway"
        )

    measured = {
        name: RunCost.of_ledger(read_json(Path(ref.output_dir) / "cost.json")) for name, ref in references.items()
    }
    index = split.uid_to_index()
    rows = {
        method: sorted(index[uid] for uid in Subset.load(subsets[name]).uids)
        for method, name in SUBSET_METHODS.items()
        if name in subsets
    }
    plan = plan_costs(cfg, splits, measured, rows, tokens=tokens)
    if measured:
        echo("with the references measured and the subsets chosen, " + plan.table())
    mains = {(method, seed): main_config(cfg, plan, method, seed) for method in cfg.methods for seed in cfg.seeds}

    runs, todo = {}, []
    for (method, seed), main in mains.items():
        subset_name = SUBSET_METHODS.get(method)
        if subset_name is not None:
            main = dataclasses.replace(main, subset=str(subsets[subset_name]))
        folder = Path(main.output_dir)
        key = {"config": to_dict(main), "data": data, "subset": file_digest(Path(main.subset)) if main.subset else None}

        stage = Stage(f"main/{method}/seed{seed}", folder, key, None, ["metrics.json", "cost.json"], RESUMABLE)
        progress["done"] += 1
        if stage.is_done():
            echo(f"[{progress['done']}/{total}] {stage.name}: done before, skipped")
        else:
            resumes = stage.start(live=executor.live_job(folder) is not None)
            if resumes:
                echo(f"[{progress['done']}/{total}] {stage.name}: continues from its last checkpoint")
            save_config(dataclasses.replace(main, resume=resumes), folder / "run_config.json")
            todo.append(
                (
                    f"[{progress['done']}/{total}] {stage.name}",
                    stage,
                    Job(
                        "train",
                        folder / "run_config.json",
                        folder,
                        folder / "log.txt",
                        f"main run '{method}' seed {seed}",
                        ranks=cfg.num_ranks,
                    ),
                )
            )
        reference = REFERENCE_METHODS.get(method)
        runs[(method, seed)] = (folder, Path(references[reference].output_dir) if reference else None)
    _run_mains(executor, todo, echo)

    rows = collect_rows(runs, plan)
    metric_keys = [f"{s}/accuracy" for s in cfg.data.eval_splits] + [
        f"{s}/macro_f1" for s in cfg.data.eval_splits if "ood" in s
    ]
    summary = summarize(rows, cfg.methods, metric_keys)
    ood_split = cfg.reported_ood_split()
    headline = f"{ood_split}/accuracy" if ood_split else (metric_keys[0] if metric_keys else "")
    save_config(cfg, out / "recipe.json")
    return {**write_report(out, rows, summary, metric_keys, gate, headline, plan), "plan": plan}


def stopping_warnings(cfg: RecipeConfig) -> list[str]:
    """What the recipe's early stopping means for FTFT's robustness claim, when it cannot follow an
    OOD validation split."""
    if not any(m in EARLY_STOPPING_METHODS for m in cfg.methods) or cfg.early_stopping.metric is not None:
        return []
    metric = cfg.stopping_metric()
    if "ood" in metric.partition("/")[0].lower():
        return []
    ood = [s for s in cfg.data.eval_splits if "ood" in s.lower()]
    return [
        f"early stopping follows {metric}, an in-distribution split: the task has no OOD validation split "
        f"(a name with ood and dev/val in it). The FTFT paper's robustness gains were measured stopping on OOD "
        f"validation; stopping on ID dev picks the checkpoint best in distribution, so expect less of FTFT out "
        f"of distribution"
        + (
            f"; data.validation_holdout: {ood[0]}:0.3 holds out 30% of {ood[0]!r} for validation, apart "
            f"from the rows it reports, and stops on those"
            if ood
            else ""
        )
    ]


def _run_mains(executor, todo: list, echo) -> None:
    """Run the main runs' stages (name, `Stage`, `Job`), as many at once as the executor takes:
    one after the other locally, every one submitted at once to SLURM."""
    size = executor.batch_size(len(todo))
    for start in range(0, len(todo), size):
        chunk = todo[start : start + size]
        for name, _, _ in chunk:
            echo(f"{name}: running ...")
        started = time.time()
        executor.run([job for _, _, job in chunk], show_progress=True)
        seconds = time.time() - started
        for name, stage, _ in chunk:
            stage.finish(seconds)
            echo(f"{name}: finished in {seconds:.0f} s")


def _select_stage(execute, folder: Path, cfg: RecipeConfig, dynamics: Dynamics | None, split=None, data=None) -> Path:
    """Select a subset from `dynamics` (or, for the random baseline, from the split's uids)."""
    sel = cfg.selection
    key = {"selection": dataclasses.asdict(sel), "source": dynamics.fingerprint if dynamics is not None else data}

    def select(folder: Path) -> None:
        if dynamics is None:  # the random baseline needs only uids and labels: give it flat dynamics
            labels = np.asarray(split.dataset["label"])
            source = Dynamics.create(
                split.dataset["uid"],
                labels,
                np.zeros((len(labels), 1, split.num_labels), dtype=np.float32),
                dataset_fingerprint=split.fingerprint,
                source="uids",
            )
            select_subset(source, "random", fraction=sel.fraction, stratify=sel.stratify).save(folder / "subset.json")
            return
        metrics = compute_metrics(dynamics)
        plot_data_map(metrics, folder / "data_map.png")
        select_subset(dynamics, sel.region, fraction=sel.fraction, stratify=sel.stratify).save(folder / "subset.json")

    execute(Stage(f"select/{folder.name}", folder, key, select, ["subset.json"]))
    return folder / "subset.json"
