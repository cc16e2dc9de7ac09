"""Sweep analyses on synthetic sweeps with planted seed effects and known early/final relations."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from ftft_ds.errors import FtftError
from ftft_ds.sweep import expected_max
from ftft_ds.sweep.analysis import (
    compare_policy_vs_full,
    early_final_rank_correlation,
    heatmap,
    seed_variance_attribution,
)
from ftft_ds.sweep.policy import NoStopping, StartStopContinue
from ftft_ds.sweep.report import write_sweep_report


def grid_table(wi_effect: float, do_effect: float, size: int = 8, noise: float = 0.005, seed: int = 0):
    """A full size x size sweep: score = 0.8 + WI effect + DO effect + noise, as a list of rows."""
    rng = np.random.default_rng(seed)
    wi = rng.normal(0, wi_effect, size)
    do = rng.normal(0, do_effect, size)
    rows = []
    for i in range(size):
        for j in range(size):
            final = 0.8 + wi[i] + do[j] + rng.normal(0, noise)
            rows.append({"wi_seed": 100 + i, "do_seed": j, "final": final, "early": final - 0.1, "cost": 1.0})
    return rows


def test_planted_wi_effect_is_attributed_to_wi():
    result = seed_variance_attribution(grid_table(wi_effect=0.03, do_effect=0.0), permutations=2000, seed=1)
    assert result.wi_share > 0.9
    assert result.wi_p < 0.01
    assert result.do_share < 0.1
    assert result.do_p > 0.2
    assert result.wi_share + result.do_share + result.residual_share == pytest.approx(1.0)
    assert sorted(result.wi_means) == list(range(100, 108)) and sorted(result.do_means) == list(range(8))
    again = seed_variance_attribution(grid_table(wi_effect=0.03, do_effect=0.0), permutations=2000, seed=1)
    assert again == result


def test_planted_do_effect_and_columns_table():
    rows = grid_table(wi_effect=0.0, do_effect=0.03, size=5, seed=2)
    columns = {key: [row[key] for row in rows] for key in rows[0]}
    result = seed_variance_attribution(columns, permutations=500)
    assert result.do_share > 0.9 and result.do_p < 0.01
    assert result.wi_share < 0.05 and result.wi_p > 0.2


def test_no_effect_gives_roughly_uniform_p_values():
    """Shuffling within the grid keeps a strong WI effect from masking or faking a DO effect."""
    p_values = [
        seed_variance_attribution(grid_table(0.03, 0.0, size=5, seed=s), permutations=200, seed=s).do_p
        for s in range(30)
    ]
    assert 0.3 < np.median(p_values) < 0.7
    assert np.mean(np.array(p_values) < 0.05) < 0.2


def test_attribution_matches_two_way_anova():
    grid = np.array([[1.0, 2.0, 6.0], [3.0, 5.0, 7.0]])
    rows = [{"wi_seed": i, "do_seed": j, "final": grid[i, j]} for i in range(2) for j in range(3)]
    result = seed_variance_attribution(rows, permutations=10)
    total = ((grid - grid.mean()) ** 2).sum()
    assert result.wi_share == pytest.approx(3 * ((grid.mean(1) - grid.mean()) ** 2).sum() / total)
    assert result.do_share == pytest.approx(2 * ((grid.mean(0) - grid.mean()) ** 2).sum() / total)


def test_grid_errors():
    rows = grid_table(0.03, 0.0, size=3)
    with pytest.raises(FtftError, match="no trial with wi_seed=102, do_seed=2"):
        seed_variance_attribution(rows[:-1])
    with pytest.raises(FtftError, match="2 trials with wi_seed=100, do_seed=0"):
        seed_variance_attribution(rows + rows[:1])
    with pytest.raises(FtftError, match="no 'final'"):
        seed_variance_attribution([{"wi_seed": 0, "do_seed": 0}])
    with pytest.raises(FtftError, match="same for every trial"):
        seed_variance_attribution([{**row, "final": 0.5} for row in rows])
    with pytest.raises(FtftError, match="equally long"):
        seed_variance_attribution({"wi_seed": [0, 1], "do_seed": [0], "final": [0.1, 0.2]})


def test_spearman_against_hand_computed_values():
    # No ties: ranks (1,4,3,2) and (1,2,4,3), sum d^2 = 6, rho = 1 - 6 * 6 / (4 * 15) = 0.4.
    assert early_final_rank_correlation([0.1, 0.4, 0.3, 0.2], [0.5, 0.6, 0.9, 0.7]) == pytest.approx(0.4)
    # Ties: final ranks (1, 2, 3.5, 5, 3.5); Pearson of the ranks is 8 / sqrt(10 * 9.5).
    assert early_final_rank_correlation([1, 2, 3, 4, 5], [5, 6, 7, 8, 7]) == pytest.approx(8 / math.sqrt(95))
    assert early_final_rank_correlation([1, 2, 3], [30, 20, 10]) == pytest.approx(-1.0)
    assert math.isnan(early_final_rank_correlation([1, 2, 3], [4, 4, 4]))
    with pytest.raises(FtftError, match="paired"):
        early_final_rank_correlation([1, 2], [1, 2, 3])
    with pytest.raises(FtftError, match="nan at index 1"):
        early_final_rank_correlation([1, float("nan")], [1, 2])


def test_informative_early_scores_make_the_policy_win():
    rng = np.random.default_rng(4)
    final = rng.normal(0.8, 0.02, size=20)
    rows = [{"final": f, "early": f - 0.2} for f in final]
    result = compare_policy_vs_full(rows, "ssc:t=6,f=0.25,p=2", simulations=2000, seed=2)
    assert result.budget == 3.0 and result.full_trials == 3
    # A perfect early ranking keeps the best of the 6 started; full training affords 3.
    tolerance = 4 * result.policy_std / math.sqrt(result.simulations)
    assert result.policy_mean == pytest.approx(expected_max(final, 6, "unbiased"), abs=tolerance)
    tolerance = 4 * result.full_std / math.sqrt(result.simulations)
    assert result.full_mean == pytest.approx(expected_max(final, 3, "unbiased"), abs=tolerance)
    assert result.difference_mean > 4 * result.difference_se
    assert result.to_dict()["policy"] == "ssc:t=6,f=0.25,p=2"


def test_uninformative_early_scores_make_the_policy_lose():
    rng = np.random.default_rng(5)
    final = rng.normal(0.8, 0.02, size=20)
    rows = [{"final": f, "early": e} for f, e in zip(final, rng.permutation(final))]
    result = compare_policy_vs_full(rows, StartStopContinue(6, 0.25, 2), simulations=2000, seed=3)
    assert result.difference_mean < 0


def test_halving_reads_early_curves_and_no_stopping_is_full_training():
    rng = np.random.default_rng(6)
    final = rng.normal(0.8, 0.02, size=12)
    # Keys as JSON writes them; the best score so far is taken at each rung.
    rows = [{"final": f, "early": {"0.125": f - 0.3, "0.25": math.nan, "0.5": f - 0.1}} for f in final]
    result = compare_policy_vs_full(rows, "halving:t=8,eta=2,min=0.125", simulations=300)
    assert result.full_trials == 2 and result.policy_mean > result.full_mean
    baseline = compare_policy_vs_full(rows, NoStopping(12), simulations=5)
    assert baseline.policy_mean == baseline.full_mean == pytest.approx(final.max())
    with pytest.raises(FtftError, match="no early score at or before fraction 0.125"):
        compare_policy_vs_full([{"final": 0.5, "early": {"0.5": 0.4}}], "halving:t=1,eta=2,min=0.125")
    with pytest.raises(FtftError, match="t=8 trials but the sweep recorded only 4"):
        compare_policy_vs_full(rows[:4], "halving:t=8")
    with pytest.raises(FtftError, match="no 'early' score"):
        compare_policy_vs_full([{"final": 0.5}] * 4, "ssc:t=4,f=0.5,p=1")


def test_heatmap_writes_a_png(tmp_path):
    path = heatmap(grid_table(0.03, 0.0, size=4), tmp_path / "figs" / "seeds.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert [p.name for p in path.parent.iterdir()] == ["seeds.png"]
    with pytest.raises(FtftError, match="no trial"):
        heatmap(grid_table(0.03, 0.0, size=3)[:-1], tmp_path / "bad.png")
    assert not (tmp_path / "bad.png").exists()


def test_report_lists_early_final_correlations_at_the_compared_rungs(tmp_path):
    finals = [0.5, 0.6, 0.9, 0.7]
    halfway = [0.1, 0.4, 0.3, 0.2]  # Spearman with finals: 0.4 (hand-computed above)
    trials = [
        {
            "trial": i,
            "wi_seed": 1 + i // 2,
            "do_seed": 1 + i % 2,
            "final": f,
            "steps": 8,
            "diverged": False,
            "early": {"0.25": 0.05, "0.5": h, "1.0": f},
        }
        for i, (f, h) in enumerate(zip(finals, halfway))
    ]
    (tmp_path / "sweep.json").write_text(
        json.dumps(
            {
                "policy": "none:t=4",
                "metric": "dev/accuracy",
                "trials": trials,
                "budget_full_runs": 4.0,
                "policy_budget_full_runs": 4.0,
                "winner": 2,
            }
        )
    )
    report = write_sweep_report(tmp_path, compare="ssc:t=4,f=0.5,p=2", bootstrap=10)
    assert report["early_final_spearman"] == {0.5: pytest.approx(0.4)}
    # The curve covers every recorded fraction; all trials tied at 0.25 leave it undefined there.
    assert report["early_final_spearman_curve"] == {0.25: None, 0.5: pytest.approx(0.4)}
    assert Path(report["figures"]["early_final"]).read_bytes().startswith(b"\x89PNG")
    assert "Spearman(best dev/accuracy by 0.5 of training, final) = 0.400" in report["markdown"]
    # Without an early-stopping policy in play the correlation is listed at standard fractions.
    plain = write_sweep_report(tmp_path, bootstrap=10)
    assert plain["early_final_spearman"] == {0.1: None, 0.25: None, 0.5: pytest.approx(0.4)}
