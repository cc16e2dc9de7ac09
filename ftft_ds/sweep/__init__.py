"""Seed sweeps: expected-maximum estimators and early-stopping policies.

Only numpy-level modules are imported here, so that `from ftft_ds.sweep import expected_max` stays
cheap; the analyses (which draw figures) live in `ftft_ds.sweep.analysis`.
"""

from .estimators import ExpectedMaxCurve, expected_max, expected_max_curve, expected_max_vs_budget
from .policy import NoStopping, Policy, StartStopContinue, SuccessiveHalving, from_spec, parse

__all__ = [
    "ExpectedMaxCurve",
    "NoStopping",
    "Policy",
    "StartStopContinue",
    "SuccessiveHalving",
    "expected_max",
    "expected_max_curve",
    "expected_max_vs_budget",
    "from_spec",
    "parse",
]
