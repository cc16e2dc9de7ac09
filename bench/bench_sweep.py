"""A real seed sweep on the embedded task: is early stopping worth it?

Trains a WI x DO grid of trials to the end (policy `none`), evaluating 10 times per epoch, then
replays Dodge et al.'s start-t / stop-at-f / continue-p policy on the recorded trials and compares
its expected best validation accuracy with training trials to the end:

- at the same compute (floor of the policy's budget in full runs), and
- at twice the policy's compute (the target: the policy is as good at no more than half the cost).

    python bench/bench_sweep.py [--wi 4] [--do 2] [--train-size 1000] [--policy ssc:t=8,f=0.25,p=2]
"""
from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

from ftft_ds.config import load_config
from ftft_ds.sweep import expected_max, parse
from ftft_ds.sweep.report import write_sweep_report
from ftft_ds.sweep.runner import SweepConfig, run_sweep


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--wi", type=int, default=4, help="weight-initialisation seeds")
    parser.add_argument("--do", type=int, default=2, help="data-order seeds")
    parser.add_argument("--train-size", type=int, default=1000)
    parser.add_argument("--model", default="minilm")
    parser.add_argument("--num-layers", type=int, default=2)
    parser.add_argument("--policy", default="ssc:t=8,f=0.25,p=2")
    parser.add_argument("--output-dir", default="runs/bench_sweep")
    args = parser.parse_args()

    trials = args.wi * args.do
    # Every trial is kept (no divergence guard), so that the replay sees the weak ones too.
    cfg = load_config(SweepConfig, None, ["divergence_margin=null"], **{
        "output_dir": args.output_dir,
        # Trials evaluate often, so only on the validation split they are ranked by.
        "data": {"embedded_train_size": args.train_size, "eval_splits": ["dev"]},
        "main": {"model": args.model, "num_layers": args.num_layers, "micro_batch_size": 16, "lr": 2.0e-4,
                 "max_length": 48, "budget": "erm:1", "erm_epochs": 2, "log_every": 10},
        "policy": f"none:t={trials}",
        "wi_seeds": list(range(1, args.wi + 1)),
        "do_seeds": list(range(101, 101 + args.do)),
        "evals_per_epoch": 10,
    })
    started = time.time()
    run_sweep(cfg)
    seconds = time.time() - started
    report = write_sweep_report(args.output_dir, compare=args.policy)
    print(report["markdown"])

    policy = parse(args.policy)
    comparison = report["policy_vs_full"]
    finals = [row["final"] for row in json.loads(Path(args.output_dir, "sweep.json").read_text())["trials"]]
    double = min(trials, math.floor(2 * policy.budget_in_full_runs() + 1e-9))
    print(f"sweep of {trials} trials trained to the end in {seconds:.0f} s")
    print(f"policy {policy} at {policy.budget_in_full_runs():.2f} full runs: expected best "
          f"{comparison['policy_mean']:.4f} (sd {comparison['policy_std']:.4f})")
    print(f"full training, same compute ({comparison['full_trials']} trials): {comparison['full_mean']:.4f} "
          f"(sd {comparison['full_std']:.4f})")
    print(f"full training, {double} trials (>= 2x the policy's compute, unbiased estimator): "
          f"{expected_max(finals, double, method='unbiased'):.4f}")


if __name__ == "__main__":
    main()
