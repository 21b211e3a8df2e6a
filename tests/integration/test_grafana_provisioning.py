"""`python -m observability.grafana.provision` against a stand-in for Grafana's HTTP API.

No Grafana can be installed here, so a loopback server plays the part of the endpoints the script calls,
keeps their state in memory, checks each request the way Grafana's HTTP API reference describes it
(method, path, the Authorization header, the JSON body's fields) and records every call, so the tests
can say exactly what the script asked for, in which order, on a first and on a second run.
"""

from __future__ import annotations

import base64
import http.server
import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import requests

from observability.grafana.provision import main
from tests.support import ROOT, loopback_server
from workflows.local.processes import free_port

pytestmark = pytest.mark.integration

DASHBOARDS = ROOT / "observability" / "grafana" / "dashboards"
TOKEN = "glsa_dandelion-test-token"
USER, PASSWORD = "admin", "s3cret"
PROMETHEUS = "http://prometheus.monitoring.svc:9090"
UID = re.compile(r"^[a-zA-Z0-9_-]{1,40}$")
DATASOURCE_FIELDS = {
    "name", "type", "access", "url", "uid", "user", "database", "basicAuth", "basicAuthUser",
    "withCredentials", "isDefault", "jsonData", "secureJsonData", "version",
}  # fmt: skip
SAVE_FIELDS = {"dashboard", "folderUid", "folderId", "overwrite", "message"}


