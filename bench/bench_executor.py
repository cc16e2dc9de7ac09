"""Orchestration overhead per job: the same tiny sweep with the local executor and on SLURM.

A sweep of `--trials` tiny-bert trials of `--steps` steps each, policy ssc (half of them continue
after the first rung), so that it has two batches of jobs and a hand-off between them. It runs
once with the local executor (`parallel` trials at a time, child processes) and once on the SLURM
cluster that answers here (`max_in_flight` = the same number, one task per job). Printed, side by
side: wall time and wall time per job; for SLURM also the seconds from a job's submission to its
start (SLURM's own submit and start times) and from the last job of rung 1 ending to the first of
rung 2 being submitted.

    bash .ci/slurm_cluster.sh                 # a two-node cluster on loopback, if none answers
    python bench/bench_executor.py            # 20 trials: about 10 minutes on 2 CPU cores
"""

from __future__ import annotations

import argparse
import datetime
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]


def sweep_config(out: Path, trials: int, steps: int, executor: dict, parallel: int) -> dict:
    return {
        "output_dir": str(out),
        "data": {"embedded_train_size": 64, "eval_splits": ["dev"]},
        "main": {
            "model": "tiny-bert",
            "micro_batch_size": 8,
            "budget": f"steps:{steps}",
            "log_every": 1,
            "max_length": 32,
        },
        "policy": f"ssc:t={trials},f=0.5,p={trials // 2}",
        "evals_per_epoch": 1,
        "executor": executor,
        **({"parallel": parallel} if executor["kind"] == "local" else {}),
    }


def run(config: dict, folder: Path) -> float:
    path = folder / f"{config['executor']['kind']}.yaml"
    path.write_text(yaml.safe_dump(config))
    started = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "ftft_ds", "sweep", str(path)],
        cwd=REPO,
        capture_output=True,
        text=True,
        env={**__import__("os").environ, "OMP_NUM_THREADS": "1"},
    )
    if proc.returncode != 0:
        raise SystemExit(f"the {config['executor']['kind']} sweep failed:\n{proc.stdout[-2000:]}{proc.stderr[-2000:]}")
    return time.perf_counter() - started


def slurm_times(out: Path) -> tuple[list, float]:
    """Queue waits (start - submit, seconds) of every job, and the hand-off between the two rungs:
    from the last job of rung 1 ending to the first job of rung 2 being submitted."""

    def stamp(text):
        return datetime.datetime.fromisoformat(text).timestamp()

    records = []
    for path in sorted((out / "trials").glob("trial*/job.json")):
        last = json.loads(path.read_text())
        records += [*last.pop("earlier"), last]
    waits = [stamp(r["ended"]["start"]) - stamp(r["ended"]["submit"]) for r in records]
    first_rung = min(r["submitted"] for r in records)
    rung_one = [r for r in records if r["submitted"] - first_rung < 1.0]  # submitted together, as one array
    rung_two = [r for r in records if r not in rung_one]
    handoff = min(r["submitted"] for r in rung_two) - max(stamp(r["ended"]["end"]) for r in rung_one)
    return waits, handoff


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--parallel", type=int, default=2, help="jobs at once, both executors")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        jobs = args.trials + args.trials // 2
        local = run(sweep_config(tmp / "local", args.trials, args.steps, {"kind": "local"}, args.parallel), tmp)
        slurm = run(
            sweep_config(
                tmp / "slurm",
                args.trials,
                args.steps,
                {"kind": "slurm", "max_in_flight": args.parallel, "poll_seconds": 1},
                args.parallel,
            ),
            tmp,
        )
        waits, handoff = slurm_times(tmp / "slurm")
    print(
        f"\n{args.trials} trials of {args.steps} steps, ssc (half continue): {jobs} jobs, {args.parallel} at a time\n"
    )
    print(
        "| executor | wall s | wall s per job | submission to start, s (median / max) "
        "| rung 1 end to rung 2 submission, s |"
    )
    print("|---|---|---|---|---|")
    print(f"| local | {local:.0f} | {local / jobs:.1f} | - | - |")
    print(
        f"| slurm | {slurm:.0f} | {slurm / jobs:.1f} | {statistics.median(waits):.1f} / {max(waits):.0f} "
        f"| {handoff:.1f} |"
    )
    print(f"\nslurm / local wall time: {slurm / local:.2f}")


if __name__ == "__main__":
    main()
