"""Real parts for the tests: MariaDB, moto's S3 server, a loopback source server, function processes."""

from __future__ import annotations

import contextlib
import functools
import http.server
import io
import os
import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import urlsplit

import pymysql
import pytest
import requests
from hypothesis import settings
from openapi_core import OpenAPI
from openapi_core.contrib.requests import RequestsOpenAPIRequest, RequestsOpenAPIResponse
from openapi_core.templating.paths.exceptions import OperationNotFound, PathNotFound
from PIL import Image

from functions.lib.catalog import CANONICAL_PREFIX
from functions.lib.config import Settings
from functions.lib.ingest import Ingestor
from functions.lib.labels import LABELS
from functions.lib.layout import MODEL_NAME
from functions.lib.openapi import document
from functions.lib.store import ObjectStore, open_store
from tests.support import DATASET, loopback_server, s3_environment, train_tiny_model
from workflows.local.processes import (
    FUNCTION_TARGETS,
    disable_mlflow_telemetry,
    free_port,
    start_function,
    stop,
    wait_healthy,
)
from workflows.local.stack import TRAINING_LIBRARIES

# The fork server is one per process and keeps the preload of the first `Pods` that started it: a test
# that makes its own `Pods` passes what `run_workflow` preloads, so that whichever test runs first, the
# steps start fast.
PODS_PRELOAD = ("workflows.manifests", *TRAINING_LIBRARIES)


def pytest_configure() -> None:
    disable_mlflow_telemetry()  # as the `dandelion` command does: tests run workflows in-process too
    # The training libraries, loaded once by the runner's fork server instead of by every step of every
    # workflow the tests run, whichever workflow the session runs first.
    os.environ.setdefault("DANDELION_STEP_PRELOAD", ",".join(TRAINING_LIBRARIES))


# Hypothesis: `make test` runs the same examples every time (derandomized, no example database) and fails
# an example that takes a thousand times what it should; `make fuzz` (--hypothesis-profile fuzz) runs
# fifty times as many, fresh each run. A failure prints the blob that replays it (@reproduce_failure):
# once schemathesis has built a schema, it blanks the values in Hypothesis's reports for the whole session.
DEADLINE = timedelta(seconds=5)
PROFILE = {"database": None, "deadline": DEADLINE, "print_blob": True}
settings.register_profile("test", max_examples=100, derandomize=True, **PROFILE)
settings.register_profile("fuzz", max_examples=5000, **PROFILE)
settings.load_profile("test")


MYSQL = {"host": "127.0.0.1", "port": 3306, "user": "root", "password": ""}


def canonical(label: str, n: int) -> str:
    return f"{CANONICAL_PREFIX}{label}/{n:08d}.jpg"


# ---------------------------------------------------------------- MariaDB


@pytest.fixture(scope="session")
def mysql_server() -> Iterator[dict]:
    try:
        pymysql.connect(**MYSQL, connect_timeout=3).close()
    except pymysql.err.OperationalError as exc:
        if os.environ.get("DANDELION_REQUIRE_MYSQL"):
            pytest.fail(f"MariaDB is required here but not reachable on 127.0.0.1:3306: {exc}")
        pytest.skip(f"no MySQL/MariaDB reachable on 127.0.0.1:3306 ({exc})")
    yield MYSQL


@contextlib.contextmanager
def throwaway_database(server: dict) -> Iterator[str]:
    """The URL of a new, empty database, dropped on exit."""
    name = f"dandelion_test_{uuid.uuid4().hex[:12]}"
    conn = pymysql.connect(**server, autocommit=True)
    with conn.cursor() as cur:
        cur.execute(f"CREATE DATABASE {name} CHARACTER SET utf8mb4")
    yield f"mysql+pymysql://root@127.0.0.1:3306/{name}?charset=utf8mb4"
    with conn.cursor() as cur:
        cur.execute(f"DROP DATABASE IF EXISTS {name}")
    conn.close()


@pytest.fixture
def mysql_url(mysql_server: dict) -> Iterator[str]:
    """A throw-away database for one test."""
    with throwaway_database(mysql_server) as url:
        yield url


