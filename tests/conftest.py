"""Markers that decide where a test runs (`gpu` tests need CUDA, `cpu_only` assertions hold only
without it; see pytest.ini), the order files reach the workers in, a world of one in the test's own
process, and the SLURM cluster fixture."""

import os

import pytest
import torch

from .helpers import TEST_ENV, world_of_one

os.environ.update(TEST_ENV)  # for the child processes of the orchestrators run in-process
torch.set_num_threads(1)  # for the runs trained in-process (the `world` fixture): TEST_ENV says why

LONGEST_FIRST = ("test_slurm.py", "test_pipeline.py", "test_main.py", "test_sweep_runner.py", "test_checkpoint.py")
"""Files whose tests take longest, handed to the xdist workers first: started last, one of them
would leave the other worker idle at the end of the run."""


def pytest_collection_modifyitems(config, items):
    rank = {name: index for index, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(LONGEST_FIRST)))  # stable: order within files kept
    has_cuda = torch.cuda.is_available()
    for item in items:
        if "gpu" in item.keywords and not has_cuda:
            item.add_marker(pytest.mark.skip(reason="needs a CUDA GPU"))
        if "cpu_only" in item.keywords and has_cuda:
            item.add_marker(pytest.mark.skip(reason="holds on CPUs only"))


def _slurm_answers() -> str | None:
    """Why no SLURM cluster can take jobs here, or None when one can."""
    import shutil
    import subprocess

    if not shutil.which("sinfo"):
        return "SLURM is not installed (bash .ci/slurm_cluster.sh installs and starts a loopback cluster)"
    try:
        states = subprocess.run(["sinfo", "-h", "-o", "%t"], capture_output=True, text=True, timeout=20).stdout.split()
    except (OSError, subprocess.SubprocessError) as exc:
        return f"sinfo failed ({exc}); bash .ci/slurm_cluster.sh starts a loopback cluster"
    if not any(state.rstrip("*") in ("idle", "mix", "alloc") for state in states):
        return f"no SLURM node is up (sinfo: {' '.join(states) or 'no answer'}); bash .ci/slurm_cluster.sh starts them"
    return None


@pytest.fixture(scope="session")
def slurm_cluster():
    """A SLURM cluster that answers; tests that need one are skipped with the reason otherwise."""
    reason = _slurm_answers()
    if reason is not None:
        pytest.skip(reason)


@pytest.fixture
def world():
    """`helpers.world_of_one` for the length of a test."""
    with world_of_one() as env:
        yield env
