"""The local stack that `dandelion up` (so `make up`) runs, as a library function: start MLflow and the
functions, seed the catalog, run extract-images, run train-model when there is no champion, report the
URLs; stop every process it started on the way out, whatever happened.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import ExitStack, contextmanager
from functools import partial
from pathlib import Path
from typing import Any

from sqlalchemy import make_url

from functions.lib import catalog
from functions.lib.config import DEFAULT_PORTS, Settings
from functions.lib.layout import read_champion
from functions.lib.store import open_store
from workflows.local import monitoring, status
from workflows.local.processes import (
    SERVED,
    WEB,
    in_use,
    serve_directory,
    start_function,
    start_mlflow,
    stop,
    wait_healthy,
)
from workflows.local.runner import LocalRunner, Pods
from workflows.local.supervisor import Supervisor
from workflows.local.webhook import RetrainWebhook
from workflows.local.workflow_metrics import WorkflowMetrics

MONITORING = ("prometheus", "alertmanager")
# How long a server may take to answer first: MLflow's first start on a new home takes about 20 s on a
# quiet machine here, and several times that on a busy one. A slow machine is no error.
READY_SECONDS = 600
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def local_parameters(runner: LocalRunner, name: str, settings: Settings) -> dict[str, str]:
    """Workflow parameters whose cluster default means nothing here: `ingest-url`, the local function's."""
    return {"ingest-url": settings.ingest_url} if "ingest-url" in runner.arguments(name) else {}


# The libraries the training steps import (torch, MLflow): 2.5 to 4 s of imports in each of five steps,
# unless the runner's fork server has imported them once.
TRAINING_LIBRARIES = (
    "workflows.lib.tracking",
    "workflows.lib.audit",
    "workflows.lib.evaluation",
    "workflows.lib.promotion",
)
PRELOAD = {"train-model": TRAINING_LIBRARIES, "weekly-retrain": TRAINING_LIBRARIES}


def run_workflow(
    name: str, parameters: Mapping[str, str], settings: Settings, metrics: WorkflowMetrics | None = None
) -> dict[str, Any]:
    """Run a workflow's rendered manifest with the local runner; returns its output parameters, each
    parsed from JSON (the steps write JSON). With `metrics`, the run emits the workflow's Argo metrics.

    The runner's fork server starts first and imports the step modules (those of workflows.manifests),
    what the workflow's steps import (`PRELOAD`) and `settings.step_preload` while this process builds
    the manifests. It is one per process and keeps the preload it started with: in `dandelion up`, the
    first workflow's (extract-images), so that the resident stack does not hold torch."""
    pods = Pods({"workflows.manifests", *PRELOAD.get(name, ()), *settings.step_preload})
    from workflows.manifests import manifests

    runner = LocalRunner(manifests(), pods=pods, metrics=metrics)
    outputs = runner.run(name, local_parameters(runner, name, settings) | dict(parameters)).parameters
    return {key: json.loads(value) for key, value in outputs.items()}


@contextmanager
def _environment(updates: Mapping[str, str]) -> Iterator[None]:
    """Set variables for this process and the processes it starts (the in-process workflow steps read
    them as a pod reads its ConfigMap), and put the previous values back afterwards."""
    saved = {name: os.environ.get(name) for name in updates}
    os.environ.update(updates)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


