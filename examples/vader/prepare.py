"""A real task with a natural distribution shift, from a package registry: movie reviews → products.

The PyPI source distribution of `vaderSentiment` 3.3.2 (MIT) ships the human-rated sentences of
Hutto & Gilbert, "VADER" (ICWSM 2014): each line `ID <TAB> mean rating (-4..+4, at least 20
raters) <TAB> text`. Movie-review snippets (Rotten Tomatoes, from Pang & Lee) are the training
domain; Amazon product-review snippets (Hu & Liu 2004), tweets or NYT editorial snippets the OOD
one. A mean above +0.5 is `positive`, below -0.5 `negative`; the rest is dropped as neutral, as
are duplicate texts and OOD texts that also occur among the movies.

Writes a folder `ftft run` reads as it is (`data.source: <folder>`): train/dev/test (movies,
80/10/10, stratified) and ood_dev/ood (the OOD domain, 30/70, whole reviews or editorials kept on
one side), each a jsonl of {"id", "text", "label"}.

    python examples/vader/prepare.py [--ood amazon|tweets|nyt] [--train-size N] [--out data/vader_amazon]

`--train-size N` keeps a stratified random N of the training rows (dev, test and the OOD splits
stay whole), for machines where the full 8,033 take too long.
"""

from __future__ import annotations

import argparse
import io
import random
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from jsonl_splits import keep_stratified, stratified, text_key, write_splits  # noqa: E402

PACKAGE = "vaderSentiment==3.3.2"
INNER = "vaderSentiment-3.3.2/additional_resources/hutto_ICWSM_2014.tar.gz"
FILES = {
    "movies": "movieReviewSnippets_GroundTruth.txt",
    "amazon": "amazonReviewSnippets_GroundTruth.txt",
    "tweets": "tweets_GroundTruth.txt",
    "nyt": "nytEditorialSnippets_GroundTruth.txt",
}
NEUTRAL_BAND = 0.5
SEED = 13


def fetch_files() -> dict:
    """The four ground-truth files' text, from the sdist that `pip download` brings."""
    with tempfile.TemporaryDirectory() as folder:
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "download",
                "--quiet",
                "--no-deps",
                "--no-binary",
                ":all:",
                PACKAGE,
                "-d",
                folder,
            ],
            check=True,
        )
        sdist = next(Path(folder).glob("vaderSentiment-*.tar.gz"))
        with tarfile.open(sdist) as outer, tarfile.open(fileobj=io.BytesIO(outer.extractfile(INNER).read())) as inner:
            members = {Path(m.name).name: m for m in inner.getmembers()}
            return {
                domain: inner.extractfile(members[name]).read().decode("utf-8", errors="replace")
                for domain, name in FILES.items()
            }


def labelled(domain: str, text: str) -> list[dict]:
    rows, seen = [], set()
    for line in text.splitlines():
        parts = line.strip("\r").split("\t")
        if len(parts) < 3 or abs(float(parts[1])) <= NEUTRAL_BAND:
            continue
        sentence = "\t".join(parts[2:]).strip()
        key = text_key(sentence)
        if sentence and key not in seen:
            seen.add(key)
            rows.append(
                {
                    "id": f"{domain}-{parts[0].strip()}",
                    "text": sentence,
                    "label": "positive" if float(parts[1]) > 0 else "negative",
                }
            )
    return rows


def by_document(rows: list[dict], first_share: float, rng: random.Random) -> list[list[dict]]:
    """Two parts with whole documents (the ID before `_`: a review or an editorial) on one side."""
    documents = sorted({r["id"].split("_")[0] for r in rows})
    if len(documents) == len(rows):  # one sentence a document (tweets)
        return stratified(rows, [first_share, 1 - first_share], rng)
    rng.shuffle(documents)
    first, count = set(), 0
    sizes = {d: sum(r["id"].split("_")[0] == d for r in rows) for d in documents}
    for document in documents:
        if count >= first_share * len(rows):
            break
        first.add(document)
        count += sizes[document]
    return [
        [r for r in rows if r["id"].split("_")[0] in first],
        [r for r in rows if r["id"].split("_")[0] not in first],
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ood", choices=["amazon", "tweets", "nyt"], default="amazon")
    parser.add_argument("--train-size", type=int, default=None, help="keep this many training rows")
    parser.add_argument("--out", default=None, help="output folder (default data/vader_<ood>)")
    args = parser.parse_args()
    out = Path(args.out or f"data/vader_{args.ood}")
    texts = fetch_files()
    movies = labelled("movies", texts["movies"])
    in_domain = {text_key(r["text"]) for r in movies}
    shifted = [r for r in labelled(args.ood, texts[args.ood]) if text_key(r["text"]) not in in_domain]
    rng = random.Random(SEED)
    train, dev, test = stratified(movies, [0.8, 0.1, 0.1], rng)
    if args.train_size is not None:
        if not 2 <= args.train_size <= len(train):
            parser.error(f"--train-size must be between 2 and {len(train)}, got {args.train_size}")
        train = keep_stratified(train, args.train_size, rng)
    ood_dev, ood = by_document(shifted, 0.3, rng)
    write_splits(out, {"train": train, "dev": dev, "test": test, "ood_dev": ood_dev, "ood": ood})


if __name__ == "__main__":
    main()
