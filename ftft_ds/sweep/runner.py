"""`ftft sweep`: many trials of a main run, stopped early by a policy, resumable from disk.

A trial is a main run with its own weight-initialisation (WI) and data-order (DO) seeds: ERM on the
full split, or FTFT/DM on a subset. The policy's rungs cut every trial's full budget into segments;
each segment is a fresh `deepspeed` process that resumes the trial from the checkpoint its previous
segment left (never from scratch) and stops exactly at the rung. At each rung the policy ranks the
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
import os
import typing
from pathlib import Path

import click
import numpy as np

from .. import jobs
from ..config import MainConfig, from_dict, reject_reserved, save_config, to_dict
from ..data.load import DataConfig, load_split
from ..dynamics.select import Subset
from ..errors import FtftError
from ..io import iter_jsonl, make_output_dir, write_json
from ..train.budget import Budget, steps_per_epoch
from .policy import parse


@dataclasses.dataclass
class SweepConfig:
    """A seed sweep with early stopping (Dodge et al. 2020)."""

    output_dir: str = "runs/sweep"
    """Folder of the sweep: one sub-folder per trial, `sweep.json`, the report."""
    data: typing.Any = dataclasses.field(default_factory=DataConfig)
    """The task (a `DataConfig`)."""
    main: dict = dataclasses.field(default_factory=lambda: {"model": "minilm", "budget": "erm:1"})
    """`MainConfig` fields of every trial; its `budget` is a full trial (steps, epochs or erm)."""
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
    """Ranks per trial (through the `deepspeed` launcher)."""
    parallel: int = 1
    """Trials run at once; with GPUs, each gets its own `num_ranks` of them."""

    def __post_init__(self):
        if isinstance(self.data, dict):
            self.data = from_dict(DataConfig, self.data, where="data.")
        self.policy_obj = parse(self.policy)
        if (self.wi_seeds is None) != (self.do_seeds is None):
            raise FtftError("give both wi_seeds and do_seeds for a grid, or neither for random pairs")
        if self.wi_seeds is not None:
            self.wi_seeds, self.do_seeds = tuple(self.wi_seeds), tuple(self.do_seeds)
            size = len(self.wi_seeds) * len(self.do_seeds)
            if size != self.policy_obj.t:
                raise FtftError(f"the WI x DO grid has {size} trials but policy {self.policy} starts t={self.policy_obj.t}")
        if not self.evals_per_epoch > 0:
            raise FtftError(f"evals_per_epoch must be positive, got {self.evals_per_epoch}")
        for name in ("num_ranks", "parallel"):
            if getattr(self, name) < 1:
                raise FtftError(f"{name} must be at least 1, got {getattr(self, name)}")
        reject_reserved(self.main, {"data", "output_dir", "subset", "resume", "overwrite", "init_seed", "data_seed",
                                    "dropout_seed"}, "main", "sweep")

    def trials(self) -> list[tuple[int, int]]:
        """The (WI, DO) seed pairs, in trial order."""
        if self.wi_seeds is not None:
            return [(int(w), int(d)) for w in self.wi_seeds for d in self.do_seeds]
        pairs = np.random.default_rng(self.seed).integers(0, 2**31 - 1, size=(self.policy_obj.t, 2))
        return [(int(w), int(d)) for w, d in pairs]


def _full_steps(cfg: SweepConfig, base: MainConfig) -> tuple[int, float]:
    """Optimizer steps of a full trial, and steps per epoch over its training rows."""
    split = load_split(cfg.data, cfg.data.train_split)
    rows = len(Subset.load(cfg.subset).uids) if cfg.subset else len(split)
    world = cfg.num_ranks
    per_epoch = steps_per_epoch(rows, world, base.micro_batch_size, base.grad_accum)
    erm = max(1, round(steps_per_epoch(len(split), world, base.micro_batch_size, base.grad_accum) * base.erm_epochs))
    steps = Budget.parse(base.budget).max_steps(per_epoch, erm)
    if steps is None:
        raise FtftError(f"a sweep needs a budget counted in steps (steps, epochs or erm), not {base.budget}")
    return steps, per_epoch


def _best_so_far(log: Path, metric: str, full_steps: int) -> dict:
    """{fraction of the full run: best `metric` up to that evaluation} from a trial's log."""
    best, out = -math.inf, {}
    if not log.is_file():
        return out
    for _, record in iter_jsonl(log):
        if metric in record:
            best = max(best, record[metric])
            out[round(record["step"] / full_steps, 6)] = best
    return out


