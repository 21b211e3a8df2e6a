"""`dandelion status`: the local stack at a glance, as `kubectl get` and the Argo UI show a cluster's.

What the catalog holds (by status and label), the champion and MLflow's newest runs, the labels waiting
for an admin and how far the next retraining is, and which local services answer. Each part is read
where it lives (the catalog, the store, MLflow, each service's health route); a part that cannot be
read says so in one line instead of failing the whole report.
"""

from __future__ import annotations

from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any

import requests

from functions.lib import catalog, retrain
from functions.lib.config import DEFAULT_PORTS, Settings
from functions.lib.errors import DandelionError, Unavailable
from functions.lib.labels import LABELS
from functions.lib.layout import read_champion
from functions.lib.store import open_store
from functions.lib.submissions import pending_count

# Where each local service says it is up (the routes `dandelion up` waits on).
HEALTH = {
    "predict": "/health",
    "ingest-one-url": "/health",
    "validate-label": "/health",
    "web": "/",
    "mlflow": "/health",
    "retrain-webhook": "/",
    "prometheus": "/-/ready",
    "alertmanager": "/-/ready",
    "workflow-metrics": "/metrics",
}
RUNS = 5  # MLflow's newest runs shown


def services(ports: Mapping[str, int] = DEFAULT_PORTS, timeout: float = 2.0) -> dict[str, str]:
    """Each local service's state: `up`, `down` (nothing listens), or the HTTP status it answered
    (predict answers 503 until it has a model). The webhook answers 404 to a GET: it is up."""

    def probe(part: str) -> str:
        try:
            answer = requests.get(f"http://127.0.0.1:{ports[part]}{HEALTH[part]}", timeout=timeout)
        except requests.RequestException:
            return "down"
        return "up" if answer.ok or part == "retrain-webhook" else f"answers {answer.status_code}"

    with ThreadPoolExecutor(len(HEALTH)) as pool:
        return dict(zip(HEALTH, pool.map(probe, HEALTH), strict=True))


def catalog_counts(settings: Settings) -> dict[str, Any]:
    """Rows by status and label, the submissions waiting for an admin, and the retraining's progress."""
    engine = catalog.open_catalog(settings.db_url)
    rows = catalog.counts_by_status_and_label(engine)
    state = retrain.status(engine, settings.retrain_min_new_labels, events=0)
    return {
        "rows": rows,
        "pending_submissions": pending_count(engine),
        "new_labels": state["new_labels"],
        "retrain_in": state["remaining"],
    }


def last_runs(tracking_uri: str, count: int = RUNS) -> list[dict[str, Any]]:
    """MLflow's newest runs of the training experiment: id, status, start, test accuracy."""
    import mlflow  # only here: the rest of the report needs no MLflow
    from mlflow.exceptions import MlflowException

    from workflows.lib.tracking import EXPERIMENT

    client = mlflow.MlflowClient(tracking_uri)
    try:
        experiment = client.get_experiment_by_name(EXPERIMENT)
        if experiment is None:
            return []
        runs = client.search_runs(
            [experiment.experiment_id], max_results=count, order_by=["attributes.start_time DESC"]
        )
    except (MlflowException, requests.RequestException) as exc:
        raise Unavailable(f"MLflow at {tracking_uri}: {str(exc).splitlines()[0]}") from None
    return [
        {
            "run_id": run.info.run_id,
            "status": run.info.status,
            "started": datetime.fromtimestamp(run.info.start_time / 1000, UTC).isoformat(timespec="seconds"),
            "test_accuracy": run.data.metrics.get("test_accuracy"),
        }
        for run in runs
    ]


def collect(settings: Settings, ports: Mapping[str, int] = DEFAULT_PORTS) -> dict[str, Any]:
    """Everything the report shows, as data (`dandelion status --json` prints it as it is)."""
    report: dict[str, Any] = {"services": services(ports)}
    try:
        report["catalog"] = catalog_counts(settings)
    except DandelionError as exc:
        report["catalog"] = {"error": str(exc)}
    try:
        report["champion"] = read_champion(open_store(settings.store_url))
    except DandelionError as exc:
        report["champion"] = {"error": str(exc)}
    tracking = settings.mlflow_url or f"http://127.0.0.1:{ports['mlflow']}"
    if settings.mlflow_url is None and report["services"]["mlflow"] != "up":
        report["runs"] = {"error": f"MLflow is not running at {tracking}"}
    else:
        try:
            report["runs"] = last_runs(tracking)
        except DandelionError as exc:
            report["runs"] = {"error": str(exc)}
    return report


def describe(champion: Mapping[str, Any] | None) -> str:
    """The champion pointer (`models/champion.json`) in one line."""
    if champion is None:
        return "champion: none yet (dandelion run train-model)"
    accuracy = champion.get("metrics", {}).get("test_accuracy")
    promoted = champion.get("promoted_at", "at an unknown time")
    return f"champion: model {champion['version']}, test accuracy {accuracy}, promoted {promoted}"


def render(report: Mapping[str, Any]) -> str:
    """The report as the terminal shows it."""
    lines = ["services:"]
    lines += [f"  {part:<17} {state}" for part, state in report["services"].items()]
    counts = report["catalog"]
    if "error" in counts:
        lines.append(f"catalog: {counts['error']}")
    else:
        lines.append("catalog:        " + "".join(f"{label:>11}" for label in LABELS) + "      total")
        for status, by_label in counts["rows"].items():
            cells = "".join(f"{by_label[label]:>11}" for label in LABELS)
            lines.append(f"  {status:<14}{cells}{sum(by_label.values()):>11}")
        lines.append(
            f"labels: {counts['pending_submissions']} waiting for an admin; {counts['new_labels']} accepted "
            f"since the last training, {counts['retrain_in']} more start the next"
        )
    champion = report["champion"]
    lines.append(f"champion: {champion['error']}" if "error" in (champion or {}) else describe(champion))
    runs = report["runs"]
    if isinstance(runs, dict):
        lines.append(f"runs: {runs['error']}")
    else:
        lines.append("runs:" if runs else "runs: none yet")
        lines += [
            f"  {run['run_id']}  {run['status']:<9} {run['started']}  test accuracy {run['test_accuracy']}"
            for run in runs
        ]
    return "\n".join(lines)
