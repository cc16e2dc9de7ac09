"""Expected-maximum estimators against brute-force enumeration, their identities and their errors."""

from __future__ import annotations

import itertools
import json
import re

import numpy as np
import pytest

from ftft_ds.errors import FtftError
from ftft_ds.sweep import expected_max, expected_max_curve, expected_max_vs_budget

SAMPLES = [
    [0.71, 0.64, 0.80, 0.69, 0.75],
    [0.5, 0.5, 0.9, 0.1, 0.5, 0.9],  # ties
    [3.0],
]


def brute_with_replacement(scores, n):
    """Mean of the max over all N^n equally likely ordered draws."""
    return float(np.mean([max(draw) for draw in itertools.product(scores, repeat=n)]))


def brute_unbiased(scores, n):
    """Mean of the max over all C(N, n) subsets of the trials."""
    return float(np.mean([max(subset) for subset in itertools.combinations(scores, n)]))


@pytest.mark.parametrize("scores", SAMPLES)
def test_with_replacement_equals_enumeration(scores):
    for n in range(1, 5):
        assert expected_max(scores, n) == pytest.approx(brute_with_replacement(scores, n), abs=1e-12)


@pytest.mark.parametrize("scores", SAMPLES)
def test_unbiased_equals_enumeration(scores):
    for n in range(1, len(scores) + 1):
        assert expected_max(scores, n, "unbiased") == pytest.approx(brute_unbiased(scores, n), abs=1e-12)


def test_std_equals_enumeration():
    scores = SAMPLES[1]
    curve = expected_max_curve(scores, ns=[1, 2, 3], bootstrap=0)
    for n, std in zip(curve.ns, curve.std):
        maxima = [max(draw) for draw in itertools.product(scores, repeat=int(n))]
        assert std == pytest.approx(np.std(maxima), abs=1e-12)
    curve = expected_max_curve(scores, ns=[2, 4], method="unbiased", bootstrap=0)
    for n, std in zip(curve.ns, curve.std):
        assert std == pytest.approx(np.std([max(s) for s in itertools.combinations(scores, int(n))]), abs=1e-12)


def test_identities_and_array_n():
    rng = np.random.default_rng(1)
    scores = rng.normal(size=40)
    ns = np.arange(1, 41)
    unbiased = expected_max(scores, ns, "unbiased")
    assert isinstance(unbiased, np.ndarray) and unbiased.shape == (40,)
    assert unbiased[0] == pytest.approx(scores.mean(), abs=1e-12)
    assert unbiased[-1] == pytest.approx(scores.max(), abs=1e-12)
    assert np.all(np.diff(unbiased) >= -1e-12)
    replaced = expected_max(scores, ns)
    assert replaced[0] == pytest.approx(scores.mean(), abs=1e-12)
    assert np.all(np.diff(replaced) >= -1e-12)
    assert expected_max(scores, 10**6) == pytest.approx(scores.max(), abs=1e-9)
    assert isinstance(expected_max(scores, np.int64(3)), float)
    assert expected_max(scores, [[1, 2], [3, 4]]).shape == (2, 2)


def test_unbiased_is_stable_for_large_samples():
    rng = np.random.default_rng(2)
    scores = rng.uniform(size=10_000)
    values = expected_max(scores, [1, 2, 5000, 9999, 10_000], "unbiased")
    assert np.all(np.isfinite(values))
    assert values[0] == pytest.approx(scores.mean(), rel=1e-9)
    assert values[-1] == pytest.approx(scores.max(), rel=1e-12)
    # E[max of 2] of a uniform sample is close to 2/3; the weights of every row sum to one.
    assert values[1] == pytest.approx(2 / 3, abs=0.01)
    assert np.all(np.diff(values) >= 0)


def test_all_ties_give_the_value():
    assert expected_max([0.4] * 7, [1, 3, 7], "unbiased") == pytest.approx([0.4] * 3)
    assert expected_max([0.4] * 7, [1, 30]) == pytest.approx([0.4] * 2)


def test_curve_band_and_json():
    rng = np.random.default_rng(3)
    scores = rng.normal(0.8, 0.02, size=30)
    curve = expected_max_curve(scores, bootstrap=300, seed=5)
    assert list(curve.ns) == list(range(1, 31))
    assert np.all(curve.lower <= curve.upper)
    assert curve.lower[0] < curve.mean[0] < curve.upper[0]
    again = expected_max_curve(scores, bootstrap=300, seed=5)
    np.testing.assert_array_equal(curve.lower, again.lower)
    json.dumps(curve.to_dict())
    bare = expected_max_curve(scores, ns=[1, 5], bootstrap=0)
    assert bare.lower is None and bare.upper is None
    big = expected_max_curve(rng.normal(size=5000), bootstrap=0)
    assert big.ns[0] == 1 and big.ns[-1] == 5000 and big.ns.size <= 200


def test_budget_curve():
    scores = [0.6, 0.7, 0.8, 0.9]
    costs = [1.0, 3.0, 2.0, 2.0]  # mean cost 2
    curve = expected_max_vs_budget(scores, costs, [1, 2, 4.5, 8, 20], method="unbiased", bootstrap=50)
    assert list(curve.ns) == [0, 1, 2, 4, 10]
    assert np.isnan(curve.mean[0]) and np.isnan(curve.mean[-1])
    assert curve.mean[1:4] == pytest.approx(expected_max(scores, [1, 2, 4], "unbiased"))
    replaced = expected_max_vs_budget(scores, costs, [0.6, 20], bootstrap=0)
    assert list(replaced.ns) == [0, 10] and replaced.mean[1] == pytest.approx(expected_max(scores, 10))
    # A budget that is an exact multiple of the cost buys that many trials despite rounding.
    assert list(expected_max_vs_budget([1.0, 2.0], [0.1, 0.1], [0.3], bootstrap=0).ns) == [3]
    assert expected_max_vs_budget(scores, costs, [8], bootstrap=0).to_dict()["budgets"] == [8.0]


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: expected_max([0.1, float("nan")], 1), "nan at index 1"),
        (lambda: expected_max([], 1), "non-empty"),
        (lambda: expected_max([0.1, 0.2], 0), "got 0"),
        (lambda: expected_max([0.1, 0.2], 3, "unbiased"), "between 1 and the number of scores (2)"),
        (lambda: expected_max([0.1, 0.2], [1, 2, 5], "unbiased"), "got 5"),
        (lambda: expected_max([0.1, 0.2], 1.5), "whole number"),
        (lambda: expected_max([0.1, 0.2], True), "whole number"),
        (lambda: expected_max([0.1, 0.2], 1, "best"), "'best'"),
        (lambda: expected_max_curve([0.1, 0.2], ci=1.5), "ci"),
        (lambda: expected_max_curve([0.1, 0.2], bootstrap=-1), "bootstrap"),
        (lambda: expected_max_vs_budget([0.1, 0.2], [1.0], [1]), "one cost per score"),
        (lambda: expected_max_vs_budget([0.1, 0.2], [1.0, 0.0], [1]), "positive"),
        (lambda: expected_max_vs_budget([0.1, 0.2], [1.0, 1.0], [-1]), "budgets"),
    ],
)
def test_errors_name_the_value(call, message):
    with pytest.raises(FtftError, match=re.escape(message)):
        call()
