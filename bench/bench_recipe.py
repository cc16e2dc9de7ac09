"""The demo's recipe with every baseline over several seeds: does FTFT deliver on the embedded task?

Runs `ftft run` on the demo's recipe (same task, models, budgets and early stopping) with the five
methods (ERM, ERM with FTFT's early stopping, dataset cartography, a random subset, FTFT) and
seeds 0..N-1, then prints the table (mean ± std over seeds, cost relative to ERM), each method's
per-seed difference from ERM on the OOD test split with a 95% t-interval, and the reference gate.
The demo's single-seed numbers are representative only if this table shows the same ordering.

    python bench/bench_recipe.py [--seeds 3] [--set key=value ...] [--output-dir runs/bench_recipe]

Re-running on the same --output-dir keeps the stages already done.
"""

from __future__ import annotations

import argparse
import time

from ftft_ds.demo import demo_config
from ftft_ds.pipeline import run_recipe
from ftft_ds.pipeline.config import METHODS


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

    overrides = [f"methods=[{','.join(METHODS)}]", f"seeds=[{','.join(map(str, range(args.seeds)))}]", *args.overrides]
    started = time.time()
    report = run_recipe(demo_config(args.output_dir, overrides))
    print("\n" + report["markdown"])
    print(f"recipe finished in {time.time() - started:.0f} s (stages done before were skipped)")


if __name__ == "__main__":
    main()
