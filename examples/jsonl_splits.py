"""What the real-data examples' `prepare.py` scripts share: text keys for de-duplication, stratified
splits, and the jsonl folder that `ftft run` reads as it is (`data.source: <folder>`)."""

from __future__ import annotations

import json
import random
from pathlib import Path


def text_key(text: str) -> str:
    """A text as de-duplication compares it: lower case, runs of white space as one space."""
    return " ".join(text.lower().split())


def stratified(rows: list[dict], fractions, rng: random.Random) -> list[list[dict]]:
    """`rows` cut into parts of the given shares, each label split in the same shares (the last part
    takes what rounding leaves), every part shuffled."""
    parts = [[] for _ in fractions]
    for label in sorted({r["label"] for r in rows}):
        items = [r for r in rows if r["label"] == label]
        rng.shuffle(items)
        start = 0
        for i, fraction in enumerate(fractions):
            end = len(items) if i == len(fractions) - 1 else start + round(fraction * len(items))
            parts[i] += items[start:end]
            start = end
    for part in parts:
        rng.shuffle(part)
    return parts


def keep_stratified(rows: list[dict], size: int, rng: random.Random) -> list[dict]:
    """A stratified random `size` of `rows`, 2 <= size <= len(rows) (for machines where all of them
    take too long)."""
    return stratified(rows, [size / len(rows), 1 - size / len(rows)], rng)[0]


def write_splits(out: Path, splits: dict) -> None:
    """One `<split>.jsonl` of {"id", "text", "label"} rows per split, and a line of counts each.

    Each file is written beside its final name and renamed into place, so an interrupted run
    leaves no half-written split behind."""
    out.mkdir(parents=True, exist_ok=True)
    for name, rows in splits.items():
        partial = out / f".{name}.jsonl.partial"
        with open(partial, "w", encoding="utf-8") as handle:
            handle.writelines(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)
        partial.replace(out / f"{name}.jsonl")
        counts = {label: sum(r["label"] == label for r in rows) for label in sorted({r["label"] for r in rows})}
        shares = ", ".join(f"{count / max(1, len(rows)):.0%} {label}" for label, count in counts.items())
        print(f"{name:8s} {len(rows):6d} rows, {shares}")
    print(f"written to {out}")
