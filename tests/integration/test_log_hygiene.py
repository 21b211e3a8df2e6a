"""The functions' logs never hold the admin token, a password or an image's bytes. Each function runs as a
real process with its output captured to a file; requests that carry those (good and bad admin tokens,
images with a marker inside their bytes, URLs and a webhook with user:password@, a database URL whose
server is down) go through the success and the error paths, and the log is then read back: every request
is in it, and none of the secrets."""

from __future__ import annotations

import base64
import io
import json
import secrets
from pathlib import Path

import pytest
import requests
from PIL import Image
from PIL.PngImagePlugin import PngInfo

from functions.lib import catalog
from tests.conftest import FunctionProcess, canonical, function_env
from workflows.local.processes import free_port

pytestmark = pytest.mark.integration

TOKEN = f"admin-{secrets.token_urlsafe(18)}"
WRONG = f"guess-{secrets.token_urlsafe(18)}"
PASSWORD = f"pw-{secrets.token_urlsafe(18)}"
MARKER = f"image-bytes-{secrets.token_hex(12)}"  # written inside each image, as a PNG text chunk


def marked_png(colour: tuple[int, int, int]) -> bytes:
    info = PngInfo()
    info.add_text("Comment", MARKER)
    out = io.BytesIO()
    Image.new("RGB", (40, 30), colour).save(out, format="PNG", pnginfo=info)
    return out.getvalue()


def log_of(process: FunctionProcess) -> tuple[str, list[dict]]:
    """The whole output of a stopped process, and its JSON log lines."""
    process.stop()
    assert process.log is not None
    text = process.log.read_text()
    return text, [json.loads(line) for line in text.splitlines() if line.startswith("{")]


def requests_logged(entries: list[dict]) -> set[tuple[str, str, int]]:
    return {(e["method"], e["path"], e["status"]) for e in entries if e["message"] == "request"}


