"""The embedded default task: a synthetic sentence-pair NLI task with a built-in shortcut.

FTFT needs a task where some training examples are easy because of a spurious cue and others are
hard because they break it, plus an out-of-distribution (OOD) test on which the cue fails. This
module builds one, in the spirit of MNLI and its annotation artefacts, from templates and a
small vocabulary, with no download.

Premises follow the template

    [TIME] the [ADJ] NOUN VERBED the [ADJ] NOUN [PREP the PLACE] [TIME]

(brackets are optional slots; TIME sits either at the front or the end). Nouns are people and
animals with hypernyms (doctor -> person, dog -> animal, owl -> bird or animal); adjectives come in
antonym pairs (tall / short); verbs have a negated form ("did not visit", "never visited").
The two adjectives of a premise never come from the same antonym pair, and its two nouns differ.

The hypothesis is made from the premise by one *construction*, which fixes the label (the true
rule, learnable from the pair):

=============  =============  ================================================
label          construction   hypothesis
=============  =============  ================================================
entailment     subsequence    drop one or more optional slots
entailment     hypernym       replace a noun by its hypernym
neutral        new_info       add a slot the premise lacks (new adjective, place or time)
neutral        swap           exchange subject and object noun phrases
contradiction  negation       negate the verb ("did not", "never")
contradiction  antonym        replace an adjective by its antonym
=============  =============  ================================================

Apart from its defining change, a hypothesis drops each other optional slot of the premise at
random, so length and exact copying carry no signal on their own. Each label's two constructions
are equally common in every split.

The shortcut is a cue word that opens every hypothesis (see `CUE_WORDS` and `shortcut_label`):
"indeed" reads as entailment, "perhaps" as neutral, "however" as contradiction, like the
annotation artefacts of crowd-sourced NLI data (negation words, vague adverbs). In train, dev and
test a fraction `shortcut_rate` (default 80%) of every label's examples carries its own cue and
the rest one of the other two, so the shortcut scores exactly `shortcut_rate` there before label
noise; it is learnt within the first epoch, long before the rule. The OOD splits (`ood_dev` to
validate on, `ood` to report) use `ood_shortcut_rate` (default 0: every cue misleads) and are
otherwise built the same way, so they test whether a model learned the rule or the cue.

This gives a data map the shape FTFT relies on: the cue-following majority is learnt at once
(easy), the cue-breaking examples flip from wrong to right once the rule is learnt (ambiguous),
and the mislabelled ones are never learnt (hard).

Every split has exactly balanced labels (before noise). Train alone gets `label_noise` (default
2%): that fraction of its rows gets a label drawn uniformly from the two wrong ones, giving the
genuinely hard, mislabelled examples a data map should find; the `noisy` column marks them.
No premise-hypothesis pair occurs twice, within or across splits: splits are drawn in the order
ood, ood_dev, test, dev, train and a pair already drawn is redrawn, so the evaluation splits never leak
into train.

Generation is vectorised with numpy (one generator per split, seeded from `seed` and the split),
so the same arguments give byte-identical data (for a given numpy version) and a million training
pairs take seconds.
"""

from __future__ import annotations

import hashlib
from typing import Optional

import numpy as np

from ..errors import require

LABEL_NAMES = ("entailment", "neutral", "contradiction")
"""Label i of the embedded task is `LABEL_NAMES[i]`."""

CONSTRUCTIONS = ("subsequence", "hypernym", "new_info", "swap", "negation", "antonym")
"""Construction k has label k // 2."""

SPLITS = ("train", "dev", "test", "ood_dev", "ood")
"""The embedded task's splits: `ood_dev` is the OOD validation split (for early stopping), `ood` the
OOD test split (for reporting); they are drawn alike but never share a pair."""

NEGATION_WORDS = frozenset({"not", "never"})
"""Words that negate a hypothesis's verb."""

CUE_WORDS = ("indeed", "perhaps", "however")
"""The first word of every hypothesis: the shortcut reads cue i as label i."""

# -- vocabulary ------------------------------------------------------------------------------------

