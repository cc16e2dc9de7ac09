"""`ftft status DIR`: what is done, running, queued and failed in a recipe's or a sweep's folder,
and how much disk each run takes (checkpoints hold about 16 bytes per parameter each).

Read from the folders alone (the stage manifests, the trials' results, the job records) and, for
the jobs recorded there, from SLURM's queue: it works while an orchestrator runs, after it was
stopped, and from another shell.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from .slurm import RECORD, queue_states, read_record

STAGE_MANIFEST = "stage.json"


def run_folders(root: Path) -> list[Path]:
    """The stage folders of a recipe (each with a manifest) and the trial folders of a sweep."""
    stages = [path.parent for path in root.rglob(STAGE_MANIFEST)]
    trials = (
        sorted(path for path in (root / "trials").glob("trial*") if path.is_dir()) if (root / "trials").is_dir() else []
    )
    return sorted(stages) + trials


def folder_states(root: str | Path) -> list[dict]:
    """One row per run folder under `root`: name, status, SLURM job id (if any), bytes on disk and
    log path."""
    root = Path(root)
    folders = run_folders(root)
    records = {folder: read_record(folder) for folder in folders}
    job_ids = [record["job_id"] for record in records.values() if record]
    queued = queue_states(job_ids) if job_ids and shutil.which("squeue") else {}
    rows = []
    for folder in folders:
        record = records[folder]
        job_id = record["job_id"] if record else None
        rows.append(
            {
                "name": str(folder.relative_to(root)),
                "status": _status(folder, queued.get(job_id), record),
                "job": job_id,
                "disk": disk_bytes(folder),
                "log": record["stdout"] if record else _local_log(folder),
            }
        )
    return rows


def disk_bytes(folder: Path) -> int:
    """Bytes the files under `folder` take (links not followed)."""
    total = 0
    for parent, _, files in os.walk(folder):
        for name in files:
            path = os.path.join(parent, name)
            if not os.path.islink(path):
                total += os.path.getsize(path)
    return total


def human_bytes(count: float) -> str:
    """`count` bytes in the largest binary unit that keeps it at least 1 (`12.3 GiB`)."""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if count < 1024:
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1024
    return f"{count:.1f} TiB"


def _status(folder: Path, queue_state: str | None, record: dict | None) -> str:
    if queue_state is not None:
        return {"PENDING": "queued", "RUNNING": "running"}.get(queue_state, queue_state.lower())
    ended = (record or {}).get("ended", {}).get("state", "COMPLETED")
    if ended not in ("COMPLETED", "UNKNOWN"):
        return f"failed ({ended.lower()})"
    manifest = folder / STAGE_MANIFEST
    if manifest.is_file():
        recorded = json.loads(manifest.read_text())
        return "done" if recorded.get("status") == "done" else "failed or stopped"
    metrics = folder / "metrics.json"
    if metrics.is_file():
        return f"done to step {json.loads(metrics.read_text())['steps']}"
    return "failed or stopped" if (folder / RECORD).is_file() or (folder / "segments.log").is_file() else "not started"


def _local_log(folder: Path) -> str | None:
    for name in ("log.txt", "segments.log"):
        if (folder / name).is_file():
            return str(folder / name)
    return None


def status_table(rows: list) -> str:
    """The rows as an aligned plain-text table, and the disk they take in all."""
    header = ("run", "status", "job", "disk", "log")
    cells = [
        header,
        *[(r["name"], r["status"], r["job"] or "-", human_bytes(r["disk"]), r["log"] or "-") for r in rows],
    ]
    widths = [max(len(str(row[i])) for row in cells) for i in range(4)]
    lines = [
        "  ".join(str(value).ljust(width) for value, width in zip(row[:4], widths)) + "  " + str(row[4])
        for row in cells
    ]
    return "\n".join([*lines, f"{len(rows)} runs, {human_bytes(sum(r['disk'] for r in rows))} on disk"])
