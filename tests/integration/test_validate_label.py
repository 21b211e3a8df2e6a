"""validate-label as real functions-framework processes, on the embedded default and on MariaDB + S3, with
a real HTTP receiver standing in for the retrain webhook (it counts the CloudEvents it gets)."""

import base64
import hashlib
import http.server
import io
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests
from cloudevents.http import CloudEvent, from_http, to_binary, to_structured
from openapi_core.contrib.requests import RequestsOpenAPIRequest, RequestsOpenAPIResponse
from PIL import Image
from sqlalchemy import select

from functions.lib import catalog, retrain
from functions.lib.layout import raw_key
from functions.lib.store import open_store
from functions.lib.submissions import Suspect, queue_suspects
from tests.conftest import DATASET, FunctionProcess, bomb_png, openapi
from workflows.lib import dataset

pytestmark = pytest.mark.integration

TOKEN = "s3cret-admin-token"
ADMIN = {"Authorization": f"Bearer {TOKEN}"}
THRESHOLD = 3
DANDELION = (DATASET / "dandelion" / "00000004.jpg").read_bytes()
GRASS = (DATASET / "grass" / "00000004.jpg").read_bytes()


def photo(n: int) -> bytes:
    """A distinct real photo per n (the same image is one submission)."""
    return (DATASET / ("dandelion", "grass")[n % 2] / f"{20 + n:08d}.jpg").read_bytes()


class Receiver:
    """The retrain webhook: answers `fail` 500s first, then 202, and keeps every CloudEvent it accepted."""

    def __init__(self, fail: int = 0) -> None:
        self.events: list[CloudEvent] = []
        self.refused = 0
        self.fail = fail
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                if receiver.refused < receiver.fail:
                    receiver.refused += 1
                    self.send_response(500)
                else:
                    receiver.events.append(from_http(dict(self.headers), body))
                    self.send_response(202)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *_args: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_port}/retrain"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class Labels:
    """One or more validate-label instances sharing a catalog and a store, as Knative runs them."""

    def __init__(
        self, tmp: Path, db_url: str, store_url: str, webhook: str, instances: int = 1, **env
    ) -> None:
        base = {
            "DANDELION_HOME": str(tmp / "home"),
            "DANDELION_DB_URL": db_url,
            "DANDELION_STORE_URL": store_url,
            "DANDELION_ADMIN_TOKEN": TOKEN,
            "DANDELION_RETRAIN_WEBHOOK": webhook,
            "DANDELION_RETRAIN_MIN_NEW_LABELS": str(THRESHOLD),
            "DANDELION_OUTBOX_RETRY_SECONDS": "0.5",
            "DANDELION_MAX_UPLOAD_BYTES": str(2 * 1024 * 1024),
        }
        import os

        environment = {k: v for k, v in (dict(os.environ) | base | env).items() if v is not None}
        self.instances = [FunctionProcess("validate-label", environment) for _ in range(instances)]
        self.url = self.instances[0].url
        self.engine = catalog.open_catalog(db_url)
        self.store = open_store(store_url)

    def submit(self, image: bytes, label: str, url: str | None = None, **fields) -> requests.Response:
        files = {"file": ("photo.jpg", image, "image/jpeg")}
        return requests.post(
            f"{url or self.url}/submissions", files=files, data={"label": label, **fields}, timeout=30
        )

    def decide(self, submission_id: int, url: str | None = None, **body) -> requests.Response:
        return requests.post(
            f"{url or self.url}/submissions/{submission_id}", json=body, headers=ADMIN, timeout=30
        )

    def stop(self) -> None:
        for instance in self.instances:
            instance.stop()


@pytest.fixture
def receiver():
    server = Receiver()
    yield server
    server.close()


@pytest.fixture(params=["embedded", "mariadb-s3"])
def backend(request, tmp_path) -> tuple[str, str]:
    """(catalog URL, store URL): the embedded default, or MariaDB and S3."""
    if request.param == "embedded":
        return f"sqlite:///{tmp_path / 'c.db'}", (tmp_path / "objects").as_uri()
    return request.getfixturevalue("mysql_url"), request.getfixturevalue("s3_url")