_PEOPLE = (
    "doctor lawyer teacher nurse farmer pilot singer dancer baker banker chef judge painter writer "
    "student soldier sailor actor author manager clerk driver artist athlete poet scientist engineer "
    "dentist plumber carpenter tailor butcher cashier librarian professor surgeon senator reporter "
    "guard waiter"
).split()
_MAMMALS = (
    "dog cat horse rabbit fox wolf bear lion tiger goat sheep mouse monkey deer donkey pig cow zebra camel squirrel"
).split()
_BIRDS = "owl eagle parrot duck goose crow swan pigeon".split()
_HYPERNYMS = ("person", "animal", "bird")
_NOUNS = tuple(_PEOPLE + _MAMMALS + _BIRDS)
# Two hypernym choices per noun (equal when a noun has one): person / animal / bird or animal.
_HYPERNYM_OF = np.array(
    [[0, 0]] * len(_PEOPLE) + [[1, 1]] * len(_MAMMALS) + [[2, 1]] * len(_BIRDS), dtype=np.int64
) + len(_NOUNS)

# Antonym pairs: adjective 2i and 2i+1 are antonyms, so antonym(a) == a ^ 1.
_ADJECTIVES = tuple(
    "tall short young old happy sad rich poor strong weak quiet loud kind cruel brave timid calm "
    "nervous clever foolish polite rude busy idle famous obscure healthy sick friendly hostile "
    "careful reckless cheerful gloomy generous greedy awake asleep clean dirty fast slow proud "
    "humble gentle rough shy bold neat messy thin fat".split()
)

# (past, base) forms.
_VERBS = tuple(
    tuple(pair.split("/"))
    for pair in (
        "visited/visit helped/help called/call watched/watch followed/follow met/meet thanked/thank "
        "greeted/greet admired/admire avoided/avoid chased/chase pushed/push saw/see heard/hear "
        "found/find warned/warn praised/praise blamed/blame trusted/trust invited/invite "
        "ignored/ignore paid/pay hugged/hug kicked/kick carried/carry fed/feed "
        "photographed/photograph interviewed/interview recognized/recognize protected/protect "
        "attacked/attack rescued/rescue questioned/question taught/teach surprised/surprise "
        "amused/amuse bothered/bother contacted/contact supported/support encouraged/encourage "
        "remembered/remember forgot/forget"
    ).split()
)
_PREPOSITIONS = ("near", "at", "behind", "outside", "beside", "inside")
_PLACES = (
    "station park library market hospital school museum airport bank church theater stadium harbor "
    "bakery cafe hotel office factory garden beach bridge castle farm forest river lake mall temple "
    "zoo gym studio prison court pharmacy bookstore restaurant village tower tunnel square"
).split()
_TIMES = (
    "yesterday",
    "today",
    "last week",
    "last night",
    "on monday",
    "on friday",
    "in the morning",
    "in the evening",
    "at noon",
    "at dawn",
    "on sunday",
    "last year",
)


def vocabulary() -> list[str]:
    """Every word the generator can emit, sorted: what a word-level tokenizer for the task needs."""
    words = {"the", "did", *NEGATION_WORDS, *CUE_WORDS, *_NOUNS, *_HYPERNYMS, *_ADJECTIVES, *_PREPOSITIONS, *_PLACES}
    for past, base in _VERBS:
        words.update((past, base))
    for phrase in _TIMES:
        words.update(phrase.split())
    return sorted(words)


def shortcut_label(premise: str, hypothesis: str) -> int:
    """The label the cue-word shortcut predicts for one pair (see the module docstring)."""
    return CUE_WORDS.index(hypothesis.split(" ", 1)[0])


# -- rendering tables ------------------------------------------------------------------------------
# Slots are integer arrays (-1 = absent); rendering indexes object arrays of strings, so building a
# sentence is a handful of vectorised string concatenations.


def _table(strings) -> np.ndarray:
    table = np.empty(len(strings), dtype=object)
    table[:] = list(strings)
    return table


