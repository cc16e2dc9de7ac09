"""Where the deepspeed launcher puts a job's ranks (exactly the GPUs the job was given), and how jobs are stopped."""

import json
import sys

import pytest
from deepspeed.launcher import runner

from ftft_ds.errors import FtftError
from ftft_ds.jobs import ftft_command


def _gpus_used(command: list, machine_gpus: int = 8) -> dict:
    """The GPUs DeepSpeed's runner would start ranks on, for `command` on a node with `machine_gpus`."""
    args = runner.parse_args(command[command.index("deepspeed.launcher.runner") + 1 :])
    active = runner.parse_inclusion_exclusion({"localhost": machine_gpus}, args.include, args.exclude)
    return dict(runner.apply_num_nodes_and_gpus(active, args.num_nodes, args.num_gpus))


def test_a_parallel_job_gets_exactly_its_devices(monkeypatch):
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    assert _gpus_used(ftft_command("train", "run.json", 2, devices=[2, 3])) == {"localhost": [2, 3]}
    assert _gpus_used(ftft_command("train", "run.json", 2, devices=[6, 7])) == {"localhost": [6, 7]}
    assert _gpus_used(ftft_command("train", "run.json", 2)) == {"localhost": [0, 1]}


def test_devices_are_counted_among_the_visible_ones(monkeypatch):
    # A scheduler gave this process GPUs 4-7; the launcher numbers GPUs as the machine does.
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "4,5,6,7")
    assert _gpus_used(ftft_command("train", "run.json", 2, devices=[2, 3])) == {"localhost": [6, 7]}
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "GPU-8f6c1a2e,GPU-77aa")
    with pytest.raises(FtftError, match="UUID"):
        ftft_command("train", "run.json", 1, devices=[1])


def test_a_one_rank_job_without_devices_is_one_process():
    """No launcher for a world of one on CPU: its runner and per-node launcher would only add start-up."""
    assert ftft_command("train", "run.json", 1) == [sys.executable, "-m", "ftft_ds", "train", "run.json"]
    assert _gpus_used(ftft_command("train", "run.json", 1, devices=[5])) == {"localhost": [5]}


def test_a_child_that_ignores_sigterm_is_killed_after_the_grace_time(monkeypatch):
    import signal
    import subprocess
    import time

    from ftft_ds.jobs import local

    monkeypatch.setattr(local, "GRACE_SECONDS", 1.0)
    stubborn = local.start(
        [
            sys.executable,
            "-c",
            "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
            "print('ready', flush=True); time.sleep(60)",
        ],
        subprocess.PIPE,
    )
    polite = local.start(
        [sys.executable, "-c", "import time; print('ready', flush=True); time.sleep(60)"], subprocess.PIPE
    )
    for child in (stubborn, polite):
        assert child.stdout.readline() == b"ready\n"  # its handler is in place
    started = time.monotonic()
    local.stop([stubborn, polite])
    assert 1.0 <= time.monotonic() - started < 10
    assert polite.returncode == -signal.SIGTERM and stubborn.returncode == -signal.SIGKILL


def test_a_child_job_is_a_world_of_its_own_whatever_world_started_the_orchestrator(monkeypatch):
    """An orchestrator started where a launcher's rank variables are set (a torchrun shell, a batch
    script exporting MASTER_PORT) gives none of them to its jobs: one-rank jobs run side by side
    would otherwise all listen on that port."""
    import json
    import subprocess

    from ftft_ds.jobs import local

    launcher = dict(RANK="0", LOCAL_RANK="0", WORLD_SIZE="1", MASTER_ADDR="127.0.0.1", MASTER_PORT="29500")
    for name, value in launcher.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("FTFT_TEST_MARK", "kept")
    child = local.start([sys.executable, "-c", "import json, os; print(json.dumps(dict(os.environ)))"], subprocess.PIPE)
    seen = json.loads(child.communicate()[0])
    assert seen["FTFT_TEST_MARK"] == "kept"
    assert not set(local.RANK_VARIABLES) & set(seen)


def test_status_shows_each_runs_disk_use_and_the_total(tmp_path, monkeypatch):
    """`ftft status`: what each stage's folder takes on disk (its checkpoints, mostly), and in all."""
    from ftft_ds.jobs.status import folder_states, status_table

    monkeypatch.setenv("PATH", "")  # no squeue here: the folders alone
    sizes = {"main/erm/seed0": 3 * 2**20, "reference/small": 2048}
    for name, size in sizes.items():
        folder = tmp_path / name
        (folder / "checkpoints" / "step_4").mkdir(parents=True)
        (folder / "stage.json").write_text('{"status": "done"}')
        (folder / "checkpoints" / "step_4" / "optim_states.pt").write_bytes(b"\0" * size)
    rows = {row["name"]: row for row in folder_states(tmp_path)}
    manifest = len('{"status": "done"}')
    assert {name: row["disk"] for name, row in rows.items()} == {n: s + manifest for n, s in sizes.items()}
    table = status_table(list(rows.values())).splitlines()
    assert table[0].split() == ["run", "status", "job", "disk", "log"]
    assert "3.0 MiB" in next(line for line in table if line.startswith("main/erm/seed0"))
    assert table[-1] == "2 runs, 3.0 MiB on disk"


@pytest.mark.parametrize("command", ["train", "reference"])
def test_a_restarted_job_continues_from_its_checkpoint_and_otherwise_starts_over(tmp_path, command):
    """A SLURM job starts again from the top when it is requeued: a main run or a reference with a
    complete checkpoint continues from it; one without starts over in its own folder."""
    from ftft_ds.jobs.task import StageTask

    config = tmp_path / "run_config.json"
    config.write_text(json.dumps({"output_dir": str(tmp_path / "run")}))
    task = StageTask(command, str(config))
    assert task.restart_overrides() == ["overwrite=true", "resume=false"]
    (tmp_path / "run" / "checkpoints").mkdir(parents=True)
    (tmp_path / "run" / "checkpoints" / "latest").write_text("step_5")
    assert task.restart_overrides() == ["resume=true", "overwrite=false"]