@pytest.fixture
def labels(tmp_path, receiver):
    db_url, store_url = f"sqlite:///{tmp_path / 'c.db'}", (tmp_path / "objects").as_uri()
    service = Labels(tmp_path, db_url, store_url, receiver.url)
    yield service
    service.stop()


# ---------------------------------------------------------------- submissions


def test_a_submission_is_stored_as_sent_and_the_same_image_is_one_submission(labels) -> None:
    first = labels.submit(
        DANDELION, "dandelion", predicted_class="grass", confidence="0.61", model_version="3"
    )
    assert (first.status_code, first.json()) == (202, {"id": 1, "status": "pending", "new": True})
    again = labels.submit(DANDELION, "grass")
    assert (again.status_code, again.json()) == (202, {"id": 1, "status": "pending", "new": False})
    digest = hashlib.sha256(DANDELION).hexdigest()
    assert labels.store.get(f"incoming/{digest}.jpg") == DANDELION
    listing = requests.get(f"{labels.url}/submissions", headers=ADMIN, timeout=30).json()["submissions"]
    assert [
        (s["id"], s["label"], s["predicted_class"], s["confidence"], s["model_version"]) for s in listing
    ] == [(1, "dandelion", "grass", 0.61, "3")]
    assert listing[0]["status"] == "pending" and listing[0]["image_url"] == "/submissions/1/image"
    image = requests.get(f"{labels.url}/submissions/1/image", headers=ADMIN, timeout=30)
    assert (image.status_code, image.headers["Content-Type"], image.content) == (200, "image/jpeg", DANDELION)


def test_json_and_cloudevent_submissions_in_both_modes(labels) -> None:
    body = {"image": base64.b64encode(GRASS).decode(), "label": "grass", "model_version": "2"}
    assert requests.post(f"{labels.url}/submissions", json=body, timeout=30).json()["id"] == 1
    for n, encode in enumerate((to_binary, to_structured), start=1):
        data = body | {"image": base64.b64encode(photo(n)).decode()}
        event = CloudEvent({"type": "dev.dandelion.submission", "source": "test"}, data)
        headers, payload = encode(event)
        answer = requests.post(f"{labels.url}/submissions", data=payload, headers=headers, timeout=30)
        assert (answer.status_code, answer.json()["id"]) == (202, 1 + n)


def png(size: tuple[int, int]) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, (10, 200, 10)).save(out, format="PNG")
    return out.getvalue()


BAD_SUBMISSIONS = {
    "no label": (
        {"files": {"file": ("a.jpg", GRASS)}},
        400,
        "bad_request",
        "field 'label' is required: dandelion or grass",
    ),
    "unknown label": (
        {"files": {"file": ("a.jpg", GRASS)}, "data": {"label": "daisy"}},
        400,
        "bad_request",
        "label must be one of dandelion, grass, got 'daisy'",
    ),
    "no file": (
        {"data": {"label": "grass"}, "files": {"other": ("a", b"x")}},
        400,
        "bad_request",
        "send exactly one image as the multipart field 'file'",
    ),
    "two files": (
        {"files": [("file", ("a.jpg", GRASS)), ("file", ("b.jpg", DANDELION))], "data": {"label": "grass"}},
        400,
        "bad_request",
        "send exactly one image as the multipart field 'file'",
    ),
    "empty file": (
        {"files": {"file": ("a.jpg", b"")}, "data": {"label": "grass"}},
        400,
        "bad_request",
        "the 'file' part is empty",
    ),
    "not an image": (
        {"files": {"file": ("a.jpg", b"<html>no</html>")}, "data": {"label": "grass"}},
        415,
        "not_an_image",
        "not an image in an accepted format (JPEG, PNG, WEBP, GIF, BMP)",
    ),
    "decompression bomb": (
        {"files": {"file": ("b.png", bomb_png())}, "data": {"label": "grass"}},
        413,
        "too_large",
        "the image has 144000000 pixels, over the 40000000-pixel limit",
    ),
    "confidence not a number": (
        {"files": {"file": ("a.jpg", GRASS)}, "data": {"label": "grass", "confidence": "high"}},
        400,
        "bad_request",
        "confidence must be a number",
    ),
    "confidence out of range": (
        {"files": {"file": ("a.jpg", GRASS)}, "data": {"label": "grass", "confidence": "1.5"}},
        400,
        "bad_request",
        "confidence must be between 0 and 1, got 1.5",
    ),
    "unknown predicted class": (
        {"files": {"file": ("a.jpg", GRASS)}, "data": {"label": "grass", "predicted_class": "rose"}},
        400,
        "bad_request",
        "predicted_class must be one of dandelion, grass, got 'rose'",
    ),
    "JSON without image": (
        {"json": {"label": "grass"}},
        400,
        "bad_request",
        "field 'image' is required: the image in base64",
    ),
    "JSON with bad base64": (
        {"json": {"label": "grass", "image": "%%%"}},
        400,
        "bad_request",
        "field 'image' is not valid base64",
    ),
    "JSON with characters outside base64's ASCII": (  # found by fuzzing: was a 500
        {"json": {"label": "grass", "image": "aé=="}},
        400,
        "bad_request",
        "field 'image' is not valid base64",
    ),
    "not JSON": (
        {"data": b"{oops", "headers": {"Content-Type": "application/json"}},
        400,
        "bad_request",
        "the body is not valid JSON",
    ),
    "too large": (
        {"files": {"file": ("big.png", b"\x89PNG" + bytes(3 * 1024 * 1024))}, "data": {"label": "grass"}},
        413,
        "too_large",
        f"the request body is over the {2 * 1024 * 1024 + 64 * 1024}-byte limit",
    ),
}


