"""`ftft sweep`: many trials of a main run, stopped early by a policy, resumable from disk.

A trial is a main run with its own weight-initialisation (WI) and data-order (DO) seeds: ERM on the
full split, or FTFT/DM on a subset. The policy's rungs cut every trial's full budget into segments;
each segment is a fresh job (a `deepspeed` process here, or a SLURM job: see `jobs`) that resumes
the trial from the checkpoint its previous segment left (never from scratch) and stops exactly at
the rung; a stopped trial's next segment is never started, and its optimizer states are deleted
(its metrics, logs and weights stay). At each rung the policy ranks the
live trials by their best evaluation score so far and only the survivors get another segment.

The sweep's state lives in the trial folders (each segment's `metrics.json` and `log.jsonl`), so a
killed sweep, re-run, redoes only the segments that had not finished; `sweep.json` summarises it.
Budgets are counted in full runs: a trial stopped at fraction f costs f (t·f + p·(1 − f) for
Dodge et al.'s start t / stop at f / continue p).
"""

from __future__ import annotations

import dataclasses
import json
import math
import typing
from pathlib import Path

import numpy as np

from ..config import MainConfig, derive, fields_set, save_config
from ..data.load import DataConfig, load_split
from ..dynamics.select import Subset
from ..errors import FtftError
from ..io import iter_jsonl, make_output_dir, write_json
from ..jobs import ExecutorConfig, Job, make_executor, run_ranks
from ..runs.plan import plan_steps
from ..train.budget import Budget
from ..train.checkpoint import RESUMABLE, drop_optimizer_states
from ..train.stop import running_best
from .policy import parse

MAIN_OWNED = frozenset(
    {
        "data",
        "output_dir",
        "subset",
        "resume",
        "overwrite",
        "init_seed",
        "data_seed",
        "dropout_seed",
        "eval_every",
        "evals_per_schedule",
        "patience",
        "patience_metric",
        "divergence_margin",
        "export_model",
        "schedule_budget",
    }
)
"""`MainConfig` fields the sweep sets for every trial: the task, folders, subset, resuming, the
seeds (`wi_seeds`, `do_seeds`, `seed`, `dropout_seed`), evaluation (`evals_per_epoch`, `metric`),
`divergence_margin`, and no exported model. Its `budget` is the full trial, run rung by rung."""


@dataclasses.dataclass
class SweepConfig:
    """A seed sweep with early stopping (Dodge et al. 2020)."""

    output_dir: str = "runs/sweep"
    """Folder of the sweep: one sub-folder per trial, `sweep.json`, the report."""
    data: DataConfig = dataclasses.field(default_factory=DataConfig)
    """The task."""
    main: MainConfig = dataclasses.field(default_factory=MainConfig)
    """Template of every trial; its `budget` is a full trial (steps, epochs or erm), and the fields
    in `MAIN_OWNED` are the sweep's."""
    subset: typing.Optional[str] = None
    """Subset file for FTFT/DM trials; None trains every trial on the full split (ERM)."""
    policy: str = "ssc:t=6,f=0.25,p=2"
    """ssc:t=T,f=F,p=P | halving:t=T,eta=E,min=R | none:t=T."""
    wi_seeds: typing.Optional[tuple] = None
    """Weight-initialisation seeds of a WI x DO grid (with `do_seeds`; their product must be t)."""
    do_seeds: typing.Optional[tuple] = None
    """Data-order seeds of the grid."""
    seed: int = 0
    """Without a grid: t random (WI, DO) pairs are drawn from this seed."""
    dropout_seed: int = 0
    """Dropout seed of every trial: its own stream, held fixed so that neither WI nor DO drives it."""
    evals_per_epoch: float = 10.0
    """Evaluations per epoch over the training rows (Dodge et al. evaluate often)."""
    metric: str = "dev/accuracy"
    """The validation score trials are ranked by (best so far)."""
    divergence_margin: typing.Optional[float] = None
    """Stop trials within this of majority-class accuracy after warm-up (None: never). Off by
    default: small models can sit at majority level well past warm-up and then learn."""
    num_ranks: int = 1
    """Ranks per trial (through the `deepspeed` launcher; SLURM trials have `executor.nodes` x
    `executor.ranks_per_node`)."""
    parallel: int = 1
    """Trials run at once by the local executor; with GPUs, each gets its own `num_ranks` of them
    (SLURM: `executor.max_in_flight`)."""
    executor: ExecutorConfig = dataclasses.field(default_factory=ExecutorConfig)
    """Where the trials' segments execute: `local` child processes or `slurm` jobs."""

    def __post_init__(self):
        self.policy_obj = parse(self.policy)
        if (self.wi_seeds is None) != (self.do_seeds is None):
            raise FtftError("give both wi_seeds and do_seeds for a grid, or neither for random pairs")
        if self.wi_seeds is not None:
            self.wi_seeds, self.do_seeds = tuple(self.wi_seeds), tuple(self.do_seeds)
            for name in ("wi_seeds", "do_seeds"):
                seeds = getattr(self, name)
                if not all(isinstance(s, int) and not isinstance(s, bool) for s in seeds) or len(set(seeds)) < len(
                    seeds
                ):
                    # Two equal seeds train two identical trials, which biases every expected-max estimate.
                    raise FtftError(f"{name} must be distinct integers, got {list(seeds)}")
            size = len(self.wi_seeds) * len(self.do_seeds)
            if size != self.policy_obj.t:
                raise FtftError(
                    f"the WI x DO grid has {size} trials but policy {self.policy} starts t={self.policy_obj.t}"
                )
        if not self.evals_per_epoch > 0:
            raise FtftError(f"evals_per_epoch must be positive, got {self.evals_per_epoch}")
        for name in ("num_ranks", "parallel"):
            if getattr(self, name) < 1:
                raise FtftError(f"{name} must be at least 1, got {getattr(self, name)}")
        if not isinstance(self.main, MainConfig):
            raise FtftError(f"main must be a mapping of MainConfig options, got {self.main!r}")
        self.trial_template(data=self.data)  # refuse a field the sweep owns before any trial starts

    def trial_template(self, **owned) -> MainConfig:
        """A trial: the `main` template with the fields the sweep owns (see `MAIN_OWNED`)."""
        return derive(self.main, MAIN_OWNED, "sweep", "main", **owned)

    def trials(self) -> list[tuple[int, int]]:
        """The (WI, DO) seed pairs, in trial order."""
        if self.wi_seeds is not None:
            return [(int(w), int(d)) for w in self.wi_seeds for d in self.do_seeds]
        pairs = np.random.default_rng(self.seed).integers(0, 2**31 - 1, size=(self.policy_obj.t, 2))
        return [(int(w), int(d)) for w, d in pairs]


