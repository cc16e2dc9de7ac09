"""Atomic file writes, manifests, and runs' ownership of their output folders.

Every artefact is written under a temporary name in its destination folder and renamed into place,
so a crash never leaves a half-written file that a later stage could mistake for a finished one.
A manifest (JSON) beside each artefact records what it was made from. A run holds a lock on its
output folder while it runs (`own_output_dir`), and replaces an earlier run's artefacts there only
when asked to.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import glob
import json
import os
import re
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


RUN_ARTEFACTS = (
    "metrics.json",
    "cost.json",
    "config.json",
    "log.jsonl",
    "checkpoints",
    "tensorboard",
    "dynamics",
    "model",
)
"""What a reference or main run writes into its output folder (`ftft run` adds its own files beside)."""
LOCK_NAME = ".ftft.lock"


def make_output_dir(path: str | os.PathLike) -> Path:
    """Create folder `path` (and its parents), or say in one line why it cannot be."""
    folder = Path(path)
    _refuse_non_folder(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:  # a parent that is a file, no permission, a read-only file system
        raise FtftError(f"cannot create output folder {folder}: {exc.strerror or exc}") from None
    if not os.access(folder, os.W_OK | os.X_OK):
        raise FtftError(f"output folder {folder} is not writable")
    return folder


def _refuse_non_folder(folder: Path) -> None:
    """A path that is a file, or lies under one, can never be an output folder."""
    if folder.exists() and not folder.is_dir():
        raise FtftError(f"output folder {folder} is a file; expected a folder")
    if any(parent.is_file() for parent in folder.parents):
        raise FtftError(f"cannot create output folder {folder}: {os.strerror(errno.ENOTDIR)}")


def _earlier_run(folder: Path, *, resume: bool, overwrite: bool) -> list[str]:
    """The earlier run's artefacts in `folder` that this run must delete (none with `resume`);
    refused in one line unless `overwrite` allows it."""
    earlier = [name for name in RUN_ARTEFACTS if (folder / name).exists()]
    if not earlier or resume:
        return []
    if not overwrite:
        raise FtftError(
            f"output folder {folder} holds an earlier run ({', '.join(earlier)}); pass "
            f"--overwrite (overwrite=true) to replace it or --resume to continue it"
        )
    return earlier


def check_output_dir(path: str | os.PathLike, *, resume: bool, overwrite: bool) -> None:
    """Refuse now what `own_output_dir` would refuse once the process group has started: a path
    that cannot be a folder, or an earlier run's folder without `resume` or `overwrite`. It only
    reads, so every rank can call it; `own_output_dir` decides again under the folder's lock."""
    folder = Path(path)
    _refuse_non_folder(folder)
    if folder.is_dir():
        _earlier_run(folder, resume=resume, overwrite=overwrite)


@contextlib.contextmanager
def own_output_dir(path: str | os.PathLike, *, resume: bool, overwrite: bool) -> Iterator[Path]:
    """Hold `path` for one run: created, locked against a second run, cleared of an earlier run.

    A second run into a folder in use stops with one line instead of interleaving its logs. An
    earlier run's artefacts (`RUN_ARTEFACTS`) are kept for `resume`, deleted with `overwrite`, and
    otherwise refused, so that old checkpoints or TensorBoard curves never mix with new ones (see
    `RunLock` for the lock itself). Only one process of a job (rank 0) should hold it. A folder this
    call created is removed again if the run fails before writing anything into it.
    """
    created = not Path(path).exists()
    folder = make_output_dir(path)
    lock = RunLock(folder)
    try:
        holder = lock.acquire()
        if holder is not None:
            raise FtftError(f"output folder {folder} is in use by another run ({holder})")
        for name in _earlier_run(folder, resume=resume, overwrite=overwrite):
            target = folder / name
            shutil.rmtree(target) if target.is_dir() else target.unlink()
        yield folder
    except BaseException:
        if created and {p.name for p in folder.iterdir()} <= {LOCK_NAME, EXCLUSIVE_LOCK_NAME}:
            lock.release()
            shutil.rmtree(folder, ignore_errors=True)  # a run refused at once leaves nothing
        raise
    finally:
        lock.release()


