"""Stages of a recipe: each one a folder with a manifest, skipped when already done with the same inputs.

A stage's key holds everything its output depends on: its resolved config and the fingerprints of
the files it reads. `stage.json` records the key's digest and whether the stage finished. A stage
is skipped only when it has the same digest and its outputs exist: finished, or finished by a job
that outlived the orchestrator which started it (a detached SLURM job). A stage that was
interrupted with the same digest and left a checkpoint (`checkpoint`) continues from it; one that
failed without one is run again from scratch; and a changed input changes the digest, so nothing
is silently reused across changed inputs.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

from ..errors import FtftError
from ..io import run_in_progress, write_json

MANIFEST = "stage.json"


def digest(obj) -> str:
    """A stable hash of a JSON-able object."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def file_digest(path: Path) -> str:
    """A content hash of a file, or of every file below a folder (names included)."""
    h = hashlib.blake2b(digest_size=16)
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    for file in files:
        h.update(str(file.relative_to(path.parent if path.is_file() else path)).encode())
        with open(file, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                h.update(block)
    return h.hexdigest()


@dataclass
class Stage:
    """One step of a recipe: `run(folder)` writes `outputs` into `folder`."""

    name: str
    folder: Path
    key: dict
    run: Callable[[Path], None]
    outputs: Sequence[str]
    checkpoint: str | None = None
    """A file in the folder whose existence means an interrupted run of the stage can continue."""

    def _recorded(self) -> dict | None:
        try:
            return json.loads((self.folder / MANIFEST).read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            return None

    def resumable(self) -> bool:
        """Whether an interrupted run of this very stage (same digest) left a checkpoint to go on from."""
        recorded = self._recorded()
        return (
            self.checkpoint is not None
            and recorded is not None
            and recorded.get("digest") == digest(self.key)
            and (self.folder / self.checkpoint).is_file()
        )

    def is_done(self) -> bool:
        recorded = self._recorded()
        if recorded is None:
            return False
        if recorded.get("digest") != digest(self.key) or not all((self.folder / o).exists() for o in self.outputs):
            return False
        if recorded.get("status") == "running" and run_in_progress(self.folder) is None:
            self.finish(recorded.get("seconds", 0.0))  # its job finished it while no orchestrator watched
            return True
        return recorded.get("status") == "done"

    def execute(self, live: bool = False) -> tuple[bool, float]:
        """Run the stage unless it is done; return (whether it ran, seconds it took). `live`: see `start`."""
        if self.is_done():
            return False, 0.0
        self.start(live)
        started = time.time()
        self.run(self.folder)
        seconds = time.time() - started
        self.finish(seconds)
        return True, seconds

    def start(self, live: bool) -> bool:
        """Begin a stage that is not done, and return whether it continues from its checkpoint: a
        `live` job (re-attached to) keeps its folder; an interrupted run of this very stage (Ctrl-C,
        a cancelled batch) that left a checkpoint goes on from it; anything else starts afresh."""
        resumes = not live and self.resumable()
        self.begin(keep=live, resume=resumes)
        return resumes

    def begin(self, keep: bool = False, resume: bool = False) -> None:
        """Clear the folder for a fresh run, unless `keep` (a job re-attached to is still writing it)
        or `resume` (an interrupted run of this stage continues from its checkpoint there)."""
        if keep:
            return
        holder = run_in_progress(self.folder)
        if holder is not None:
            raise FtftError(
                f"stage {self.name} cannot re-run: {self.folder} is still being written by {holder}; "
                f"stop that run first"
            )
        if resume:
            return
        if self.folder.exists():
            shutil.rmtree(self.folder)
        self.folder.mkdir(parents=True)
        write_json(self.folder / MANIFEST, {"digest": digest(self.key), "status": "running", "key": self.key})

    def finish(self, seconds: float) -> None:
        """Mark the stage done, once its outputs are there."""
        missing = [o for o in self.outputs if not (self.folder / o).exists()]
        if missing:
            raise FtftError(f"stage {self.name} finished without writing {missing[0]} in {self.folder}")
        write_json(
            self.folder / MANIFEST, {"digest": digest(self.key), "status": "done", "key": self.key, "seconds": seconds}
        )