def _full_steps(cfg: SweepConfig, base: MainConfig, ranks: int) -> tuple[int, float]:
    """Optimizer steps of a full trial on `ranks` ranks, and steps per epoch over its training rows."""
    split = load_split(cfg.data, cfg.data.train_split)
    rows = len(Subset.load(cfg.subset).uids) if cfg.subset else len(split)
    plan = plan_steps(rows, len(split), ranks, base.micro_batch_size, base.grad_accum, base.budget, base.erm_epochs)
    if plan.max_steps is None:
        raise FtftError(f"a sweep needs a budget counted in steps (steps, epochs or erm), not {base.budget}")
    return plan.max_steps, plan.steps_per_epoch


def _best_so_far(log: Path, metric: str, full_steps: int) -> dict:
    """{fraction of the full run: best `metric` up to that evaluation} from a trial's log."""
    if not log.is_file():
        return {}
    evals = [(record["step"], record[metric]) for _, record in iter_jsonl(log) if metric in record]
    best = running_best(score for _, score in evals)
    return {round(step / full_steps, 6): score for (step, _), score in zip(evals, best)}


class SweepRunner:
    """Runs the segments of a sweep's trials, rung by rung, and records what happened."""

    def __init__(self, cfg: SweepConfig, echo=print, detach: bool = False):
        self.cfg = cfg
        self.echo = echo
        self.out = Path(cfg.output_dir)
        self.policy = cfg.policy_obj
        if cfg.executor.kind == "slurm" and "parallel" in fields_set(cfg):
            raise FtftError("parallel applies to the local executor; SLURM runs executor.max_in_flight trials at once")
        self.ranks = run_ranks(cfg.num_ranks, cfg.executor, "sweep", "num_ranks" in fields_set(cfg))
        self.executor = make_executor(cfg.executor, self.out, echo, parallel=cfg.parallel, detach=detach)
        self.full_steps, per_epoch = _full_steps(cfg, cfg.main, self.ranks)
        self.eval_every = max(1, round(per_epoch / cfg.evals_per_epoch))
        self.rung_steps = [max(1, math.ceil(f * self.full_steps - 1e-9)) for f in self.policy.rungs()]
        self.trials = cfg.trials()

    def trial_config(self, index: int, steps: int) -> MainConfig:
        wi, do = self.trials[index]
        folder = self.out / "trials" / f"trial{index:03d}"
        resumes = (folder / RESUMABLE).is_file()
        return self.cfg.trial_template(
            data=self.cfg.data,
            subset=self.cfg.subset,
            output_dir=str(folder),
            budget=Budget("steps", steps),
            schedule_budget=self.cfg.main.budget,
            init_seed=wi,
            data_seed=do,
            dropout_seed=self.cfg.dropout_seed,
            eval_every=self.eval_every,
            evals_per_schedule=0,
            patience_metric=self.cfg.metric,
            patience=None,
            divergence_margin=self.cfg.divergence_margin,
            export_model=False,
            # The sweep owns its trial folders: a segment continues from the trial's checkpoint, or,
            # where a killed segment left none, starts over and replaces what that one wrote.
            resume=resumes,
            overwrite=not resumes,
        )

    def status(self, index: int) -> dict:
        """What trial `index` has done so far, read from its folder."""
        folder = self.out / "trials" / f"trial{index:03d}"
        metrics = folder / "metrics.json"
        done = json.loads(metrics.read_text()) if metrics.is_file() else None
        return {
            "steps": done["steps"] if done else 0,
            "diverged": bool(done and done["stopped"] == "diverged"),
            "early": _best_so_far(folder / "log.jsonl", self.cfg.metric, self.full_steps),
        }

    def run(self) -> dict:
        alive = list(range(len(self.trials)))
        for rung, steps in enumerate(self.rung_steps):
            states = {i: self.status(i) for i in alive}
            todo = [i for i in alive if states[i]["steps"] < steps and not states[i]["diverged"]]
            self.echo(
                f"rung {rung + 1}/{len(self.rung_steps)} ({steps}/{self.full_steps} steps): "
                f"{len(alive)} trials alive, {len(todo)} to run"
            )
            self._run_segments(todo, steps)
            scores = {}
            for i in alive:
                state = self.status(i)
                reached = [v for f, v in state["early"].items() if f <= steps / self.full_steps + 1e-9]
                scores[i] = math.nan if state["diverged"] or not reached else reached[-1]
            last = rung == len(self.rung_steps) - 1
            survivors = self.policy.survivors(scores, rung)
            stopped = [i for i in alive if i not in survivors or (not last and math.isnan(scores[i]))]
            alive = survivors if last else [i for i in survivors if not math.isnan(scores[i])]
            self._release(stopped)
            self._write_summary(alive if last else None)
        return json.loads((self.out / "sweep.json").read_text())

    def _release(self, stopped: list[int]) -> None:
        """A stopped trial never trains on: its metrics, logs and weights stay, its optimizer states
        go (`ftft status` shows each trial's disk use)."""
        freed = sum(drop_optimizer_states(self.out / "trials" / f"trial{i:03d}" / "checkpoints") for i in stopped)
        if freed:
            self.echo(f"  {len(stopped)} trial(s) stopped: {freed / 2**20:.1f} MiB of optimizer states deleted")

    def _run_segments(self, todo: list[int], steps: int) -> None:
        """Run trials' next segments, as many at once as the executor takes (locally `parallel`,
        each on its own GPUs when there are GPUs).

        A signal to this process, or a failed segment, stops the segments still running (see `jobs`).
        """
        size = self.executor.batch_size(len(todo))
        for start in range(0, len(todo), size):
            indices = todo[start : start + size]
            batch = []
            for index in indices:
                cfg = self.trial_config(index, steps)
                folder = Path(cfg.output_dir)
                folder.mkdir(parents=True, exist_ok=True)
                save_config(cfg, folder / "run_config.json")
                batch.append(
                    Job(
                        "train",
                        folder / "run_config.json",
                        folder,
                        folder / "segments.log",
                        f"trial {index}",
                        ranks=self.ranks,
                        append=True,
                    )
                )
            self.executor.run(batch)
            for index in indices:
                state = self.status(index)
                self.echo(
                    f"  trial {index:3d} (WI {self.trials[index][0]}, DO {self.trials[index][1]}) "
                    f"reached step {state['steps']}" + (" and diverged" if state["diverged"] else "")
                )

    def _write_summary(self, ranking: list[int] | None) -> None:
        rows = []
        for i, (wi, do) in enumerate(self.trials):
            state = self.status(i)
            finished = state["steps"] >= self.full_steps
            rows.append(
                {
                    "trial": i,
                    "wi_seed": wi,
                    "do_seed": do,
                    "steps": state["steps"],
                    "fraction": state["steps"] / self.full_steps,
                    "diverged": state["diverged"],
                    "status": "diverged" if state["diverged"] else "finished" if finished else "stopped",
                    "early": state["early"],
                    "final": list(state["early"].values())[-1] if finished and state["early"] else None,
                }
            )
        write_json(
            self.out / "sweep.json",
            {
                "policy": str(self.policy),
                "metric": self.cfg.metric,
                "full_steps": self.full_steps,
                "rung_steps": self.rung_steps,
                "eval_every": self.eval_every,
                "budget_full_runs": sum(r["fraction"] for r in rows),
                "policy_budget_full_runs": self.policy.budget_in_full_runs(),
                "winner": ranking[0] if ranking else None,
                "trials": rows,
            },
        )


def run_sweep(cfg: SweepConfig, echo=print, detach: bool = False) -> dict:
    """Run (or resume) a sweep; return the contents of its `sweep.json`. `detach`: a signal to this
    process leaves its SLURM jobs running (a later run re-attaches to them) instead of cancelling them."""
    make_output_dir(cfg.output_dir)
    save_config(cfg, Path(cfg.output_dir) / "sweep_config.json")
    return SweepRunner(cfg, echo, detach).run()
