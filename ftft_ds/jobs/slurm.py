"""The SLURM executor: every job a SLURM job, submitted through submitit, watched through squeue.

submitit writes the sbatch scripts, submits batches as job arrays (throttled to `max_in_flight`),
runs each task's `StageTask` under `srun`, and requeues a job whose time limit nears (SIGUSR2 from
`--signal`) or that is preempted; the task then resumes from its last checkpoint. Main runs are
`nodes` x `ranks_per_node` tasks, one per GPU, that form one world from SLURM's variables;
references are one task. Job states come from `squeue` and `scontrol`, not from `sacct`, which
needs the accounting daemon that many clusters (and submitit's own state) lack.

Each job's id, log file and, once it ended, its state and times are recorded in its folder
(`job.json`, with the records of a trial's earlier segments): a second orchestrator on the
same folder finds a job still queued or running there and waits for it instead of submitting it
again. SIGINT or SIGTERM to the orchestrator cancels its jobs (`scancel`), unless it was started
with `detach`.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable, Sequence

from ..errors import FtftError
from ..io import write_json
from ..train.runtime import RANK_VARIABLES
from .local import last_error, on_stop_signal, progress_line

RECORD = "job.json"
ACTIVE = {
    "PENDING",
    "CONFIGURING",
    "RUNNING",
    "COMPLETING",
    "REQUEUED",
    "REQUEUE_HOLD",
    "REQUEUE_FED",
    "RESIZING",
    "SUSPENDED",
    "STAGE_OUT",
    "SIGNALING",
    "PREEMPTED",
}
"""States of a job that is not over (a preempted or requeued job comes back)."""


QUERY_ATTEMPTS = 4
"""Tries of a scheduler query before the caller hears that the scheduler did not answer."""
QUERY_BACKOFF_S = 2.0
"""Seconds before the second try; each further try waits twice as long (2, 4, 8 s)."""
UNKNOWN_JOB = "Invalid job id specified"
"""What squeue and scontrol say of a job the controller no longer knows: an answer (it is gone),
unlike a timeout or an unreachable controller."""


class SchedulerUnavailable(FtftError):
    """The scheduler did not answer a query, even after retries: nothing can be concluded from it."""


def _query(command: list[str]) -> str:
    """The output of a scheduler query; a failed one (a controller that timed out, restarts or is
    unreachable) is retried, since a failure is not an answer. Raises `SchedulerUnavailable` when
    every try failed."""
    failure = ""
    for attempt in range(QUERY_ATTEMPTS):
        if attempt:
            time.sleep(QUERY_BACKOFF_S * 2 ** (attempt - 1))
        try:
            proc = subprocess.run(command, capture_output=True, text=True, timeout=60)
        except (OSError, subprocess.TimeoutExpired) as exc:
            failure = str(exc)
            continue
        if proc.returncode == 0 or UNKNOWN_JOB in proc.stderr:
            return proc.stdout
        failure = (proc.stderr.strip().splitlines() or [f"exit code {proc.returncode}"])[-1]
    raise SchedulerUnavailable(f"{command[0]} did not answer {QUERY_ATTEMPTS} tries: {failure}")


def queue_states(job_ids: Sequence[str]) -> dict:
    """Job id -> state for the jobs of `job_ids` that `squeue` still lists (array tasks one by one).
    Raises `SchedulerUnavailable` rather than answer from a failed query: an empty answer would
    read as "every job ended"."""
    if not job_ids:
        return {}
    states = {}
    # --me: the controller sends this user's jobs alone, not the whole job table, to be filtered here.
    for line in _query(["squeue", "--me", "-h", "-r", "-o", "%i %T", "-j", ",".join(job_ids)]).splitlines():
        job_id, _, state = line.strip().partition(" ")
        states[job_id] = state
    return states


def final_state(job_id: str) -> dict:
    """`state`, `exit_code`, `submit`, `start` and `end` times of a job that has left the queue, from
    `scontrol` while it still knows it (a few minutes); state UNKNOWN after that."""
    output = _query(["scontrol", "show", "job", "-o", job_id])
    fields = dict(part.split("=", 1) for part in output.split() if "=" in part)
    return {
        "state": fields.get("JobState", "UNKNOWN"),
        "exit_code": fields.get("ExitCode", ""),
        **{key.lower().removesuffix("time"): fields.get(key) for key in ("SubmitTime", "StartTime", "EndTime")},
    }


DEFAULT_MAX_ARRAY_SIZE = 1001
"""SLURM's own default of MaxArraySize, for a controller whose configuration cannot be read."""


