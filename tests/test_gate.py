"""The reference-quality gate: verdicts on a sound and a weak reference, and `reference_gate: refuse`, the default."""

import json

import numpy as np
import pytest
import yaml

from ftft_ds.dynamics.gate import assess_reference, learnt_late_mask
from ftft_ds.dynamics.metrics import compute_metrics
from ftft_ds.dynamics.select import select_subset
from ftft_ds.dynamics.store import Dynamics
from ftft_ds.pipeline.config import GateConfig

from .helpers import ran_in_process, refused_in_process


def _dynamics(gold_probs: np.ndarray, labels: np.ndarray) -> Dynamics:
    """Two-class dynamics whose gold-label probability follows `gold_probs` (N x E)."""
    gold_logit = np.log(gold_probs) - np.log1p(-gold_probs)
    logits = np.zeros((*gold_probs.shape, 2), np.float32)
    rows = np.arange(len(labels))
    logits[rows, :, labels] = gold_logit
    return Dynamics.create([f"u{i}" for i in rows], labels, logits)


def _verdict(dynamics, dev_accuracy=0.9, majority=0.5):
    subset = select_subset(dynamics, "ambiguous", fraction=0.33)
    return assess_reference("small", dynamics, subset.uids, dev_accuracy, majority, GateConfig())


