"""The demo's recipe with its baselines over several seeds: does FTFT deliver on the embedded task?

Runs `ftft run` on the demo's recipe (same task, models, cost target and evaluations) with ERM,
ERM cut at FTFT's planned cap (`erm_es`), a random subset of the same size under the same cap, and
FTFT (`--set methods=[...]` adds `dm`, the main model as its own reference), over seeds 0..N-1,
then prints the table (mean ± std over seeds, costs planned and actual, relative to ERM), every
run's OOD test accuracy and costs seed by seed, each method's per-seed difference from ERM (and
FTFT's from `erm_es`) on the OOD test split with a 95% t-interval, the plan and the reference
gate, and the machine's CPU. The demo's single-seed numbers are representative only if this table
shows the same ordering.

    python bench/bench_recipe.py [--seeds 3] [--set key=value ...] [--output-dir runs/bench_recipe]
    python bench/bench_recipe.py --recipe examples/vader/recipe.yaml    # a real task, its own methods

Re-running on the same --output-dir keeps the stages already done.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import time
from pathlib import Path

from ftft_ds.config import load_config
from ftft_ds.demo import demo_config
from ftft_ds.pipeline import RecipeConfig, run_recipe

METHODS = ("erm", "erm_es", "random", "ftft")
"""The bench's methods: ERM, ERM cut at FTFT's cap, a random subset under that cap, FTFT."""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=3, help="seeds per method (0..N-1)")
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="change the recipe (repeatable)",
    )
    parser.add_argument("--output-dir", help="default: runs/bench_recipe, or the recipe's own with --recipe")
    parser.add_argument(
        "--recipe", help="run this recipe file (its own methods) instead of the demo's, e.g. examples/vader/recipe.yaml"
    )
    args = parser.parse_args()

    seeds = f"seeds=[{','.join(map(str, range(args.seeds)))}]"
    started = time.time()
    if args.recipe:
        cfg = load_config(RecipeConfig, args.recipe, [seeds, *args.overrides], output_dir=args.output_dir)
    else:
        overrides = [f"methods=[{','.join(METHODS)}]", seeds, *args.overrides]
        cfg = demo_config(args.output_dir or "runs/bench_recipe", overrides)
    report = run_recipe(cfg)
    print("\n" + report["markdown"])
    print(per_seed_table(Path(cfg.output_dir) / "results.json", f"{cfg.reported_ood_split()}/accuracy"))
    print(f"recipe finished in {time.time() - started:.0f} s (stages done before were skipped) on {cpu_model()}")


def per_seed_table(results: Path, metric: str) -> str:
    """Every run's reported OOD metric and costs, seed by seed: the numbers behind the means."""
    rows = json.loads(results.read_text())["rows"]
    lines = [
        f"| method | seed | {metric} | training FLOPs (ERM=100) | FLOPs with evaluations (ERM=100) "
        "| wall time (ERM=100) | steps | best at step |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        lines.append(
            f"| {row['method']}{' (one class)' if row.get('one_class') else ''} | {row['seed']} | "
            f"{100 * row[metric]:.1f} | {row['relative_cost']:.1f} | {row['relative_total_flops']:.1f} | "
            f"{row['relative_wall_time']:.0f} | {row['steps']} | {row['selected_step']} |"
        )
    return "\n".join(lines) + "\n"


def cpu_model() -> str:
    """The CPU's model name and core count, as lscpu reports them: every timing names its machine."""
    try:
        info = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return "an unknown CPU"
    fields = dict(line.split(":", 1) for line in info.splitlines() if ":" in line)
    flags = fields.get("Flags", "").split()
    bf16 = "with" if "avx512_bf16" in flags or "amx_bf16" in flags else "without"
    return f"{fields.get('Model name', '?').strip()}, {fields.get('CPU(s)', '?').strip()} CPUs, {bf16} AVX512-BF16/AMX"


if __name__ == "__main__":
    main()
