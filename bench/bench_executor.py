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

`--queue-jobs N` measures instead what watching a batch of N jobs asks of the controller, dry: N
held jobs (`sbatch --hold --wrap true`, arrays as large as MaxArraySize allows) sit in the queue
while the orchestrator's own query runs against them, then they are cancelled. Printed: squeue
calls per poll and per minute (the poll interval grows with the batch), the seconds one poll of
all N takes, and the same for one squeue call per job, as a per-job poll would make.
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


def submit_held(jobs: int) -> list[str]:
    """`jobs` held no-op jobs as arrays of at most MaxArraySize; their ids, array tasks one by one."""
    from ftft_ds.jobs.slurm import max_array_size

    size, ids = max_array_size(), []
    for start in range(0, jobs, size):
        count = min(size, jobs - start)
        proc = subprocess.run(
            ["sbatch", "--parsable", "--hold", f"--array=0-{count - 1}", "-J", "ftft-bench", "-o", "/dev/null"]
            + ["--wrap", "true"],
            capture_output=True,
            text=True,
            check=True,
        )
        array = proc.stdout.strip().split(";")[0]
        ids += [f"{array}_{i}" for i in range(count)]
    return ids


def timed(call, repeats: int) -> float:
    """Median seconds of `repeats` calls."""
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        call()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def queue_load(jobs: int) -> None:
    from ftft_ds.jobs import ExecutorConfig
    from ftft_ds.jobs.slurm import SlurmExecutor, queue_states

    started = time.perf_counter()
    ids = submit_held(jobs)
    submitted = time.perf_counter() - started
    try:
        states = queue_states(ids)
        assert len(states) == jobs and set(states.values()) == {"PENDING"}, f"{len(states)} of {jobs} seen"
        one_poll = timed(lambda: queue_states(ids), 5)
        per_job = timed(lambda: queue_states(ids[:1]), 20) * jobs
    finally:
        arrays = sorted({job.split("_")[0] for job in ids})
        for start in range(0, len(arrays), 200):
            subprocess.run(["scancel", *arrays[start : start + 200]], check=False)
    cfg = ExecutorConfig(kind="slurm")
    interval = SlurmExecutor(cfg, Path(tempfile.gettempdir()))._poll_interval(jobs)
    print(f"\n{jobs} held jobs in {len(arrays)} arrays, submitted in {submitted:.0f} s; ", end="")
    print(f"poll_seconds {cfg.poll_seconds:g}\n")
    print("| poll | squeue calls per poll | poll interval, s | squeue calls per minute | seconds per poll |")
    print("|---|---|---|---|---|")
    print(f"| one call for the batch | 1 | {interval:g} | {60 / interval:.1f} | {one_poll:.2f} |")
    print(f"| one call per job | {jobs} | {interval:g} | {60 / interval * jobs:.0f} | {per_job:.1f} |")
    print(f"\nper-job / batch seconds per poll: {per_job / one_poll:.0f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--parallel", type=int, default=2, help="jobs at once, both executors")
    parser.add_argument("--queue-jobs", type=int, help="measure the queue polls of this many held jobs instead")
    args = parser.parse_args()
    if args.queue_jobs:
        queue_load(args.queue_jobs)
        return
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