def test_sound_reference_passes_every_check():
    rng = np.random.default_rng(0)
    n = 300
    labels = np.arange(n) % 2
    easy = np.full((n, 5), 0.97)  # learnt at once and kept
    flipping = np.array([0.3, 0.8, 0.35, 0.85, 0.7])  # ambiguous: right, wrong, right again
    gold = easy.copy()
    gold[: n // 3] = flipping + rng.uniform(-0.05, 0.05, size=(n // 3, 5))
    verdict = _verdict(_dynamics(gold, labels))
    assert verdict.sound, verdict.summary()
    assert [c.name for c in verdict.checks] == [
        "accuracy_lift",
        "epochs",
        "train_accuracy",
        "label_skew",
        "learnt_late",
    ]
    assert verdict.summary().startswith("reference 'small': sound (")


def test_weak_reference_is_named_with_every_reason():
    n = 300
    labels = (np.arange(n) % 3 == 0).astype(np.int64)  # one third positive
    # Two epochs of slow, steady learning: the positives climb fastest, so the "ambiguous" third is
    # all positives, every one of them right only at the last epoch.
    gold = np.where(labels[:, None] == 1, [[0.3, 0.75]], [[0.4, 0.45]])
    dynamics = _dynamics(gold, labels)
    verdict = _verdict(dynamics, dev_accuracy=0.6, majority=0.55)
    failed = {c.name for c in verdict.failures}
    assert failed == {"accuracy_lift", "epochs", "train_accuracy", "label_skew", "learnt_late"}
    line = verdict.summary()
    assert line.startswith("reference 'small': WEAK, dev accuracy 0.600") and "2 epoch(s)" in line
    assert learnt_late_mask(dynamics)[labels == 1].all() and not learnt_late_mask(dynamics)[labels == 0].any()


THRESHOLDS = {
    "accuracy_lift": "min_accuracy_lift",
    "epochs": "min_epochs",
    "train_accuracy": "min_train_accuracy",
    "label_skew": "max_label_skew",
    "learnt_late": "max_learnt_late",
    "probe_spearman": "min_probe_spearman",
}
"""Each check's threshold in `GateConfig`: a `min_` passes at or above it, a `max_` at or below."""


def _borderline_gold():
    """Gold probabilities on which no check sits at 0 or 1, so each can be moved across its
    threshold alone: an uneven label mix, some examples learnt only at the last epoch, some never."""
    rng = np.random.default_rng(4)
    n = 300
    labels = np.zeros(n, np.int64)
    labels[:40] = labels[140:200] = 1  # a third positive overall, 44% of the ambiguous rows
    gold = np.full((n, 4), 0.9) + rng.uniform(-0.05, 0.05, size=(n, 4))
    gold[:90] = [0.3, 0.7, 0.4, 0.8] + rng.uniform(-0.05, 0.05, size=(90, 4))
    gold[90:120] = [0.2, 0.3, 0.35, 0.8]  # learnt late
    gold[120:140, -1] = 0.3  # still wrong at the last epoch
    return gold, labels


@pytest.mark.parametrize("name", list(THRESHOLDS))
def test_each_check_flips_alone_at_its_threshold(name):
    """A threshold equal to the measured value passes; one a hair past it fails that check and no other."""
    gold, labels = _borderline_gold()
    dynamics = _dynamics(gold, labels)
    noisy = gold + np.random.default_rng(5).uniform(-0.2, 0.2, gold.shape)
    probe = _dynamics(np.clip(noisy, 0.02, 0.98), labels)  # the main model's own, loosely agreeing
    subset = select_subset(dynamics, "ambiguous", fraction=0.33).uids

    def verdict(**thresholds):
        return assess_reference(
            "small",
            dynamics,
            subset,
            0.85,
            0.6,
            GateConfig(**thresholds),
            probe=compute_metrics(probe),
            reference_metrics=compute_metrics(dynamics),
        )

    sound = verdict()
    assert sound.sound, sound.summary()
    measured = {c.name: c.value for c in sound.checks}
    assert set(measured) == set(THRESHOLDS)
    field, at = THRESHOLDS[name], measured[name]
    epsilon = 1 if name == "epochs" else 1e-9
    past = at + epsilon if field.startswith("min_") else at - epsilon
    assert verdict(**{field: at}).sound, (name, at)
    assert [c.name for c in verdict(**{field: past}).failures] == [name]


def test_probe_agreement_is_checked_when_the_main_models_dynamics_exist():
    rng = np.random.default_rng(1)
    n = 200
    labels = np.arange(n) % 2
    gold = rng.uniform(0.05, 0.95, size=(n, 4))
    reference = _dynamics(gold, labels)
    same = assess_reference(
        "small",
        reference,
        [],
        0.9,
        0.5,
        GateConfig(),
        probe=compute_metrics(reference),
        reference_metrics=compute_metrics(reference),
    )
    assert same.checks[-1].name == "probe_spearman" and same.checks[-1].value == 1.0 and same.checks[-1].passed
    unrelated = _dynamics(rng.uniform(0.05, 0.95, size=(n, 4)), labels)
    other = assess_reference(
        "small",
        reference,
        [],
        0.9,
        0.5,
        GateConfig(),
        probe=compute_metrics(unrelated),
        reference_metrics=compute_metrics(reference),
    )
    assert not other.checks[-1].passed


def test_a_really_trained_sound_tiny_reference_passes_every_check(world, tmp_path):
    """The 2-layer tiny model trained as the demo trains its reference (30 epochs in batches of 64)
    has learnt the training set, and its ambiguous third is neither one class's nor just learnt late
    (the weak 1-layer, 1-epoch one is refused end to end below). Trained for 8 epochs in batches of
    8 instead, its subset was sound on one CPU and skewed to one class on another."""
    ran_in_process(
        [
            "reference",
            "--model",
            "tiny-bert",
            "--epochs",
            "30",
            "--set",
            "data.embedded_train_size=600",
            "--set",
            "lr=3e-3",
            "--set",
            "micro_batch_size=64",
            "--set",
            "max_length=40",
            "-o",
            tmp_path / "ref",
        ]
    )
    run = json.loads((tmp_path / "ref" / "metrics.json").read_text())
    verdict = _verdict(
        Dynamics.load(tmp_path / "ref" / "dynamics"), run["final"]["dev/accuracy"], run["majority_rate"]["dev"]
    )
    assert verdict.sound, verdict.summary()
    assert [c.name for c in verdict.checks] == [
        "accuracy_lift",
        "epochs",
        "train_accuracy",
        "label_skew",
        "learnt_late",
    ]


RECIPE = {
    "data": {"embedded_train_size": 120},
    "main": {"model": "tiny-bert", "micro_batch_size": 8, "lr": 1.0e-3, "erm_epochs": 2},
    "reference": {"model": "tiny-bert", "num_layers": 1, "epochs": 1, "micro_batch_size": 8},
    "methods": ["erm", "ftft"],
    "num_ranks": 1,
}


def test_by_default_a_weak_reference_stops_the_recipe_before_any_main_run(tmp_path):
    config = tmp_path / "recipe.yaml"
    out = tmp_path / "out"
    config.write_text(yaml.safe_dump({**RECIPE, "output_dir": str(out), "cost_target": None}))
    errors = refused_in_process(["run", config])
    assert len(errors) == 1 and errors[0].startswith("error: reference 'small': WEAK, ")
    assert "1 epoch(s) of dynamics (needs 3)" in errors[0] and "no main run was launched" in errors[0]
    assert errors[0].endswith("or set reference_gate: warn to train on its subset anyway")
    assert not (out / "main").exists()
    gate = json.loads((out / "gate.json").read_text())
    assert gate["verdicts"][0]["sound"] is False


def test_a_weak_references_remedy_follows_the_checks_it_failed():
    """A subset skewed in its labels is mended by stratifying it, not by training the reference
    longer; any other failed check asks for a stronger reference."""
    from ftft_ds.pipeline.gate import GENERAL_REMEDY, remedy

    def verdict(*failed):
        names = ["accuracy_lift", "epochs", "train_accuracy", "label_skew", "learnt_late"]
        return {"checks": [{"name": name, "passed": name not in failed} for name in names]}

    assert remedy(verdict("label_skew")) == (
        "select a stratified subset (selection.stratify: true: each label keeps its share)"
    )
    assert remedy(verdict("epochs")) == GENERAL_REMEDY
    assert remedy(verdict("epochs", "label_skew")).startswith(GENERAL_REMEDY + ", or select a stratified subset")