class Refused(Exception):
    """An answer other than 200: Grafana's status and its {"message": ...}."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status, self.message = status, message


@dataclass
class Call:
    method: str
    path: str
    authorization: str | None
    body: Any


@dataclass
class FakeGrafana:
    """The slice of Grafana 11's HTTP API that provisioning uses, state in memory."""

    datasources: dict[str, dict[str, Any]] = field(default_factory=dict)
    folders: dict[str, dict[str, Any]] = field(default_factory=dict)
    dashboards: dict[str, dict[str, Any]] = field(default_factory=dict)
    calls: list[Call] = field(default_factory=list)
    failures: dict[tuple[str, str], int] = field(default_factory=dict)  # (method, path) -> status to answer
    ids: Iterator[int] = field(default_factory=lambda: iter(range(1, 1000)))

    def answer(self, method: str, path: str, authorization: str | None, body: Any) -> tuple[int, Any]:
        self.calls.append(Call(method, path, authorization, body))
        try:
            if (method, path) in self.failures:
                raise Refused(self.failures[method, path], "injected failure")
            if (method, path) == ("GET", "/api/health"):  # Grafana answers it without credentials
                return 200, {"commit": "0123abc", "database": "ok", "version": "11.6.0"}
            self.authenticate(authorization)
            return 200, self.route(method, path, body)
        except Refused as refused:
            return refused.status, {"message": refused.message}

    def authenticate(self, authorization: str | None) -> None:
        basic = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
        if authorization not in (f"Bearer {TOKEN}", f"Basic {basic}"):
            raise Refused(401, "Invalid API key")

    def route(self, method: str, path: str, body: Any) -> dict[str, Any]:
        match method, path.split("/")[2:]:
            case "GET", ["datasources", "uid", uid]:
                return self.datasource(uid)
            case "POST", ["datasources"]:
                return self.create_datasource(body)
            case "PUT", ["datasources", "uid", uid]:
                return self.update_datasource(uid, body)
            case "GET", ["folders", uid]:
                if uid not in self.folders:
                    raise Refused(404, "folder not found")
                return self.folders[uid]
            case "POST", ["folders"]:
                return self.create_folder(body)
            case "POST", ["dashboards", "db"]:
                return self.save_dashboard(body)
        raise Refused(404, "Not found")

    def datasource(self, uid: str) -> dict[str, Any]:
        if uid not in self.datasources:
            raise Refused(404, "Data source not found")
        return self.datasources[uid]

    @staticmethod
    def check_datasource(body: Any) -> None:
        """POST and PUT /api/datasources[/uid/:uid]: name, type, access and url, a uid, known fields only."""
        if not isinstance(body, dict) or set(body) - DATASOURCE_FIELDS:
            raise Refused(400, f"bad request data: {body!r}")
        if not (body.get("name") and body.get("type") == "prometheus" and body.get("access") == "proxy"):
            raise Refused(400, "name, type prometheus and access proxy are required")
        if not str(body.get("url", "")).startswith(("http://", "https://")):
            raise Refused(400, "invalid data source URL")
        if not UID.match(str(body.get("uid", ""))) or not isinstance(body.get("jsonData", {}), dict):
            raise Refused(400, "invalid uid or jsonData")

    def create_datasource(self, body: Any) -> dict[str, Any]:
        self.check_datasource(body)
        if body["uid"] in self.datasources or any(
            d["name"] == body["name"] for d in self.datasources.values()
        ):
            raise Refused(409, "data source with the same name already exists")
        stored = {
            "id": next(self.ids), "orgId": 1, "typeLogoUrl": "public/plugins/prometheus/img/logo.svg",
            "user": "", "database": "", "basicAuth": False, "basicAuthUser": "", "withCredentials": False,
            "isDefault": False, "jsonData": {}, "secureJsonFields": {}, "readOnly": False,
            **body, "version": 1,
        }  # fmt: skip
        self.datasources[body["uid"]] = stored
        return {
            "datasource": stored,
            "id": stored["id"],
            "message": "Datasource added",
            "name": stored["name"],
        }

    def update_datasource(self, uid: str, body: Any) -> dict[str, Any]:
        current = self.datasource(uid)
        self.check_datasource(body)
        if body["uid"] != uid:
            raise Refused(400, "the uid in the body differs from the path's")
        stored = {**current, **body, "version": current["version"] + 1}
        self.datasources[uid] = stored
        return {
            "datasource": stored,
            "id": stored["id"],
            "message": "Datasource updated",
            "name": stored["name"],
        }

    def create_folder(self, body: Any) -> dict[str, Any]:
        """POST /api/folders: a title, an optional uid."""
        if not isinstance(body, dict) or set(body) - {"title", "uid", "parentUid"} or not body.get("title"):
            raise Refused(400, f"bad request data: {body!r}")
        uid = body.get("uid") or f"generated{len(self.folders)}"
        if not UID.match(uid):
            raise Refused(400, "uid contains illegal characters")
        if uid in self.folders:
            raise Refused(409, "a folder with the same uid already exists")
        self.folders[uid] = {
            "id": next(self.ids),
            "uid": uid,
            "title": body["title"],
            "url": f"/dashboards/f/{uid}/",
            "version": 1,
        }
        return self.folders[uid]

    def save_dashboard(self, body: Any) -> dict[str, Any]:
        """POST /api/dashboards/db: the dashboard (no id for a new one), its folder, whether to overwrite."""
        if (
            not isinstance(body, dict)
            or set(body) - SAVE_FIELDS
            or not isinstance(body.get("dashboard"), dict)
        ):
            raise Refused(400, f"bad request data: {sorted(body) if isinstance(body, dict) else body!r}")
        dashboard = body["dashboard"]
        if not dashboard.get("title") or not UID.match(str(dashboard.get("uid", ""))):
            raise Refused(400, "Dashboard title cannot be empty, and its uid must be valid")
        if body.get("folderUid") not in self.folders:
            raise Refused(400, "folder not found")
        uid = dashboard["uid"]
        current = self.dashboards.get(uid)
        if current is not None and body.get("overwrite") is not True:
            raise Refused(412, "A dashboard with the same uid already exists")
        if current is None and dashboard.get("id") is not None:
            raise Refused(404, "Dashboard not found")
        version = current["version"] + 1 if current else 1
        slug = re.sub(r"[^a-z0-9]+", "-", dashboard["title"].lower()).strip("-")
        self.dashboards[uid] = {"dashboard": dashboard, "folderUid": body["folderUid"], "version": version}
        return {
            "id": next(self.ids),
            "uid": uid,
            "url": f"/d/{uid}/{slug}",
            "status": "success",
            "version": version,
        }

    def requested(self) -> list[tuple[str, str]]:
        return [(call.method, call.path) for call in self.calls]