@pytest.mark.parametrize("name", list(BAD_SUBMISSIONS))
def test_every_bad_submission_is_a_4xx_and_stores_nothing(labels, name: str) -> None:
    kwargs, status, error, message = BAD_SUBMISSIONS[name]
    answer = requests.post(f"{labels.url}/submissions", timeout=30, **kwargs)
    assert (answer.status_code, answer.json()) == (status, {"error": error, "message": message})
    assert list(labels.store.keys("incoming/")) == []
    listing = requests.get(f"{labels.url}/submissions", headers=ADMIN, timeout=30).json()
    assert listing == {"submissions": []}


# ---------------------------------------------------------------- the admin


@pytest.mark.parametrize(
    ("headers", "status", "error"),
    [
        ({}, 401, "unauthorized"),
        ({"Authorization": "Bearer wrong"}, 401, "unauthorized"),
        ({"Authorization": f"Basic {TOKEN}"}, 401, "unauthorized"),
        ({"Authorization": f"Bearer {TOKEN}x"}, 401, "unauthorized"),
        (ADMIN, 200, None),
    ],
)
def test_admin_routes_need_the_token(labels, headers: dict, status: int, error: str | None) -> None:
    labels.submit(GRASS, "grass")
    for method, path in (
        ("GET", "/submissions"),
        ("GET", "/submissions/1"),
        ("GET", "/submissions/1/image"),
        ("GET", "/retrain"),
    ):
        answer = requests.request(method, f"{labels.url}{path}", headers=headers, timeout=30)
        assert answer.status_code == status
        if error:
            assert answer.json() == {
                "error": error,
                "message": "send the admin token as 'Authorization: Bearer <token>'",
            }
    decided = requests.post(
        f"{labels.url}/submissions/1", json={"decision": "reject"}, headers=headers, timeout=30
    )
    assert decided.status_code == status


def test_an_id_the_router_cannot_match_is_a_404_as_the_document_says(labels) -> None:
    """An id that is no number is the function's own JSON 404; one holding a line break never reaches the
    function (functions-framework's router matches a line break only at the end of a path): its
    plain-text 404, which the document describes too (checked here with no path left unchecked)."""
    for path in ("/submissions/x", "/submissions/x/image"):
        answer = requests.get(f"{labels.url}{path}", headers=ADMIN, timeout=30)
        assert (answer.status_code, answer.json()["error"]) == (404, "not_found")
    for method, path in (
        ("GET", "/submissions/1%0A2"),
        ("GET", "/submissions/1%0A/image"),
        ("POST", "/submissions/%0Ax"),
    ):
        answer = requests.request(method, f"{labels.url}{path}", headers=ADMIN, timeout=30)
        assert (answer.status_code, answer.headers["Content-Type"], answer.text) == (
            404,
            "text/plain; charset=utf-8",
            "Not Found",
        )
        openapi("validate_label").validate_response(
            RequestsOpenAPIRequest(answer.request), RequestsOpenAPIResponse(answer)
        )


