"""ingest-one-url as a real functions-framework process, against a loopback source with hostile answers."""

import hashlib
import io
import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests
from PIL import Image
from prometheus_client.parser import text_string_to_metric_families

from functions.lib import catalog
from functions.lib.store import open_store
from tests.conftest import DATASET, FunctionProcess, canonical, function_env
from workflows.local.processes import free_port

pytestmark = pytest.mark.integration


class Service:
    def __init__(self, db_url: str, store_url: str, env: dict[str, str]) -> None:
        self.function = FunctionProcess("ingest-one-url", env)
        self.url = self.function.url
        self.engine = catalog.open_catalog(db_url)
        self.store = open_store(store_url)

    def post(self, body: object, **kwargs) -> requests.Response:
        return requests.post(self.url + "/", json=body, timeout=60, **kwargs)

    def raw_keys(self) -> list[str]:
        return list(self.store.keys("raw/"))


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory, source: str):
    home = tmp_path_factory.mktemp("ingest")
    db_url, store_url = f"sqlite:///{home / 'catalog.db'}", (home / "objects").as_uri()
    svc = Service(db_url, store_url, function_env(db_url, store_url, source))
    yield svc
    svc.function.stop()


def expected_row(url: str, label: str, data: bytes, store) -> dict:
    digest = hashlib.sha256(data).hexdigest()
    return {
        "url_source": url,
        "url_s3": store.url(f"raw/{label}/{digest}.jpg"),
        "label": label,
        "sha256": digest,
        "size_bytes": len(data),
        "status": "ingested",
        "error": None,
    }


def test_ingest_then_repeat_on_every_catalog_and_store(db_url: str, store_url: str, source: str) -> None:
    """SQLite and MariaDB, file:// and S3: one row, one object, and the repeat changes nothing."""
    svc = Service(db_url, store_url, function_env(db_url, store_url, source))
    try:
        url, data = canonical("dandelion", 7), (DATASET / "dandelion" / "00000007.jpg").read_bytes()
        first = svc.post({"url": url, "label": "dandelion"})
        assert (first.status_code, first.json()) == (
            201,
            {"outcome": "ingested", **expected_row(url, "dandelion", data, svc.store)},
        )
        second = svc.post({"url": url, "label": "dandelion"})
        assert (second.status_code, second.json()) == (200, {**first.json(), "outcome": "unchanged"})
        assert catalog.count(svc.engine) == 1
        assert svc.raw_keys() == [f"raw/dandelion/{hashlib.sha256(data).hexdigest()}.jpg"]
        assert svc.store.get(svc.raw_keys()[0]) == data
    finally:
        svc.function.stop()


def test_cloudevents_in_binary_and_structured_mode(service: Service) -> None:
    binary = requests.post(
        service.url + "/",
        data=json.dumps({"url": canonical("grass", 11), "label": "grass"}),
        headers={
            "ce-specversion": "1.0",
            "ce-type": "dandelion.ingest",
            "ce-source": "/tests",
            "ce-id": "1",
            "content-type": "application/json",
        },
        timeout=30,
    )
    structured = requests.post(
        service.url + "/",
        data=json.dumps(
            {
                "specversion": "1.0",
                "type": "dandelion.ingest",
                "source": "/tests",
                "id": "2",
                "datacontenttype": "application/json",
                "data": {"url": canonical("grass", 12), "label": "grass"},
            }
        ),
        headers={"content-type": "application/cloudevents+json"},
        timeout=30,
    )
    assert (binary.status_code, binary.json()["url_source"]) == (201, canonical("grass", 11))
    assert (structured.status_code, structured.json()["url_source"]) == (201, canonical("grass", 12))


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (
            {"url": canonical("grass", 20), "label": "daisy"},
            "label must be one of dandelion, grass, got 'daisy'",
        ),
        ({"url": canonical("grass", 20)}, "field 'label' must be a non-empty string"),
        ({"url": 42, "label": "grass"}, "field 'url' must be a non-empty string"),
        (
            {"url": "ftp://example.org/x.jpg", "label": "grass"},
            "only absolute http and https URLs can be ingested, got 'ftp://example.org/x.jpg'",
        ),
        (["not", "an", "object"], "the body must be a JSON object"),
        (
            {"url": "http://example.org/" + "a" * 2100, "label": "grass"},
            "URLs are limited to 2048 characters; this one has 2119",
        ),
        (
            {"url": "http://user:secret@example.org/x.jpg", "label": "grass"},
            "URLs carrying credentials (user:password@) are refused; they would be stored and shown",
        ),
        ({"url": "http://[::1/x.jpg", "label": "grass"}, "not a valid URL: 'http://[::1/x.jpg'"),
    ],
)
def test_client_mistakes_are_400_and_write_nothing(service: Service, body: object, message: str) -> None:
    before = catalog.count(service.engine), service.raw_keys()
    response = service.post(body)
    assert (response.status_code, response.json()) == (400, {"error": "bad_request", "message": message})
    assert (catalog.count(service.engine), service.raw_keys()) == before


