"""Early-stopping policies for a sweep of trials, as pure decisions (no training happens here).

Dodge et al. (2020) observe that bad seeds are visible early, so a fixed compute budget is better
spent starting many trials and stopping most of them early than training a few to the end. A
policy says *when* to look (its rungs: fractions of full training, the last one 1.0) and *whom* to
keep (the best-scoring trials so far); a runner trains the trials, reports their scores at each
rung and continues only the survivors, and an analysis can replay a finished sweep through the
same calls. Three policies:

    StartStopContinue(t, f, p)   Dodge et al.'s: start t trials, at fraction f rank them by best
                                 score so far, continue the top p to the end.
    SuccessiveHalving(t, reduction, min_fraction)
                                 rungs at r, r*eta, r*eta^2, ... (then 1.0), keeping the top
                                 ceil(n / eta) (at least one) at each rung below the last.
    NoStopping(t)                every trial trained to the end.

`survivors` ranks best first; equal scores go to the smaller trial id, and a NaN score (a diverged
trial) ranks below every number, so decisions never depend on dict order. At the last rung every
trial has finished, so all of them are returned, ranked: the first is the sweep's winner.

Policies are written as `kind:key=value,...` (`ssc:t=6,f=0.25,p=2`, `halving:t=8,eta=2,min=0.125`,
`none:t=4`) or as the equivalent dict (`{"kind": "ssc", "t": 6, "f": 0.25, "p": 2}`), which is
what `str(policy)` and `policy.to_spec()` give back, so a manifest can record the policy exactly.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Hashable, Mapping
from dataclasses import dataclass

from ..errors import FtftError

# Rungs within this of 1.0 are the end of training (r * eta^k is rarely exactly 1 in floating point).
RUNG_TOLERANCE = 1e-9


class Policy:
    """The interface the policies share; subclasses give `rungs` and `keep`."""

    kind: str = ""
    # Spec keys in order, mapped to constructor argument names, and which of them are whole numbers.
    keys: dict[str, str] = {}
    whole: frozenset[str] = frozenset()
    t: int

    def rungs(self) -> list[float]:
        """Fractions of full training at which decisions happen, increasing, ending with 1.0."""
        raise NotImplementedError

    def keep(self, alive: int, rung_index: int) -> int:
        """How many of `alive` trials carry on past rung `rung_index` (all of them at the last)."""
        raise NotImplementedError

    def survivors(self, scores_at_rung: Mapping[Hashable, float], rung_index: int) -> list:
        """The trial ids that carry on past rung `rung_index`, best first, from their best scores so far."""
        rungs = self.rungs()
        if _not_whole(rung_index) or not 0 <= rung_index < len(rungs):
            raise FtftError(f"rung_index must be a whole number in [0, {len(rungs) - 1}], got {rung_index!r}")
        ranked = sorted(scores_at_rung, key=lambda trial: _rank_key(trial, scores_at_rung[trial]))
        return ranked[: self.keep(len(ranked), rung_index)]

    def budget_in_full_runs(self) -> float:
        """Compute spent, in units of one trial trained to the end: trials alive times training done."""
        alive, done, total = self.t, 0.0, 0.0
        for index, rung in enumerate(self.rungs()):
            total += alive * (rung - done)
            alive, done = self.keep(alive, index), rung
        return total

    def to_spec(self) -> dict:
        """The policy as a dict that `from_spec` turns back into an equal policy."""
        return {"kind": self.kind, **{key: getattr(self, arg) for key, arg in self.keys.items()}}

    def __str__(self) -> str:
        spec = self.to_spec()
        return f"{self.kind}:" + ",".join(f"{key}={spec[key]!r}" for key in self.keys)


@dataclass(frozen=True)
class StartStopContinue(Policy):
    """Start `t` trials, rank them at fraction `f` of training, continue the top `p` to the end."""

    t: int
    f: float
    p: int
    kind = "ssc"
    keys = {"t": "t", "f": "f", "p": "p"}
    whole = frozenset({"t", "p"})

    def __post_init__(self):
        _check_trials(self, self.t)
        _check_fraction(self, "f", self.f)
        if _not_whole(self.p) or not 1 <= self.p <= self.t:
            raise FtftError(f"{self.kind}: p must be a whole number of trials in [1, t={self.t}], got {self.p!r}")
        object.__setattr__(self, "f", float(self.f))

    def rungs(self) -> list[float]:
        return [1.0] if self.f >= 1.0 - RUNG_TOLERANCE else [self.f, 1.0]

    def keep(self, alive: int, rung_index: int) -> int:
        return alive if rung_index == len(self.rungs()) - 1 else min(self.p, alive)


@dataclass(frozen=True)
class SuccessiveHalving(Policy):
    """Rungs at `min_fraction` * `reduction`^k; keep the top 1/`reduction` (rounded up) at each.

    Without `min_fraction`, the first rung is reduction^-s with s = floor(log_reduction t), the
    usual choice that leaves about one trial for the last stretch of training.
    """

    t: int
    reduction: float = 2.0
    min_fraction: float | None = None
    kind = "halving"
    keys = {"t": "t", "eta": "reduction", "min": "min_fraction"}
    whole = frozenset({"t"})

    def __post_init__(self):
        _check_trials(self, self.t)
        if not _is_real(self.reduction) or not self.reduction > 1.0 or math.isinf(self.reduction):
            raise FtftError(f"{self.kind}: eta (reduction) must be a finite number > 1, got {self.reduction!r}")
        object.__setattr__(self, "reduction", float(self.reduction))
        if self.min_fraction is None:
            steps = 0
            while self.reduction ** (steps + 1) <= self.t * (1.0 + RUNG_TOLERANCE):
                steps += 1
            object.__setattr__(self, "min_fraction", self.reduction**-steps)
        _check_fraction(self, "min", self.min_fraction)
        object.__setattr__(self, "min_fraction", float(self.min_fraction))

    def rungs(self) -> list[float]:
        rungs, rung = [], self.min_fraction
        while rung < 1.0 - RUNG_TOLERANCE:
            rungs.append(rung)
            rung *= self.reduction
        return rungs + [1.0]

    def keep(self, alive: int, rung_index: int) -> int:
        if rung_index == len(self.rungs()) - 1:
            return alive
        return min(alive, max(1, math.ceil(alive / self.reduction - RUNG_TOLERANCE)))


@dataclass(frozen=True)
class NoStopping(Policy):
    """Train all `t` trials to the end (the baseline the others are measured against)."""

    t: int
    kind = "none"
    keys = {"t": "t"}
    whole = frozenset({"t"})

    def __post_init__(self):
        _check_trials(self, self.t)

    def rungs(self) -> list[float]:
        return [1.0]

    def keep(self, alive: int, rung_index: int) -> int:
        return alive


POLICIES: dict[str, type[Policy]] = {cls.kind: cls for cls in (StartStopContinue, SuccessiveHalving, NoStopping)}
REQUIRED = {"ssc": ("t", "f", "p"), "halving": ("t",), "none": ("t",)}


def from_spec(spec: Mapping) -> Policy:
    """A policy from `{"kind": ..., key: value, ...}` (values may be numbers or their text)."""
    if not isinstance(spec, Mapping) or "kind" not in spec:
        raise FtftError(f"policy spec must be a dict with a 'kind' ({', '.join(POLICIES)}), got {spec!r}")
    kind = spec["kind"]
    if kind not in POLICIES:
        raise FtftError(f"unknown policy kind {kind!r}; expected one of {', '.join(POLICIES)}")
    cls = POLICIES[kind]
    given = {key: value for key, value in spec.items() if key != "kind"}
    unknown = [key for key in given if key not in cls.keys]
    if unknown:
        raise FtftError(f"policy {kind} takes keys {', '.join(cls.keys)}; got unknown key {unknown[0]!r}")
    missing = [key for key in REQUIRED[kind] if key not in given]
    if missing:
        raise FtftError(f"policy {kind} needs {', '.join(REQUIRED[kind])}; {missing[0]!r} is missing")
    args = {cls.keys[key]: _value(kind, key, value, key in cls.whole) for key, value in given.items()}
    return cls(**args)


def parse(text: str) -> Policy:
    """A policy from `kind:key=value,...`, e.g. `ssc:t=6,f=0.25,p=2` or `none:t=4`."""
    if not isinstance(text, str):
        raise FtftError(f"policy must be text like ssc:t=6,f=0.25,p=2, got {text!r}")
    kind, _, rest = text.strip().partition(":")
    spec: dict = {"kind": kind.strip()}
    for item in filter(None, (part.strip() for part in rest.split(","))):
        key, sep, value = (part.strip() for part in item.partition("="))
        if not sep or not key:
            raise FtftError(f"policy item {item!r} in {text!r} must be key=value")
        if key in spec:
            raise FtftError(f"policy {text!r} gives {key!r} twice")
        spec[key] = value
    return from_spec(spec)


def _rank_key(trial, score) -> tuple:
    if not _is_real(score):
        raise FtftError(f"score of trial {trial!r} must be a number, got {score!r}")
    return (1, 0.0, trial) if math.isnan(score) else (0, -float(score), trial)


def _value(kind: str, key: str, value, whole: bool):
    """A spec value as an int (whole keys) or float, from a number or its text."""
    if isinstance(value, str):
        try:
            return int(value) if whole else float(value)
        except ValueError:
            expected = "a whole number" if whole else "a number"
            raise FtftError(f"policy {kind}: {key} must be {expected}, got {value!r}") from None
    return value


def _is_real(value) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _not_whole(value) -> bool:
    return isinstance(value, bool) or not isinstance(value, numbers.Integral)


def _check_trials(policy: Policy, t) -> None:
    if _not_whole(t) or t < 1:
        raise FtftError(f"{policy.kind}: t must be a whole number of trials >= 1, got {t!r}")


def _check_fraction(policy: Policy, name: str, value) -> None:
    if not _is_real(value) or not 0.0 < value <= 1.0:
        raise FtftError(f"{policy.kind}: {name} must be a fraction of training in (0, 1], got {value!r}")