def test_without_a_configured_token_the_admin_routes_refuse_everything(tmp_path, receiver) -> None:
    db_url, store_url = f"sqlite:///{tmp_path / 'c.db'}", (tmp_path / "objects").as_uri()
    service = Labels(tmp_path, db_url, store_url, receiver.url, DANDELION_ADMIN_TOKEN=None)
    try:
        assert service.submit(GRASS, "grass").status_code == 202  # submitting stays public
        for headers in ({}, ADMIN, {"Authorization": "Bearer "}):
            answer = requests.get(f"{service.url}/submissions", headers=headers, timeout=30)
            assert (answer.status_code, answer.json()) == (
                403,
                {
                    "error": "forbidden",
                    "message": "the admin routes are disabled: DANDELION_ADMIN_TOKEN is not set",
                },
            )
        assert service.decide(1, decision="accept").status_code == 403
    finally:
        service.stop()


def catalog_rows(engine) -> list[dict]:
    table = catalog.plants_data
    query = select(table.c.url_source, table.c.label, table.c.sha256, table.c.status, table.c.decided_by)
    with engine.connect() as connection:
        return [dict(row) for row in connection.execute(query.order_by(table.c.id)).mappings()]


def test_accept_relabel_reject_and_deciding_twice(tmp_path, receiver, backend) -> None:
    db_url, store_url = backend
    service = Labels(tmp_path, db_url, store_url, receiver.url)
    try:
        for image, label in ((DANDELION, "dandelion"), (GRASS, "dandelion"), (photo(5), "grass")):
            service.submit(image, label, predicted_class="dandelion", model_version="7")
        accepted = service.decide(1, decision="accept")
        relabelled = service.decide(2, decision="accept", label="grass")
        rejected = service.decide(3, decision="reject")
        assert [a.status_code for a in (accepted, relabelled, rejected)] == [200, 200, 200]
        assert (accepted.json()["status"], accepted.json()["decided_label"]) == ("accepted", "dandelion")
        assert (relabelled.json()["decided_label"], rejected.json()["status"]) == ("grass", "rejected")
        assert rejected.json()["catalog"] is None
        digests = [hashlib.sha256(image).hexdigest() for image in (DANDELION, GRASS)]
        assert catalog_rows(service.engine) == [
            {
                "url_source": f"upload://{digests[0]}",
                "label": "dandelion",
                "sha256": digests[0],
                "status": "ingested",
                "decided_by": "admin",
            },
            {
                "url_source": f"upload://{digests[1]}",
                "label": "grass",
                "sha256": digests[1],
                "status": "ingested",
                "decided_by": "admin",
            },
        ]
        assert service.store.get(f"raw/grass/{digests[1]}.jpg") == GRASS
        assert relabelled.json()["catalog"]["url_s3"] == service.store.url(f"raw/grass/{digests[1]}.jpg")

        twice = service.decide(1, decision="reject")
        assert (twice.status_code, twice.json()) == (
            409,
            {"error": "conflict", "message": "submission 1 is already accepted"},
        )
        assert len(catalog_rows(service.engine)) == 2
        for submission_id, body, status in (
            (99, {"decision": "accept"}, 404),
            (3, {"decision": "maybe"}, 400),
            (3, {"label": "grass"}, 400),
            (3, {"decision": "accept", "label": "rose"}, 400),
        ):
            assert service.decide(submission_id, **body).status_code == status
        metrics = requests.get(f"{service.url}/metrics", timeout=30).text
        assert 'dandelion_label_decisions_total{decision="accept"} 2.0' in metrics
        assert 'dandelion_reviewed_predictions_total{model_version="7"} 2.0' in metrics
        assert 'dandelion_corrected_predictions_total{model_version="7"} 1.0' in metrics
        assert "dandelion_pending_submissions 0.0" in metrics
        status = requests.get(f"{service.url}/retrain", headers=ADMIN, timeout=30)
        assert (status.status_code, status.json()) == (
            200,
            {"new_labels": 2, "threshold": THRESHOLD, "remaining": 1, "events": []},
        )
    finally:
        service.stop()


