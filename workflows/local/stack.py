"""The local stack that `dandelion up` (so `make up`) runs, as a library function: start MLflow and the
functions, seed the catalog, run extract-images, run train-model when there is no champion, report the
URLs; stop every process it started on the way out, whatever happened.
"""

from __future__ import annotations

import json
import os
import secrets
from collections.abc import Callable, Iterator, Mapping
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

from functions.lib import catalog
from functions.lib.config import DEFAULT_PORTS, Settings
from functions.lib.layout import read_champion
from functions.lib.store import open_store
from workflows.local import monitoring
from workflows.local.processes import (
    SERVED,
    WEB,
    serve_directory,
    start_function,
    start_mlflow,
    stop,
    wait_healthy,
)
from workflows.local.runner import LocalRunner
from workflows.local.webhook import RetrainWebhook
from workflows.local.workflow_metrics import WorkflowMetrics

MONITORING = ("prometheus", "alertmanager")


def local_parameters(runner: LocalRunner, name: str, settings: Settings) -> dict[str, str]:
    """Workflow parameters whose cluster default means nothing here: `ingest-url`, the local function's."""
    return {"ingest-url": settings.ingest_url} if "ingest-url" in runner.arguments(name) else {}


def run_workflow(
    name: str, parameters: Mapping[str, str], settings: Settings, metrics: WorkflowMetrics | None = None
) -> dict[str, Any]:
    """Run a workflow's rendered manifest with the local runner; returns its output parameters, each
    parsed from JSON (the steps write JSON). With `metrics`, the run emits the workflow's Argo metrics."""
    from workflows.manifests import manifests

    runner = LocalRunner(manifests(), metrics=metrics)
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
    env = {
        "DANDELION_INGEST_URL": f"{urls['ingest-one-url']}/",
        "DANDELION_PREDICT_URL": urls["predict"],
        "DANDELION_LABELS_URL": urls["validate-label"],
        "DANDELION_RETRAIN_WEBHOOK": f"{urls['retrain-webhook']}/retrain",
        # The admin's token for validate-label: the one set, or one made for this run and shown once.
        "DANDELION_ADMIN_TOKEN": os.environ.get("DANDELION_ADMIN_TOKEN") or secrets.token_urlsafe(24),
    }
    with ExitStack() as stack:
        if mirror is not None:
            server = stack.enter_context(serve_directory(mirror))  # closes its socket on the way out
            stack.callback(server.shutdown)
            env["DANDELION_SOURCE_MIRROR"] = (
                f"{catalog.CANONICAL_PREFIX}=http://127.0.0.1:{server.server_port}/"
            )
            env["DANDELION_ALLOW_PRIVATE_URLS"] = "1"
            report(f"mirror of {mirror} on http://127.0.0.1:{server.server_port}/")
        start_own_mlflow = not os.environ.get("MLFLOW_TRACKING_URI")
        if start_own_mlflow:
            env["MLFLOW_TRACKING_URI"] = urls["mlflow"]
        stack.enter_context(_environment(env))
        settings = Settings.from_env()
        settings.home.mkdir(parents=True, exist_ok=True)
        logs = settings.home / "logs"  # one file per process: the terminal shows progress, not requests
        if start_own_mlflow:
            mlflow = start_mlflow(settings.home, settings.store_url, ports["mlflow"], logs / "mlflow.log")
            stack.callback(stop, mlflow)
            wait_healthy(f"{urls['mlflow']}/health", mlflow, timeout=120)

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
        started = {part: start_function(part, ports[part], log=logs / f"{part}.log") for part in SERVED}
        for process in started.values():
            stack.callback(stop, process)
        monitored = _start_monitoring(stack, settings, ports, report)
        wait_healthy(f"{urls['ingest-one-url']}/health", started["ingest-one-url"])

        engine = catalog.open_catalog(settings.db_url)
        report(f"seeded {catalog.seed(engine)} new catalog rows")
        summary = run("extract-images", {})["summary"]
        report(f"extract-images: {json.dumps({k: v for k, v in summary.items() if k != 'failures'})}")
        report(f"catalog: {catalog.counts_by_status(engine)}")
        store = open_store(settings.store_url)
        if read_champion(store) is None:
            report("no champion yet: running train-model (a few minutes)")
            rollout = run("train-model", train_parameters or {})["rollout"]
            report(f"train-model: {json.dumps(rollout)}")
        report(f"champion: {read_champion(store)}")
        report(f"MLflow: {os.environ['MLFLOW_TRACKING_URI']}")
        report(f"ingest-one-url: {urls['ingest-one-url']}/")
        wait_healthy(f"{urls['validate-label']}/health", started["validate-label"])
        token = env["DANDELION_ADMIN_TOKEN"]
        report(f"validate-label: {urls['validate-label']}/submissions  (admin token: {token})")
        wait_healthy(f"{urls['predict']}/health", started["predict"])  # 503 until it has a model
        report(f"predict: {urls['predict']}/predict  (curl -F file=@image.jpg {urls['predict']}/predict)")
        wait_healthy(urls[WEB], started[WEB], timeout=120)
        report(f"web: {urls[WEB]}/  (the page: classify, correct, review, the model)")
        for part in monitored:
            report(f"{part}: {urls[part]}/")
        report(f"catalog: {settings.db_url}  store: {settings.store_url}")
        report(f"logs: {logs}/")
        yield urls


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
        process = starter(settings.home, ports, settings.home / "logs" / f"{part}.log")
        stack.callback(stop, process)
        wait_healthy(f"http://127.0.0.1:{ports[part]}/-/ready", process, timeout=120)
    return MONITORING
