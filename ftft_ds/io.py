"""Atomic file writes, manifests, and runs' ownership of their output folders.

Every artefact is written under a temporary name in its destination folder and renamed into place,
so a crash never leaves a half-written file that a later stage could mistake for a finished one.
A manifest (JSON) beside each artefact records what it was made from. A run holds a lock on its
output folder while it runs (`own_output_dir`), and replaces an earlier run's artefacts there only
when asked to.
"""
from __future__ import annotations

import contextlib
import fcntl
import glob
import json
import os
import shutil
import socket
import tempfile
from pathlib import Path
from typing import Any, Iterator

from .errors import FtftError


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, *, is_dir: bool = False) -> Iterator[Path]:
    """Yield a temporary path beside `path`; on success rename it to `path`, on failure delete it.

    With `is_dir=True` the temporary path is a fresh directory, and an existing directory at `path`
    is replaced as a whole. A process killed mid-write (SIGKILL, a scheduler's time limit) cannot
    clean up, so temporary paths of `path` left by earlier writers are removed first: a run owns
    its folder, so no other writer of `path` can be alive.
    """
    final = Path(path)
    make_output_dir(final.parent)
    for stale in final.parent.glob(f".{glob.escape(final.name)}.*.tmp"):
        shutil.rmtree(stale, ignore_errors=True) if stale.is_dir() else stale.unlink(missing_ok=True)
    if is_dir:
        tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent))
    else:
        fd, name = tempfile.mkstemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent)
        os.close(fd)
        tmp = Path(name)
    try:
        yield tmp
        # mkstemp/mkdtemp create private (0600/0700) paths; give the result the usual permissions.
        umask = os.umask(0)
        os.umask(umask)
        tmp.chmod((0o777 if is_dir else 0o666) & ~umask)
        if is_dir:
            if final.exists():
                old = final.with_name(f".{final.name}.old")
                shutil.rmtree(old, ignore_errors=True)
                final.rename(old)
                tmp.rename(final)
                shutil.rmtree(old, ignore_errors=True)
            else:
                tmp.rename(final)
        else:
            os.replace(tmp, final)
    except BaseException:
        if is_dir:
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            tmp.unlink(missing_ok=True)
        raise


def write_json(path: str | os.PathLike, obj: Any) -> None:
    """Write `obj` as indented JSON, atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def read_json(path: str | os.PathLike, what: str = "JSON file") -> Any:
    """Read a JSON file, turning a missing or corrupt file into a one-line `FtftError`."""
    p = Path(path)
    if not p.is_file():
        raise FtftError(f"{what} not found: {p}")
    try:
        return json.loads(p.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise FtftError(f"{what} {p} is not valid JSON ({exc})") from None


def iter_jsonl(path: str | os.PathLike, what: str | None = None) -> Iterator[tuple[int, dict]]:
    """(line number, object) for each non-blank line of a JSON-lines file.

    A line that is not a JSON object, or a file that is not UTF-8, is a one-line `FtftError`
    naming `what` (default: the path) and the line.
    """
    name = what or str(path)
    with open(path, "r", encoding="utf-8") as handle:
        try:
            for number, line in enumerate(handle, start=1):
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise FtftError(f"{name} line {number} is not valid JSON ({exc.msg})") from None
                if not isinstance(record, dict):
                    raise FtftError(f"{name} line {number} is not a JSON object")
                yield number, record
        except UnicodeDecodeError as exc:
            raise FtftError(f"{name} is not UTF-8 text ({exc.reason})") from None


def versions() -> dict[str, str]:
    """Versions of the libraries that shape results, for manifests."""
    import importlib.metadata as md

    out = {}
    for name in ("ftft_ds", "torch", "deepspeed", "transformers", "datasets", "numpy"):
        try:
            out[name] = md.version(name)
        except md.PackageNotFoundError:
            continue
    return out


RUN_ARTEFACTS = ("metrics.json", "cost.json", "config.json", "log.jsonl", "checkpoints", "tensorboard",
                 "dynamics", "model")
"""What a reference or main run writes into its output folder (`ftft run` adds its own files beside)."""
LOCK_NAME = ".ftft.lock"


def make_output_dir(path: str | os.PathLike) -> Path:
    """Create folder `path` (and its parents), or say in one line why it cannot be."""
    folder = Path(path)
    if folder.exists() and not folder.is_dir():
        raise FtftError(f"output folder {folder} is a file; expected a folder")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:  # a parent that is a file, no permission, a read-only file system
        raise FtftError(f"cannot create output folder {folder}: {exc.strerror or exc}") from None
    if not os.access(folder, os.W_OK | os.X_OK):
        raise FtftError(f"output folder {folder} is not writable")
    return folder


@contextlib.contextmanager
def own_output_dir(path: str | os.PathLike, *, resume: bool, overwrite: bool) -> Iterator[Path]:
    """Hold `path` for one run: created, locked against a second run, cleared of an earlier run.

    A second run into a folder in use stops with one line instead of interleaving its logs. An
    earlier run's artefacts (`RUN_ARTEFACTS`) are kept for `resume`, deleted with `overwrite`, and
    otherwise refused, so that old checkpoints or TensorBoard curves never mix with new ones. The
    lock is an advisory `flock`, released by the kernel however the run ends (SIGKILL included).
    Only one process of a job (rank 0) should hold it. A folder this call created is removed again
    if the run fails before writing anything into it.
    """
    created = not Path(path).exists()
    folder = make_output_dir(path)
    handle = open(folder / LOCK_NAME, "a+", encoding="utf-8")
    try:
        holder = _lock(handle)
        if holder is not None:
            raise FtftError(f"output folder {folder} is in use by another run ({holder})")
        handle.seek(0)
        handle.truncate()
        handle.write(f"process {os.getpid()} on {socket.gethostname()}")
        handle.flush()
        earlier = [name for name in RUN_ARTEFACTS if (folder / name).exists()]
        if earlier and not resume:
            if not overwrite:
                raise FtftError(f"output folder {folder} holds an earlier run ({', '.join(earlier)}); pass "
                                f"--overwrite (overwrite=true) to replace it or --resume to continue it")
            for name in earlier:
                target = folder / name
                shutil.rmtree(target) if target.is_dir() else target.unlink()
        yield folder
    except BaseException:
        if created and [p.name for p in folder.iterdir()] == [LOCK_NAME]:  # a run refused at once leaves nothing
            shutil.rmtree(folder, ignore_errors=True)
        raise
    finally:
        handle.close()


def _lock(handle) -> str | None:
    """Take the run lock on an open lock file; if another process holds it, return who (from the file)."""
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        return handle.read().strip() or "another process"
    return None


def run_in_progress(path: str | os.PathLike) -> str | None:
    """Who is running in output folder `path` right now (from its lock), or None."""
    lock = Path(path) / LOCK_NAME
    if not lock.is_file():
        return None
    with open(lock, "a+", encoding="utf-8") as handle:
        return _lock(handle)  # closing the file releases a lock taken here
