"""A regular install: a wheel built from the repository, installed outside it, runs a ZeRO-2 job."""

import json
import subprocess
import sys

from .helpers import REPO, quiet_env


def test_wheel_installed_elsewhere_finds_its_deepspeed_configs(tmp_path):
    wheels, site, work = tmp_path / "wheels", tmp_path / "site", tmp_path / "work"
    work.mkdir()
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--quiet",
            "--no-deps",
            "--no-build-isolation",
            str(REPO),
            "-w",
            str(wheels),
        ],
        check=True,
        cwd=tmp_path,
        capture_output=True,
    )
    wheel = next(wheels.glob("ftft_ds-*.whl"))
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target", str(site), str(wheel)],
        check=True,
        capture_output=True,
    )
    env = quiet_env(PYTHONPATH=str(site))

    where = subprocess.run(
        [sys.executable, "-c", "import ftft_ds; print(ftft_ds.__file__)"],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    assert where.stdout.strip().startswith(str(site))  # the installed copy, not the source tree

    out = work / "run"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "ftft_ds",
            "train",
            "--model",
            "tiny-bert",
            "--ds-config",
            "zero2",
            "--budget",
            "steps:3",
            "--set",
            "data.embedded_train_size=60",
            "--set",
            "micro_batch_size=8",
            "-o",
            str(out),
        ],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["steps"] == 3 and metrics["zero_stage"] == 2
