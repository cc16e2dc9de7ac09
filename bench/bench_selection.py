"""How good is the reference's subset, and how good could a subset be? The embedded task's ceiling.

The embedded task knows what the data map is meant to find: the examples whose cue word names
another label than their own (cue-breaking; see `ftft_ds.data.task`). This bench runs the demo's
recipe with ERM and FTFT over seeds 0..N-1 (the stages `bench_recipe.py` already ran in the same
`--output-dir` are reused), then

1. prints the composition of FTFT's subset against the training split: the share of cue-breaking
   examples per construction, and of mislabelled ones;
2. trains the main model, exactly as FTFT's main runs (same config, seeds, budget cap, evaluations
   and patience), on the *ideal* subset of the same size: every clean cue-breaking example, filled
   with cue-following ones drawn at random (seeded);
3. prints ERM, FTFT and the ideal subset side by side (mean ± std over seeds; the ideal subset's
   cost counts no reference, since no model chose it) and each one's per-seed OOD difference from ERM.

If the ideal subset beats ERM where FTFT does not, the task supports the method and the reference's
selection is what falls short.

    python bench/bench_selection.py [--seeds 3] [--set key=value ...] [--output-dir runs/bench_recipe]
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from pathlib import Path

import numpy as np

from ftft_ds.config import save_config, to_dict
from ftft_ds.data.load import load_split
from ftft_ds.data.task import CONSTRUCTIONS, generate_task, shortcut_label
from ftft_ds.demo import demo_config
from ftft_ds.dynamics.select import Subset
from ftft_ds.jobs import Job, LocalExecutor
from ftft_ds.pipeline import main_config, run_recipe
from ftft_ds.pipeline.report import collect_rows, compare, comparison_line, markdown_table, summarize
from ftft_ds.pipeline.stages import Stage, file_digest

IDEAL = "ideal"


def example_kinds(cfg) -> dict:
    """uid -> (construction, cue-breaking, mislabelled) for the recipe's embedded training split."""
    split = load_split(cfg.data, cfg.data.train_split)
    raw = generate_task(cfg.data.embedded_train_size, cfg.data.embedded_seed)["train"]
    truth = {
        (p, h): (c, noisy) for p, h, c, noisy in zip(raw["text"], raw["text_pair"], raw["construction"], raw["noisy"])
    }
    kinds = {}
    for uid, premise, hypothesis, label in zip(
        split.uids(), split.dataset["text"], split.dataset["text_pair"], split.dataset["label"]
    ):
        construction, noisy = truth[(premise, hypothesis)]
        kinds[uid] = (construction, shortcut_label(premise, hypothesis) != label, noisy)
    return {"split": split, "kinds": kinds}


def composition(uids, kinds: dict) -> dict:
    """Share of cue-breaking examples, overall and per construction, and of mislabelled ones."""
    rows = [kinds[u] for u in uids]
    shares = {"cue-breaking": np.mean([b for _, b, _ in rows]), "mislabelled": np.mean([n for _, _, n in rows])}
    for name in CONSTRUCTIONS:
        mine = [b for c, b, _ in rows if c == name]
        shares[f"cue-breaking among {name}"] = np.mean(mine) if mine else float("nan")
    return shares


def ideal_subset(split, kinds: dict, size: int, seed: int) -> Subset:
    """Every clean cue-breaking example, then cue-following ones at random up to `size`."""
    uids = split.uids()
    breaking = [u for u in uids if kinds[u][1] and not kinds[u][2]]
    following = [u for u in uids if not kinds[u][1]]
    rng = np.random.default_rng(seed)
    fill = [following[i] for i in rng.permutation(len(following))[: max(0, size - len(breaking))]]
    return Subset(
        breaking[:size] + fill,
        {
            "dataset_fingerprint": split.fingerprint,
            "region": IDEAL,
            "num_selected": min(size, len(breaking) + len(fill)),
            "seed": seed,
        },
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=3, help="seeds per method (0..N-1)")
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="change the demo's recipe (repeatable)",
    )
    parser.add_argument("--output-dir", default="runs/bench_recipe")
    args = parser.parse_args()

    seeds = list(range(args.seeds))
    cfg = demo_config(args.output_dir, ["methods=[erm,ftft]", f"seeds=[{','.join(map(str, seeds))}]", *args.overrides])
    started = time.time()
    plan = run_recipe(cfg)["plan"]
    out = Path(cfg.output_dir)
    task = example_kinds(cfg)
    ftft_subset = Subset.load(out / "select" / "small" / "subset.json")

    runs = {}
    for seed in seeds:
        folder = out / IDEAL / f"seed{seed}"
        subset_path = out / IDEAL / f"subset_seed{seed}.json"
        ideal_subset(task["split"], task["kinds"], len(ftft_subset.uids), seed).save(subset_path)
        run = dataclasses.replace(main_config(cfg, plan, "ftft", seed), subset=str(subset_path), output_dir=str(folder))

        def train(folder: Path, run=run, seed=seed) -> None:
            save_config(run, folder / "run_config.json")
            LocalExecutor().run(
                [
                    Job(
                        "train",
                        folder / "run_config.json",
                        folder,
                        folder / "log.txt",
                        f"main run on the ideal subset, seed {seed}",
                        ranks=cfg.num_ranks,
                    )
                ],
                show_progress=True,
            )

        stage = Stage(
            f"{IDEAL}/seed{seed}",
            folder,
            {"config": to_dict(run), "subset": file_digest(subset_path)},
            train,
            ["metrics.json", "cost.json"],
        )
        print(f"{stage.name}: {'running' if stage.execute()[0] else 'done before, skipped'}", flush=True)
        runs[(IDEAL, seed)] = (folder, None)
    for method in ("erm", "ftft"):
        for seed in seeds:
            runs[(method, seed)] = (
                out / "main" / method / f"seed{seed}",
                out / "reference" / "small" if method == "ftft" else None,
            )

    print("\nsubset composition (share of each group; the training split has the same groups):")
    ideal_uids = Subset.load(out / IDEAL / "subset_seed0.json").uids
    columns = {"train": task["split"].uids(), "ftft": ftft_subset.uids, "ideal (seed 0)": ideal_uids}
    tables = {name: composition(uids, task["kinds"]) for name, uids in columns.items()}
    print("| group | " + " | ".join(columns) + " |\n|---|" + "---|" * len(columns))
    for group in tables["train"]:
        print(f"| {group} | " + " | ".join(f"{100 * tables[c][group]:.0f}%" for c in columns) + " |")

    rows = collect_rows(runs, plan)
    metric_keys = [f"{s}/accuracy" for s in cfg.data.eval_splits]
    print("\n" + markdown_table(summarize(rows, ["erm", "ftft", IDEAL], metric_keys), metric_keys))
    headline = f"{cfg.reported_ood_split()}/accuracy"
    for method in ("ftft", IDEAL):
        comparison = compare(rows, method, headline)
        if comparison is not None:
            print(comparison_line(comparison, plan.target))
    print(f"\nfinished in {time.time() - started:.0f} s (stages done before were skipped)")


if __name__ == "__main__":
    main()
