"""`ftft run` and `ftft sweep` on a real two-node SLURM cluster (loopback; `.ci/slurm_cluster.sh`):
main runs as two-node jobs, requeue and exact resume, re-attaching, cancelling, `ftft status`."""

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from ftft_ds.jobs.slurm import final_state
from ftft_ds.train.runtime import free_port

from .helpers import REPO, assert_same_losses, ftft, launcher_command, quiet_env, tail

# One worker runs them all, one after the other: a test restarts the cluster's controller, and a job
# of another test that ended meanwhile would drain the nodes under the rest.
pytestmark = [pytest.mark.slurm, pytest.mark.xdist_group("slurm")]

EXECUTOR = {"kind": "slurm", "nodes": 2, "ranks_per_node": 1, "poll_seconds": 1, "time_limit_min": 30}
RECIPE = {
    "data": {"embedded_train_size": 120, "eval_splits": ["dev", "ood"]},
    "main": {
        "model": "tiny-bert",
        "micro_batch_size": 4,
        "lr": 1.0e-3,
        "erm_epochs": 6,
        "log_every": 1,
        "checkpoint_every": 5,
        "export_model": False,
    },
    "reference": {
        "model": "tiny-bert",
        "num_layers": 1,
        "epochs": 2,
        "micro_batch_size": 8,
        "lr": 1.0e-3,
        "evaluate": False,
    },
    "methods": ["erm", "ftft"],
    "seeds": [0],
    "reference_gate": "off",
    "executor": EXECUTOR,
}