class SweepRunner:
    """Runs the segments of a sweep's trials, rung by rung, and records what happened."""

    def __init__(self, cfg: SweepConfig, echo=click.echo):
        self.cfg = cfg
        self.echo = echo
        self.out = Path(cfg.output_dir)
        self.policy = cfg.policy_obj
        base = from_dict(MainConfig, {**cfg.main, "data": to_dict(cfg.data)})
        self.full_steps, per_epoch = _full_steps(cfg, base)
        self.eval_every = max(1, round(per_epoch / cfg.evals_per_epoch))
        self.rung_steps = [max(1, math.ceil(f * self.full_steps - 1e-9)) for f in self.policy.rungs()]
        self.trials = cfg.trials()

    def trial_config(self, index: int, steps: int) -> MainConfig:
        wi, do = self.trials[index]
        folder = self.out / "trials" / f"trial{index:03d}"
        return from_dict(MainConfig, {
            **self.cfg.main, "data": to_dict(self.cfg.data), "subset": self.cfg.subset,
            "output_dir": str(folder), "budget": f"steps:{steps}", "schedule_budget": self.cfg.main.get("budget", "erm:1"),
            "init_seed": wi, "data_seed": do, "dropout_seed": self.cfg.dropout_seed,
            "eval_every": self.eval_every, "patience_metric": self.cfg.metric, "patience": None,
            "divergence_margin": self.cfg.divergence_margin, "export_model": False,
            # The sweep owns its trial folders: a segment continues from the trial's checkpoint, or,
            # where a killed segment left none, starts over and replaces what that one wrote.
            **({"resume": True} if (folder / "checkpoints" / "latest").is_file() else {"overwrite": True}),
        })

    def status(self, index: int) -> dict:
        """What trial `index` has done so far, read from its folder."""
        folder = self.out / "trials" / f"trial{index:03d}"
        metrics = folder / "metrics.json"
        done = json.loads(metrics.read_text()) if metrics.is_file() else None
        return {"steps": done["steps"] if done else 0, "diverged": bool(done and done["stopped"] == "diverged"),
                "early": _best_so_far(folder / "log.jsonl", self.cfg.metric, self.full_steps)}

    def run(self) -> dict:
        alive = list(range(len(self.trials)))
        for rung, steps in enumerate(self.rung_steps):
            states = {i: self.status(i) for i in alive}
            todo = [i for i in alive if states[i]["steps"] < steps and not states[i]["diverged"]]
            self.echo(f"rung {rung + 1}/{len(self.rung_steps)} ({steps}/{self.full_steps} steps): "
                      f"{len(alive)} trials alive, {len(todo)} to run")
            self._run_segments(todo, steps)
            scores = {}
            for i in alive:
                state = self.status(i)
                reached = [v for f, v in state["early"].items() if f <= steps / self.full_steps + 1e-9]
                scores[i] = math.nan if state["diverged"] or not reached else max(reached)
            alive = [i for i in self.policy.survivors(scores, rung) if not math.isnan(scores[i])] \
                if rung < len(self.rung_steps) - 1 else self.policy.survivors(scores, rung)
            self._write_summary(alive if rung == len(self.rung_steps) - 1 else None)
        return json.loads((self.out / "sweep.json").read_text())

    def _run_segments(self, todo: list[int], steps: int) -> None:
        """Run trials' next segments, `parallel` at a time (each on its own GPUs when there are GPUs).

        A signal to this process, or a failed segment, stops the segments still running (see `jobs`).
        """
        slots = self._device_slots()
        for start in range(0, len(todo), len(slots)):
            procs: list = []
            with jobs.forwarding_signals(procs):
                try:
                    self._start_and_wait(todo[start:start + len(slots)], slots, steps, procs)
                finally:
                    jobs.stop(procs)

    def _start_and_wait(self, indices: list[int], slots: list, steps: int, procs: list) -> None:
        """Start one segment per index, each on its slot (its processes added to `procs`), and wait for them."""
        running = []
        for index, devices in zip(indices, slots):
            cfg = self.trial_config(index, steps)
            folder = Path(cfg.output_dir)
            folder.mkdir(parents=True, exist_ok=True)
            save_config(cfg, folder / "run_config.json")
            env = dict(os.environ)
            if devices is not None:
                env["CUDA_VISIBLE_DEVICES"] = ",".join(map(str, devices))
            log = open(folder / "segments.log", "a", encoding="utf-8")
            proc = jobs.start(jobs.ftft_command("train", folder / "run_config.json", self.cfg.num_ranks), log, env)
            procs.append(proc)
            running.append((index, log, proc))
        for index, log, proc in running:
            proc.wait()
            log.close()
            if proc.returncode != 0:
                raise FtftError(f"trial {index} failed (exit {proc.returncode}); see "
                                f"{self.out / 'trials' / f'trial{index:03d}' / 'segments.log'}")
            state = self.status(index)
            self.echo(f"  trial {index:3d} (WI {self.trials[index][0]}, DO {self.trials[index][1]}) "
                      f"reached step {state['steps']}" + (" and diverged" if state["diverged"] else ""))

    def _device_slots(self) -> list:
        """Device groups for concurrent trials: GPUs split `num_ranks` at a time, or CPU slots."""
        import torch

        if torch.cuda.is_available():
            count = torch.cuda.device_count()
            groups = [list(range(g, g + self.cfg.num_ranks)) for g in range(0, count - self.cfg.num_ranks + 1,
                                                                         self.cfg.num_ranks)]
            if not groups:
                raise FtftError(f"num_ranks={self.cfg.num_ranks} but only {count} GPUs are visible")
            return groups[:self.cfg.parallel]
        return [None] * self.cfg.parallel

    def _write_summary(self, ranking: list[int] | None) -> None:
        rows = []
        for i, (wi, do) in enumerate(self.trials):
            state = self.status(i)
            finished = state["steps"] >= self.full_steps
            rows.append({
                "trial": i, "wi_seed": wi, "do_seed": do, "steps": state["steps"],
                "fraction": state["steps"] / self.full_steps, "diverged": state["diverged"],
                "status": "diverged" if state["diverged"] else "finished" if finished else "stopped",
                "early": state["early"],
                "final": max(state["early"].values()) if finished and state["early"] else None,
            })
        write_json(self.out / "sweep.json", {
            "policy": str(self.policy), "metric": self.cfg.metric, "full_steps": self.full_steps,
            "rung_steps": self.rung_steps, "eval_every": self.eval_every,
            "budget_full_runs": sum(r["fraction"] for r in rows),
            "policy_budget_full_runs": self.policy.budget_in_full_runs(),
            "winner": ranking[0] if ranking else None, "trials": rows,
        })


def run_sweep(cfg: SweepConfig, echo=click.echo) -> dict:
    """Run (or resume) a sweep; return the contents of its `sweep.json`."""
    make_output_dir(cfg.output_dir)
    save_config(cfg, Path(cfg.output_dir) / "sweep_config.json")
    return SweepRunner(cfg, echo).run()