def test_concurrent_decisions_on_one_submission_make_one_row(labels) -> None:
    labels.submit(GRASS, "grass")
    with ThreadPoolExecutor(6) as pool:
        answers = list(pool.map(lambda _: labels.decide(1, decision="accept").status_code, range(6)))
    assert sorted(answers) == [200, 409, 409, 409, 409, 409]
    assert len(catalog_rows(labels.engine)) == 1


# ---------------------------------------------------------------- the retrain event


def wait_for(condition, seconds: float = 20) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.1)


def test_the_threshold_event_is_posted_once_per_batch_under_concurrent_accepts(
    tmp_path, receiver, backend
) -> None:
    """Two instances, eight accepts at once: batches of three are announced twice, each exactly once."""
    db_url, store_url = backend
    service = Labels(tmp_path, db_url, store_url, receiver.url, instances=2)
    try:
        urls = [instance.url for instance in service.instances]
        for n in range(8):
            assert service.submit(photo(n), ("dandelion", "grass")[n % 2], url=urls[n % 2]).status_code == 202
        with ThreadPoolExecutor(8) as pool:
            codes = list(
                pool.map(
                    lambda n: service.decide(n + 1, url=urls[n % 2], decision="accept").status_code, range(8)
                )
            )
        assert codes == [200] * 8
        wait_for(lambda: len(receiver.events) == 2)
        time.sleep(1.5)  # the instances' retry loops have had their turn: nothing more arrives
        assert len(receiver.events) == 2
        assert [e["type"] for e in receiver.events] == [retrain.LABELS_EVENT] * 2
        assert sorted(e.data["accepted_since_training"] for e in receiver.events) == [3, 6]
        assert len({e["id"] for e in receiver.events}) == 2
        status = requests.get(f"{urls[1]}/retrain", headers=ADMIN, timeout=30).json()
        assert (status["new_labels"], status["remaining"]) == (8, 1)
        assert [(e["event_type"], e["attempts"], e["last_error"]) for e in status["events"]] == [
            (retrain.LABELS_EVENT, 1, None)
        ] * 2
        assert all(e["sent_at"] for e in status["events"])
    finally:
        service.stop()


def test_a_failed_post_is_retried_later_not_lost(tmp_path) -> None:
    receiver = Receiver(fail=2)
    db_url, store_url = f"sqlite:///{tmp_path / 'c.db'}", (tmp_path / "objects").as_uri()
    service = Labels(tmp_path, db_url, store_url, receiver.url)
    try:
        for n in range(THRESHOLD):
            service.submit(photo(n), "grass")
            assert service.decide(n + 1, decision="accept").status_code == 200
        wait_for(lambda: len(receiver.events) == 1)
        assert receiver.refused == 2  # refused twice, delivered by the background retry
        time.sleep(1.5)
        assert len(receiver.events) == 1
    finally:
        service.stop()
        receiver.close()


# ---------------------------------------------------------------- suspected labels


def ingested(service: Labels, photos: list[tuple[str, bytes]]) -> list[str]:
    """Images in the catalog and the store as ingestion leaves them; returns their SHA-256."""
    digests = []
    for label, data in photos:
        sha256 = hashlib.sha256(data).hexdigest()
        service.store.put(raw_key(label, sha256), data, "image/jpeg")
        catalog.record(
            service.engine,
            f"https://example.org/{sha256}.jpg",
            label,
            status="ingested",
            sha256=sha256,
            url_s3=service.store.url(raw_key(label, sha256)),
        )
        digests.append(sha256)
    return digests


