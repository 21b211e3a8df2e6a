"""The pretrained backbone's feature cache and the label audit, on real photos in real stores and
catalogs: the cache is hit on a second run and missed after a backbone change; cleanlab finds labels this
test flips on purpose, and they enter the review queue once."""

import hashlib
from datetime import UTC, datetime

import numpy as np
import pytest

from functions.lib import catalog
from functions.lib.labels import LABELS
from functions.lib.layout import raw_key
from functions.lib.preprocessing import Preprocessing
from functions.lib.store import ObjectStore, open_store
from functions.lib.submissions import queue_suspects, submissions
from tests.support import DATASET
from workflows.lib import audit, dataset, features, pretrained

pytestmark = pytest.mark.integration

PER_CLASS = 20
FLIPPED = {("dandelion", 3), ("grass", 7), ("dandelion", 11)}  # (true label, photo number)


def stored(store: ObjectStore, photos: list[tuple[str, int]], flipped=frozenset()) -> list[dataset.Example]:
    """Photos in the store under the label this test gives them (the wrong one for `flipped`)."""
    examples = []
    for label, n in photos:
        data = (DATASET / label / f"{n:08d}.jpg").read_bytes()
        sha256 = hashlib.sha256(data).hexdigest()
        given = next(other for other in LABELS if other != label) if (label, n) in flipped else label
        store.put(raw_key(given, sha256), data, "image/jpeg")
        examples.append(dataset.Example(raw_key(given, sha256), given, sha256, dataset.split_of(sha256)))
    return examples


def test_features_are_cached_per_image_and_backbone(store_url: str, monkeypatch) -> None:
    store = open_store(store_url)
    examples = stored(store, [(label, n) for label in LABELS for n in range(4)])
    first = features.features(store, examples[:6])
    assert (first.computed, first.cached, first.values.shape) == (6, 0, (6, pretrained.FEATURES))
    again = features.features(store, examples)  # two new images: only theirs are computed
    assert (again.computed, again.cached) == (2, 6)
    np.testing.assert_array_equal(again.values[:6], first.values)
    assert len(list(store.keys("features/"))) == 8

    # Another input size is another backbone identity: nothing cached under the old one is served.
    wider = Preprocessing(input_size=160, resize=182, mean=(127 / 255,) * 3, std=(128 / 255,) * 3)
    old_identity = pretrained.identity()
    monkeypatch.setattr(pretrained, "PREPROCESSING", wider)
    assert pretrained.identity() != old_identity
    changed = features.features(store, examples)
    assert (changed.computed, changed.cached) == (8, 0)
    assert not np.allclose(changed.values, again.values)
    assert len(list(store.keys(f"features/{old_identity}/"))) == 8  # the old ones stay, for their backbone


def test_the_audit_finds_labels_flipped_on_purpose_and_queues_them_once(db_url: str, tmp_path) -> None:
    store, engine = open_store((tmp_path / "objects").as_uri()), catalog.open_catalog(db_url)
    photos = [(label, n) for label in LABELS for n in range(PER_CLASS)]
    examples = stored(store, photos, FLIPPED)
    for example in examples:
        catalog.record(
            engine,
            f"https://example.org/{example.sha256}.jpg",
            example.label,
            status="ingested",
            sha256=example.sha256,
            url_s3=store.url(example.key),
        )
    version, snapshot, _ = dataset.snapshot(engine, store)

    result = audit.audit(store, snapshot, seed=0)
    flipped = {
        e.sha256: label for e, (label, n) in zip(examples, photos, strict=True) if (label, n) in FLIPPED
    }
    found = {suspect.sha256: suspect for suspect in result.suspects}
    assert set(flipped) <= set(found), "every label flipped on purpose is suspected"
    assert len(found) <= len(flipped) + 2, "and few others"
    for sha256, true_label in flipped.items():
        assert found[sha256].suggested == true_label
        assert found[sha256].self_confidence < 0.5
        assert found[sha256].key == raw_key(found[sha256].given, sha256)
    confidences = [suspect.self_confidence for suspect in result.suspects]
    assert confidences == sorted(confidences), "the most doubtful first"
    assert (result.examples, result.features_computed) == (2 * PER_CLASS, 2 * PER_CLASS)

    # An image an admin already decided on is not put before them again.
    decided_sha = next(iter(flipped))
    with engine.begin() as connection:
        decided = {"decided_by": "admin", "decided_at": datetime.now(UTC).replace(tzinfo=None)}
        assert catalog.decide_on_image(connection, decided_sha, decided) == 1
    assert queue_suspects(engine, result.suspects, "run-1") == len(found) - 1
    rerun = audit.audit(store, dataset.load(store, version), seed=0)  # from the cache, same suspects
    assert rerun.features_computed == 0 and rerun.suspects == result.suspects
    assert queue_suspects(engine, rerun.suspects, "run-2") == 0
    with engine.connect() as connection:
        queued = (
            connection.execute(
                submissions.select().where(submissions.c.kind == "suspect").order_by(submissions.c.id)
            )
            .mappings()
            .all()
        )
    assert [row["sha256"] for row in queued] == [s.sha256 for s in result.suspects if s.sha256 != decided_sha]
    for row in queued:
        suspect = found[row["sha256"]]
        assert (row["label"], row["predicted_class"], row["object_key"], row["model_version"]) == (
            suspect.given,
            suspect.suggested,
            suspect.key,
            "run-1",
        )
        assert row["confidence"] == pytest.approx(1 - suspect.self_confidence)
        assert row["status"] == "pending"