@pytest.mark.parametrize(
    ("data", "content_type", "message"),
    [
        ("{nope", "application/json", "the body is not valid JSON"),
        # Python's parser recurses once per level: 30,000 levels (60 KB) would exhaust its stack.
        ("[" * 30_000 + "]" * 30_000, "application/json", "the body's JSON is nested too deeply"),
        ("[" * 30_000 + "]" * 30_000, "application/cloudevents+json", "the body's JSON is nested too deeply"),
        # Found by fuzzing (tests/integration/test_fuzz_functions.py): each was a 500.
        (
            '{"specversion": {}, "data": {}}',
            "application/cloudevents+json",
            "not a valid CloudEvent: unhashable type: 'dict'",
        ),
        (
            '{"specversion": "1.0", "type": "t", "source": "s", "id": null, "data": {}}',
            "application/cloudevents+json",
            "not a valid CloudEvent: Attribute value error: 'id', invalid new value.",
        ),
        (
            b"\x80{}",
            "application/cloudevents+json",
            "not a valid CloudEvent: 'utf-8' codec can't decode byte 0x80 in position 0: invalid start byte",
        ),
    ],
)
def test_malformed_json_is_400(service: Service, data: str | bytes, content_type: str, message: str) -> None:
    response = requests.post(service.url + "/", data=data, headers={"content-type": content_type}, timeout=30)
    assert (response.status_code, response.json()) == (400, {"error": "bad_request", "message": message})


@pytest.mark.parametrize(
    ("path", "status", "error", "message"),
    [
        (
            "/hostile/page.jpg",
            415,
            "not_an_image",
            "not an image in an accepted format (JPEG, PNG, WEBP, GIF, BMP)",
        ),
        ("/hostile/truncated.jpg", 415, "not_an_image", "the image is truncated or corrupt"),
        ("/hostile/corrupt.jpg", 415, "not_an_image", "not an image in an accepted format"),
        (
            "/hostile/bomb.png",
            413,
            "too_large",
            "the image has 144000000 pixels, over the 40000000-pixel limit",
        ),
        ("/hostile/endless", 413, "too_large", "the download passed the 10485760-byte limit"),
        ("/hostile/missing.jpg", 502, "upstream_error", "the source answered HTTP 404"),
        ("/hostile/loop", 502, "upstream_error", "more than 5 redirects"),
        ("/redirect/file:/etc/passwd", 403, "url_refused", "a redirect left http(s)"),
    ],
)
def test_hostile_sources_are_refused_and_the_row_says_why(
    service: Service, source: str, path: str, status: int, error: str, message: str
) -> None:
    url = source + path
    objects = service.raw_keys()
    response = service.post({"url": url, "label": "grass"})
    assert response.status_code == status
    assert response.json()["error"] == error
    assert response.json()["message"].startswith(message)
    assert catalog.get(service.engine, url) is None  # nobody catalogued it: a refusal writes nothing
    catalog.record(service.engine, url, "grass", status="pending")
    assert service.post({"url": url, "label": "grass"}).status_code == status
    row = catalog.get(service.engine, url)
    assert (row["status"], row["url_s3"], row["sha256"]) == ("failed", None, None)
    assert row["error"].startswith(f"{error}: {message}")
    assert service.raw_keys() == objects


def test_a_png_is_stored_as_jpeg(service: Service, source: str) -> None:
    response = service.post({"url": f"{source}/hostile/picture.png", "label": "grass"})
    assert response.status_code == 201
    stored = service.store.get(f"raw/grass/{response.json()['sha256']}.jpg")
    assert Image.open(io.BytesIO(stored)).format == "JPEG"


def test_a_failed_row_is_repaired_by_a_later_success(service: Service) -> None:
    url = canonical("grass", 30)
    catalog.record(service.engine, url, "grass", status="failed", error="upstream_error: earlier outage")
    response = service.post({"url": url, "label": "grass"})
    assert response.status_code == 201
    assert catalog.get(service.engine, url)["error"] is None


def test_relabelling_through_ingestion_is_a_conflict(service: Service) -> None:
    url = canonical("dandelion", 40)
    assert service.post({"url": url, "label": "dandelion"}).status_code == 201
    response = service.post({"url": url, "label": "grass"})
    assert (response.status_code, response.json()) == (
        409,
        {
            "error": "conflict",
            "message": f"{url} is already ingested as 'dandelion'; relabel it through validate-label",
        },
    )
    assert catalog.get(service.engine, url)["label"] == "dandelion"


