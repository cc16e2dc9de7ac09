"""The scipy-backed statistics against values fixed before they moved to scipy.

The expected numbers were given by the earlier hand-written code (a Simpson-integrated Student's t
quantile, average-rank Spearman, a numpy permutation loop) for the same inputs; the edge cases
are those that code handled.
"""

import itertools
import math
import warnings

import numpy as np
import pytest

from ftft_ds.dynamics.gate import variability_spearman
from ftft_ds.dynamics.metrics import Metrics
from ftft_ds.errors import FtftError
from ftft_ds.pipeline.report import compare, comparison_line
from ftft_ds.sweep.analysis import early_final_rank_correlation, seed_variance_attribution

# Student's t 0.975-quantiles by degrees of freedom, as the earlier code computed them.
T_975 = {
    1: 12.706204736174875,
    2: 4.3026527297495285,
    3: 3.182446305283755,
    4: 2.7764451051978254,
    5: 2.5705818356363603,
    9: 2.262157162798245,
    29: 2.0452296421327456,
}


def _rows(erm, ftft):
    costs = {"erm": (100.0, 100.0, 100.0), "ftft": (40.0, 44.0, 70.0)}  # training FLOPs, all FLOPs, wall time

    def row(method, seed, value):
        flops, total, wall = costs[method]
        return {
            "method": method,
            "seed": seed,
            "m": value,
            "relative_cost": flops,
            "relative_total_flops": total,
            "relative_wall_time": wall,
        }

    return [row("erm", s, v) for s, v in enumerate(erm)] + [row("ftft", s, v) for s, v in enumerate(ftft)]


@pytest.mark.parametrize("df", sorted(T_975))
def test_interval_half_width_is_the_t_quantile(df):
    """Differences with a standard error of exactly 1 make the interval [-t, +t]."""
    spread = np.linspace(-1.0, 1.0, df + 1)
    differences = spread * math.sqrt(df + 1) / spread.std(ddof=1)
    c = compare(_rows(np.zeros(df + 1), differences), "ftft", "m")
    assert c["ci95"] == pytest.approx([-T_975[df], T_975[df]], rel=1e-9, abs=1e-12)


@pytest.mark.parametrize(
    "erm, ftft, ci95",
    [
        ([0.40, 0.42, 0.44], [0.41, 0.45, 0.44], [-0.024612497002634903, 0.05127916366930156]),
        ([0.50, 0.52], [0.53, 0.51], [-0.24412409472349772, 0.26412409472349774]),
        ([0.61, 0.60, 0.63, 0.58, 0.62], [0.64, 0.66, 0.62, 0.65, 0.67], [0.0007351367704484107, 0.07926486322955166]),
        ([0.40, 0.50, 0.60], [0.42, 0.52, 0.62], [0.02, 0.02]),  # the same difference every seed: no spread
    ],
)
def test_paired_interval_matches_the_earlier_values(erm, ftft, ci95):
    c = compare(_rows(erm, ftft), "ftft", "m")
    assert c["ci95"] == pytest.approx(ci95, abs=1e-12)


def test_comparison_lines_are_unchanged():
    three = compare(_rows([0.40, 0.42, 0.44], [0.41, 0.45, 0.44]), "ftft", "m")
    assert comparison_line(three) == (
        "ftft vs erm: m 43.3 vs 42.0 (+1.3 points, 95% CI [-2.5, +5.1] over 3 seeds) at 40% of erm's training "
        "FLOPs (44% of its FLOPs with evaluations, 70% of its wall time): these seeds cannot tell ftft from erm; "
        "it runs at no more than half of erm's training FLOPs."
    )
    one = compare(_rows([0.40], [0.45]), "ftft", "m")
    assert one["ci95"] is None
    assert "with one seed: run more seeds before trusting a difference" in comparison_line(one)


@pytest.mark.parametrize(
    "early, final, rho",
    [
        ([0.1, 0.4, 0.3, 0.2], [0.5, 0.6, 0.9, 0.7], 0.4),
        ([1, 2, 3, 4, 5], [5, 6, 7, 8, 7], 0.8207826816681233),
        ([1, 1, 2, 3, 3, 3], [2, 1, 1, 4, 4, 5], 0.8104432008587534),
        ([1, 2, 3], [30, 20, 10], -1.0),
        ([0.3, 0.1], [0.2, 0.9], -1.0),
        (np.random.default_rng(7).normal(size=50), np.random.default_rng(8).normal(size=50), 0.11903961584633854),
    ],
)
def test_spearman_matches_the_earlier_values(early, final, rho):
    assert early_final_rank_correlation(early, final) == pytest.approx(rho, abs=1e-12)


def test_spearman_of_a_constant_side_is_nan_without_a_warning():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert math.isnan(early_final_rank_correlation([1, 2, 3], [4, 4, 4]))
        assert math.isnan(early_final_rank_correlation([2, 2], [4, 4]))
    with pytest.raises(FtftError, match=">= 2 scores"):
        early_final_rank_correlation([1], [2])
    with pytest.raises(FtftError, match="finite"):
        early_final_rank_correlation([1, math.inf], [1, 2])