def test_suspects_are_kept_relabelled_or_excluded_and_the_next_snapshot_follows(
    tmp_path, receiver, backend
) -> None:
    db_url, store_url = backend
    service = Labels(tmp_path, db_url, store_url, receiver.url)
    try:
        photos = [("grass", DANDELION), ("dandelion", photo(1)), ("grass", photo(2)), ("dandelion", photo(4))]
        digests = ingested(service, photos)
        suspects = [
            Suspect(
                raw_key(label, sha256),
                sha256,
                label,
                "dandelion" if label == "grass" else "grass",
                0.1,
                "train",
            )
            for (label, _), sha256 in zip(photos, digests, strict=True)
        ]
        assert queue_suspects(service.engine, suspects, "audit-run") == 4
        service.submit(GRASS, "grass")  # an upload in the same queue

        listed = requests.get(
            f"{service.url}/submissions", params={"kind": "suspect"}, headers=ADMIN, timeout=30
        ).json()["submissions"]
        assert [(s["id"], s["kind"], s["label"], s["predicted_class"]) for s in listed] == [
            (1, "suspect", "grass", "dandelion"),
            (2, "suspect", "dandelion", "grass"),
            (3, "suspect", "grass", "dandelion"),
            (4, "suspect", "dandelion", "grass"),
        ]
        assert listed[0]["confidence"] == pytest.approx(0.9) and listed[0]["model_version"] == "audit-run"
        shown = requests.get(f"{service.url}{listed[0]['image_url']}", headers=ADMIN, timeout=30)
        assert (shown.status_code, shown.headers["Content-Type"], shown.content) == (
            200,
            "image/jpeg",
            DANDELION,
        )

        for submission_id, body, message in (
            (1, {"decision": "accept"}, "suspects are decided by keep, relabel or exclude, not 'accept'"),
            (5, {"decision": "keep"}, "uploads are decided by accept or reject, not 'keep'"),
            (
                2,
                {"decision": "relabel", "label": "dandelion"},
                "the image is already labelled dandelion: keep it instead",
            ),
        ):
            refused = service.decide(submission_id, **body)
            assert (refused.status_code, refused.json()) == (
                400,
                {"error": "bad_request", "message": message},
            )

        relabelled = service.decide(1, decision="relabel")
        excluded = service.decide(2, decision="exclude")
        kept = service.decide(3, decision="keep")
        assert [r.status_code for r in (relabelled, excluded, kept)] == [200, 200, 200]
        new_key = raw_key("dandelion", digests[0])
        assert relabelled.json()["catalog"] == {
            "sha256": digests[0],
            "label": "dandelion",
            "status": "ingested",
            "url_s3": service.store.url(new_key),
            "decided_by": "admin",
            "decided_at": relabelled.json()["decided_at"],
        }
        assert (relabelled.json()["status"], relabelled.json()["decided_label"]) == (
            "relabelled",
            "dandelion",
        )
        assert (excluded.json()["catalog"]["status"], kept.json()["status"]) == ("excluded", "kept")
        assert service.store.get(new_key) == DANDELION
        assert service.store.exists(raw_key("grass", digests[0]))  # frozen manifests still name it
        again = service.decide(1, decision="keep")
        assert (again.status_code, again.json()["message"]) == (409, "submission 1 is already relabelled")

        rows = {row["sha256"]: row for row in catalog_rows(service.engine)}
        assert (rows[digests[0]]["label"], rows[digests[0]]["decided_by"]) == ("dandelion", "admin")
        assert (rows[digests[1]]["status"], rows[digests[2]]["status"]) == ("excluded", "ingested")
        assert rows[digests[2]]["decided_by"] == "admin" and rows[digests[3]]["decided_by"] is None
        _version, examples, new_labels = dataset.snapshot(service.engine, service.store)
        assert {(e.sha256, e.label, e.key) for e in examples} == {
            (digests[0], "dandelion", new_key),
            (digests[2], "grass", raw_key("grass", digests[2])),
            (digests[3], "dandelion", raw_key("dandelion", digests[3])),
        }
        assert new_labels == 2  # the relabel and the exclusion change the training data; keeping does not

        # Re-running the audit queues nothing decided, nor anything already waiting.
        assert queue_suspects(service.engine, suspects, "audit-run-2") == 0
        # The excluded image stays out whichever URL brings it back, and its own URL is not ingested again.
        catalog.record(
            service.engine, "https://example.org/copy.jpg", "grass", status="ingested", sha256=digests[1]
        )
        assert digests[1] not in {e.sha256 for e in dataset.snapshot(service.engine, service.store)[1]}
    finally:
        service.stop()
