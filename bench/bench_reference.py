"""What a cheap reference costs in wall time, and what it finds: the demo's reference, A/B.

A reference of 2% of ERM's FLOPs can still take as long as ERM on a CPU: a 32-wide model's step is
per-step overhead (its Adam update of a 30,522-row embedding table, DeepSpeed's bookkeeping), so
its wall time follows its number of steps, not its FLOPs. This bench trains the demo's reference
(`tiny-bert`, 30 epochs, one rank, `zero0`) with each setting named, over several reference seeds,
and prints side by side its training loop's wall time and what its ambiguous third holds: the share
of the embedded task's cue-breaking examples (the examples the data map should find; the training
split alone, no OOD split) and the gate's own figures. Settings are `BATCH:LR[:KERNEL]`, KERNEL
`fused` (PyTorch's fused CPU AdamW, the default where torch has it) or `foreach`.

    python bench/bench_reference.py [--rows 3000] [--seeds 3] [--settings 16:2e-3 64:3e-3 16:2e-3:foreach]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

from bench_recipe import cpu_model
from bench_selection import composition, example_kinds

from ftft_ds.config import load_config
from ftft_ds.dynamics.select import select_subset
from ftft_ds.dynamics.store import Dynamics
from ftft_ds.pipeline import RecipeConfig
from ftft_ds.train.ds_config import find_ds_config


def kernel_config(kernel: str, folder: Path) -> str:
    """The bundled `zero0` config with AdamW's CPU kernel named (`fused` or `foreach`)."""
    config = json.loads(find_ds_config("zero0").read_text())
    config["optimizer"]["params"][kernel] = True
    path = folder / f"zero0_{kernel}.json"
    path.write_text(json.dumps(config))
    return str(path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=3000, help="embedded training rows (the demo's: 3000)")
    parser.add_argument("--seeds", type=int, default=3, help="reference seeds 0..N-1")
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--settings", nargs="+", default=["16:2e-3", "64:3e-3", "16:2e-3:foreach"])
    parser.add_argument("--output-dir", default="runs/bench_reference")
    args = parser.parse_args()

    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    recipe = load_config(RecipeConfig, None, [f"data.embedded_train_size={args.rows}"])
    kinds = example_kinds(recipe)["kinds"]
    print(f"training split: {args.rows} rows, {100 * sum(k[1] for k in kinds.values()) / len(kinds):.0f}% cue-breaking")
    lines = [
        "| batch | lr | Adam kernel | seed | loop s | steps | ms a step | cue-breaking in its third | "
        "dev acc. | last-epoch train acc. |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    summary = []
    for setting in args.settings:
        batch, lr, *rest = setting.split(":")
        kernel = rest[0] if rest else "fused"
        seconds, shares = [], []
        for seed in range(args.seeds):
            folder = out / f"b{batch}_lr{lr}_{kernel}_s{seed}"
            command = [
                sys.executable,
                "-m",
                "ftft_ds",
                "reference",
                "--model",
                "tiny-bert",
                "--epochs",
                str(args.epochs),
            ]
            command += ["-o", str(folder), "--overwrite", "--ds-config", kernel_config(kernel, out)]
            for field in (
                f"micro_batch_size={batch}",
                f"lr={lr}",
                "max_length=40",
                "log_every=1000",
                f"init_seed={seed}",
                f"data_seed={seed}",
                f"dropout_seed={seed}",
                f"data.embedded_train_size={args.rows}",
                "data.eval_splits=[dev]",
            ):
                command += ["--set", field]
            subprocess.run(command, check=True, capture_output=True)
            cost = json.loads((folder / "cost.json").read_text())
            metrics = json.loads((folder / "metrics.json").read_text())
            dynamics = Dynamics.load(folder / "dynamics")
            share = composition(select_subset(dynamics, "ambiguous", fraction=0.33).uids, kinds)["cue-breaking"]
            train_accuracy = float((dynamics.logits[:, -1, :].argmax(1) == dynamics.labels).mean())
            seconds.append(cost["wall_seconds"])
            shares.append(share)
            lines.append(
                f"| {batch} | {lr} | {kernel} | {seed} | {cost['wall_seconds']:.1f} | {cost['optimizer_steps']} | "
                f"{1000 * cost['wall_seconds'] / cost['optimizer_steps']:.1f} | {100 * share:.0f}% | "
                f"{metrics['final']['dev/accuracy']:.3f} | {train_accuracy:.2f} |"
            )
            print(lines[-1], flush=True)
        summary.append((setting, statistics.mean(seconds), statistics.mean(shares)))
    print("\n" + "\n".join(lines))
    base = summary[0][1]
    print("\n| setting | mean loop s | against the first | mean cue-breaking share |\n|---|---|---|---|")
    for setting, seconds, share in summary:
        print(f"| {setting} | {seconds:.1f} | {seconds / base:.2f}x | {100 * share:.0f}% |")
    print(f"\non {cpu_model()}")


if __name__ == "__main__":
    main()
