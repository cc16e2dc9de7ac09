"""Expected maximum validation score of n trials, from the scores of N recorded trials.

Reporting the best of N fine-tuning runs hides how many runs it took; Dodge et al. (2019, "Show
your work") report instead the expected best score as a function of the number of trials n, and
Dodge et al. (2020) use that curve to compare weight-initialisation and data-order seeds. Both
estimators here are linear in the sorted scores v_(1) <= ... <= v_(N):

    E[max of n] = sum_i w_i(n, N) v_(i)

where w_i is the probability that the i-th smallest recorded score is the maximum of the n draws:

    with_replacement  n independent draws from the empirical distribution (Dodge et al. 2019):
                      w_i = (i/N)^n - ((i-1)/N)^n; defined for every n >= 1, tends to the sample
                      max as n grows.
    unbiased          a uniformly random n-subset of the N trials: w_i = C(i-1, n-1) / C(N, n)
                      for i >= n, else 0; the unbiased estimator of the expected max of n fresh
                      trials, equal to the mean at n = 1 and to the sample max at n = N.

Because the weights do not depend on the scores, one weight matrix serves the estimate, the
spread of the max (its variance is sum_i w_i v_(i)^2 - E[max]^2, which for with_replacement is
Dodge et al.'s variance formula) and every bootstrap resample at once: a resample's curve is its
sorted scores times the same matrix. Ties need no special care, since the weights are the
probabilities of positions in the sorted order, and tied positions carry equal values.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import FtftError

METHODS = ("with_replacement", "unbiased")

# Default curve grids list every n up to this many; above it a log-spaced grid of this many points.
DEFAULT_GRID_POINTS = 200
# Bootstrap resamples are drawn in blocks of at most this many scores, to bound memory.
BOOTSTRAP_BLOCK = 1 << 22


@dataclass
class ExpectedMaxCurve:
    """The expected best score against n trials, with its spread and a bootstrap band.

    `std` is the standard deviation of the best of n trials (how much one sweep of n varies);
    `lower`/`upper` is the `ci` percentile band of the estimate over bootstrap resamples of the
    recorded scores (how well N trials pin the curve down), None when no resamples were asked for.
    For a curve against compute, `budgets` holds the budgets and `ns` the trials each affords, with
    NaN values where the estimate is undefined (see `expected_max_vs_budget`).
    """

    ns: np.ndarray
    mean: np.ndarray
    std: np.ndarray
    lower: np.ndarray | None
    upper: np.ndarray | None
    method: str
    ci: float
    budgets: np.ndarray | None = None

    def to_dict(self) -> dict:
        """Plain lists and numbers (NaN as None), for JSON."""

        def plain(values):
            if values is None:
                return None
            return [None if np.isnan(v) else float(v) for v in np.asarray(values, dtype=float)]

        out = {
            "ns": [int(n) for n in self.ns],
            "mean": plain(self.mean),
            "std": plain(self.std),
            "lower": plain(self.lower),
            "upper": plain(self.upper),
            "method": self.method,
            "ci": self.ci,
        }
        if self.budgets is not None:
            out["budgets"] = plain(self.budgets)
        return out


def expected_max(scores, n, method: str = "with_replacement"):
    """Expected best of `n` trials (an int, or an array of ints giving an array of the same shape)."""
    values = np.sort(_scores(scores))
    counts, scalar = _counts(n, values.size, method)
    result = (_weights(counts.ravel(), values.size, method) @ values).reshape(counts.shape)
    return float(result) if scalar else result


def expected_max_curve(
    scores,
    ns=None,
    method: str = "with_replacement",
    bootstrap: int = 1000,
    ci: float = 0.95,
    seed: int = 0,
) -> ExpectedMaxCurve:
    """The curve at `ns` (default: 1..N, or a log-spaced grid for large N) with a bootstrap band.

    Each of the `bootstrap` resamples draws N scores with replacement from the recorded ones
    (seeded by `seed`) and recomputes the whole curve; `bootstrap=0` skips the band.
    """
    values = np.sort(_scores(scores))
    size = values.size
    if ns is None:
        ns = _default_grid(size)
    counts, _ = _counts(ns, size, method)
    counts = counts.ravel()
    _band_args(bootstrap, ci)
    weights = _weights(counts, size, method)
    mean = weights @ values
    std = np.sqrt(np.maximum(weights @ values**2 - mean**2, 0.0))
    lower = upper = None
    if bootstrap:
        curves = _bootstrap_curves(values, weights, int(bootstrap), seed)
        lower, upper = np.quantile(curves, [(1.0 - ci) / 2.0, (1.0 + ci) / 2.0], axis=0)
    return ExpectedMaxCurve(counts, mean, std, lower, upper, method, float(ci))


def expected_max_vs_budget(
    scores,
    costs,
    budgets,
    method: str = "with_replacement",
    bootstrap: int = 1000,
    ci: float = 0.95,
    seed: int = 0,
) -> ExpectedMaxCurve:
    """Expected best score against compute: each budget buys floor(budget / mean cost) trials.

    Assumption: trials are exchangeable and each costs the mean recorded cost, so a budget (in the
    units of `costs`) affords that many complete trials, and how a trial's cost relates to its score
    is ignored. Budgets are usually shared between sweeps with different costs (to compare them on
    one axis), so a budget that affords no trial, or for `unbiased` more trials than were recorded,
    is not an error: its n is reported and its values are NaN.
    """
    values = _scores(scores)
    _method(method)
    _band_args(bootstrap, ci)
    spend = np.asarray(costs, dtype=float)
    if spend.shape != values.shape:
        raise FtftError(f"costs must give one cost per score ({values.size}), got shape {spend.shape}")
    if not np.all(np.isfinite(spend) & (spend > 0)):
        bad = spend[~(np.isfinite(spend) & (spend > 0))][0]
        raise FtftError(f"costs must be positive finite numbers, got {bad}")
    limits = np.atleast_1d(np.asarray(budgets, dtype=float))
    if limits.ndim != 1 or not np.all(np.isfinite(limits) & (limits >= 0)):
        raise FtftError(f"budgets must be a list of non-negative finite numbers, got {budgets!r}")

    mean_cost = float(spend.mean())
    # The small slack keeps budgets that are exact multiples of the cost from losing a trial to
    # rounding (3 * 0.1 / 0.1 is 2.9999999999999996).
    counts = np.floor(limits / mean_cost * (1.0 + 1e-12)).astype(np.int64)
    valid = counts >= 1
    if method == "unbiased":
        valid &= counts <= values.size
    ns = np.unique(counts[valid])
    out = {name: np.full(limits.shape, np.nan) for name in ("mean", "std", "lower", "upper")}
    if ns.size:
        curve = expected_max_curve(values, ns, method, bootstrap, ci, seed)
        where = np.searchsorted(ns, counts[valid])
        for name in out:
            found = getattr(curve, name)
            if found is not None:
                out[name][valid] = found[where]
    band = bootstrap > 0
    return ExpectedMaxCurve(
        counts,
        out["mean"],
        out["std"],
        out["lower"] if band else None,
        out["upper"] if band else None,
        method,
        float(ci),
        budgets=limits,
    )


def _scores(scores) -> np.ndarray:
    """The scores as a 1-D float array, refusing empty, non-numeric and non-finite input."""
    try:
        values = np.asarray(scores, dtype=float)
    except (TypeError, ValueError):
        raise FtftError(f"scores must be a list of numbers, got {scores!r}") from None
    if values.ndim != 1 or values.size == 0:
        raise FtftError(f"scores must be a non-empty 1-D list of numbers, got shape {values.shape}")
    bad = np.flatnonzero(~np.isfinite(values))
    if bad.size:
        raise FtftError(f"scores must be finite numbers, got {values[bad[0]]} at index {bad[0]}")
    return values


def _method(method: str) -> None:
    if method not in METHODS:
        raise FtftError(f"method must be one of {', '.join(METHODS)}, got {method!r}")


def _band_args(bootstrap, ci) -> None:
    if isinstance(bootstrap, bool) or not isinstance(bootstrap, (int, np.integer)) or bootstrap < 0:
        raise FtftError(f"bootstrap must be a whole number >= 0 of resamples, got {bootstrap!r}")
    if isinstance(ci, bool) or not isinstance(ci, (int, float)) or not 0.0 < ci < 1.0:
        raise FtftError(f"ci must be a coverage strictly between 0 and 1, got {ci!r}")


def _counts(n, size: int, method: str) -> tuple[np.ndarray, bool]:
    """`n` as an int64 array of valid trial counts, and whether it was a single number."""
    _method(method)
    arr = np.asarray(n)
    if arr.dtype.kind == "f" and np.all(np.isfinite(arr)) and np.all(arr == np.round(arr)):
        arr = arr.astype(np.int64)
    if arr.dtype.kind not in "iu" or arr.size == 0:
        raise FtftError(f"n must be a whole number of trials or a list of them, got {n!r}")
    arr = arr.astype(np.int64)
    if method == "unbiased":
        bad = arr[(arr < 1) | (arr > size)]
        if bad.size:
            raise FtftError(
                f"n must be between 1 and the number of scores ({size}) for method 'unbiased', got {bad[0]}"
            )
    else:
        bad = arr[arr < 1]
        if bad.size:
            raise FtftError(f"n must be >= 1 for method 'with_replacement', got {bad[0]}")
    return arr, arr.ndim == 0


def _weights(ns: np.ndarray, size: int, method: str) -> np.ndarray:
    """(len(ns), size) matrix: row k gives P(max of ns[k] draws is the i-th smallest score)."""
    if method == "with_replacement":
        cdf = (np.arange(size + 1) / size)[None, :] ** ns[:, None].astype(float)
        return np.diff(cdf, axis=1)
    # w_N = C(N-1, n-1) / C(N, n) = n / N and w_(j-1) / w_j = (j - n) / (j - 1): a running product
    # from the top stays within [0, 1], so it neither overflows nor loses precision for large N
    # (the ratio is 0 at j = n, which zeroes every i < n).
    j = np.arange(2, size + 1, dtype=float)[None, :]
    ratios = np.maximum((j - ns[:, None]) / (j - 1.0), 0.0)
    tail = np.cumprod(ratios[:, ::-1], axis=1)[:, ::-1]
    top = (ns / size)[:, None]
    return top * np.concatenate([tail, np.ones((ns.size, 1))], axis=1)


def _default_grid(size: int) -> np.ndarray:
    if size <= DEFAULT_GRID_POINTS:
        return np.arange(1, size + 1)
    return np.unique(np.round(np.geomspace(1, size, DEFAULT_GRID_POINTS)).astype(np.int64))


def _bootstrap_curves(values: np.ndarray, weights: np.ndarray, resamples: int, seed: int) -> np.ndarray:
    """(resamples, len(ns)) curves, one per resample of the scores with replacement."""
    rng = np.random.default_rng(seed)
    block = max(1, BOOTSTRAP_BLOCK // values.size)
    curves = []
    for start in range(0, resamples, block):
        rows = min(block, resamples - start)
        drawn = np.sort(values[rng.integers(0, values.size, size=(rows, values.size))], axis=1)
        curves.append(drawn @ weights.T)
    return np.concatenate(curves, axis=0)
