"""Early-stopping policies: rungs, survivors, budgets and specs."""

from __future__ import annotations

import math
import re

import pytest

from ftft_ds.errors import FtftError
from ftft_ds.sweep.policy import NoStopping, StartStopContinue, SuccessiveHalving, from_spec, parse


def test_start_stop_continue():
    policy = StartStopContinue(t=6, f=0.25, p=2)
    assert policy.rungs() == [0.25, 1.0]
    assert policy.budget_in_full_runs() == pytest.approx(6 * 0.25 + 2 * 0.75) == 3.0
    scores = {0: 0.60, 1: 0.72, 2: 0.55, 3: 0.72, 4: 0.70, 5: 0.40}
    assert policy.survivors(scores, 0) == [1, 3]  # tie at 0.72 goes to the smaller id
    assert policy.survivors({3: 0.8, 1: 0.9}, 1) == [1, 3]  # the end: everyone, best first
    assert policy.survivors({"b": 0.5}, 0) == ["b"]
    whole = StartStopContinue(t=4, f=1.0, p=2)
    assert whole.rungs() == [1.0] and whole.budget_in_full_runs() == 4.0


def test_successive_halving():
    policy = SuccessiveHalving(t=8, reduction=2, min_fraction=0.125)
    assert policy.rungs() == [0.125, 0.25, 0.5, 1.0]
    # 8 trials for 1/8, 4 for the next 1/8, 2 for 1/4, 1 for the last 1/2.
    assert policy.budget_in_full_runs() == pytest.approx(8 * 0.125 + 4 * 0.125 + 2 * 0.25 + 1 * 0.5)
    scores = {i: s for i, s in enumerate([0.1, 0.5, 0.5, math.nan, 0.9, 0.2, 0.3, 0.4])}
    assert policy.survivors(scores, 0) == [4, 1, 2, 7]
    assert policy.survivors({4: 0.9, 1: 0.5, 2: 0.5}, 1) == [4, 1]
    assert policy.survivors({4: 0.9}, 2) == [4]
    # Rungs stop at 1.0 even when r * eta^k overshoots it; ceil(7/3) = 3 survive.
    uneven = SuccessiveHalving(t=7, reduction=3, min_fraction=0.4)
    assert uneven.rungs() == [0.4, 1.0]
    assert uneven.keep(7, 0) == 3 and uneven.keep(7, 1) == 7
    assert uneven.budget_in_full_runs() == pytest.approx(7 * 0.4 + 3 * 0.6)
    # By default the first rung leaves about one trial for the end.
    assert SuccessiveHalving(t=8).rungs() == [0.125, 0.25, 0.5, 1.0]
    assert SuccessiveHalving(t=10, reduction=3).rungs() == pytest.approx([1 / 9, 1 / 3, 1.0])
    assert SuccessiveHalving(t=1).rungs() == [1.0]


def test_no_stopping():
    policy = NoStopping(t=4)
    assert policy.rungs() == [1.0] and policy.budget_in_full_runs() == 4.0
    assert policy.survivors({2: 0.1, 0: 0.3, 1: math.nan, 3: 0.3}, 0) == [0, 3, 2, 1]


@pytest.mark.parametrize(
    "text, expected",
    [
        ("ssc:t=6,f=0.25,p=2", StartStopContinue(6, 0.25, 2)),
        (" halving: t=8, eta=2, min=0.125 ", SuccessiveHalving(8, 2.0, 0.125)),
        ("halving:t=9,eta=3", SuccessiveHalving(9, 3.0)),
        ("none:t=4", NoStopping(4)),
    ],
)
def test_parse_and_round_trip(text, expected):
    policy = parse(text)
    assert policy == expected
    assert parse(str(policy)) == policy
    assert from_spec(policy.to_spec()) == policy


def test_from_spec_takes_numbers_and_text():
    assert from_spec({"kind": "ssc", "t": 6, "f": 0.25, "p": 2}) == StartStopContinue(6, 0.25, 2)
    assert from_spec({"kind": "none", "t": "3"}) == NoStopping(3)


@pytest.mark.parametrize(
    "text, message",
    [
        ("grid:t=3", "unknown policy kind 'grid'"),
        ("ssc:t=6,f=0.25", "'p' is missing"),
        ("ssc:t=6,f=0.25,p=2,q=1", "unknown key 'q'"),
        ("ssc:t=6,f=0,p=2", "f must be a fraction of training in (0, 1]"),
        ("ssc:t=6,f=1.5,p=2", "got 1.5"),
        ("ssc:t=6,f=0.5,p=7", "p must be a whole number of trials in [1, t=6], got 7"),
        ("ssc:t=0,f=0.5,p=1", "t must be a whole number of trials >= 1, got 0"),
        ("ssc:t=6.5,f=0.5,p=1", "t must be a whole number, got '6.5'"),
        ("ssc:t=6,f=abc,p=1", "f must be a number, got 'abc'"),
        ("halving:t=8,eta=1", "eta (reduction) must be a finite number > 1, got 1.0"),
        ("halving:t=8,min=2", "min must be a fraction"),
        ("none:t", "must be key=value"),
        ("none:t=2,t=3", "gives 't' twice"),
        ("none", "'t' is missing"),
    ],
)
def test_bad_specs(text, message):
    with pytest.raises(FtftError, match=re.escape(message)):
        parse(text)


def test_bad_calls():
    with pytest.raises(FtftError, match="kind"):
        from_spec({"t": 3})
    with pytest.raises(FtftError, match="rung_index"):
        NoStopping(2).survivors({0: 0.1}, 1)
    with pytest.raises(FtftError, match="score of trial 0"):
        NoStopping(2).survivors({0: "high"}, 0)
    with pytest.raises(FtftError, match="got True"):
        StartStopContinue(t=True, f=0.5, p=1)
