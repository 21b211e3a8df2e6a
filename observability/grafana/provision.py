"""Put Dandelion's data source, folder and dashboards into a running Grafana over its HTTP API.

Why beside the file provisioning of observability/grafana/provisioning/: a Grafana that Dandelion does not
deploy (a managed one, a team's own) takes no files, only API calls. Every object has a fixed uid, so
running this again finds what the last run made: the data source is created when missing and updated when
it differs, the folder created when missing, and each committed dashboard saved with overwrite (a new
version of the same dashboard, never a copy).

    GRAFANA_TOKEN=... python -m observability.grafana.provision --url http://grafana:3000 \\
        --prometheus-url http://prometheus:9090

Credentials come from the environment only (a service-account token in GRAFANA_TOKEN, or GRAFANA_USER and
GRAFANA_PASSWORD), never from the command line where `ps` shows them. Failures end in one line on stderr
and exit status 1.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import requests
from grafana_client import GrafanaApi
from grafana_client.client import GrafanaException, GrafanaUnauthorizedError

from observability.grafana.dashboards import DATASOURCE_UID, DIRECTORY

DATASOURCE_NAME = "Dandelion Prometheus"
FOLDER_UID = "dandelion"
FOLDER_TITLE = "Dandelion"
DEFAULT_PROMETHEUS_URL = "http://127.0.0.1:9090"  # the local stack's Prometheus (DESIGN.md's ports)
TIMEOUT = (5.0, 30.0)  # seconds to connect, to read an answer


class ProvisionError(Exception):
    """A failure the operator reads as one line: what was being done, and what Grafana or the network said."""


class NotFound(ProvisionError):
    """Grafana answered 404: for a lookup, the object is to be created."""


def datasource(prometheus_url: str) -> dict[str, Any]:
    """The data source as Grafana's API takes it; provisioning/datasources/dandelion.yaml says the same."""
    return {
        "name": DATASOURCE_NAME,
        "uid": DATASOURCE_UID,
        "type": "prometheus",
        "access": "proxy",
        "url": prometheus_url,
        "jsonData": {"httpMethod": "POST"},
    }


def connect(url: str, environ: Mapping[str, str] = os.environ) -> GrafanaApi:
    """A client for the Grafana at `url`, with the token or the user and password the environment holds."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ProvisionError(f"the Grafana URL must look like http(s)://host[:port][/path], not {url!r}")
    if parts.username or parts.password:
        raise ProvisionError(
            "credentials belong in GRAFANA_TOKEN or GRAFANA_USER/GRAFANA_PASSWORD, not in the URL"
        )
    credential: str | tuple[str, str]
    if environ.get("GRAFANA_TOKEN"):
        credential = environ["GRAFANA_TOKEN"]
    elif environ.get("GRAFANA_USER") and environ.get("GRAFANA_PASSWORD"):
        credential = (environ["GRAFANA_USER"], environ["GRAFANA_PASSWORD"])
    else:
        raise ProvisionError("no credentials: set GRAFANA_TOKEN, or GRAFANA_USER and GRAFANA_PASSWORD")
    # grafana-client appends "api" to the URL's path as it is: "/grafana" would give "/grafanaapi".
    return GrafanaApi.from_url(url.rstrip("/") + "/", credential=credential, timeout=TIMEOUT)


def _innermost(exc: BaseException) -> str:
    """The root of a network error ("[Errno 111] Connection refused"), not requests' nested reprs."""
    while (inner := exc.__cause__ or exc.__context__) is not None:
        exc = inner
    return str(exc) or type(exc).__name__


def _said(exc: GrafanaException) -> str:
    """Grafana's own message ({"message": ...}), on one line."""
    answer = exc.response
    said = answer.get("message", json.dumps(answer, sort_keys=True)) if isinstance(answer, dict) else answer
    return " ".join(str(said or "no message").split())[:300]


def _call(grafana: GrafanaApi, action: str, request: Callable[[], Any]) -> dict[str, Any]:
    """`request()`'s JSON object, or a ProvisionError that says which `action` failed and why."""
    where = grafana.client.url
    try:
        answer = request()
    except GrafanaUnauthorizedError as exc:
        raise ProvisionError(
            f"{action}: Grafana refused the credentials (401 {_said(exc)}): "
            "check GRAFANA_TOKEN, or GRAFANA_USER and GRAFANA_PASSWORD"
        ) from None
    except GrafanaException as exc:
        error = NotFound if exc.status_code == 404 else ProvisionError
        raise error(f"{action}: Grafana answered {exc.status_code}: {_said(exc)}") from None
    except ValueError:  # before RequestException: requests' JSONDecodeError is both
        answer = None
    except requests.RequestException as exc:
        raise ProvisionError(f"{action}: cannot reach Grafana at {where}: {_innermost(exc)}") from None
    if not isinstance(answer, dict):
        raise ProvisionError(f"{action}: {where} did not answer with Grafana's JSON: is it Grafana's URL?")
    return answer