EXCLUSIVE_LOCK_NAME = ".ftft.lock.held"
_NO_FLOCK = {errno.ENOSYS, errno.EOPNOTSUPP, errno.ENOLCK, errno.EINVAL}
"""What `flock` raises on file systems mounted without lock support (Lustre without `flock`, some NFS)."""


class RunLock:
    """The lock a run holds on its output folder.

    An advisory `flock` on `LOCK_NAME` where the file system supports it: the kernel releases it
    however the run ends (SIGKILL included). Where `flock` is refused (Lustre mounted without it,
    NFS without a lock daemon), the lock is the exclusive creation of `EXCLUSIVE_LOCK_NAME`, naming
    its holder's host and process (and SLURM job); a file left by a killed run is recognised as
    stale by its process id on this host, and on any host when it names an earlier start of this
    very SLURM job (a requeued job restarts under the same id, often on another node, after SLURM
    killed every process of the earlier start). Any other has to be deleted by hand (the error says so).
    """

    def __init__(self, folder: Path):
        self.folder = folder
        self._handle = None
        self._exclusive: Path | None = None

    def acquire(self) -> str | None:
        """Take the lock; if another run holds it, return who (and take nothing)."""
        me = _holder_name()
        self._handle = open(self.folder / LOCK_NAME, "a+", encoding="utf-8")
        try:
            fcntl.flock(self._handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._handle.seek(0)
            holder = self._handle.read().strip() or "another process"
            self.release()
            return holder
        except OSError as exc:
            if exc.errno not in _NO_FLOCK:
                raise
            return self._acquire_exclusive(me)
        self._handle.seek(0)
        self._handle.truncate()
        self._handle.write(me)
        self._handle.flush()
        return None

    def _acquire_exclusive(self, me: str) -> str | None:
        path = self.folder / EXCLUSIVE_LOCK_NAME
        for _ in range(2):  # a second try after clearing a stale file
            try:
                fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                holder = _read_text(path)
                if holder is not None and _holder_alive(holder):
                    return f"{holder}; if no run is left there, delete {path}"
                path.unlink(missing_ok=True)
                continue
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                handle.write(me)
            self._exclusive = path
            return None
        return f"another process keeps creating {path}"

    def release(self) -> None:
        if self._exclusive is not None:
            self._exclusive.unlink(missing_ok=True)
            self._exclusive = None
        if self._handle is not None:
            self._handle.close()  # releases the flock
            self._handle = None


def _read_text(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        return None


def _holder_name() -> str:
    """`process PID on HOST`, and `in SLURM job ID (start N)` inside a SLURM job."""
    me = f"process {os.getpid()} on {socket.gethostname()}"
    job = os.environ.get("SLURM_JOB_ID")
    if job:
        me += f" in SLURM job {job} (start {os.environ.get('SLURM_RESTART_COUNT', '0')})"
    return me


_HOLDER = re.compile(r"process (\d+) on (\S+)(?: in SLURM job (\S+) \(start (\d+)\))?")


def _holder_alive(holder: str) -> bool:
    """Whether the run named by `_holder_name` may still be alive: it is, unless it ran on this
    host and that process is gone, or it was an earlier start of the SLURM job this process runs in."""
    match = _HOLDER.fullmatch(holder)
    if match is None:
        return True
    pid, host, job, start = match.groups()
    if job is not None and job == os.environ.get("SLURM_JOB_ID"):
        return start == os.environ.get("SLURM_RESTART_COUNT", "0")
    if host != socket.gethostname():
        return True
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def run_in_progress(path: str | os.PathLike) -> str | None:
    """Who is running in output folder `path` right now (from its lock), or None."""
    folder = Path(path)
    if not (folder / LOCK_NAME).is_file() and not (folder / EXCLUSIVE_LOCK_NAME).is_file():
        return None
    lock = RunLock(folder)
    try:
        return lock.acquire()
    finally:
        lock.release()
