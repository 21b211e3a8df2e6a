"""Dataset snapshots: the ingested rows frozen into `datasets/<version>/manifest.csv`.

An image's split is a pure function of its SHA-256, so it never changes split across snapshots and one
run's test split is comparable with the next; the version is derived from the manifest's content, so the
same rows give the same version.
"""

from __future__ import annotations

import csv
import hashlib
import io
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from PIL import Image
from sqlalchemy import Engine

from functions.lib import catalog, retrain
from functions.lib.layout import manifest_key, raw_key
from functions.lib.preprocessing import Preprocessing
from functions.lib.store import ObjectStore

# Buckets of 100 by the first 8 hex digits of the SHA-256: 70 % train, 10 % validation, 20 % test.
SPLITS = (("train", 70), ("val", 80), ("test", 100))
FIELDS = ("key", "label", "sha256", "split")


@dataclass(frozen=True)
class Example:
    key: str
    label: str
    sha256: str
    split: str


def split_of(sha256: str) -> str:
    bucket = int(sha256[:8], 16) % 100
    return next(name for name, upper in SPLITS if bucket < upper)


def _examples(rows: list[tuple[str, str]]) -> list[Example]:
    by_sha: dict[str, str] = {}
    for label, sha in rows:  # the same bytes under two URLs are one example
        by_sha.setdefault(sha, label)
    return [Example(raw_key(label, sha), label, sha, split_of(sha)) for sha, label in sorted(by_sha.items())]


def _to_csv(examples: list[Example]) -> bytes:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(FIELDS)
    writer.writerows((e.key, e.label, e.sha256, e.split) for e in examples)
    return out.getvalue().encode()


def snapshot(engine: Engine, store: ObjectStore) -> tuple[str, list[Example], int]:
    """Freeze the ingested rows; returns (dataset version, examples, how many of them are labels accepted
    since the last training). Writing it twice is a no-op."""
    # One transaction: the rows and the count of new labels among them are read together.
    with catalog.unavailable_on_outage("catalog"), engine.begin() as connection:
        examples = _examples(catalog.ingested_images(connection))
        new_labels = retrain.accepted_since_training(connection)
    if not examples:
        raise ValueError("no ingested images to snapshot: run extract-images first")
    data = _to_csv(examples)
    version = hashlib.sha256(data).hexdigest()[:16]  # content-derived: the same rows, the same version
    if not store.exists(manifest_key(version)):
        store.put(manifest_key(version), data, "text/csv")
    return version, examples, new_labels


def load(store: ObjectStore, version: str) -> list[Example]:
    reader = csv.DictReader(io.StringIO(store.get(manifest_key(version)).decode()))
    return [Example(**{k: row[k] for k in FIELDS}) for row in reader]


def split(examples: list[Example], name: str) -> list[Example]:
    return [e for e in examples if e.split == name]


def load_images(
    store: ObjectStore, examples: list[Example], prep: Preprocessing
) -> tuple[list[Image.Image], list[int]]:
    """The examples' images, resized once (`prep.resized`), and their class indices. Threads, because
    most of the time is the store's round trips and Pillow's decoding, which releases the GIL."""

    def one(example: Example) -> Image.Image:
        return prep.resized(Image.open(io.BytesIO(store.get(example.key))))

    with ThreadPoolExecutor(8) as pool:
        images = list(pool.map(one, examples))
    return images, [prep.classes.index(e.label) for e in examples]
