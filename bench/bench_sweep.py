"""A real seed sweep on the embedded task: is early stopping worth it?

Trains a WI x DO grid of trials to the end (policy `none`), evaluating 10 times per epoch, then
replays early-stopping policies (Dodge et al.'s start t / rank at f / continue p, and successive
halving) on the recorded trials and compares each one's expected best validation accuracy with
training trials to the end:

- at the same compute (floor of the policy's budget in full runs), and
- at twice the policy's compute (the target: the policy is as good at no more than half the cost).

    python bench/bench_sweep.py [--wi 4] [--do 3] [--train-size 2000] [--epochs 3] [--policy SPEC ...]

Re-running on the same --output-dir keeps the trials already trained and only replays.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

from ftft_ds.config import load_config
from ftft_ds.sweep import expected_max
from ftft_ds.sweep.analysis import compare_policy_vs_full
from ftft_ds.sweep.report import write_sweep_report
from ftft_ds.sweep.runner import SweepConfig, run_sweep

DEFAULT_POLICIES = ("ssc:t=8,f=0.25,p=2", "ssc:t=8,f=0.5,p=2", "ssc:t=12,f=0.5,p=3", "halving:t=8,eta=2,min=0.125")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--wi", type=int, default=4, help="weight-initialisation seeds")
    parser.add_argument("--do", type=int, default=3, help="data-order seeds")
    parser.add_argument("--train-size", type=int, default=2000)
    parser.add_argument("--epochs", type=float, default=3.0, help="epochs of a trial trained to the end")
    parser.add_argument("--lr", type=float, default=2.0e-4)
    parser.add_argument("--model", default="minilm")
    parser.add_argument("--num-layers", type=int, default=2)
    parser.add_argument(
        "--policy",
        action="append",
        help="policy to replay (repeatable; the first goes into the sweep report); default: "
        + ", ".join(DEFAULT_POLICIES),
    )
    parser.add_argument("--output-dir", default="runs/bench_sweep")
    args = parser.parse_args()
    args.policy = args.policy or list(DEFAULT_POLICIES)

    trials = args.wi * args.do
    # Every trial is kept (no divergence guard), so that the replay sees the weak ones too.
    cfg = load_config(
        SweepConfig,
        None,
        ["divergence_margin=null"],
        **{
            "output_dir": args.output_dir,
            # Trials evaluate often, so only on the validation split they are ranked by.
            "data": {"embedded_train_size": args.train_size, "eval_splits": ["dev"]},
            "main": {
                "model": args.model,
                "num_layers": args.num_layers,
                "micro_batch_size": 16,
                "lr": args.lr,
                "max_length": 48,
                "budget": "erm:1",
                "erm_epochs": args.epochs,
                "log_every": 10,
            },
            "policy": f"none:t={trials}",
            "wi_seeds": list(range(1, args.wi + 1)),
            "do_seeds": list(range(101, 101 + args.do)),
            "evals_per_epoch": 10,
        },
    )
    started = time.time()
    run_sweep(cfg)  # trials already trained to the end in output_dir are kept, not re-run
    seconds = time.time() - started
    report = write_sweep_report(args.output_dir, compare=args.policy[0])
    print(report["markdown"])
    print(f"sweep of {trials} trials ready in {seconds:.0f} s\n")

    rows = json.loads(Path(args.output_dir, "sweep.json").read_text())["trials"]
    finals = [row["final"] for row in rows]
    print("| policy | full runs | policy E[best] | full training, same compute | full training, 2x compute |")
    print("|---|---|---|---|---|")
    for spec in args.policy:
        result = compare_policy_vs_full(rows, spec)
        double = min(trials, math.floor(2 * result.budget + 1e-9))
        print(
            f"| `{result.policy}` | {result.budget:.2f} | {result.policy_mean:.4f} ± {result.policy_std:.4f} "
            f"| {result.full_mean:.4f} ({result.full_trials} trials) "
            f"| {expected_max(finals, double, method='unbiased'):.4f} ({double} trials) |"
        )


if __name__ == "__main__":
    main()
