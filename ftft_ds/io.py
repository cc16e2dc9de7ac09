"""Atomic file writes and manifests.

Every artefact is written under a temporary name in its destination folder and renamed into place,
so a crash never leaves a half-written file that a later stage could mistake for a finished one.
A manifest (JSON) beside each artefact records what it was made from.
"""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterator

from .errors import FtftError


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, *, is_dir: bool = False) -> Iterator[Path]:
    """Yield a temporary path beside `path`; on success rename it to `path`, on failure delete it.

    With `is_dir=True` the temporary path is a fresh directory, and an existing directory at `path`
    is replaced as a whole.
    """
    final = Path(path)
    final.parent.mkdir(parents=True, exist_ok=True)
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
