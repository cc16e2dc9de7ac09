"""The reference-quality gate: can this reference's dynamics be trusted to choose training data?

FTFT transfers a cheap reference's data map to an expensive main model, and the FTFT paper shows
that transfer fails when the reference is too weak (TinyBERT, ELECTRA-small): such a reference
calls "ambiguous" the examples it simply had not learnt yet. The paper gives no test for this;
these checks make the failure visible before any main run is launched:

- `accuracy_lift`: the reference's own ID dev accuracy above the majority-class rate, as a share
  of the way from that rate to 100%;
- `train_accuracy`: its training-pass accuracy at the last epoch (it should have learnt the
  training set, or its confidences say little);
- `epochs`: how many epochs of dynamics there are (with two, variability is just the rise from the
  first epoch to the second);
- `label_skew`: total-variation distance between the subset's label mix and the training split's;
- `learnt_late`: the share of the subset the reference got right only at its last epoch:
  examples picked for being learnt late, not for being ambiguous;
- `probe_spearman` (when the main model's own dynamics exist, i.e. the `dm` baseline ran): the
  rank correlation of variability between the reference and the main model.

Each check yields a value, its threshold and a verdict; the reference is sound when all pass.
"""

from __future__ import annotations

import dataclasses

import numpy as np
from scipy import stats

from .metrics import Metrics
from .store import Dynamics, encode_uids


@dataclasses.dataclass
class Check:
    name: str
    value: float
    threshold: float
    passed: bool
    reason: str  # one clause, said whatever the outcome: "ID dev accuracy 0.41 closes 12% of ..."


@dataclasses.dataclass
class Verdict:
    reference: str
    checks: list

    @property
    def sound(self) -> bool:
        return all(check.passed for check in self.checks)

    @property
    def failures(self) -> list:
        return [check for check in self.checks if not check.passed]

    def summary(self) -> str:
        """One line: the verdict and, for a weak reference, every reason."""
        if self.sound:
            return f"reference '{self.reference}': sound ({'; '.join(c.reason for c in self.checks)})"
        return f"reference '{self.reference}': WEAK, {'; '.join(c.reason for c in self.failures)}"

    def to_json(self) -> dict:
        return {
            "reference": self.reference,
            "sound": self.sound,
            "checks": [dataclasses.asdict(check) for check in self.checks],
        }


def _label_shares(labels: np.ndarray, num_labels: int) -> np.ndarray:
    counts = np.bincount(labels, minlength=num_labels).astype(float)
    return counts / max(1.0, counts.sum())


def learnt_late_mask(dynamics: Dynamics) -> np.ndarray:
    """Examples the reference got wrong at every epoch but the last, where it got them right: their
    variability is one late jump, not ambiguity."""
    correct = dynamics.logits.argmax(axis=2) == dynamics.labels[:, None]
    return (~correct[:, :-1]).all(axis=1) & correct[:, -1]


def assess_reference(
    name: str,
    dynamics: Dynamics,
    subset_uids,
    dev_accuracy: float | None,
    majority_rate: float | None,
    thresholds,
    probe: Metrics | None = None,
    reference_metrics: Metrics | None = None,
) -> Verdict:
    """Judge one reference. `thresholds` is a `GateConfig`; `probe` holds the main model's own
    metrics (with `reference_metrics` the reference's, to correlate them by uid)."""
    checks = []
    if dev_accuracy is not None and majority_rate is not None and majority_rate < 1:
        lift = (dev_accuracy - majority_rate) / (1 - majority_rate)
        checks.append(
            Check(
                "accuracy_lift",
                lift,
                thresholds.min_accuracy_lift,
                lift >= thresholds.min_accuracy_lift,
                f"dev accuracy {dev_accuracy:.3f} against a majority rate of {majority_rate:.3f} "
                f"closes {lift:.0%} of the gap (needs {thresholds.min_accuracy_lift:.0%})",
            )
        )

    epochs = dynamics.num_epochs
    checks.append(
        Check(
            "epochs",
            epochs,
            thresholds.min_epochs,
            epochs >= thresholds.min_epochs,
            f"{epochs} epoch(s) of dynamics (needs {thresholds.min_epochs})",
        )
    )

    last = dynamics.logits[:, -1, :].argmax(axis=1)
    train_accuracy = float((last == dynamics.labels).mean())
    checks.append(
        Check(
            "train_accuracy",
            train_accuracy,
            thresholds.min_train_accuracy,
            train_accuracy >= thresholds.min_train_accuracy,
            f"last-epoch training accuracy {train_accuracy:.3f} (needs {thresholds.min_train_accuracy:.2f})",
        )
    )

    subset_uids = list(subset_uids)
    in_subset = (
        np.isin(dynamics.uids, encode_uids(subset_uids)) if subset_uids else np.zeros(dynamics.num_examples, dtype=bool)
    )
    num_labels = dynamics.logits.shape[2]
    skew = 0.5 * float(
        np.abs(_label_shares(dynamics.labels[in_subset], num_labels) - _label_shares(dynamics.labels, num_labels)).sum()
    )
    checks.append(
        Check(
            "label_skew",
            skew,
            thresholds.max_label_skew,
            skew <= thresholds.max_label_skew,
            f"subset label skew {skew:.3f} (at most {thresholds.max_label_skew:.2f})",
        )
    )

    late = learnt_late_mask(dynamics)
    late_share = float(late[in_subset].mean()) if in_subset.any() else 0.0
    checks.append(
        Check(
            "learnt_late",
            late_share,
            thresholds.max_learnt_late,
            late_share <= thresholds.max_learnt_late,
            f"{late_share:.0%} of the subset was learnt only at the last epoch (at most "
            f"{thresholds.max_learnt_late:.0%}; {float(late.mean()):.0%} of all examples)",
        )
    )

    if probe is not None and reference_metrics is not None:
        rho = variability_spearman(reference_metrics, probe)
        checks.append(
            Check(
                "probe_spearman",
                rho,
                thresholds.min_probe_spearman,
                rho >= thresholds.min_probe_spearman,
                f"variability rank correlation with the main model's own dynamics {rho:.2f} "
                f"(needs {thresholds.min_probe_spearman:.2f})",
            )
        )
    return Verdict(name, checks)


def variability_spearman(a: Metrics, b: Metrics) -> float:
    """Spearman rank correlation of variability over the uids both metrics hold.

    NaN, which fails the check, when fewer than two uids are shared or either side's variability
    is constant over them: no ranking to agree with.
    """
    order = {uid: i for i, uid in enumerate(b.uids)}
    pairs = [(i, order[uid]) for i, uid in enumerate(a.uids) if uid in order]
    if len(pairs) < 2:
        return float("nan")
    left, right = (np.array(side) for side in zip(*pairs))
    mine, theirs = np.asarray(a.variability)[left], np.asarray(b.variability)[right]
    if np.ptp(mine) == 0 or np.ptp(theirs) == 0:
        return float("nan")
    return float(stats.spearmanr(mine, theirs).statistic)