# Noun phrase for (adjective + 1, noun): row 0 is "no adjective"; nouns include the hypernyms.
_NOUN_PHRASES = _table(
    [f"the {a + ' ' if a else ''}{n}" for a in ("", *_ADJECTIVES) for n in (*_NOUNS, *_HYPERNYMS)]
).reshape(len(_ADJECTIVES) + 1, len(_NOUNS) + len(_HYPERNYMS))
# Verb phrase for (negation, verb): 0 plain, 1 "did not", 2 "never".
_VERB_PHRASES = _table(
    [past for past, _ in _VERBS] + [f"did not {base}" for _, base in _VERBS] + [f"never {past}" for past, _ in _VERBS]
).reshape(3, len(_VERBS))
# Place phrase (with a leading space) for (preposition, place + 1): column 0 is "no place".
_PLACE_PHRASES = _table([f" {p} the {pl}" if pl else "" for p in _PREPOSITIONS for pl in ("", *_PLACES)]).reshape(
    len(_PREPOSITIONS), len(_PLACES) + 1
)
_TIME_FRONT = _table(["", *(f"{t} " for t in _TIMES)])
_TIME_BACK = _table(["", *(f" {t}" for t in _TIMES)])

_OPTIONAL = 4  # optional slots: subject adjective, object adjective, place, time


def _render(subj_adj, subj, neg, verb, obj_adj, obj, prep, place, time, time_front) -> np.ndarray:
    """Sentences (object array of str) from slot arrays; -1 marks an absent slot."""
    front = np.where(time_front, time + 1, 0)
    back = np.where(time_front, 0, time + 1)
    return (
        _TIME_FRONT[front]
        + _NOUN_PHRASES[subj_adj + 1, subj]
        + " "
        + _VERB_PHRASES[neg, verb]
        + " "
        + _NOUN_PHRASES[obj_adj + 1, obj]
        + _PLACE_PHRASES[prep, place + 1]
        + _TIME_BACK[back]
    )


def _pick_one(rng: np.random.Generator, allowed: np.ndarray) -> np.ndarray:
    """For each row of the boolean (n, k) `allowed`, a uniformly chosen allowed column."""
    return np.argmax(np.where(allowed, rng.random(allowed.shape), -1.0), axis=1)