def max_array_size() -> int:
    """How many tasks one job array may hold: SLURM's MaxArraySize (indices 0 to MaxArraySize - 1)."""
    try:
        output = _query(["scontrol", "show", "config"])
    except SchedulerUnavailable:
        return DEFAULT_MAX_ARRAY_SIZE
    for line in output.splitlines():
        key, _, value = line.partition("=")
        if key.strip() == "MaxArraySize" and value.strip().isdigit():
            return int(value.strip())
    return DEFAULT_MAX_ARRAY_SIZE


DONE = "job_done.json"
"""Written into a job's folder by its task (rank 0) once its run returned: proof of completion
that outlives the controller's memory of the job."""


def finished_by(folder: Path, job_id: str) -> bool:
    """Whether SLURM job `job_id` (an array task's own id) finished its run in `folder`."""
    try:
        return json.loads((Path(folder) / DONE).read_text(encoding="utf-8")).get("job_id") == job_id
    except (FileNotFoundError, json.JSONDecodeError):
        return False


def read_record(folder: Path) -> dict | None:
    path = Path(folder) / RECORD
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def cancel(job_ids: Sequence[str]) -> None:
    if job_ids:
        subprocess.run(["scancel", *job_ids], capture_output=True, timeout=60)


class SlurmExecutor:
    """Submits `Job`s to SLURM and waits for them (see the module docstring)."""

    def __init__(self, cfg, root: Path, echo: Callable[[str], None] = print, detach: bool = False):
        self.cfg = cfg
        self.folder = Path(root) / ".slurm"
        self.echo = echo
        self.detach = detach

    def live_job(self, folder: Path) -> str | None:
        """The id of the job recorded in `folder` if it is still queued or running (see `live_jobs`)."""
        return self.live_jobs([folder]).get(Path(folder))

    def live_jobs(self, folders: Sequence[Path]) -> dict:
        """Folder -> id of the job recorded there, for the folders whose job is still queued or
        running: one squeue call for them all. A queue that does not answer stops the orchestrator
        here, before it deletes a folder a live job writes or submits that job again."""
        records = {Path(folder): record for folder in folders if (record := read_record(folder)) is not None}
        if not records:
            return {}
        try:
            states = queue_states([record["job_id"] for record in records.values()])
        except SchedulerUnavailable as exc:
            what = ", ".join(f"{r['job_id']} ({r['what']})" for r in list(records.values())[:3])
            raise FtftError(
                f"cannot tell whether SLURM job {what}{' ...' if len(records) > 3 else ''} still runs: {exc}; "
                f"nothing was submitted or deleted, run the same command again once the controller answers"
            ) from None
        return {folder: r["job_id"] for folder, r in records.items() if states.get(r["job_id"]) in ACTIVE}

    def batch_size(self, pending: int) -> int:
        """All `pending` jobs at once, the job array's throttle (`max_in_flight`) pacing them, up to
        the cluster's largest array (MaxArraySize, 1001 by default) and the account's submit limit
        (`max_submit_jobs`): a bigger batch goes out in turns."""
        return max(1, min(pending, max_array_size(), self.cfg.max_submit_jobs or pending))

    def run(self, batch: Sequence, show_progress: bool = False) -> None:
        """Submit the jobs of `batch` that are not already queued or running, then wait for all of them.

        A failed job cancels the others and raises `FtftError` with its log's error line."""
        ids = {}
        fresh = []
        running = self.live_jobs([job.folder for job in batch])
        for job in batch:
            live = running.get(Path(job.folder))
            if live is not None:
                ids[live] = job
                self.echo(f"  {job.what}: re-attached to SLURM job {live}")
            else:
                fresh.append(job)
        for ranks in dict.fromkeys(job.ranks for job in fresh):
            group = [job for job in fresh if job.ranks == ranks]
            ids.update(zip(self._submit(group, ranks), group))
        with self._cancelling_on_signal(list(ids)):
            self._wait(ids, show_progress)

    def _submit(self, group: Sequence, ranks: int | None) -> list[str]:
        """Submit `group` (jobs of one shape) as one job array; record each job's id in its folder."""
        import submitit

        from .task import StageTask

        executor = submitit.SlurmExecutor(folder=self.folder, max_num_timeout=100)
        executor.update_parameters(**self._parameters(ranks, len(group)))
        # An orchestrator inside an allocation has SLURM_* variables (SLURM_MEM_PER_CPU,
        # SLURM_TRES_PER_TASK, ...) that sbatch would pass on to the job's srun: its resources are its own.
        try:
            with submitit.helpers.clean_env(), executor.batch():
                # Half the warning's lead for the ranks to agree and save; the rest to requeue.
                grace = self._signal_delay_s() // 2
                submitted = [executor.submit(StageTask(job.command, str(job.config), grace)) for job in group]
        except submitit.core.utils.FailedJobError as exc:  # sbatch refused: a bad option, a limit
            refusal = (str(exc).strip().splitlines() or ["no reason given"])[-1]
            raise FtftError(f"SLURM refused {len(group)} job(s) ({group[0].what}, ...): {refusal}") from None
        ids = []
        for job, handle in zip(group, submitted):
            previous = read_record(job.folder)  # a trial's earlier segment
            earlier = [*previous.pop("earlier", []), previous] if previous else []
            write_json(
                job.folder / RECORD,
                {
                    "job_id": handle.job_id,
                    "what": job.what,
                    "submitted": time.time(),
                    "stdout": str(handle.paths.stdout),
                    "earlier": earlier,
                },
            )
            self.echo(f"  {job.what}: submitted as SLURM job {handle.job_id}")
            ids.append(handle.job_id)
        return ids

    def _parameters(self, ranks: int | None, count: int) -> dict:
        """submitit's sbatch parameters for a job of `ranks` ranks in the main runs' shape (None: one
        process, a cheap reference)."""
        cfg = self.cfg
        main = ranks is not None
        gpus = cfg.gpus_per_node if main else (1 if cfg.gpus_per_node else None)
        parameters = {
            "job_name": "ftft-main" if main else "ftft-reference",
            "nodes": cfg.nodes if main else 1,
            "ntasks_per_node": cfg.ranks_per_node if main else 1,
            "time": cfg.time_limit_min,
            "array_parallelism": min(cfg.max_in_flight, count),
            "stderr_to_stdout": True,
            "additional_parameters": dict(cfg.sbatch_options),
            # The submitting shell's rank variables would reach every task (sbatch exports the
            # environment): a task would join that world, not its job's (RANK_VARIABLES). SLURM
            # 22.05 to 23.02.4's srun does not take the job's --cpus-per-task: SRUN_CPUS_PER_TASK does.
            "setup": [
                f"unset {' '.join(RANK_VARIABLES)}",
                *(["export SRUN_CPUS_PER_TASK=$SLURM_CPUS_PER_TASK"] if cfg.cpus_per_task else []),
                *cfg.setup,
            ],
            # A rank that dies ends the step: the others would otherwise wait in a collective until
            # its timeout, holding every GPU of the job.
            "srun_args": ["--kill-on-bad-exit=1"],
            "signal_delay_s": self._signal_delay_s(),
        }
        optional = {
            "gpus_per_node": gpus or None,
            "cpus_per_task": cfg.cpus_per_task,
            "partition": cfg.partition,
            "account": cfg.account,
            "qos": cfg.qos,
        }
        parameters.update({key: value for key, value in optional.items() if value is not None})
        return parameters

    def _wait(self, ids: dict, show_progress: bool) -> None:
        """Poll the queue until every job of `ids` (job id -> `Job`) has ended; report state changes."""
        states: dict = {}
        waiting = dict(ids)
        while waiting:
            try:
                queued = queue_states(list(waiting))
            except SchedulerUnavailable as exc:  # no answer is no news: the jobs may well run on
                self.echo(f"  warning: {exc}; still waiting for {len(waiting)} SLURM job(s)")
                time.sleep(self._poll_interval(len(waiting)))
                continue
            for job_id, job in list(waiting.items()):
                state = queued.get(job_id)
                if state is None:
                    del waiting[job_id]
                    self._finished(job_id, job, list(waiting))
                    state = "ENDED"
                if states.get(job_id) != state:
                    states[job_id] = state
                    if state != "ENDED":
                        self.echo(f"  {job.what}: SLURM job {job_id} {state.lower()}")
            if waiting:
                if show_progress and sys.stdout.isatty():
                    running = [job for job_id, job in waiting.items() if states.get(job_id) == "RUNNING"]
                    line = progress_line(_log(running[0])) if running else None
                    if line:
                        sys.stdout.write("\r\033[K    " + line[:110])
                        sys.stdout.flush()
                time.sleep(self._poll_interval(len(waiting)))
        if show_progress and sys.stdout.isatty():
            sys.stdout.write("\r\033[K")

    def _signal_delay_s(self) -> int:
        """How long before its time limit a job is warned (SIGUSR2), for its ranks to save and
        requeue: a tenth of the limit, at least 60 s and at most 300 s (a large model's checkpoint
        takes minutes), and half of a limit under 2 minutes. slurmctld looks at time limits only
        every 30 s, so a warning window shorter than that would often be passed over, and the job
        killed unwarned."""
        limit_s = self.cfg.time_limit_min * 60
        return min(max(60, limit_s // 10), 300, limit_s // 2)

    def _poll_interval(self, jobs: int) -> float:
        """Seconds between polls of `jobs` jobs: `poll_seconds`, and one more per 200 jobs, so that a
        batch of thousands does not ask the controller for its state every few seconds."""
        return self.cfg.poll_seconds + jobs // 200

    def _finished(self, job_id: str, job, others: list) -> None:
        """Record how job `job_id` ended in its folder; if it failed, cancel `others` and raise.

        A job the controller has already forgotten (UNKNOWN) completed only if its task wrote
        `DONE` in its folder: its log alone cannot say whether it was killed mid-run."""
        while True:
            try:
                ended = final_state(job_id)
                break
            except SchedulerUnavailable as exc:
                self.echo(f"  warning: {exc}; asking again how SLURM job {job_id} ended")
                time.sleep(self.cfg.poll_seconds)
        state, exit_code = ended["state"], ended["exit_code"]
        write_json(job.folder / RECORD, {**read_record(job.folder), "ended": ended})
        failed = state not in ("COMPLETED", "UNKNOWN") or (state == "UNKNOWN" and not finished_by(job.folder, job_id))
        if failed:
            cancel(others)
            log, line = failure(task_logs(_log(job)))
            raise FtftError(
                f"{job.what} failed (SLURM job {job_id} {state.lower()}, exit {exit_code or '?'}): {line} — see {log}"
            )
        self.echo(f"  {job.what}: SLURM job {job_id} completed")

    def _cancelling_on_signal(self, job_ids: list):
        """While inside, SIGINT/SIGTERM cancel `job_ids` (unless detached), then stop this process."""

        def leave(signum: int) -> None:
            if self.detach:
                self.echo(f"detached: SLURM jobs {', '.join(job_ids)} go on; run the same command again to re-attach")
            else:
                cancel(job_ids)
                self.echo(f"cancelled SLURM jobs {', '.join(job_ids)}")

        return on_stop_signal(leave)


def task_logs(log: Path) -> list[Path]:
    """The logs of every task of the job whose task 0 writes `log` (submitit: `<job>_<task>_log.out`),
    in task order."""
    job, _, rest = log.name.rpartition("_0_")
    if rest != "log.out":
        return [log]
    tasks = {
        int(task): path
        for path in log.parent.glob(f"{job}_*_log.out")
        if (task := path.name.removeprefix(f"{job}_").removesuffix("_log.out")).isdigit()
    }
    return [tasks[task] for task in sorted(tasks)] or [log]


def failure(logs: Sequence[Path]) -> tuple[Path, str]:
    """(log, line) saying why a job failed, from its tasks' logs: the first `error:` line (a user
    error, the same on every rank), else the last line of the first task whose run raised (the
    rank that died; the others were killed), else task 0's last line."""
    text = {log: log.read_text(errors="replace") if log.is_file() else "" for log in logs}
    chosen = (
        next((log for log in logs if any(line.startswith("error:") for line in text[log].splitlines())), None)
        or next((log for log in logs if "Traceback (most recent call last)" in text[log]), None)
        or logs[0]
    )
    return chosen, last_error(chosen)


def _log(job) -> Path:
    """The SLURM log of `job` (recorded when it was submitted), else its local log path."""
    record = read_record(job.folder)
    return Path(record["stdout"]) if record else job.log