def start(args, log, env=None):
    """An `ftft` orchestrator in the background, in a session of its own, output to `log`."""
    return subprocess.Popen(
        [sys.executable, "-m", "ftft_ds", *map(str, args)],
        cwd=REPO,
        env=env or quiet_env(),
        stdout=open(log, "w"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def start_straight_run(folder, tmp_path):
    """The run whose config is in `folder`, as a plain local launch into `tmp_path/straight` (its log
    `tmp_path/straight.log`), in the background: the uninterrupted trajectory a resumed job must match."""
    straight = json.loads((folder / "run_config.json").read_text())
    straight.update(output_dir=str(tmp_path / "straight"))
    (tmp_path / "straight.json").write_text(json.dumps(straight))
    return subprocess.Popen(
        launcher_command("launch/main.py", [tmp_path / "straight.json"]),
        cwd=REPO,
        env=quiet_env(),
        stdout=open(tmp_path / "straight.log", "w"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def failing_squeue(folder, failures: str):
    """A `squeue` to put first on PATH that fails like an unreachable controller on the calls whose
    numbers (from 1) `failures` lists, as a bash pattern such as `@(5|6|7)`, and runs the real one
    otherwise; every call is counted in `folder/calls`."""
    real = shutil.which("squeue")
    folder.mkdir(parents=True, exist_ok=True)
    script = folder / "squeue"
    script.write_text(
        "#!/bin/bash\nshopt -s extglob\n"
        f"n=$(( $(cat {folder}/calls 2>/dev/null || echo 0) + 1 )); echo $n > {folder}/calls\n"
        f'case $n in {failures}) echo "squeue: error: Unable to contact slurm controller (connect failure)" >&2;'
        " exit 1;; esac\n"
        f'exec {real} "$@"\n'
    )
    script.chmod(0o755)
    return {**quiet_env(), "PATH": f"{folder}:{os.environ['PATH']}"}


def test_an_unanswered_queue_poll_cancels_nothing_and_the_recipe_finishes(tmp_path, slurm_cluster):
    """Seven squeue calls in a row fail while the main job is queued or runs: the first poll's four
    tries, then three of the next. Before, one failed call read as "every job ended" and cancelled
    the batch; now the orchestrator says it got no answer, waits, and the job completes."""
    out = tmp_path / "recipe"
    config = tmp_path / "recipe.yaml"
    config.write_text(yaml.safe_dump({**RECIPE, "output_dir": str(out), "methods": ["erm"]}))
    env = failing_squeue(tmp_path / "bin", "@(3|4|5|6|7|8|9)")
    orchestrator = start(["run", config], tmp_path / "log", env=env)
    assert orchestrator.wait(timeout=600) == 0, (tmp_path / "log").read_text()[-3000:]
    log = (tmp_path / "log").read_text()
    assert "warning: squeue did not answer 4 tries: squeue: error: Unable to contact slurm controller" in log
    assert "cancelled" not in log and int((tmp_path / "bin" / "calls").read_text()) > 9
    erm = out / "main" / "erm" / "seed0"
    assert final_state(job_id(erm))["state"] in ("COMPLETED", "UNKNOWN") and (erm / "metrics.json").is_file()
    assert json.loads((erm / "job_done.json").read_text())["job_id"] == job_id(erm)


def restart_slurmctld() -> None:
    """Stop the controller as an administrator's restart does, then start it again on its saved
    state (no `-c`): the jobs it knew are recovered, those running on the nodes ran on meanwhile."""
    pid_file = Path("/run/slurm/slurmctld.pid")
    pid = int(pid_file.read_text())
    os.kill(pid, signal.SIGTERM)
    wait_for(lambda: not Path(f"/proc/{pid}").exists(), "slurmctld to stop", seconds=60)
    assert subprocess.run(["squeue", "-h"], capture_output=True).returncode != 0  # the queue does not answer
    time.sleep(10)  # ten of the orchestrator's 1 s polls
    subprocess.run(["slurmctld"], check=True, timeout=60)
    wait_for(lambda: subprocess.run(["squeue", "-h"], capture_output=True).returncode == 0, "slurmctld to answer")


def test_a_slurmctld_restart_while_a_main_run_trains_cancels_nothing_and_the_recipe_finishes(tmp_path, slurm_cluster):
    """The controller restarts while the two-node main job trains: the orchestrator's polls go
    unanswered for a while, it says so and waits; the job trains on, the restarted controller
    recovers it from its saved state, and the recipe finishes with its results."""
    out = tmp_path / "recipe"
    config = tmp_path / "recipe.yaml"
    # 900 steps, about 45 s: the job trains on through the restart and ends once the controller is
    # back (a step that ends while it is down is reported to it only a minute later, and meanwhile
    # the restarted controller drains the nodes for a step it cannot end).
    main = {**RECIPE["main"], "erm_epochs": 60}
    config.write_text(yaml.safe_dump({**RECIPE, "output_dir": str(out), "methods": ["erm"], "main": main}))
    orchestrator = start(["run", config], tmp_path / "log")
    erm = out / "main" / "erm" / "seed0"
    try:
        wait_for((erm / "log.jsonl").is_file, "the main run to train")
        restart_slurmctld()
        assert orchestrator.wait(timeout=600) == 0, (tmp_path / "log").read_text()[-3000:]
    finally:
        if subprocess.run(["squeue", "-h"], capture_output=True).returncode != 0:
            subprocess.run(["slurmctld"], timeout=60)  # never leave the other tests without a controller
        drained = subprocess.run(["sinfo", "-h", "-t", "drain", "-o", "%N"], capture_output=True, text=True).stdout
        if drained.strip():  # nor without nodes: fail here, not in the tests after this one
            subprocess.run(["scontrol", "update", f"nodename={drained.strip()}", "state=resume"], timeout=60)
            raise AssertionError(f"nodes {drained.strip()} were drained")
        with contextlib.suppress(ProcessLookupError):
            os.killpg(orchestrator.pid, signal.SIGKILL)
    log = (tmp_path / "log").read_text()
    assert "cancelled" not in log, log[-3000:]
    metrics = json.loads((erm / "metrics.json").read_text())
    assert metrics["steps"] == metrics["max_steps"]
    assert json.loads((erm / "job_done.json").read_text())["job_id"] == job_id(erm)
    assert final_state(job_id(erm))["state"] in ("COMPLETED", "UNKNOWN")


def test_a_re_run_that_cannot_read_the_queue_submits_and_deletes_nothing(tmp_path, slurm_cluster, monkeypatch):
    """Whether a recorded job still runs decides between re-attaching and starting over: without an
    answer from squeue the orchestrator stops in one line, its folders untouched."""
    from ftft_ds.errors import FtftError
    from ftft_ds.jobs import ExecutorConfig, slurm

    folder = tmp_path / "main" / "erm" / "seed0"
    folder.mkdir(parents=True)
    (folder / "job.json").write_text(json.dumps({"job_id": "4242", "what": "main run 'erm' seed 0"}))
    monkeypatch.setenv("PATH", failing_squeue(tmp_path / "bin", "*")["PATH"])
    monkeypatch.setattr(slurm, "QUERY_BACKOFF_S", 0.01)
    executor = slurm.SlurmExecutor(ExecutorConfig(kind="slurm"), tmp_path)
    with pytest.raises(FtftError, match=r"^cannot tell whether SLURM job 4242 \(main run 'erm' seed 0\) still runs: "):
        executor.live_job(folder)
    assert int((tmp_path / "bin" / "calls").read_text()) == slurm.QUERY_ATTEMPTS
    assert [p.name for p in folder.iterdir()] == ["job.json"]


def wait_for(condition, what, seconds=240):
    deadline = time.time() + seconds
    while time.time() < deadline:
        if condition():
            return
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}")


def job_id(folder):
    return json.loads((folder / "job.json").read_text())["job_id"]


def queue(job_ids):
    out = subprocess.run(["squeue", "-h", "-r", "-o", "%i %T", "-j", ",".join(job_ids)], capture_output=True, text=True)
    return dict(line.split() for line in out.stdout.splitlines())


def losses(folder):
    return [
        (r["step"], r["train/loss"])
        for r in map(json.loads, (folder / "log.jsonl").read_text().splitlines())
        if "train/loss" in r
    ]


def test_recipe_on_two_nodes_requeued_detached_and_re_attached(tmp_path, slurm_cluster):
    """The recipe's main runs are two-node jobs. The ERM job is requeued by submitit on the signal
    that precedes a time limit (a preempted job is requeued by SLURM the same way) and resumes
    exactly; the orchestrator is stopped while detached, and a second one re-attaches to the jobs
    instead of submitting them again."""
    out = tmp_path / "recipe"
    config = tmp_path / "recipe.yaml"
    config.write_text(yaml.safe_dump({**RECIPE, "output_dir": str(out)}))
    first = start(["run", config, "--detach"], tmp_path / "first.log")
    erm, ftft_main = out / "main" / "erm" / "seed0", out / "main" / "ftft" / "seed0"
    wait_for(lambda: (erm / "job.json").is_file() and (ftft_main / "job.json").is_file(), "the main jobs' records")
    ids = {job_id(erm), job_id(ftft_main)}
    latest = erm / "checkpoints" / "latest"
    wait_for(latest.is_file, "the ERM job's first checkpoint")
    # What SLURM sends before a time limit (--signal=USR2@...): submitit requeues the job. Held
    # while it waits to start again, it is still queued whatever the machine's speed.
    subprocess.run(["scancel", "--signal=USR2", job_id(erm)], check=True)
    wait_for(lambda: queue([job_id(erm)]).get(job_id(erm)) == "PENDING", "the ERM job requeued")
    subprocess.run(["scontrol", "hold", job_id(erm)], check=True)
    os.killpg(first.pid, signal.SIGTERM)
    assert first.wait(timeout=60) == 128 + signal.SIGTERM
    assert "detached" in (tmp_path / "first.log").read_text()
    # Detached: the jobs go on (still queued or running, or already completed), none cancelled.
    assert all(job in queue(ids) or final_state(job)["state"] == "COMPLETED" for job in ids)

    # The straight local run that the requeued job must match, trained while the job waits to restart.
    local = start_straight_run(erm, tmp_path)

    second = start(["run", config], tmp_path / "second.log")
    try:
        wait_for(
            lambda: f"re-attached to SLURM job {job_id(erm)}" in (tmp_path / "second.log").read_text(),
            "the second orchestrator to re-attach",
        )
        subprocess.run(["scontrol", "release", job_id(erm)], check=True)
        assert second.wait(timeout=600) == 0, (tmp_path / "second.log").read_text()[-3000:]
        assert "submitted as" not in (tmp_path / "second.log").read_text()
        assert {job_id(erm), job_id(ftft_main)} == ids  # nothing submitted twice
        for folder in (erm, ftft_main):
            metrics = json.loads((folder / "metrics.json").read_text())
            assert metrics["world_size"] == 2
        assert (out / "results.md").is_file()
        # The requeued job resumed from its checkpoint: the same losses as the straight local run.
        assert local.wait(timeout=300) == 0, (tmp_path / "straight.log").read_text()[-3000:]
    finally:  # the background launcher and orchestrator, and anything left in their groups, end with the test
        for process in (local, second):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
    assert_same_losses(losses(erm), losses(tmp_path / "straight"))
    restarts = subprocess.run(
        ["grep", "-c", "Starting with JobEnvironment", json.loads((erm / "job.json").read_text())["stdout"]],
        capture_output=True,
        text=True,
    ).stdout.strip()
    assert int(restarts or 0) >= 2, "the ERM job did not start twice"

    status = ftft(["status", out])
    assert status.returncode == 0, tail(status)
    lines = {line.split()[0]: line for line in status.stdout.splitlines()[1:]}
    assert "done" in lines["main/erm/seed0"] and job_id(erm) in lines["main/erm/seed0"]


def test_sigterm_cancels_the_jobs(tmp_path, slurm_cluster):
    out = tmp_path / "recipe"
    config = tmp_path / "recipe.yaml"
    config.write_text(yaml.safe_dump({**RECIPE, "output_dir": str(out), "methods": ["erm"]}))
    orchestrator = start(["run", config], tmp_path / "log")
    erm = out / "main" / "erm" / "seed0"
    wait_for(lambda: (erm / "job.json").is_file(), "the main job's record")
    ids = [job_id(erm)]
    os.killpg(orchestrator.pid, signal.SIGTERM)
    assert orchestrator.wait(timeout=60) == 128 + signal.SIGTERM
    wait_for(lambda: not queue(ids), "the cancelled job to leave the queue", seconds=60)
    assert "cancelled SLURM jobs" in (tmp_path / "log").read_text()


def test_sweep_survivors_continue_in_new_jobs(tmp_path, slurm_cluster):
    """The survivor's second segment is a new two-node job that resumes from the first one's
    checkpoint. That a resumed two-node job walks a straight run's trajectory is checked on the
    requeued job above, and for sweep continuations on local processes (test_sweep_runner).

    The sweep is started where a launcher's rank variables are set (as in a torchrun shell, or a
    batch script exporting MASTER_PORT): its jobs, two of them side by side, still train as the
    two-rank worlds they are, each on its own port."""
    out = tmp_path / "sweep"
    config = tmp_path / "sweep.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "output_dir": str(out),
                "data": {"embedded_train_size": 80},
                "main": {
                    "model": "tiny-bert",
                    "micro_batch_size": 4,
                    "lr": 1.0e-3,
                    "budget": "steps:12",
                    "log_every": 1,
                },
                "policy": "ssc:t=2,f=0.5,p=1",
                "wi_seeds": [1, 2],
                "do_seeds": [3],
                "evals_per_epoch": 2,
                "executor": EXECUTOR,
            }
        )
    )
    port = str(free_port())
    proc = ftft(["sweep", config], timeout=600, RANK="0", WORLD_SIZE="1", MASTER_ADDR="127.0.0.1", MASTER_PORT=port)
    assert proc.returncode == 0, tail(proc)
    summary = json.loads((out / "sweep.json").read_text())
    steps = {row["trial"]: row["steps"] for row in summary["trials"]}
    assert sorted(steps.values()) == [6, 12]
    survivor = next(t for t, s in steps.items() if s == 12)
    folder = out / "trials" / f"trial{survivor:03d}"
    assert proc.stdout.count("submitted as SLURM job") == 3  # two first segments, one continuation
    assert json.loads((folder / "run_config.json").read_text())["resume"] is True
    assert [step for step, _ in losses(folder)] == list(range(1, 13))  # steps 1-6 once: resumed, not redone
    for trial in steps:
        assert json.loads((out / "trials" / f"trial{trial:03d}" / "metrics.json").read_text())["world_size"] == 2