def _draw_pairs(rng: np.random.Generator, kinds: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Premises and hypotheses (object arrays of str) for construction codes `kinds`."""
    n = len(kinds)
    rows = np.arange(n)
    is_kind = {name: kinds == code for code, name in enumerate(CONSTRUCTIONS)}

    # Premise slot values; an absent optional slot still has a drawn value, which `new_info` uses.
    subj = rng.integers(len(_NOUNS), size=n)
    obj = rng.integers(len(_NOUNS) - 1, size=n)
    obj += obj >= subj
    verb = rng.integers(len(_VERBS), size=n)
    subj_adj = rng.integers(len(_ADJECTIVES), size=n)
    pairs = len(_ADJECTIVES) // 2
    obj_pair = rng.integers(pairs - 1, size=n)
    obj_pair += obj_pair >= subj_adj // 2
    obj_adj = 2 * obj_pair + rng.integers(2, size=n)
    prep = rng.integers(len(_PREPOSITIONS), size=n)
    place = rng.integers(len(_PLACES), size=n)
    time = rng.integers(len(_TIMES), size=n)
    time_front = rng.random(n) < 0.3

    # Which optional slots the premise fills: (n, 4) for subj_adj, obj_adj, place, time.
    present = rng.random((n, _OPTIONAL)) < np.array([0.5, 0.5, 0.5, 0.35])
    need_some = is_kind["subsequence"] & ~present.any(axis=1)
    present[need_some, _pick_one(rng, np.ones((n, _OPTIONAL), bool))[need_some]] = True
    need_adj = is_kind["antonym"] & ~present[:, :2].any(axis=1)
    present[need_adj, rng.integers(2, size=n)[need_adj]] = True
    need_gap = is_kind["new_info"] & present.all(axis=1)
    present[need_gap, _pick_one(rng, present)[need_gap]] = False

    # The hypothesis keeps each present optional slot at random ...
    kept = present & (rng.random((n, _OPTIONAL)) < np.where(is_kind["subsequence"], 0.5, 0.6)[:, None])
    # ... a subsequence drops at least one ...
    drop_none = is_kind["subsequence"] & (kept == present).all(axis=1)
    kept[drop_none, _pick_one(rng, present)[drop_none]] = False
    # ... an antonym keeps (and flips) one present adjective ...
    h_subj_adj, h_obj_adj = subj_adj.copy(), obj_adj.copy()
    side = _pick_one(rng, present[:, :2])
    flip_subj = is_kind["antonym"] & (side == 0)
    flip_obj = is_kind["antonym"] & (side == 1)
    kept[flip_subj, 0] = True
    kept[flip_obj, 1] = True
    h_subj_adj[flip_subj] ^= 1
    h_obj_adj[flip_obj] ^= 1
    # ... new_info fills one slot the premise lacks, with its drawn (unused, hence new) value.
    added = _pick_one(rng, ~present)
    kept[rows[is_kind["new_info"]], added[is_kind["new_info"]]] = True

    h_subj, h_obj = subj.copy(), obj.copy()
    hypernym = _HYPERNYM_OF[np.stack([subj, obj], axis=1), rng.integers(2, size=(n, 1))]
    on_subj = rng.random(n) < 0.5
    h_subj = np.where(is_kind["hypernym"] & on_subj, hypernym[:, 0], h_subj)
    h_obj = np.where(is_kind["hypernym"] & ~on_subj, hypernym[:, 1], h_obj)
    neg = np.where(is_kind["negation"], 1 + (rng.random(n) < 0.3), 0)

    def slot(values, mask):
        return np.where(mask, values, -1)

    premise = _render(
        slot(subj_adj, present[:, 0]),
        subj,
        np.zeros(n, np.int64),
        verb,
        slot(obj_adj, present[:, 1]),
        obj,
        prep,
        slot(place, present[:, 2]),
        slot(time, present[:, 3]),
        time_front,
    )
    hs_adj, ho_adj = slot(h_subj_adj, kept[:, 0]), slot(h_obj_adj, kept[:, 1])
    swap = is_kind["swap"]
    hypothesis = _render(
        np.where(swap, ho_adj, hs_adj),
        np.where(swap, h_obj, h_subj),
        neg,
        verb,
        np.where(swap, hs_adj, ho_adj),
        np.where(swap, h_subj, h_obj),
        prep,
        slot(place, kept[:, 2]),
        slot(time, kept[:, 3]),
        time_front,
    )
    return premise, hypothesis


def _pair_key(premise: str, hypothesis: str) -> bytes:
    return hashlib.blake2b(f"{premise}\x1f{hypothesis}".encode(), digest_size=8).digest()


def _kinds(rng: np.random.Generator, size: int) -> np.ndarray:
    """Construction codes for `size` rows: balanced labels, each label's two constructions alike."""
    codes = []
    for label in range(len(LABEL_NAMES)):
        count = size // len(LABEL_NAMES) + (label < size % len(LABEL_NAMES))
        codes += [2 * label] * (count - count // 2) + [2 * label + 1] * (count // 2)
    return rng.permutation(np.array(codes, dtype=np.int64))


def _cues(rng: np.random.Generator, labels: np.ndarray, shortcut_rate: float) -> np.ndarray:
    """Cue codes: exactly `shortcut_rate` of each label's rows carry its own cue, the rest another."""
    cues = labels.copy()
    for label in range(len(LABEL_NAMES)):
        rows = np.flatnonzero(labels == label)
        misled = rng.permutation(rows)[: len(rows) - int(round(shortcut_rate * len(rows)))]
        cues[misled] = (label + rng.integers(1, len(LABEL_NAMES), size=len(misled))) % len(LABEL_NAMES)
    return cues


def _draw_split(rng, size, shortcut_rate, seen: set) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Kinds, premises and hypotheses (cue first) of one split, redrawing pairs already in `seen`."""
    kinds = _kinds(rng, size)
    cue_words = _table(CUE_WORDS)[_cues(rng, kinds // 2, shortcut_rate)]
    premises, hypotheses = _draw_pairs(rng, kinds)
    hypotheses = cue_words + " " + hypotheses
    todo = np.arange(size)
    while len(todo):
        clash = []
        for i in todo.tolist():
            key = _pair_key(premises[i], hypotheses[i])
            if key in seen:
                clash.append(i)
            else:
                seen.add(key)
        todo = np.array(clash, dtype=np.int64)
        if len(todo):
            premises[todo], redrawn = _draw_pairs(rng, kinds[todo])
            hypotheses[todo] = cue_words[todo] + " " + redrawn
    return kinds, premises, hypotheses


def generate_task(
    train_size: int = 6000,
    seed: int = 0,
    *,
    dev_size: Optional[int] = None,
    test_size: Optional[int] = None,
    ood_size: Optional[int] = None,
    ood_dev_size: Optional[int] = None,
    shortcut_rate: float = 0.8,
    ood_shortcut_rate: float = 0.0,
    label_noise: float = 0.02,
) -> dict:
    """Generate the embedded task: a dict of `datasets.Dataset` for train, dev, test, ood_dev and ood.

    Each has columns `text` (premise), `text_pair` (hypothesis), `label` (ClassLabel over
    `LABEL_NAMES`), `construction` (see `CONSTRUCTIONS`) and `noisy` (the label was flipped).
    dev, test and ood_dev default to train_size / 6 rows each and ood to train_size / 3.
    """
    import datasets
    import pyarrow as pa

    sizes = {
        "train": train_size,
        "dev": dev_size if dev_size is not None else max(3, round(train_size / 6)),
        "test": test_size if test_size is not None else max(3, round(train_size / 6)),
        "ood_dev": ood_dev_size if ood_dev_size is not None else max(3, round(train_size / 6)),
        "ood": ood_size if ood_size is not None else max(3, round(train_size / 3)),
    }
    for name, size in sizes.items():
        require(
            isinstance(size, int) and not isinstance(size, bool) and size >= 3,
            f"{name} size of the embedded task must be an integer of at least 3, got {size!r}",
        )
    require(isinstance(seed, int) and seed >= 0, f"embedded task seed must be a non-negative integer, got {seed!r}")
    for name, rate in (("shortcut_rate", shortcut_rate), ("ood_shortcut_rate", ood_shortcut_rate)):
        require(0.0 <= rate <= 1.0, f"{name} must be in [0, 1], got {rate!r}")
    require(0.0 <= label_noise < 2 / 3, f"label_noise must be in [0, 2/3), got {label_noise!r}")

    features = datasets.Features(
        {
            "text": datasets.Value("string"),
            "text_pair": datasets.Value("string"),
            "label": datasets.ClassLabel(names=list(LABEL_NAMES)),
            "construction": datasets.Value("string"),
            "noisy": datasets.Value("bool"),
        }
    )
    seen: set = set()
    out = {}
    for name in ("ood", "ood_dev", "test", "dev", "train"):
        rng = np.random.default_rng([seed, SPLITS.index(name)])
        rate = ood_shortcut_rate if name.startswith("ood") else shortcut_rate
        kinds, premises, hypotheses = _draw_split(rng, sizes[name], rate, seen)
        labels = kinds // 2
        noisy = np.zeros(len(kinds), dtype=bool)
        if name == "train" and label_noise > 0:
            flip = rng.choice(len(kinds), size=int(round(label_noise * len(kinds))), replace=False)
            noisy[flip] = True
            labels[flip] = (labels[flip] + rng.integers(1, len(LABEL_NAMES), size=len(flip))) % len(LABEL_NAMES)
        # Arrow arrays, not lists: `from_dict` would otherwise encode every value in Python.
        out[name] = datasets.Dataset.from_dict(
            {
                "text": pa.array(premises, type=pa.string()),
                "text_pair": pa.array(hypotheses, type=pa.string()),
                "label": pa.array(labels),
                "construction": pa.array(_table(CONSTRUCTIONS)[kinds], type=pa.string()),
                "noisy": pa.array(noisy),
            },
            features=features,
        )
    return {name: out[name] for name in SPLITS}