def middle(text: str, length: int = 40) -> str:
    return text[len(text) // 2 :][:length]


def assert_clean(text: str, *secret_values: str) -> None:
    for value in secret_values:
        assert value not in text, f"the log holds {value[:12]}…"


def test_validate_label_never_logs_the_token_the_images_or_the_webhooks_password(tmp_path: Path) -> None:
    env = function_env(f"sqlite:///{tmp_path / 'catalog.db'}", (tmp_path / "objects").as_uri(), None)
    env |= {
        "DANDELION_ADMIN_TOKEN": TOKEN,
        "DANDELION_RETRAIN_MIN_NEW_LABELS": "1",  # the accept below posts a retrain event...
        # ...to a webhook whose URL carries credentials, and where nobody listens: a logged failure.
        "DANDELION_RETRAIN_WEBHOOK": f"http://hook:{PASSWORD}@127.0.0.1:{free_port()}/retrain",
    }
    service = FunctionProcess("validate-label", env, log=tmp_path / "validate-label.log")
    url = f"{service.url}/submissions"
    admin, guess = {"Authorization": f"Bearer {TOKEN}"}, {"Authorization": f"Bearer {WRONG}"}
    image, other = marked_png((240, 200, 20)), marked_png((30, 150, 40))
    encoded = base64.b64encode(other).decode()
    try:
        assert requests.get(url, headers=guess, timeout=30).status_code == 401
        assert requests.get(url, headers={"Authorization": f"Basic {TOKEN}"}, timeout=30).status_code == 401
        sent = requests.post(url, files={"file": image}, data={"label": "dandelion"}, timeout=30)
        assert sent.status_code == 202
        as_json = requests.post(url, json={"image": encoded, "label": "grass"}, timeout=30)
        assert as_json.status_code == 202
        junk = requests.post(url, files={"file": MARKER.encode() * 20}, data={"label": "grass"}, timeout=30)
        assert junk.status_code == 415
        assert requests.get(url, headers=admin, timeout=30).status_code == 200
        submission = f"{url}/{sent.json()['id']}"
        shown = requests.get(f"{submission}/image", headers=admin, timeout=30)
        assert (shown.status_code, MARKER.encode() in shown.content) == (200, True)  # the bytes carry it
        decided = requests.post(submission, headers=admin, json={"decision": "accept"}, timeout=30)
        assert decided.status_code == 200
    finally:
        text, entries = log_of(service)
    assert requests_logged(entries) >= {
        ("GET", "/submissions", 401),
        ("POST", "/submissions", 202),
        ("POST", "/submissions", 415),
        ("GET", "/submissions", 200),
        ("GET", f"/submissions/{sent.json()['id']}/image", 200),
        ("POST", f"/submissions/{sent.json()['id']}", 200),
    }
    failed = [e for e in entries if e["message"] == "retrain event not delivered"]
    assert failed and "127.0.0.1" in failed[0]["error"]  # the failure is logged, with where it went
    # From the middle of each image's base64: the first 40 characters are the header every such PNG shares.
    sent_as_base64 = [middle(encoded), middle(base64.b64encode(image).decode())]
    assert_clean(text, TOKEN, WRONG, PASSWORD, MARKER, *sent_as_base64)


def test_ingest_never_logs_or_stores_a_urls_password(tmp_path: Path, source: str) -> None:
    db_url = f"sqlite:///{tmp_path / 'catalog.db'}"
    service = FunctionProcess(
        "ingest-one-url",
        function_env(db_url, (tmp_path / "objects").as_uri(), source),
        log=tmp_path / "ingest-one-url.log",
    )
    # A catalogued row whose source redirects to a URL with credentials: the refusal is kept on the row.
    redirected = f"{source}/redirect/ftp:/user:{PASSWORD}@example.org/x.jpg"
    catalog.record(catalog.open_catalog(db_url), redirected, "grass", status="pending")
    answers = []
    try:
        for url, status in (
            (f"http://user:{PASSWORD}@127.0.0.1:{free_port()}/grass/1.jpg", 400),
            (f"ftp://user:{PASSWORD}@example.org/x.jpg", 400),
            (redirected, 403),
            (canonical("grass", 2), 201),
        ):
            response = requests.post(f"{service.url}/", json={"url": url, "label": "grass"}, timeout=60)
            assert response.status_code == status, response.text
            answers.append(response.json())
    finally:
        text, entries = log_of(service)
    assert requests_logged(entries) >= {("POST", "/", 400), ("POST", "/", 403), ("POST", "/", 201)}
    assert_clean(text, PASSWORD)
    assert_clean(json.dumps(answers[:3]), PASSWORD)  # what the caller and extract-images' summary show
    assert answers[2]["message"].endswith("'ftp://***@example.org/x.jpg'")
    row = catalog.get(catalog.open_catalog(db_url), redirected)
    assert row is not None and row["status"] == "failed"
    assert_clean(row["error"], PASSWORD)


def test_a_function_whose_database_is_down_logs_why_without_its_password(tmp_path: Path) -> None:
    down = f"mysql+pymysql://dandelion_ingest:{PASSWORD}@127.0.0.1:{free_port()}/dandelion?charset=utf8mb4"
    env = function_env(down, (tmp_path / "objects").as_uri(), None)
    service = FunctionProcess("ingest-one-url", env, ready="/openapi.json", log=tmp_path / "down.log")
    try:
        response = requests.post(
            f"{service.url}/", json={"url": canonical("grass", 3), "label": "grass"}, timeout=30
        )
        assert response.status_code == 503
        assert requests.get(f"{service.url}/health", timeout=30).status_code == 503
    finally:
        text, entries = log_of(service)
    failures = [e for e in entries if e["message"] == "request failed"]
    assert [e["detail"] for e in failures] == ["the catalog is unavailable"] * 2  # what the client read
    assert any("Can't connect to MySQL server" in e["message"] for e in entries)  # the why: logged only
    assert_clean(text, PASSWORD)
