"""Snapshots: the split follows the image, the version follows the content."""

from datetime import datetime

import pytest

from functions.lib import catalog
from functions.lib.store import open_store
from workflows.lib import dataset

pytestmark = pytest.mark.integration


def ingested(engine, n: int, label: str = "grass") -> None:
    for i in range(n):
        sha = f"{i:064x}"[::-1]
        catalog.record(
            engine,
            f"https://example.org/{label}/{i}.jpg",
            label,
            status="ingested",
            sha256=sha,
            url_s3=f"file:///x/raw/{label}/{sha}.jpg",
            size_bytes=1,
        )


def test_the_same_rows_give_the_same_version_and_the_same_manifest(db_url: str, store_url: str) -> None:
    engine, store = catalog.open_catalog(db_url), open_store(store_url)
    ingested(engine, 30)
    catalog.record(engine, "https://example.org/pending.jpg", "grass", status="pending")
    version, examples, new_labels = dataset.snapshot(engine, store)
    again, _, _ = dataset.snapshot(engine, store)
    assert again == version
    assert dataset.load(store, version) == examples
    assert (len(examples), new_labels) == (30, 0)  # none came through validate-label
    assert list(store.keys("datasets/")) == [f"datasets/{version}/manifest.csv"]
    assert store.get(f"datasets/{version}/manifest.csv").decode().splitlines()[0] == "key,label,sha256,split"

    catalog.record(engine, "https://example.org/new.jpg", "dandelion", status="ingested", sha256="f" * 64)
    grown, more, _ = dataset.snapshot(engine, store)
    assert grown != version
    assert {e.sha256: e.split for e in examples}.items() <= {e.sha256: e.split for e in more}.items()


def test_split_is_a_pure_function_of_the_digest() -> None:
    digests = [f"{i:08x}" + "0" * 56 for i in range(1000)]
    splits = [dataset.split_of(d) for d in digests]
    assert splits == [dataset.split_of(d) for d in digests]
    assert {s: splits.count(s) for s in ("train", "val", "test")} == {"train": 700, "val": 100, "test": 200}


def test_nothing_ingested_cannot_be_snapshotted(tmp_path) -> None:
    engine = catalog.open_catalog(f"sqlite:///{tmp_path / 'c.db'}")
    with pytest.raises(ValueError, match="no ingested images to snapshot"):
        dataset.snapshot(engine, open_store((tmp_path / "o").as_uri()))


def test_where_an_image_has_two_labels_the_admins_latest_decision_wins(db_url: str, store_url: str) -> None:
    engine, store = catalog.open_catalog(db_url), open_store(store_url)
    sha = "a" * 64
    catalog.record(engine, "https://example.org/a.jpg", "grass", status="ingested", sha256=sha)
    for label, when in (("grass", datetime(2026, 1, 1)), ("dandelion", datetime(2026, 6, 1))):
        catalog.record(
            engine,
            f"upload://{label}",
            label,
            status="ingested",
            sha256=sha,
            decided_by="admin",
            decided_at=when,
        )
    _, examples, _ = dataset.snapshot(engine, store)
    assert [(e.label, e.key) for e in examples] == [("dandelion", f"raw/dandelion/{sha}.jpg")]
