"""Processes of the local stack: the functions as real functions-framework servers, the MLflow server,
and a loopback file mirror; the same helpers start them for `make up`, the tests and the benchmarks."""

from __future__ import annotations

import contextlib
import functools
import http.server
import importlib.util
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterable, Mapping
from pathlib import Path

import requests

from functions.lib.layout import MLFLOW_ARTIFACTS

# Each part's functions-framework target: a function of the same name in module functions.<target>.
FUNCTION_TARGETS = {
    "predict": "predict",
    "ingest-one-url": "ingest_one_url",
    "validate-label": "validate_label",
}


WEB = "web"  # the Gradio app, served like the functions
SERVED = (*FUNCTION_TARGETS, WEB)


def disable_mlflow_telemetry() -> None:
    """Call before mlflow is imported. At import, MLflow's telemetry fetches its config from the internet
    in a background thread and, when that fails (these machines have no internet), removes a variable
    from os.environ while other threads may be reading it: a KeyError inside an MLflow REST call."""
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def in_use(port: int) -> bool:
    """Whether something listens on loopback `port` already (a server binding it would fail)."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the servers bind: TIME_WAIT is free
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return True
        return False


def function_command(part: str, host: str, port: int) -> list[str]:
    """The command line that serves `part`, as its container image runs it: functions-framework for a
    function, `python -m web` for the web app."""
    if part == WEB:
        return [sys.executable, "-m", "web", "--host", host, "--port", str(port)]
    target = FUNCTION_TARGETS[part]
    spec = importlib.util.find_spec(f"functions.{target}")  # the module's file, without importing it
    if spec is None or spec.origin is None:
        raise RuntimeError(f"functions.{target} is not installed")
    return [
        sys.executable,
        "-m",
        "functions_framework",
        "--target",
        target,
        "--source",
        spec.origin,
        "--asgi",
        "--host",
        host,
        "--port",
        str(port),
    ]


def start(
    command: list[str], env: Mapping[str, str] | None = None, log: Path | None = None
) -> subprocess.Popen[bytes]:
    """A server process in a session of its own, so that `stop` reaches its workers too (gunicorn's,
    uvicorn's) and a Ctrl-C meant for `dandelion up` reaches only `up`, which stops them in order.
    With `log`, its output is appended to that file instead of the terminal."""
    output = None
    if log is not None:
        log.parent.mkdir(parents=True, exist_ok=True)
        output = log.open("ab")
    # S603: the commands are built here from sys.executable and fixed arguments.
    with contextlib.nullcontext() if output is None else output:
        return subprocess.Popen(  # noqa: S603
            command, env=dict(env or os.environ), start_new_session=True, stdout=output, stderr=output
        )


def stop(process: subprocess.Popen[bytes], grace: float = 5) -> None:
    """SIGTERM to the process and everything it started, SIGKILL to what is left after `grace` seconds,
    as Kubernetes stops a pod: gunicorn's graceful shutdown would otherwise wait up to 30 s for a client
    that keeps an idle connection open, and killing the arbiter alone leaves its worker serving."""
    stop_all([process], grace)


def stop_all(processes: Iterable[subprocess.Popen[bytes]], grace: float = 5) -> None:
    """`stop` for several processes at once, as Kubernetes stops a pod's containers: all get SIGTERM
    first and share one grace period, so stopping takes `grace` at most, not `grace` per process."""
    processes = list(processes)
    for process in processes:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    for process in processes:
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=max(0.0, deadline - time.monotonic()))
    for process in processes:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def start_mlflow(home: Path, store_url: str, port: int, log: Path | None = None) -> subprocess.Popen[bytes]:
    """A real MLflow tracking server: SQLite backend under `home`, artifacts proxied into the store.
    Without MLflow's job runner (seven more processes, about 850 MB, for GenAI jobs Dandelion never
    submits)."""
    return start(
        [
            sys.executable,
            "-m",
            "mlflow",
            "server",
            "--backend-store-uri",
            f"sqlite:///{home / 'mlflow.db'}",
            "--artifacts-destination",
            f"{store_url.rstrip('/')}/{MLFLOW_ARTIFACTS}",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            "1",
        ],
        dict(os.environ, MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false"),
        log=log,
    )


def function_environment(env: Mapping[str, str]) -> dict[str, str]:
    """`env` with functions-framework's gunicorn pinned to one worker per instance: the Prometheus
    metrics live in the worker's memory, and Knative scales a function with instances, not workers."""
    return dict(env, WORKERS="1")


def start_function(
    part: str, port: int, env: Mapping[str, str] | None = None, log: Path | None = None
) -> subprocess.Popen[bytes]:
    return start(function_command(part, "127.0.0.1", port), function_environment(env or os.environ), log)


def wait_healthy(url: str, process: subprocess.Popen[bytes] | None = None, timeout: float = 60) -> None:
    """Block until `url` answers 200, or fail early if the process died."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"{url}: the process exited with code {process.returncode}")
        try:
            if requests.get(url, timeout=5).status_code == 200:
                return
        except (requests.ConnectionError, requests.Timeout):
            pass  # not listening yet, or busy with its cold start on a loaded machine: ask again
        time.sleep(0.2)
    raise TimeoutError(f"{url} did not become healthy in {timeout:.0f} s")


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    """Serves files without a log line per request."""

    def log_message(self, format: str, *args: object) -> None:
        pass


def serve_directory(
    directory: Path, port: int = 0, handler: type[QuietHandler] = QuietHandler
) -> http.server.ThreadingHTTPServer:
    """Serve `directory` over loopback HTTP from a daemon thread (the sources' offline mirror, the build's
    wheel indexes)."""
    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", port), functools.partial(handler, directory=str(directory))
    )
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server
