"""A wheel bundle that lets `make gpu-check` run on a GPU node with no network.

Compute nodes of many clusters reach no package index, and a stock CUDA image there has Python
3.12 with a CUDA torch, transformers, peft, accelerate, pytest, tensorboard, pandas, pyarrow,
scipy and matplotlib, but not DeepSpeed, datasets or submitit. On a machine with network, this
script downloads what such an image lacks (`MISSING`), as cp312 manylinux x86_64 wheels at the
versions this environment runs, builds DeepSpeed as a pure-Python wheel (its ops are compiled on
first use, on the node), and ftft_ds itself, into one folder of at most 64 MiB; GPU checks use
models built from configs, so no pretrained model travels. On the node, one command installs it
offline and runs the check:

    python bench/gpu_bundle.py                       # here: writes gpu_bundle/ (about 4 MiB)
    python bench/gpu_bundle.py --check /root/.pyenv/versions/3.12.1/bin/python3.12
    # on the node, from a copy of the repository with gpu_bundle/ in it:
    python3 -m pip install -q --no-index --no-deps --target /tmp/ftft_deps gpu_bundle/*.whl \\
        && PYTHONPATH=/tmp/ftft_deps make gpu-check GPU_PYTHON=python3

`--check PYTHON` proves the bundle on a clean interpreter here: it installs every wheel with that
Python (`--no-index --no-deps --target`, as on the node) into an empty folder, imports each module
that needs nothing from the image, and checks that every requirement of every bundled wheel is met by the
bundle or by the image (`IMAGE`), markers evaluated for that Python.
"""

from __future__ import annotations

import argparse
import importlib.metadata as metadata
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
LIMIT_BYTES = 64 * 2**20
MISSING = (
    "deepspeed",
    "hjson",
    "pydantic",
    "pydantic-core",
    "annotated-types",
    "typing-inspection",
    "datasets",
    "dill",
    "multiprocess",
    "submitit",
)
"""What the GPU image lacks of ftft_ds's needs (deepspeed, datasets, submitit and theirs)."""
IMAGE = (
    "torch transformers peft accelerate pytest tensorboard numpy pandas pyarrow scipy matplotlib click "
    "pyyaml tqdm packaging psutil py-cpuinfo einops msgpack ninja filelock fsspec huggingface-hub xxhash "
    "requests cloudpickle typing-extensions safetensors tokenizers aiohttp httpx"
).split()
"""Packages the GPU image has (its package list), which the bundle may rely on."""
PLATFORMS = ("manylinux_2_28_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64")
IMPORTABLE_ALONE = ("hjson", "dill", "multiprocess")
"""Bundled modules that need nothing from the image to import (the rest need torch or
typing-extensions, which a clean interpreter lacks; their requirements are checked by metadata)."""


def run(cmd: list, **kwargs) -> None:
    print("+", " ".join(map(str, cmd)), flush=True)
    subprocess.run(cmd, check=True, **kwargs)


def build(out: Path) -> None:
    """Download and build the bundle into `out` (emptied first)."""
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    pinned = [f"{name}=={metadata.version(name)}" for name in MISSING if name != "deepspeed"]
    platforms = [arg for platform in PLATFORMS for arg in ("--platform", platform)]
    run(
        [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:", "--python-version", "3.12"]
        + ["--implementation", "cp", *platforms, "-d", out, *pinned]
    )
    # DeepSpeed ships as a source distribution whose setup imports torch: built here against this
    # environment's torch, its ops left out (DS_BUILD_OPS=0), to be compiled on the node when used.
    env = {**os.environ, "DS_BUILD_OPS": "0"}
    version = metadata.version("deepspeed")
    run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "-q",
            "--no-deps",
            "--no-build-isolation",
            "-w",
            out,
            f"deepspeed=={version}",
        ],
        env=env,
    )
    run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", out, REPO])
    size = sum(f.stat().st_size for f in out.iterdir())
    print(f"{out}: {len(list(out.iterdir()))} wheels, {size / 2**20:.1f} MiB (limit {LIMIT_BYTES / 2**20:.0f} MiB)")
    if size > LIMIT_BYTES:
        sys.exit(f"the bundle is {size / 2**20:.1f} MiB, more than {LIMIT_BYTES / 2**20:.0f} MiB")


def requirements(wheel: Path) -> list[str]:
    """The `Requires-Dist` lines of a wheel's metadata."""
    with zipfile.ZipFile(wheel) as archive:
        name = next(n for n in archive.namelist() if n.endswith(".dist-info/METADATA"))
        text = archive.read(name).decode()
    return [line.split(":", 1)[1].strip() for line in text.splitlines() if line.startswith("Requires-Dist:")]


def normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def check(bundle: Path, python: str) -> None:
    """Install the bundle with `python` into an empty folder, offline, and check it (module docstring)."""
    wheels = sorted(bundle.glob("*.whl"))
    if not wheels:
        sys.exit(f"no wheels in {bundle}: run `python bench/gpu_bundle.py` first")
    with tempfile.TemporaryDirectory(prefix="gpu_bundle_") as target:
        run([python, "-m", "pip", "install", "-q", "--no-index", "--no-deps", "--target", target, *wheels])
        probe = f"import sys; sys.path.insert(0, {target!r}); " + "; ".join(f"import {m}" for m in IMPORTABLE_ALONE)
        run([python, "-I", "-c", probe + "; print('imports:', 'ok')"])
        # Requirements of every bundled wheel, markers evaluated by the target interpreter.
        bundled = {normalise(w.name.split("-")[0]) for w in wheels}
        lines = [line for wheel in wheels for line in requirements(wheel)]
        evaluate = (
            "import sys, json; from pip._vendor.packaging.requirements import Requirement; "
            "rs = [Requirement(l) for l in json.loads(sys.stdin.read())]; "
            "print('\\n'.join(sorted({r.name for r in rs if r.marker is None or r.marker.evaluate({'extra': ''})})))"
        )
        needed = subprocess.run(
            [python, "-I", "-c", evaluate], input=json.dumps(lines), capture_output=True, text=True, check=True
        ).stdout.split()
    unmet = sorted({normalise(n) for n in needed} - bundled - {normalise(n) for n in IMAGE})
    if unmet:
        sys.exit(f"requirements neither bundled nor in the image: {', '.join(unmet)}")
    print(f"{len(wheels)} wheels installed offline with {python}; every requirement is bundled or in the image")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=REPO / "gpu_bundle", help="the bundle's folder")
    parser.add_argument("--check", metavar="PYTHON", help="install the bundle with this Python 3.12 and check it")
    args = parser.parse_args(argv)
    if args.check:
        check(args.out, args.check)
    else:
        build(args.out)


if __name__ == "__main__":
    main()
