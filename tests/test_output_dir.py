"""Runs own their output folders: one run at a time, earlier runs replaced only on request."""

import os

import pytest
import torch.distributed

from ftft_ds.errors import FtftError
from ftft_ds.io import LOCK_NAME, atomic_path, make_output_dir, own_output_dir

from .helpers import ftft, ran_in_process, refused_in_process, world_of_one

TINY = [
    "--model",
    "tiny-bert",
    "--set",
    "data.embedded_train_size=60",
    "--set",
    "micro_batch_size=8",
    "--set",
    "data.eval_splits=[dev]",
    "--budget",
    "steps:2",
]


def test_a_second_run_into_a_folder_in_use_is_refused(tmp_path):
    with own_output_dir(tmp_path / "run", resume=False, overwrite=False):
        proc = ftft(["train", *TINY, "-o", tmp_path / "run"])
        assert proc.returncode == 2
        assert proc.stderr.strip().splitlines()[-1] == (
            f"error: output folder {tmp_path / 'run'} is in use by another run (process {os.getpid()} on "
            f"{os.uname().nodename})"
        )
    assert not (tmp_path / "run" / "log.jsonl").exists()


def test_an_earlier_run_is_refused_replaced_on_request_or_resumed(tmp_path):
    out = tmp_path / "run"
    with world_of_one():
        ran_in_process(["train", *TINY, "-o", out])
    stale = out / "tensorboard" / "stale_curve"
    stale.write_text("from the earlier run")

    # Refused before any process group starts (so a test worker can ask in-process).
    again = refused_in_process(["train", *TINY, "-o", out])[-1]
    assert "holds an earlier run (metrics.json, cost.json, config.json" in again
    assert "pass --overwrite (overwrite=true) to replace it or --resume to continue it" in again
    assert not torch.distributed.is_initialized()

    with world_of_one():
        ran_in_process(["train", *TINY, "-o", out, "--overwrite"])
    assert not stale.exists() and (out / "metrics.json").is_file()

    # (--resume on a finished run only finishes it: test_main.py, resume after a kill past the final checkpoint)
    assert "set one" in refused_in_process(["train", *TINY, "-o", out, "--resume", "--overwrite"])[-1]


def test_output_paths_that_cannot_be_folders_get_one_line(tmp_path):
    a_file = tmp_path / "file"
    a_file.write_text("x")
    with pytest.raises(FtftError, match=f"output folder {a_file} is a file; expected a folder"):
        make_output_dir(a_file)
    with pytest.raises(FtftError, match=f"cannot create output folder {a_file / 'run'}: Not a directory"):
        make_output_dir(a_file / "run")
    refused = refused_in_process(["train", *TINY, "-o", a_file / "run"])[-1]
    assert refused == f"error: cannot create output folder {a_file / 'run'}: Not a directory"
    assert not torch.distributed.is_initialized()
    if os.geteuid() != 0:  # root writes anywhere
        read_only = tmp_path / "ro"
        read_only.mkdir(mode=0o555)
        with pytest.raises(FtftError, match="cannot create output folder"):
            make_output_dir(read_only / "run")


def test_lock_is_released_however_the_run_ends(tmp_path):
    with pytest.raises(RuntimeError):
        with own_output_dir(tmp_path, resume=False, overwrite=False):
            raise RuntimeError("crash")
    with own_output_dir(tmp_path, resume=False, overwrite=False) as folder:
        assert (folder / LOCK_NAME).read_text() == f"process {os.getpid()} on {os.uname().nodename}"


def test_atomic_writes_clear_temporary_paths_left_by_a_killed_writer(tmp_path):
    (tmp_path / ".model.abc123.tmp").mkdir()
    (tmp_path / ".metrics.json.xyz.tmp").write_text("half")
    with atomic_path(tmp_path / "model", is_dir=True) as tmp:
        (tmp / "weights").write_text("w")
    assert sorted(p.name for p in tmp_path.iterdir()) == [".metrics.json.xyz.tmp", "model"]


def test_file_systems_without_flock_get_an_exclusive_lock_file(tmp_path, monkeypatch):
    """Lustre mounted without `flock` (and NFS without a lock daemon) answer ENOSYS/ENOLCK."""
    import errno
    import fcntl
    import socket
    import subprocess
    import sys

    from ftft_ds.io import EXCLUSIVE_LOCK_NAME, run_in_progress

    def no_flock(handle, operation):
        raise OSError(errno.ENOSYS, "Function not implemented")

    monkeypatch.setattr(fcntl, "flock", no_flock)
    monkeypatch.delenv("SLURM_JOB_ID", raising=False)
    folder = tmp_path / "run"
    with own_output_dir(folder, resume=False, overwrite=False):
        assert (folder / EXCLUSIVE_LOCK_NAME).read_text() == f"process {os.getpid()} on {socket.gethostname()}"
        with pytest.raises(FtftError, match=f"in use by another run .*delete {folder / EXCLUSIVE_LOCK_NAME}"):
            with own_output_dir(folder, resume=True, overwrite=False):
                pass
        assert run_in_progress(folder) is not None
    assert not (folder / EXCLUSIVE_LOCK_NAME).exists() and run_in_progress(folder) is None
    # A run killed on this host left its file behind: its process is gone, so the lock is free.
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    (folder / EXCLUSIVE_LOCK_NAME).write_text(f"process {dead.stdout.strip()} on {socket.gethostname()}")
    with own_output_dir(folder, resume=True, overwrite=False):
        pass
    # One left by a run on another host cannot be judged from here.
    (folder / EXCLUSIVE_LOCK_NAME).write_text("process 1 on some-other-node")
    with pytest.raises(FtftError, match="process 1 on some-other-node"):
        with own_output_dir(folder, resume=True, overwrite=False):
            pass
    # Unless it names an earlier start of this very SLURM job: requeued, it restarts elsewhere.
    monkeypatch.setenv("SLURM_JOB_ID", "77")
    monkeypatch.setenv("SLURM_RESTART_COUNT", "1")
    (folder / EXCLUSIVE_LOCK_NAME).write_text("process 1 on some-other-node in SLURM job 76 (start 0)")
    with pytest.raises(FtftError, match=r"in SLURM job 76 \(start 0\)"):  # another job's
        with own_output_dir(folder, resume=True, overwrite=False):
            pass
    (folder / EXCLUSIVE_LOCK_NAME).write_text("process 1 on some-other-node in SLURM job 77 (start 0)")
    with own_output_dir(folder, resume=True, overwrite=False):
        assert (folder / EXCLUSIVE_LOCK_NAME).read_text().endswith("in SLURM job 77 (start 1)")
