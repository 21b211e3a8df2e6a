"""The three functions' images, each run as its Knative revision runs it (tests/images/containers.py):
predict (started by tests/images/conftest.py) serves the champion from a mounted store with the
probabilities onnxruntime gives in this process; ingest-one-url and validate-label write into MariaDB and
moto's S3 server and refuse what the process tests say they refuse."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator

import numpy as np
import pytest

from functions.lib import catalog, retrain
from functions.lib.labels import LABELS
from functions.lib.store import open_store
from tests.conftest import DATASET, canonical
from tests.images.containers import UID, Container, pod_environment
from tests.integration.test_ingest_function import expected_row
from tests.integration.test_predict_function import expected
from tests.integration.test_validate_label import ADMIN, BAD_SUBMISSIONS, TOKEN, Receiver, wait_for

pytestmark = pytest.mark.images

DANDELION = (DATASET / "dandelion" / "00000001.jpg").read_bytes()
GRASS = (DATASET / "grass" / "00000003.jpg").read_bytes()
COLD_START_LIMIT = 30  # seconds from `podman run` to the first 200 from /health, model loaded


def test_predict_serves_the_champion_from_the_mounted_store(predict: Container) -> None:
    health = predict.http.get(f"{predict.url}/health", timeout=30)
    assert (health.status_code, health.json()) == (
        200,
        {"status": "healthy", "model_loaded": True, "model_version": "1", "pinned": False},
    )
    assert predict.cold_start is not None and predict.cold_start < COLD_START_LIMIT
    print(f"predict's cold start in its container: {predict.cold_start:.2f} s")


def test_predict_classifies_real_photos_as_onnxruntime_does_here(
    predict: Container, tiny_models: list
) -> None:
    files = [("file", ("d.jpg", DANDELION, "image/jpeg")), ("file", ("g.jpg", GRASS, "image/jpeg"))]
    response = predict.http.post(f"{predict.url}/predict", files=files, timeout=30)
    assert response.status_code == 200
    for answer, data in zip(response.json(), (DANDELION, GRASS), strict=True):
        probabilities = expected(tiny_models[0], data)
        assert answer["probabilities"] == pytest.approx(
            dict(zip(LABELS, probabilities, strict=True)), abs=1e-6
        )
        assert answer["predicted_class"] == LABELS[int(np.argmax(probabilities))]
        assert answer["model_version"] == "1"
    refused = predict.http.post(f"{predict.url}/predict", data=b"not an image", timeout=30)
    assert refused.status_code == 415 and refused.json()["error"] == "not_an_image"


def test_predict_cannot_write_outside_tmp(predict: Container) -> None:
    """readOnlyRootFilesystem: the image's own files, and the mounted store, are out of the user's reach."""
    assert predict.exec("id", "-u").stdout.strip() == str(UID)
    for path in ("/app/functions/predict.py", "/opt/venv/new", "/store/models/champion.json", "/var/tmp/x"):
        written = predict.exec("sh", "-c", f"echo x > {path}")
        assert written.returncode != 0, path
        assert "Read-only file system" in written.stderr, written.stderr
    assert predict.exec("sh", "-c", "echo x > /tmp/x && cat /tmp/x").stdout == "x\n"


def test_ingest_one_url_stores_into_s3_and_mariadb(
    mysql_url: str, s3_url: str, source: str, ingest: Container
) -> None:
    engine, store = catalog.open_catalog(mysql_url), open_store(s3_url)
    url, data = canonical("dandelion", 7), (DATASET / "dandelion" / "00000007.jpg").read_bytes()
    first = ingest.http.post(f"{ingest.url}/", json={"url": url, "label": "dandelion"}, timeout=60)
    assert (first.status_code, first.json()) == (
        201,
        {"outcome": "ingested", **expected_row(url, "dandelion", data, store)},
    )
    again = ingest.http.post(f"{ingest.url}/", json={"url": url, "label": "dandelion"}, timeout=60)
    assert (again.status_code, again.json()) == (200, {**first.json(), "outcome": "unchanged"})
    assert store.get(f"raw/dandelion/{hashlib.sha256(data).hexdigest()}.jpg") == data
    assert catalog.count(engine) == 1
    for body, status, error, message in [  # as tests/integration/test_ingest_function.py has them
        (
            {"url": canonical("grass", 20), "label": "daisy"},
            400,
            "bad_request",
            "label must be one of dandelion, grass, got 'daisy'",
        ),
        (
            {"url": "ftp://example.org/x.jpg", "label": "grass"},
            400,
            "bad_request",
            "only absolute http and https URLs can be ingested, got 'ftp://example.org/x.jpg'",
        ),
        ({"url": f"{source}/hostile/page.jpg", "label": "grass"}, 415, "not_an_image", "not an image"),
        ({"url": f"{source}/hostile/bomb.png", "label": "grass"}, 413, "too_large", "the image has"),
    ]:
        refused = ingest.http.post(f"{ingest.url}/", json=body, timeout=60)
        assert (refused.status_code, refused.json()["error"]) == (status, error), body
        assert refused.json()["message"].startswith(message), refused.json()
    assert catalog.count(engine) == 1
    assert list(store.keys("raw/")) == [f"raw/dandelion/{hashlib.sha256(data).hexdigest()}.jpg"]


def test_ingest_one_url_refuses_the_hosts_loopback_unless_allowed(
    mysql_url: str, s3_url: str, source: str
) -> None:
    """On the host's network the container could reach every loopback service: it refuses them."""
    container = Container(
        "ingest-one-url", pod_environment(DANDELION_DB_URL=mysql_url, DANDELION_STORE_URL=s3_url)
    )
    try:
        for url in (f"{source}/dandelion/00000007.jpg", "http://127.0.0.1:3306/", "http://[::1]:9/x.jpg"):
            refused = container.http.post(
                f"{container.url}/", json={"url": url, "label": "grass"}, timeout=60
            )
            assert (refused.status_code, refused.json()["error"]) == (403, "url_refused"), url
        assert catalog.count(catalog.open_catalog(mysql_url)) == 0
    finally:
        container.stop()


