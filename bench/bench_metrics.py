"""Benchmark: open a dynamics store, compute its data-map metrics, select 33% ambiguous.

For each size N (examples x 5 epochs x 3 classes, random float32 logits from a seeded generator)
a store is written to a temporary directory (not timed); then a fresh Python process opens it
memory-mapped (with full validation), computes the metrics and selects the subset, reporting wall
times and its peak resident set size. A fresh process keeps the peak memory of one run from
hiding in another's. Targets: 10M examples in at most 5 s and 2 GiB.

    python bench/bench_metrics.py                  # N = 1M and 10M
    python bench/bench_metrics.py --sizes 100000   # a quick run
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

EPOCHS, CLASSES, FRACTION = 5, 3, 0.33
TARGET_SECONDS, TARGET_GIB = 5.0, 2.0

# Runs in the fresh process: argv[1] is the store directory; prints one JSON line.
CHILD = (
    """
import json, resource, sys, time
from ftft_ds.dynamics.store import Dynamics
from ftft_ds.dynamics.metrics import compute_metrics
from ftft_ds.dynamics.select import select_subset
t0 = time.perf_counter()
dyn = Dynamics.load(sys.argv[1])
t1 = time.perf_counter()
metrics = compute_metrics(dyn)
t2 = time.perf_counter()
subset = select_subset(metrics, "ambiguous", fraction=%r)
t3 = time.perf_counter()
print(json.dumps({"load": t1 - t0, "metrics": t2 - t1, "select": t3 - t2, "total": t3 - t0,
                  "selected": len(subset.uids),
                  "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""
    % FRACTION
)


def make_store(n: int, path: Path) -> None:
    """A store of n examples with uids b"%09d" % i, random labels and logits (seed 0)."""
    from ftft_ds.dynamics.store import Dynamics

    rng = np.random.default_rng(0)
    digits = np.empty((n, 9), dtype=np.uint8)
    value = np.arange(n)
    for position in range(8, -1, -1):
        digits[:, position] = ord("0") + value % 10
        value //= 10
    uids = digits.view("S9")[:, 0]
    logits = rng.standard_normal((n, EPOCHS, CLASSES), dtype=np.float32)
    logits *= 2.0
    Dynamics.create(uids, rng.integers(0, CLASSES, n), logits, source="bench").save(path)


def run_child(path: Path) -> dict:
    result = subprocess.run([sys.executable, "-c", CHILD, str(path)], capture_output=True, text=True, check=True)
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1_000_000, 10_000_000], help="numbers of examples")
    parser.add_argument("--repeats", type=int, default=1, help="runs per size; the fastest is reported")
    args = parser.parse_args()

    header = (
        f"{'N':>11} {'E':>2} {'C':>2} {'load s':>7} {'metrics s':>9} {'select s':>8} {'total s':>7} "
        f"{'peak RSS MiB':>12}  target"
    )
    print(header)
    print("-" * len(header))
    for n in args.sizes:
        with tempfile.TemporaryDirectory(prefix="ftft-bench-") as tmp:
            store = Path(tmp) / "dynamics"
            make_store(n, store)
            runs = [run_child(store) for _ in range(max(1, args.repeats))]
        best = min(runs, key=lambda r: r["total"])
        ok = best["total"] <= TARGET_SECONDS and best["peak_rss_mib"] <= TARGET_GIB * 1024
        print(
            f"{n:>11,} {EPOCHS:>2} {CLASSES:>2} {best['load']:>7.2f} {best['metrics']:>9.2f} {best['select']:>8.2f} "
            f"{best['total']:>7.2f} {best['peak_rss_mib']:>12.0f}  {'met' if ok else 'MISSED'}"
        )
        sys.stdout.flush()
    print(
        f"\nselect = {FRACTION:.0%} ambiguous; target: total <= {TARGET_SECONDS:g} s and peak RSS <= {TARGET_GIB:g} GiB"
    )


if __name__ == "__main__":
    started = time.perf_counter()
    main()
    print(f"(benchmark wall time {time.perf_counter() - started:.0f} s)")