def _metrics(uids, variability) -> Metrics:
    size = len(uids)
    return Metrics(
        uids=np.array(uids),
        confidence=np.zeros(size),
        variability=np.array(variability, np.float32),
        correctness=np.zeros(size),
    )


def test_variability_spearman_pairs_by_uid():
    rng = np.random.default_rng(3)
    values = rng.uniform(size=40)
    uids = [f"u{i}" for i in range(40)]
    reference = _metrics(uids, values)
    assert variability_spearman(reference, _metrics(uids, values)) == pytest.approx(1.0, abs=1e-12)
    # The other side lists the uids in reverse: its variability is read by uid, not position.
    assert variability_spearman(reference, _metrics(uids[::-1], values[::-1])) == pytest.approx(1.0, abs=1e-12)
    subset = _metrics([f"u{i}" for i in range(39, 9, -1)], rng.uniform(size=30))
    assert variability_spearman(reference, subset) == pytest.approx(0.18264738598442715, abs=1e-12)


def test_variability_spearman_is_nan_when_undefined():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert math.isnan(variability_spearman(_metrics(["a", "b"], [0.1, 0.2]), _metrics(["b", "c"], [0.3, 0.4])))
        assert math.isnan(
            variability_spearman(_metrics(["a", "b", "c"], [0.1, 0.1, 0.1]), _metrics(["a", "b", "c"], [0.3, 0.4, 0.5]))
        )


def _grid_table(wi_effect, do_effect, size, seed):
    rng = np.random.default_rng(seed)
    wi, do = rng.normal(0, wi_effect, size), rng.normal(0, do_effect, size)
    return [
        {"wi_seed": 100 + i, "do_seed": j, "final": 0.8 + wi[i] + do[j] + rng.normal(0, 0.005)}
        for i in range(size)
        for j in range(size)
    ]


def _monte_carlo_tolerance(p: float, permutations: int) -> float:
    """Four standard errors of the difference of two independent estimates of p from
    `permutations` draws, plus the +1 each adds for the observed arrangement."""
    return 4 * math.sqrt(2 * p * (1 - p) / permutations) + 2 / (permutations + 1)


@pytest.mark.parametrize(
    "table, permutations, seed, shares, p_values",
    [
        (
            _grid_table(0.03, 0.0, 8, 0),
            2000,
            1,
            (0.9327189986908961, 0.007489229737798716),
            (0.0004997501249375312, 0.5367316341829086),
        ),
        (
            _grid_table(0.0, 0.03, 5, 2),
            500,
            0,
            (0.006724606646166614, 0.964651043363376),
            (0.4471057884231537, 0.001996007984031936),
        ),
        (
            _grid_table(0.004, 0.003, 6, 3),
            4000,
            3,
            (0.341934597763542, 0.4508352272752462),
            (0.00024993751562109475, 0.00024993751562109475),
        ),
        (
            _grid_table(0.0, 0.0, 5, 4),
            2000,
            4,
            (0.10667081483584487, 0.0697049176170578),
            (0.7191404297851074, 0.8495752123938031),
        ),
    ],
)
def test_permutation_p_values_match_the_earlier_values(table, permutations, seed, shares, p_values):
    result = seed_variance_attribution(table, permutations=permutations, seed=seed)
    assert (result.wi_share, result.do_share) == pytest.approx(shares, abs=1e-12)
    for got, before in zip((result.wi_p, result.do_p), p_values):
        assert got == pytest.approx(before, abs=_monte_carlo_tolerance(before, permutations))
        assert got >= 1 / (permutations + 1)
    assert result.permutations == permutations
    assert seed_variance_attribution(table, permutations=permutations, seed=seed) == result


def _exact_wi_p(grid: np.ndarray) -> float:
    """The WI share's p-value over every way of shuffling each column across the rows."""

    def wi_share(g):
        return g.shape[1] * ((g.mean(axis=1) - g.mean()) ** 2).sum() / ((g - g.mean()) ** 2).sum()

    observed = wi_share(grid)
    orders = itertools.product(itertools.permutations(range(grid.shape[0])), repeat=grid.shape[1])
    nulls = [wi_share(grid[np.array(order).T, np.arange(grid.shape[1])]) for order in orders]
    return float(np.mean(np.array(nulls) >= observed - 1e-12))


def test_small_grids_get_every_rearrangement():
    """A grid with fewer rearrangements than permutations asked for is enumerated: the p-value is
    exact, where the earlier code sampled (0.0850 and 0.0225 here from 2000 draws)."""
    grid = np.array([[1.0, 2.5, 6.0], [3.0, 5.0, 7.0], [2.0, 2.2, 4.0]])
    rows = [{"wi_seed": i, "do_seed": j, "final": grid[i, j]} for i in range(3) for j in range(3)]
    result = seed_variance_attribution(rows, permutations=2000)
    assert result.wi_p == pytest.approx(_exact_wi_p(grid)) == pytest.approx(18 / 216)
    assert result.do_p == pytest.approx(_exact_wi_p(grid.T)) == pytest.approx(6 / 216)
    assert result.wi_p == pytest.approx(0.08495752123938032, abs=_monte_carlo_tolerance(18 / 216, 2000))
    assert result.do_p == pytest.approx(0.022488755622188907, abs=_monte_carlo_tolerance(6 / 216, 2000))