@pytest.fixture
def labels(mysql_url: str, s3_url: str) -> Iterator[tuple[Container, Receiver]]:
    receiver = Receiver()
    env = pod_environment(
        DANDELION_DB_URL=mysql_url,
        DANDELION_STORE_URL=s3_url,
        DANDELION_ADMIN_TOKEN=TOKEN,
        DANDELION_RETRAIN_WEBHOOK=receiver.url,
        DANDELION_RETRAIN_MIN_NEW_LABELS="1",
        DANDELION_MAX_UPLOAD_BYTES=str(2 * 1024 * 1024),
    )
    container = Container("validate-label", env)
    yield container, receiver
    container.stop()
    receiver.close()


def test_validate_label_stores_a_submission_and_an_accepted_label(
    labels: tuple[Container, Receiver], mysql_url: str, s3_url: str
) -> None:
    container, receiver = labels
    files = {"file": ("photo.jpg", DANDELION, "image/jpeg")}
    submitted = container.http.post(
        f"{container.url}/submissions", files=files, data={"label": "dandelion"}, timeout=30
    )
    assert (submitted.status_code, submitted.json()) == (202, {"id": 1, "status": "pending", "new": True})
    digest = hashlib.sha256(DANDELION).hexdigest()
    store = open_store(s3_url)
    assert store.get(f"incoming/{digest}.jpg") == DANDELION
    accepted = container.http.post(
        f"{container.url}/submissions/1", json={"decision": "accept"}, headers=ADMIN, timeout=30
    )
    assert accepted.status_code == 200
    assert (accepted.json()["status"], accepted.json()["decided_label"]) == ("accepted", "dandelion")
    row = catalog.get(catalog.open_catalog(mysql_url), f"upload://{digest}")
    assert (row["label"], row["status"], row["sha256"]) == ("dandelion", "ingested", digest)
    assert store.get(f"raw/dandelion/{digest}.jpg") == DANDELION
    # One accepted label is the threshold here: the container posts the retrain CloudEvent to the webhook.
    wait_for(lambda: len(receiver.events) == 1)
    assert (receiver.events[0]["type"], receiver.events[0].data["accepted_since_training"]) == (
        retrain.LABELS_EVENT,
        1,
    )


def test_validate_label_refuses_every_bad_submission_and_stores_nothing(
    labels: tuple[Container, Receiver], s3_url: str
) -> None:
    container, _receiver = labels
    for name, (kwargs, status, error, message) in BAD_SUBMISSIONS.items():
        answer = container.http.post(f"{container.url}/submissions", timeout=30, **kwargs)
        assert (answer.status_code, answer.json()) == (status, {"error": error, "message": message}), name
    for headers in ({}, {"Authorization": "Bearer wrong"}):
        denied = container.http.get(f"{container.url}/submissions", headers=headers, timeout=30)
        assert denied.status_code == 401
    assert list(open_store(s3_url).keys("incoming/")) == []
    listing = container.http.get(f"{container.url}/submissions", headers=ADMIN, timeout=30)
    assert listing.json() == {"submissions": []}