@contextmanager
def local_stack(
    mirror: Path | None = None,
    ports: Mapping[str, int] = DEFAULT_PORTS,
    train_parameters: Mapping[str, str] | None = None,
    report: Callable[[str], None] = print,
) -> Iterator[dict[str, str]]:
    """Everything `make up` starts, ready to serve; yields the URLs by part. `mirror` is a folder served
    over loopback in place of the canonical source URLs (these machines have no internet)."""
    parts = (*SERVED, "mlflow", "retrain-webhook", "workflow-metrics", *MONITORING)
    urls = {part: f"http://127.0.0.1:{ports[part]}" for part in parts}
    start_own_mlflow = not os.environ.get("MLFLOW_TRACKING_URI")
    _check_ports(ports, start_own_mlflow)
    env = {
        "DANDELION_INGEST_URL": f"{urls['ingest-one-url']}/",
        "DANDELION_PREDICT_URL": urls["predict"],
        "DANDELION_LABELS_URL": urls["validate-label"],
        "DANDELION_RETRAIN_WEBHOOK": f"{urls['retrain-webhook']}/retrain",
        # The admin's token for validate-label: the one set, or one made for this run and shown once.
        "DANDELION_ADMIN_TOKEN": os.environ.get("DANDELION_ADMIN_TOKEN") or secrets.token_urlsafe(24),
    }
    with ExitStack() as stack:
        shielded = threading.current_thread() is threading.main_thread()  # where handlers can be set
        if shielded:
            stack.callback(_set_handlers, {sig: signal.getsignal(sig) for sig in STOP_SIGNALS})  # runs last
        if mirror is not None:
            server = stack.enter_context(serve_directory(mirror))  # closes its socket on the way out
            stack.callback(server.shutdown)
            env["DANDELION_SOURCE_MIRROR"] = (
                f"{catalog.CANONICAL_PREFIX}=http://127.0.0.1:{server.server_port}/"
            )
            report(f"mirror of {mirror} on http://127.0.0.1:{server.server_port}/")
        if start_own_mlflow:
            env["MLFLOW_TRACKING_URI"] = urls["mlflow"]
        stack.enter_context(_environment(env))
        settings = Settings.from_env()
        settings.home.mkdir(parents=True, exist_ok=True)
        logs = settings.home / "logs"  # one file per process: the terminal shows progress, not requests
        starters = {
            part: partial(start_function, part, ports[part], log=logs / f"{part}.log") for part in SERVED
        }
        if start_own_mlflow:
            starters["mlflow"] = partial(
                start_mlflow, settings.home, settings.store_url, ports["mlflow"], logs / "mlflow.log"
            )

        metrics = WorkflowMetrics()
        exporter = metrics.serve(ports["workflow-metrics"])
        stack.callback(exporter.shutdown)

        def run(name: str, parameters: Mapping[str, str]) -> dict[str, Any]:
            return run_workflow(name, parameters, settings, metrics)

        def retrain(event_name: str) -> None:
            rollout = run("train-model", train_parameters or {})["rollout"]
            report(f"retrain ({event_name}): {json.dumps(rollout)}")

        webhook = stack.enter_context(RetrainWebhook(ports["retrain-webhook"], retrain).start())
        stack.callback(webhook.shutdown)
        servers = stack.enter_context(
            Supervisor(starters, report, {part: logs / f"{part}.log" for part in starters})
        )

        def ready(part: str, path: str = "/health") -> None:
            _wait_ready(part, f"{urls[part]}{path}", servers.processes[part], logs / f"{part}.log", report)

        monitored = _start_monitoring(stack, settings, ports, report)
        ready("ingest-one-url")
        engine = catalog.open_catalog(settings.db_url)
        report(f"seeded {catalog.seed(engine)} new catalog rows")
        summary = run("extract-images", {})["summary"]
        report(f"extract-images: {json.dumps({k: v for k, v in summary.items() if k != 'failures'})}")
        report(f"catalog: {catalog.counts_by_status(engine)}")
        if start_own_mlflow:
            ready("mlflow")
        store = open_store(settings.store_url)
        if read_champion(store) is None:
            report("no champion yet: running train-model (a few minutes)")
            rollout = run("train-model", train_parameters or {})["rollout"]
            report(f"train-model: {json.dumps(rollout)}")
        for part in ("validate-label", "predict"):  # predict answers 503 until it has a model
            ready(part)
        ready(WEB, "/")
        token = env["DANDELION_ADMIN_TOKEN"]
        served = {
            WEB: f"{urls[WEB]}/  (classify, correct, review, the model)",
            "predict": f"{urls['predict']}/predict  (curl -F file=@image.jpg {urls['predict']}/predict)",
            "ingest-one-url": f"{urls['ingest-one-url']}/",
            "validate-label": f"{urls['validate-label']}/submissions  (admin token: {token})",
            "mlflow": os.environ["MLFLOW_TRACKING_URI"],
            **{part: f"{urls[part]}/" for part in monitored},
            "logs": f"{logs}/",
        }
        report("serving:")
        for part, where in served.items():
            report(f"  {part:<15} {where}")
        shown = make_url(settings.db_url).render_as_string(hide_password=True)
        report(f"catalog: {shown}  store: {settings.store_url}")
        report(status.describe(read_champion(store)))
        if shielded:  # first on the way out: a second Ctrl-C cannot cut stopping short and leave processes
            stack.callback(_set_handlers, dict.fromkeys(STOP_SIGNALS, signal.SIG_IGN))
        yield urls


def _check_ports(ports: Mapping[str, int], start_own_mlflow: bool) -> None:
    """Fail before starting anything when a port `up` needs is taken: otherwise a part would fail to bind
    while `up` waited on, or talked to, whatever listens there (often a `make up` still running)."""
    needed = [*SERVED, "retrain-webhook", "workflow-metrics"]
    needed += ["mlflow"] if start_own_mlflow else []
    needed += [] if monitoring.missing() else list(MONITORING)
    taken = [f"{ports[part]} ({part})" for part in needed if in_use(ports[part])]
    if taken:
        raise RuntimeError(
            f"ports already in use: {', '.join(taken)}; is another `make up` running? "
            "`dandelion status` shows what answers there"
        )


def _set_handlers(handlers: Mapping[int, Any]) -> None:
    for sig, handler in handlers.items():
        signal.signal(sig, handler)


def _start_monitoring(
    stack: ExitStack, settings: Settings, ports: Mapping[str, int], report: Callable[[str], None]
) -> tuple[str, ...]:
    """Alertmanager, then Prometheus, when both are installed; returns what runs."""
    absent = monitoring.missing()
    if absent:
        report(f"not installed: {', '.join(absent)} (`{monitoring.INSTALL_HINT}` adds metrics and alerts)")
        return ()
    starters = {"alertmanager": monitoring.start_alertmanager, "prometheus": monitoring.start_prometheus}
    for part, starter in starters.items():
        log = settings.home / "logs" / f"{part}.log"
        process = starter(settings.home, ports, log)
        stack.callback(stop, process)
        _wait_ready(part, f"http://127.0.0.1:{ports[part]}/-/ready", process, log, report)
    return MONITORING


def _wait_ready(
    part: str, url: str, process: subprocess.Popen[bytes], log: Path, report: Callable[[str], None]
) -> None:
    """Wait for `part` to answer as long as a first start on a busy machine needs, saying so."""
    try:
        wait_healthy(url, process, timeout=2)
    except TimeoutError:
        report(f"waiting for {part} to answer at {url} (log: {log})")
        wait_healthy(url, process, timeout=READY_SECONDS)