def handler(fake: FakeGrafana) -> type[http.server.BaseHTTPRequestHandler]:
    class Handler(http.server.BaseHTTPRequestHandler):
        def handle_one(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            body = json.loads(raw) if raw else None
            status, answer = fake.answer(self.command, self.path, self.headers.get("Authorization"), body)
            data = json.dumps(answer).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = handle_one

    return Handler


@pytest.fixture
def fake() -> FakeGrafana:
    return FakeGrafana()


@pytest.fixture
def grafana_url(fake: FakeGrafana) -> Iterator[str]:
    with loopback_server(handler(fake)) as server:
        yield f"http://127.0.0.1:{server.server_port}"


@pytest.fixture
def token(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("GRAFANA_URL", "GRAFANA_USER", "GRAFANA_PASSWORD"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("GRAFANA_TOKEN", TOKEN)


def committed() -> list[dict[str, Any]]:
    return [json.loads(path.read_text()) for path in sorted(DASHBOARDS.glob("*.json"))]


def wanted_datasource(url: str = PROMETHEUS) -> dict[str, Any]:
    return {
        "name": "Dandelion Prometheus",
        "uid": "dandelion-prometheus",
        "type": "prometheus",
        "access": "proxy",
        "url": url,
        "jsonData": {"httpMethod": "POST"},
    }


def saved(dashboard: dict[str, Any]) -> dict[str, Any]:
    return {
        "dashboard": dashboard,
        "folderUid": "dandelion",
        "overwrite": True,
        "message": "observability.grafana.provision",
    }


SAVES = [("POST", "/api/dashboards/db")] * 4


def test_the_first_run_creates_the_data_source_the_folder_and_the_four_dashboards(
    fake: FakeGrafana, grafana_url: str, token: None, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["--url", grafana_url, "--prometheus-url", PROMETHEUS]) == 0

    assert fake.requested() == [
        ("GET", "/api/health"),
        ("GET", "/api/datasources/uid/dandelion-prometheus"),
        ("POST", "/api/datasources"),
        ("GET", "/api/folders/dandelion"),
        ("POST", "/api/folders"),
        *SAVES,
    ]
    assert [call.body for call in fake.calls] == [
        None,
        None,
        wanted_datasource(),
        None,
        {"title": "Dandelion", "uid": "dandelion"},
        *[saved(dashboard) for dashboard in committed()],
    ]
    assert {call.authorization for call in fake.calls[1:]} == {f"Bearer {TOKEN}"}
    assert list(fake.datasources) == ["dandelion-prometheus"]
    assert list(fake.folders) == ["dandelion"]
    assert {uid: (d["folderUid"], d["version"]) for uid, d in fake.dashboards.items()} == {
        f"dandelion-{name}": ("dandelion", 1) for name in ("labels", "model", "pipelines", "serving")
    }
    # Every panel names the data source the script made: none would show "data source not found".
    used = {
        target["datasource"]["uid"]
        for d in fake.dashboards.values()
        for panel in d["dashboard"]["panels"]
        for target in panel.get("targets", [])
    }
    assert used == set(fake.datasources)
    assert capsys.readouterr().out.splitlines() == [
        f"Grafana 11.6.0 at {grafana_url}/",
        f"data source dandelion-prometheus: created, Prometheus at {PROMETHEUS}",
        "folder dandelion: created (Dandelion)",
        "dashboard dandelion-labels: saved as version 1 at /d/dandelion-labels/dandelion-labels",
        "dashboard dandelion-model: saved as version 1 at /d/dandelion-model/dandelion-model",
        "dashboard dandelion-pipelines: saved as version 1 at /d/dandelion-pipelines/dandelion-pipelines",
        "dashboard dandelion-serving: saved as version 1 at /d/dandelion-serving/dandelion-serving",
    ]


def test_a_second_run_creates_nothing_and_saves_new_versions_of_the_same_dashboards(
    fake: FakeGrafana, grafana_url: str, token: None, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["--url", grafana_url, "--prometheus-url", PROMETHEUS]) == 0
    first = len(fake.calls)
    capsys.readouterr()

    assert main(["--url", grafana_url, "--prometheus-url", PROMETHEUS]) == 0

    again = fake.calls[first:]
    assert [(call.method, call.path) for call in again] == [
        ("GET", "/api/health"),
        ("GET", "/api/datasources/uid/dandelion-prometheus"),
        ("GET", "/api/folders/dandelion"),
        *SAVES,
    ]
    assert [call.body for call in again[3:]] == [saved(dashboard) for dashboard in committed()]
    assert (len(fake.datasources), len(fake.folders), len(fake.dashboards)) == (1, 1, 4)
    assert fake.datasources["dandelion-prometheus"]["version"] == 1
    assert {d["version"] for d in fake.dashboards.values()} == {2}
    out = capsys.readouterr().out.splitlines()
    assert out[1:3] == [
        f"data source dandelion-prometheus: unchanged, Prometheus at {PROMETHEUS}",
        "folder dandelion: exists",
    ]


def test_a_new_prometheus_url_updates_the_data_source_in_place(
    fake: FakeGrafana, grafana_url: str, token: None
) -> None:
    assert main(["--url", grafana_url, "--prometheus-url", PROMETHEUS]) == 0
    first = len(fake.calls)

    assert main(["--url", grafana_url, "--prometheus-url", "http://127.0.0.1:9090"]) == 0

    update = fake.calls[first + 2]
    assert (update.method, update.path) == ("PUT", "/api/datasources/uid/dandelion-prometheus")
    assert update.body == wanted_datasource("http://127.0.0.1:9090")
    assert fake.requested().count(("POST", "/api/datasources")) == 1
    assert fake.datasources["dandelion-prometheus"]["url"] == "http://127.0.0.1:9090"
    assert fake.datasources["dandelion-prometheus"]["version"] == 2


def test_basic_auth_from_grafana_user_and_password(
    fake: FakeGrafana, grafana_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("GRAFANA_TOKEN", raising=False)
    monkeypatch.setenv("GRAFANA_USER", USER)
    monkeypatch.setenv("GRAFANA_PASSWORD", PASSWORD)
    monkeypatch.setenv("GRAFANA_URL", grafana_url)  # --url's default

    assert main(["--prometheus-url", PROMETHEUS]) == 0

    basic = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
    assert {call.authorization for call in fake.calls[1:]} == {f"Basic {basic}"}
    assert len(fake.dashboards) == 4


def run_script(url: str, **environ: str) -> subprocess.CompletedProcess[str]:
    """The script as an operator runs it: its exit status and its output, not a Python exception."""
    env = {name: value for name, value in os.environ.items() if not name.startswith("GRAFANA_")} | environ
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "observability.grafana.provision",
            "--url",
            url,
            "--prometheus-url",
            PROMETHEUS,
        ],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=60,
    )


def test_a_wrong_token_ends_in_one_clear_line_and_changes_nothing(
    fake: FakeGrafana, grafana_url: str
) -> None:
    result = run_script(grafana_url, GRAFANA_TOKEN="glsa_wrong")

    assert result.returncode == 1
    assert result.stderr == (
        "provision: look up data source dandelion-prometheus: Grafana refused the credentials "
        "(401 Invalid API key): check GRAFANA_TOKEN, or GRAFANA_USER and GRAFANA_PASSWORD\n"
    )
    assert fake.requested() == [("GET", "/api/health"), ("GET", "/api/datasources/uid/dandelion-prometheus")]
    assert fake.calls[1].authorization == "Bearer glsa_wrong"
    assert not (fake.datasources or fake.folders or fake.dashboards)


def test_grafana_down_ends_in_one_clear_line() -> None:
    port = free_port()  # nothing listens there

    result = run_script(f"http://127.0.0.1:{port}", GRAFANA_TOKEN=TOKEN)

    assert result.returncode == 1
    assert result.stderr == (
        f"provision: check Grafana's health: cannot reach Grafana at http://127.0.0.1:{port}/api: "
        "[Errno 111] Connection refused\n"
    )
    assert result.stdout == ""


def test_no_credentials_is_refused_before_any_call(fake: FakeGrafana, grafana_url: str) -> None:
    result = run_script(grafana_url)

    assert result.returncode == 1
    assert (
        result.stderr
        == "provision: no credentials: set GRAFANA_TOKEN, or GRAFANA_USER and GRAFANA_PASSWORD\n"
    )
    assert fake.calls == []


def test_a_server_error_names_the_step_that_failed(
    fake: FakeGrafana, grafana_url: str, token: None, capsys: pytest.CaptureFixture[str]
) -> None:
    fake.failures["POST", "/api/dashboards/db"] = 500

    assert main(["--url", grafana_url, "--prometheus-url", PROMETHEUS]) == 1

    assert (
        capsys.readouterr().err
        == "provision: save dashboard dandelion-labels: Grafana answered 500: injected failure\n"
    )
    assert fake.requested()[-1] == ("POST", "/api/dashboards/db")
    assert not fake.dashboards


def test_a_url_that_is_not_grafana_is_named(
    fake: FakeGrafana, grafana_url: str, token: None, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["--url", f"{grafana_url}/not-grafana", "--prometheus-url", PROMETHEUS]) == 1

    assert capsys.readouterr().err == (
        f"provision: check Grafana's health: {grafana_url}/not-grafana/api/health does not answer as "
        "Grafana's does: is it Grafana's URL?\n"
    )


def test_an_empty_dashboards_folder_is_refused(
    fake: FakeGrafana, grafana_url: str, token: None, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["--url", grafana_url, "--dashboards", str(tmp_path)]) == 1

    assert capsys.readouterr().err == f"provision: no dashboard JSON in {tmp_path}: run `dandelion render`\n"
    assert fake.calls == []


AUTHORIZED = f"Bearer {TOKEN}"
NO_ACCESS = {key: value for key, value in wanted_datasource().items() if key != "access"}
BAD_REQUESTS = [
    pytest.param("GET", "/api/folders/dandelion", None, None, 401, id="no token"),
    pytest.param("POST", "/api/datasources", AUTHORIZED, NO_ACCESS, 400, id="data source without access"),
    pytest.param(
        "POST",
        "/api/datasources",
        AUTHORIZED,
        wanted_datasource() | {"type": "loki"},
        400,
        id="not prometheus",
    ),
    pytest.param(
        "POST",
        "/api/dashboards/db",
        AUTHORIZED,
        saved({"uid": "x", "title": "x", "panels": []}),
        400,
        id="dashboard into a missing folder",
    ),
    pytest.param("POST", "/api/dashboards/db", AUTHORIZED, {"folderUid": "x"}, 400, id="no dashboard"),
    pytest.param(
        "DELETE", "/api/datasources/uid/dandelion-prometheus", AUTHORIZED, None, 404, id="unknown route"
    ),
]


@pytest.mark.parametrize(("method", "path", "authorization", "body", "status"), BAD_REQUESTS)
def test_the_stand_in_refuses_what_grafana_refuses(
    fake: FakeGrafana,
    grafana_url: str,
    method: str,
    path: str,
    authorization: str | None,
    body: Any,
    status: int,
) -> None:
    """The stand-in is not a rubber stamp: requests Grafana would refuse get Grafana's status here too."""
    headers = {"Authorization": authorization} if authorization else {}
    answer = requests.request(method, grafana_url + path, json=body, headers=headers, timeout=10)
    assert answer.status_code == status
    assert answer.json()["message"]


def test_saving_an_existing_dashboard_without_overwrite_is_refused(
    fake: FakeGrafana, grafana_url: str
) -> None:
    headers = {"Authorization": f"Bearer {TOKEN}"}
    fake.folders["dandelion"] = {"uid": "dandelion", "title": "Dandelion"}
    body = saved({"uid": "dandelion-model", "title": "Dandelion · model", "panels": []})
    url = f"{grafana_url}/api/dashboards/db"
    assert requests.post(url, json=body, headers=headers, timeout=10).json()["version"] == 1
    answer = requests.post(url, json=body | {"overwrite": False}, headers=headers, timeout=10)
    assert (answer.status_code, answer.json()) == (
        412,
        {"message": "A dashboard with the same uid already exists"},
    )


@pytest.mark.parametrize(
    ("url", "said"),
    [
        (
            "localhost:3000",
            "the Grafana URL must look like http(s)://host[:port][/path], not 'localhost:3000'",
        ),
        (
            "http://admin:pw@127.0.0.1:3000",
            "credentials belong in GRAFANA_TOKEN or GRAFANA_USER/GRAFANA_PASSWORD",
        ),
    ],
)
def test_a_bad_grafana_url_is_refused_before_any_call(
    url: str, said: str, token: None, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["--url", url]) == 1

    error = capsys.readouterr().err
    assert error.startswith(f"provision: {said}") and error.count("\n") == 1
    assert "pw" not in error  # a password never reaches the terminal