def _lookup(grafana: GrafanaApi, action: str, request: Callable[[], Any]) -> dict[str, Any] | None:
    try:
        return _call(grafana, action, request)
    except NotFound:
        return None


def _covers(current: Any, wanted: Any) -> bool:
    """Whether `current` already says all `wanted` does: Grafana returns fields of its own beside ours."""
    if isinstance(wanted, dict):
        return isinstance(current, dict) and all(
            _covers(current.get(key), value) for key, value in wanted.items()
        )
    return bool(current == wanted)


def check_health(grafana: GrafanaApi) -> str:
    """That the URL is a Grafana whose database answers, before changing anything in it."""
    health = _lookup(grafana, "check Grafana's health", grafana.health.check)
    if health is None or "version" not in health:
        raise ProvisionError(
            f"check Grafana's health: {grafana.client.url}/health does not answer as Grafana's does: "
            "is it Grafana's URL?"
        )
    if health.get("database") != "ok":
        raise ProvisionError(f"check Grafana's health: Grafana's database is {health.get('database')!r}")
    return f"Grafana {health['version']} at {grafana.url}"


def ensure_datasource(grafana: GrafanaApi, prometheus_url: str) -> str:
    """Create the data source, or update it when it differs; says which it did."""
    wanted = datasource(prometheus_url)
    current = _lookup(
        grafana,
        f"look up data source {DATASOURCE_UID}",
        lambda: grafana.datasource.get_datasource_by_uid(DATASOURCE_UID),
    )
    if current is None:
        _call(
            grafana,
            f"create data source {DATASOURCE_UID}",
            lambda: grafana.datasource.create_datasource(wanted),
        )
        return f"data source {DATASOURCE_UID}: created, Prometheus at {prometheus_url}"
    if _covers(current, wanted):
        return f"data source {DATASOURCE_UID}: unchanged, Prometheus at {prometheus_url}"
    _call(
        grafana,
        f"update data source {DATASOURCE_UID}",
        lambda: grafana.datasource.update_datasource_by_uid(DATASOURCE_UID, wanted),
    )
    return f"data source {DATASOURCE_UID}: updated, Prometheus at {prometheus_url}"


def ensure_folder(grafana: GrafanaApi) -> str:
    """Create the folder the dashboards go into when it is missing."""
    if (
        _lookup(grafana, f"look up folder {FOLDER_UID}", lambda: grafana.folder.get_folder(FOLDER_UID))
        is not None
    ):
        return f"folder {FOLDER_UID}: exists"
    _call(
        grafana,
        f"create folder {FOLDER_UID}",
        lambda: grafana.folder.create_folder(FOLDER_TITLE, uid=FOLDER_UID),
    )
    return f"folder {FOLDER_UID}: created ({FOLDER_TITLE})"


def upload_dashboard(grafana: GrafanaApi, dashboard: dict[str, Any]) -> str:
    """Save `dashboard` into the folder over any earlier version with its uid."""
    body = {
        "dashboard": dashboard,
        "folderUid": FOLDER_UID,
        "overwrite": True,
        "message": "observability.grafana.provision",
    }
    uid = dashboard["uid"]
    saved = _call(grafana, f"save dashboard {uid}", lambda: grafana.dashboard.update_dashboard(body))
    return f"dashboard {uid}: saved as version {saved.get('version')} at {saved.get('url')}"


def provision(
    grafana: GrafanaApi,
    prometheus_url: str,
    directory: Path = DIRECTORY,
    report: Callable[[str], None] = print,
) -> None:
    """Grafana's health, the data source, the folder, then every dashboard JSON in `directory`; `report`
    gets one line for each."""
    paths = sorted(directory.glob("*.json"))
    if not paths:
        raise ProvisionError(f"no dashboard JSON in {directory}: run `dandelion render`")
    report(check_health(grafana))
    report(ensure_datasource(grafana, prometheus_url))
    report(ensure_folder(grafana))
    for path in paths:
        report(upload_dashboard(grafana, json.loads(path.read_text())))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m observability.grafana.provision",
        description="Create or update Dandelion's Prometheus data source, folder and dashboards in a "
        "Grafana. Credentials: GRAFANA_TOKEN, or GRAFANA_USER and GRAFANA_PASSWORD.",
    )
    parser.add_argument(
        "--url", default=os.environ.get("GRAFANA_URL"), help="Grafana's URL (default $GRAFANA_URL)"
    )
    parser.add_argument(
        "--prometheus-url",
        default=DEFAULT_PROMETHEUS_URL,
        help=f"Prometheus as Grafana's server reaches it (default {DEFAULT_PROMETHEUS_URL})",
    )
    parser.add_argument(
        "--dashboards", type=Path, default=DIRECTORY, metavar="DIR", help="the rendered dashboards' JSON"
    )
    args = parser.parse_args(argv)
    if not args.url:
        parser.error("--url is required (or set GRAFANA_URL)")
    try:
        provision(connect(args.url), args.prometheus_url, args.dashboards)
    except ProvisionError as exc:
        print(f"provision: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