@pytest.fixture(params=["sqlite", "mysql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'catalog.db'}"
    return request.getfixturevalue("mysql_url")


# ---------------------------------------------------------------- S3 (moto's server)


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    """moto's standalone server: a real HTTP S3 endpoint; the AWS variables point every process at it."""
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    variables = s3_environment(endpoint)
    saved = {k: os.environ.get(k) for k in variables}
    os.environ.update(variables)
    yield endpoint
    server.stop()
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


def new_bucket() -> str:
    """The store URL of a new, empty bucket on moto's server (`s3_endpoint` must be running)."""
    import boto3

    bucket = f"dandelion-{uuid.uuid4().hex[:10]}"
    boto3.client("s3").create_bucket(Bucket=bucket)
    return f"s3://{bucket}/data"


@pytest.fixture
def s3_url(s3_endpoint: str) -> str:
    return new_bucket()


@pytest.fixture(params=["file", "s3"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "file":
        return (tmp_path / "objects").as_uri()
    return request.getfixturevalue("s3_url")


# ---------------------------------------------------------------- the source server


def _jpeg(size: tuple[int, int] = (64, 48)) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, (200, 180, 20)).save(out, format="JPEG")
    return out.getvalue()


def bomb_png() -> bytes:
    """A small PNG whose header claims 12000 x 12000 pixels (144 M): refused before decoding."""
    out = io.BytesIO()
    Image.new("1", (12000, 12000)).save(out, format="PNG", optimize=True)
    return out.getvalue()


class SourceHandler(http.server.SimpleHTTPRequestHandler):
    """The dataset as the mirror serves it, plus hostile answers under /hostile/."""

    fixtures: ClassVar[dict[str, tuple[str, bytes]]] = {}

    def __init__(self, *args, **kwargs):
        super().__init__(*args, directory=str(DATASET), **kwargs)

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        if path.startswith("/redirect/"):
            self.send_response(302)
            self.send_header("Location", path.removeprefix("/redirect/").replace(":/", "://", 1))
            self.end_headers()
        elif path == "/hostile/endless":
            self.send_response(200)
            self.send_header("Content-Type", "image/jpeg")
            self.end_headers()
            chunk = b"\xff" * 65536
            try:
                for _ in range(100_000):  # bounded: 6.5 GB at most, the client stops far earlier
                    self.wfile.write(chunk)
            except OSError:
                pass
        elif path == "/hostile/loop":
            self.send_response(302)
            self.send_header("Location", "/hostile/loop")
            self.end_headers()
        elif path in self.fixtures:
            content_type, body = self.fixtures[path]
            self.send_response(200)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        else:
            super().do_GET()


@pytest.fixture(scope="session")
def source() -> Iterator[str]:
    """Base URL of a loopback server: /<label>/<n>.jpg from shared/datasets/greenr, /hostile/* fixtures."""
    if not DATASET.is_dir():
        pytest.fail(f"the shared dataset is missing: {DATASET}")
    real = (DATASET / "grass" / "00000003.jpg").read_bytes()
    png = io.BytesIO()
    Image.new("RGBA", (40, 30), (10, 200, 10, 128)).save(png, format="PNG")
    SourceHandler.fixtures = {
        "/hostile/page.jpg": ("image/jpeg", b"<!doctype html><html><body>Not found</body></html>"),
        "/hostile/truncated.jpg": ("image/jpeg", real[: len(real) // 2]),
        # A real header cut short by garbage: Pillow (12.3) cannot even read what image it is.
        "/hostile/corrupt.jpg": ("image/jpeg", real[:200] + bytes(range(256)) * 40),
        "/hostile/bomb.png": ("image/png", bomb_png()),
        "/hostile/picture.png": ("image/png", png.getvalue()),
        "/hostile/tiny.jpg": ("image/jpeg", _jpeg((10, 10))),
    }
    with loopback_server(SourceHandler) as server:
        yield f"http://127.0.0.1:{server.server_port}"


# ---------------------------------------------------------------- function processes


# Base URL of every function process the tests start -> its target, whose OpenAPI document its
# answers must follow.
DOCUMENTED: dict[str, str] = {}


class FunctionProcess:
    """A function served by functions-framework, as in its container; `ready` is the path polled for 200."""

    def __init__(
        self, part: str, env: dict[str, str], ready: str = "/health", log: Path | None = None
    ) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = log  # where its output goes; the terminal when None
        self.process = start_function(part, self.port, env, log)
        DOCUMENTED[self.url] = FUNCTION_TARGETS[part]
        wait_healthy(f"{self.url}{ready}", self.process)

    def stop(self) -> None:
        stop(self.process)
        DOCUMENTED.pop(self.url, None)  # its port may serve something else next (a flaky failure before)


@functools.cache
def openapi(target: str) -> OpenAPI:
    return OpenAPI.from_dict(document(target))


def follows_its_openapi_document(response: requests.Response) -> None:
    """Validate a function's answer against its OpenAPI document: status, media type, body. Requests to
    routes the document has no reason to list (a 404 or 405 probe, HEAD) are not checked."""
    parts = urlsplit(response.url)
    target = DOCUMENTED.get(f"{parts.scheme}://{parts.netloc}")
    if target is None:
        return
    request = response.request.copy()
    if not isinstance(request.body, bytes | str | None):
        request.body = None  # a streamed upload, already sent; only the answer is checked here
    try:
        openapi(target).validate_response(RequestsOpenAPIRequest(request), RequestsOpenAPIResponse(response))
    except (PathNotFound, OperationNotFound):
        return


@pytest.fixture(autouse=True)
def every_function_answer_follows_its_openapi_document(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every answer a test gets from a function process (through `requests`) is checked against the
    function's OpenAPI document, so the documents cannot drift from what the functions do."""
    send = requests.Session.send

    def checked(
        self: requests.Session, request: requests.PreparedRequest, **kwargs: Any
    ) -> requests.Response:
        response = send(self, request, **kwargs)
        if not kwargs.get("stream"):
            follows_its_openapi_document(response)
        return response

    monkeypatch.setattr(requests.Session, "send", checked)


def function_env(
    db_url: str, store_url: str, source: str | None, allow_private: bool = True
) -> dict[str, str]:
    env = dict(os.environ, DANDELION_DB_URL=db_url, DANDELION_STORE_URL=store_url)
    if source:
        env["DANDELION_SOURCE_MIRROR"] = f"{CANONICAL_PREFIX}={source}/"
    if allow_private:
        env["DANDELION_ALLOW_PRIVATE_URLS"] = "1"
    else:
        env.pop("DANDELION_ALLOW_PRIVATE_URLS", None)
    return env


# ---------------------------------------------------------------- MLflow


@pytest.fixture(scope="session")
def mlflow_service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """One real MLflow tracking server for the session (it takes ~15 s to start): SQLite backend,
    artifacts proxied to a file:// store. MLFLOW_TRACKING_URI points every client at it."""
    from workflows.local.processes import start_mlflow

    home = tmp_path_factory.mktemp("mlflow")
    port = free_port()
    process = start_mlflow(home, (home / "objects").as_uri(), port)
    uri = f"http://127.0.0.1:{port}"
    saved = os.environ.get("MLFLOW_TRACKING_URI")
    try:
        wait_healthy(f"{uri}/health", process, timeout=120)
        os.environ["MLFLOW_TRACKING_URI"] = uri
        yield uri
    finally:
        stop(process)
        if saved is None:
            os.environ.pop("MLFLOW_TRACKING_URI", None)
        else:
            os.environ["MLFLOW_TRACKING_URI"] = saved


@pytest.fixture
def mlflow_server(mlflow_service: str) -> str:
    """The session's MLflow server with an empty registry: each test's first model meets no champion
    left by another test (runs stay; each test tells its own apart)."""
    import mlflow
    from mlflow.exceptions import RestException

    with contextlib.suppress(RestException):
        mlflow.MlflowClient().delete_registered_model(MODEL_NAME)
    return mlflow_service


# ---------------------------------------------------------------- models


TRAINING_SUBSET = [(label, n) for label in LABELS for n in range(0, 200, 12)]  # 34 images


@pytest.fixture
def ingested_platform(
    request: pytest.FixtureRequest,
    tmp_path: Path,
    source: str,
    mlflow_server: str,
    monkeypatch: pytest.MonkeyPatch,
) -> tuple[Settings, ObjectStore]:
    """A catalog and store holding TRAINING_SUBSET, ingested for real; the steps' environment points at them
    (parametrize indirectly with (catalog, store) kinds: sqlite or mysql, file or s3)."""
    db_kind, store_kind = getattr(request, "param", ("sqlite", "file"))
    db_url = request.getfixturevalue("mysql_url") if db_kind == "mysql" else f"sqlite:///{tmp_path / 'c.db'}"
    store_url = request.getfixturevalue("s3_url") if store_kind == "s3" else (tmp_path / "objects").as_uri()
    env = {
        "DANDELION_DB_URL": db_url,
        "DANDELION_STORE_URL": store_url,
        "DANDELION_ALLOW_PRIVATE_URLS": "1",
        "DANDELION_SOURCE_MIRROR": f"{CANONICAL_PREFIX}={source}/",
        "DANDELION_PREDICT_URL": f"http://127.0.0.1:{free_port()}",  # none: roll-out says so
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    settings = Settings.from_env()
    ingestor = Ingestor.from_settings(settings)
    for label, n in TRAINING_SUBSET:
        ingestor.ingest(canonical(label, n), label)
    return settings, open_store(store_url)


@pytest.fixture(scope="session")
def tiny_models() -> list[tuple[bytes, dict]]:
    """Two real CNNs from scratch, with different seeds so that their answers differ (tests.support)."""
    return [train_tiny_model(seed) for seed in (0, 1)]


@pytest.fixture(scope="session")
def pretrained_tiny_model() -> tuple[bytes, dict]:
    """A head fitted on the pretrained backbone's features of a few real photos."""
    return train_tiny_model(0, backbone="efficientnet-lite0")