def test_concurrent_requests_for_one_url_leave_one_row_and_one_object(service: Service) -> None:
    url = canonical("dandelion", 50)
    objects = len(service.raw_keys())
    with ThreadPoolExecutor(8) as pool:
        statuses = sorted(
            pool.map(lambda _: service.post({"url": url, "label": "dandelion"}).status_code, range(8))
        )
    assert set(statuses) <= {200, 201} and 201 in statuses
    assert catalog.get(service.engine, url)["status"] == "ingested"
    assert len(service.raw_keys()) == objects + 1


def test_concurrent_requests_with_conflicting_labels_let_one_label_win(service: Service) -> None:
    url = canonical("dandelion", 51)
    objects = len(service.raw_keys())
    labels = ["dandelion", "grass"] * 5
    with ThreadPoolExecutor(10) as pool:
        answers = list(pool.map(lambda label: (label, service.post({"url": url, "label": label})), labels))
    winner = catalog.get(service.engine, url)["label"]
    assert {label for label, answer in answers if answer.status_code in (200, 201)} == {winner}
    assert {answer.status_code for label, answer in answers if label != winner} == {409}
    assert len(service.raw_keys()) == objects + 1  # the losing label's copy is not left behind


@pytest.mark.parametrize(
    ("method", "path", "status", "body"),
    [
        ("GET", "/", 405, {"error": "method_not_allowed", "message": "GET is not allowed on /; use POST"}),
        (
            "POST",
            "/health",
            405,
            {"error": "method_not_allowed", "message": "POST is not allowed on /health; use GET"},
        ),
        ("GET", "/nope", 404, {"error": "not_found", "message": "no route '/nope'"}),
        ("GET", "/health", 200, {"status": "healthy"}),
    ],
)
def test_routes(service: Service, method: str, path: str, status: int, body: dict) -> None:
    response = requests.request(method, service.url + path, timeout=30)
    assert (response.status_code, response.json()) == (status, body)


def test_a_405_says_which_methods_are_allowed(service: Service) -> None:
    assert requests.get(service.url + "/", timeout=30).headers["Allow"] == "POST"
    assert requests.delete(service.url + "/health", timeout=30).headers["Allow"] == "GET, HEAD"


def test_metrics_count_outcomes_and_requests(service: Service) -> None:
    service.post({"url": canonical("grass", 60), "label": "grass"})
    text = requests.get(service.url + "/metrics", timeout=30).text
    assert 'dandelion_ingest_total{outcome="ingested"}' in text
    assert (
        'dandelion_http_requests_total{function="ingest-one-url",method="POST",route="/",status="201"}'
        in text
    )


def test_metric_labels_stay_bounded_whatever_clients_send(service: Service) -> None:
    """An unknown path is counted as `unmatched`, never by name; an invented method is refused with a 405
    by functions-framework's router before it reaches the function, so it is never a label either."""

    def unmatched() -> float:
        text = requests.get(service.url + "/metrics", timeout=30).text
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name == "dandelion_http_requests_total" and sample.labels == {
                    "function": "ingest-one-url",
                    "route": "unmatched",
                    "method": "GET",
                    "status": "404",
                }:
                    return sample.value
        return 0.0

    before = unmatched()
    for n in range(3):
        invented = requests.request(f"BREW{n}", f"{service.url}/pot-{n}/tea", timeout=30)
        assert invented.status_code == 405
        requests.get(f"{service.url}/random/{n}", timeout=30)
    assert unmatched() == before + 3
    text = requests.get(service.url + "/metrics", timeout=30).text
    assert "BREW" not in text and "pot-" not in text and "random" not in text


def test_private_addresses_are_refused_unless_allowed(tmp_path: Path, source: str) -> None:
    """With the guard on, as `make up` runs: the mirror's own origin is reached (it is loopback), nothing
    else that is not public: not another port of its host, not the metadata service, not IPv6 loopback."""
    db_url, store_url = f"sqlite:///{tmp_path / 'c.db'}", (tmp_path / "o").as_uri()
    guarded = FunctionProcess("ingest-one-url", function_env(db_url, store_url, source, allow_private=False))
    catalog.seed(catalog.open_catalog(db_url))
    try:
        mirrored = requests.post(
            guarded.url + "/", json={"url": canonical("grass", 70), "label": "grass"}, timeout=30
        )
        assert (mirrored.status_code, mirrored.json()["outcome"]) == (201, "ingested")
        for url in (
            f"http://127.0.0.1:{free_port()}/x.jpg",
            "http://169.254.169.254/latest/meta-data/",
            "http://[::1]:9/x.jpg",
        ):
            response = requests.post(guarded.url + "/", json={"url": url, "label": "grass"}, timeout=30)
            assert (response.status_code, response.json()["error"]) == (403, "url_refused")
    finally:
        guarded.stop()
