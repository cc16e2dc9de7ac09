"""The embedded task: labels follow the true rule, the shortcut works in-distribution and fails OOD."""

from __future__ import annotations

import collections

import pytest

from ftft_ds.data import CONSTRUCTIONS, LABEL_NAMES, DataConfig, generate_task, load_splits, shortcut_label
from ftft_ds.data.task import CUE_WORDS, NEGATION_WORDS, vocabulary
from ftft_ds.errors import FtftError

pytestmark = pytest.mark.xdist_group("test_task")  # its module fixtures are built once, on one worker


@pytest.fixture(scope="module")
def task():
    return generate_task(6000, seed=0)


def _shortcut_accuracy(ds) -> float:
    hits = [shortcut_label(p, h) == y for p, h, y in zip(ds["text"], ds["text_pair"], ds["label"])]
    return sum(hits) / len(hits)


def test_splits_and_sizes(task):
    assert {name: len(ds) for name, ds in task.items()} == {
        "train": 6000,
        "dev": 1000,
        "test": 1000,
        "ood_dev": 1000,
        "ood": 2000,
    }
    assert task["train"].features["label"].names == list(LABEL_NAMES)
    custom = generate_task(60, seed=1, dev_size=9, test_size=12, ood_dev_size=6, ood_size=30)
    assert {name: len(ds) for name, ds in custom.items()} == {
        "train": 60,
        "dev": 9,
        "test": 12,
        "ood_dev": 6,
        "ood": 30,
    }


def test_shortcut_works_in_distribution_and_fails_ood(task):
    # Train is 80% minus what 2% label noise breaks; dev and test are exactly 80%.
    assert 0.77 <= _shortcut_accuracy(task["train"]) <= 0.80
    assert _shortcut_accuracy(task["dev"]) == pytest.approx(0.80, abs=0.01)
    assert _shortcut_accuracy(task["test"]) == pytest.approx(0.80, abs=0.01)
    assert _shortcut_accuracy(task["ood_dev"]) == _shortcut_accuracy(task["ood"]) == 0.0
    for ds in task.values():  # the rule is the same everywhere: every construction in every split
        assert set(ds["construction"]) == set(CONSTRUCTIONS)
        assert all(h.split()[0] in CUE_WORDS for h in ds["text_pair"])


def test_shortcut_rate_is_configurable():
    loose = generate_task(600, seed=0, shortcut_rate=0.5, ood_shortcut_rate=0.3, label_noise=0.0)
    assert _shortcut_accuracy(loose["train"]) == pytest.approx(0.5, abs=0.01)
    assert _shortcut_accuracy(loose["ood"]) == pytest.approx(0.3, abs=0.01)


def test_labels_balanced(task):
    for name, ds in task.items():
        counts = collections.Counter(ds["label"])
        tolerance = 0.02 * len(ds) if name == "train" else 1  # train carries label noise
        assert max(counts.values()) - min(counts.values()) <= tolerance, (name, counts)


def test_label_noise_only_in_train(task):
    assert sum(task["train"]["noisy"]) == 120
    for name in ("dev", "test", "ood_dev", "ood"):
        assert not any(task[name]["noisy"])
    for ds in task.values():
        for c, y, noisy in zip(ds["construction"], ds["label"], ds["noisy"]):
            assert (CONSTRUCTIONS.index(c) // 2 == y) != noisy


def test_constructions_follow_the_true_rule(task):
    """Each construction changes the premise the way its label says."""
    hypernyms = {"person", "animal", "bird"}
    for premise, hypothesis, c in zip(task["train"]["text"], task["train"]["text_pair"], task["train"]["construction"]):
        p, h = premise.split(), hypothesis.split()[1:]  # the cue word first
        assert len(p) <= 20 and len(h) <= 20
        new_words = set(h) - set(p)
        if c == "subsequence":
            rest = iter(p)
            assert all(word in rest for word in h) and len(h) < len(p)
        elif c == "swap":
            assert not new_words and h != p
        elif c == "negation":
            assert NEGATION_WORDS & set(h)
        elif c == "hypernym":
            assert len(new_words) == 1 and new_words <= hypernyms
        elif c == "antonym":
            assert len(new_words) == 1 and not NEGATION_WORDS & set(h) and len(h) <= len(p)
        else:
            assert c == "new_info" and new_words and not new_words & (hypernyms | NEGATION_WORDS)


def test_no_pair_in_two_splits(task):
    seen = set()
    for ds in task.values():
        pairs = set(zip(ds["text"], ds["text_pair"]))
        assert len(pairs) == len(ds)
        assert not pairs & seen
        seen |= pairs


def test_vocabulary_covers_every_word(task):
    words = set(vocabulary())
    for ds in task.values():
        for text in [*ds["text"], *ds["text_pair"]]:
            assert set(text.split()) <= words


def test_deterministic():
    first, second = generate_task(300, seed=3), generate_task(300, seed=3)
    for name in first:
        assert first[name].data.table.equals(second[name].data.table)
    assert list(generate_task(300, seed=4)["train"]["text"]) != list(first["train"]["text"])
    config = DataConfig(embedded_train_size=300, embedded_seed=3)
    prints = [{n: s.fingerprint for n, s in load_splits(config).items()} for _ in range(2)]
    assert prints[0] == prints[1] and len(set(prints[0].values())) == 5


@pytest.mark.parametrize(
    "kwargs, bad",
    [
        (dict(train_size=2), "train size"),
        (dict(dev_size=0), "dev size"),
        (dict(seed=-1), "seed"),
        (dict(shortcut_rate=1.5), "shortcut_rate"),
        (dict(label_noise=0.9), "label_noise"),
    ],
)
def test_bad_arguments(kwargs, bad):
    with pytest.raises(FtftError, match=bad):
        generate_task(**kwargs)