def test_the_sbatch_example_trains_across_two_nodes(tmp_path, slurm_cluster):
    """examples/slurm_main.sbatch as shipped, less its GPU and CPU requests (the loopback nodes have
    no GPUs): one deepspeed launcher per node, reading a hostfile in the shared run folder."""
    script = tmp_path / "slurm_main.sbatch"
    lines = (REPO / "examples" / "slurm_main.sbatch").read_text().splitlines()
    script.write_text("\n".join(line for line in lines if not line.startswith(("#SBATCH --gpus", "#SBATCH --cpus"))))
    run_dir = tmp_path / "run"
    env = quiet_env(
        RUN_DIR=str(run_dir), GPUS_PER_NODE="1", PATH=f"{os.path.dirname(sys.executable)}:{os.environ['PATH']}"
    )
    proc = subprocess.run(
        [
            "sbatch",
            "--parsable",
            "--time=10",
            "-o",
            str(tmp_path / "job.log"),
            str(script),
            "--model",
            "tiny-bert",
            "--set",
            "subset=null",
            "--set",
            "data.embedded_train_size=64",
            "--set",
            "micro_batch_size=4",
            "--budget",
            "steps:3",
            "--set",
            "data.eval_splits=[dev]",
            "--set",
            "patience_metric=dev/accuracy",
            "--set",
            "checkpoint_every=0",
            "--set",
            "export_model=false",
        ],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    job = proc.stdout.strip().split(";")[0]
    wait_for(lambda: not queue([job]), "the sbatch job to end", seconds=300)  # sbatch --wait polls slowly
    assert final_state(job)["state"] == "COMPLETED", (tmp_path / "job.log").read_text()[-3000:]
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["world_size"] == 2 and metrics["steps"] == 3
    assert (run_dir / "hostfile").read_text().split() == ["n1", "slots=1", "n2", "slots=1"]


def test_a_failed_job_fails_its_stage_with_its_error_line(tmp_path, slurm_cluster):
    out = tmp_path / "recipe"
    config = tmp_path / "recipe.yaml"
    config.write_text(
        yaml.safe_dump(
            {**RECIPE, "output_dir": str(out), "methods": ["erm"], "main": {**RECIPE["main"], "max_length": 900}}
        )
    )
    proc = ftft(["run", config], timeout=300)
    assert proc.returncode == 2, tail(proc)
    error = proc.stderr.strip().splitlines()[-1]
    assert error.startswith("error: main run 'erm' seed 0 failed (SLURM job ")
    assert "max_length 900 is more than model 'tiny-bert' takes (512 positions)" in error


def test_a_rank_that_dies_ends_its_job_at_once_and_the_stage_names_its_error(tmp_path, slurm_cluster):
    """Rank 1 of a two-node main run raises while it starts (a hook on its PYTHONPATH, set by the
    executor's `setup` lines), before it joins rank 0. `srun --kill-on-bad-exit` ends rank 0 too:
    without it rank 0 waits for rank 1 until the collective timeout, and the job holds both nodes.
    The stage fails with rank 1's line, read from rank 1's own log."""
    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(
        "import os, sys\n"
        "class Fault:  # raises where rank 1 imports its run\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name == 'ftft_ds.runs.main':\n"
        "            raise RuntimeError('injected fault on rank 1')\n"
        "if os.environ.get('SLURM_PROCID') == '1':  # a task of the job's srun step, never the batch script\n"
        "    sys.meta_path.insert(0, Fault())\n"
    )
    out = tmp_path / "recipe"
    config = tmp_path / "recipe.yaml"
    recipe = {
        **RECIPE,
        "output_dir": str(out),
        "methods": ["erm"],
        "executor": {**EXECUTOR, "setup": [f"export PYTHONPATH={hook}"]},
    }
    config.write_text(yaml.safe_dump(recipe))
    proc = ftft(["run", config], timeout=300)
    assert proc.returncode == 2, tail(proc)
    error = proc.stderr.strip().splitlines()[-1]
    assert error.startswith("error: main run 'erm' seed 0 failed (SLURM job ")
    assert "RuntimeError: injected fault on rank 1" in error
    ended = json.loads((out / "main" / "erm" / "seed0" / "job.json").read_text())["ended"]
    ran = [time.mktime(time.strptime(ended[key], "%Y-%m-%dT%H:%M:%S")) for key in ("start", "end")]
    assert ran[1] - ran[0] < 60, ended


def test_jobs_submitted_from_inside_an_allocation_take_their_own_resources(tmp_path, slurm_cluster):
    """An orchestrator started in a batch script or `salloc` shell has that allocation's SLURM_*
    variables, which sbatch passes on to the jobs: their srun would read that allocation's request
    (here GPUs, which the loopback nodes lack) as its own and refuse to start the step."""
    out = tmp_path / "recipe"
    config = tmp_path / "recipe.yaml"
    config.write_text(yaml.safe_dump({**RECIPE, "output_dir": str(out), "methods": ["erm"]}))
    proc = ftft(["run", config], timeout=300, SLURM_JOB_ID="1", SLURM_MEM_PER_CPU="64000", SLURM_GPUS_PER_TASK="1")
    assert proc.returncode == 0, tail(proc)
    assert json.loads((out / "main" / "erm" / "seed0" / "metrics.json").read_text())["world_size"] == 2


def test_a_batch_larger_than_the_clusters_job_arrays_goes_out_in_turns(tmp_path, slurm_cluster):
    """The loopback cluster's MaxArraySize is 5 (`.ci/slurm_cluster.sh`), as a cluster's 1001 is to
    a sweep of thousands of trials: a 7-trial sweep's first rung goes out as arrays of at most 5."""
    out = tmp_path / "sweep"
    config = tmp_path / "sweep.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "output_dir": str(out),
                "data": {"embedded_train_size": 40},
                "main": {"model": "tiny-bert", "micro_batch_size": 4, "budget": "steps:2", "log_every": 1},
                "policy": "none:t=7",
                "wi_seeds": [1, 2, 3, 4, 5, 6, 7],
                "do_seeds": [8],
                "evals_per_epoch": 1,
                "executor": {**EXECUTOR, "nodes": 1, "max_in_flight": 4},
            }
        )
    )
    proc = ftft(["sweep", config], timeout=900)
    assert proc.returncode == 0, tail(proc)
    ids = [json.loads((folder / "job.json").read_text())["job_id"] for folder in (out / "trials").iterdir()]
    arrays = {}
    for job in ids:
        array, _, index = job.partition("_")
        arrays.setdefault(array, []).append(int(index))
    assert len(ids) == 7 and sorted(len(indices) for indices in arrays.values()) == [2, 5]
    assert all(max(indices) < 5 for indices in arrays.values())


def test_a_batch_goes_out_in_turns_no_larger_than_the_clusters_arrays_or_the_accounts_submit_limit(
    tmp_path, slurm_cluster
):
    """MaxArraySize comes from the controller (`scontrol show config`: 5 here); an account's
    MaxSubmitJobs, which the controller does not show without its accounting database, from the
    executor's config."""
    from ftft_ds.jobs import ExecutorConfig
    from ftft_ds.jobs.slurm import SlurmExecutor

    assert SlurmExecutor(ExecutorConfig(kind="slurm"), tmp_path).batch_size(2000) == 5
    assert SlurmExecutor(ExecutorConfig(kind="slurm", max_submit_jobs=3), tmp_path).batch_size(2000) == 3
    assert SlurmExecutor(ExecutorConfig(kind="slurm", max_submit_jobs=3), tmp_path).batch_size(2) == 2


def test_a_submission_slurm_refuses_is_one_line(tmp_path, slurm_cluster):
    out = tmp_path / "recipe"
    config = tmp_path / "recipe.yaml"
    recipe = {**RECIPE, "output_dir": str(out), "methods": ["erm"], "executor": {**EXECUTOR, "partition": "nowhere"}}
    config.write_text(yaml.safe_dump(recipe))
    proc = ftft(["run", config], timeout=300)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, tail(proc)
    assert proc.stderr.strip().splitlines()[-1] == (
        "error: SLURM refused 1 job(s) (main run 'erm' seed 0, ...): sbatch: error: Batch job submission failed: "
        "Invalid partition name specified"
    )


def test_a_time_limit_warning_saves_requeues_and_the_run_resumes_exactly(tmp_path, slurm_cluster):
    """A real 2-minute time limit. slurmctld warns the job (SIGUSR2, 60 s ahead: it looks at limits
    every 30 s); the ranks agree on a step, save there and the job is requeued, as often as it
    takes. (Under a 1-minute limit the warning, 30 s ahead, can reach a rank still starting, before
    any handler is installed, and kill it.) The run saves no checkpoint of its own (`checkpoint_every` 0,
    `checkpoint_minutes` off): each start resumes from the one saved on the warning, and the
    losses equal a straight run's."""
    out = tmp_path / "recipe"
    config = tmp_path / "recipe.yaml"
    main = {**RECIPE["main"], "erm_epochs": 100, "checkpoint_every": 0, "checkpoint_minutes": None, "log_every": 10}
    recipe = {
        **RECIPE,
        "output_dir": str(out),
        "methods": ["erm"],
        "main": main,
        "executor": {**EXECUTOR, "time_limit_min": 2},
    }
    config.write_text(yaml.safe_dump(recipe))
    orchestrator = start(["run", config], tmp_path / "log")
    erm = out / "main" / "erm" / "seed0"
    local = None
    try:
        wait_for((erm / "run_config.json").is_file, "the main run's config")
        local = start_straight_run(erm, tmp_path)
        assert orchestrator.wait(timeout=900) == 0, (tmp_path / "log").read_text()[-3000:]
        assert local.wait(timeout=300) == 0, (tmp_path / "straight.log").read_text()[-3000:]
    finally:
        for process in filter(None, (orchestrator, local)):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
    log = open(json.loads((erm / "job.json").read_text())["stdout"]).read()
    assert log.count("Starting with JobEnvironment") >= 2 and "time limit near: saved at step" in log, log[-3000:]
    assert json.loads((erm / "metrics.json").read_text())["steps"] == 1500
    assert_same_losses(losses(erm), losses(tmp_path / "straight"))
