"""`dandelion status` against real parts: a catalog with rows in several states, a store with a champion,
the session's MLflow server, and real function processes (one up, one answering 503, the rest down)."""

import json
from pathlib import Path

import mlflow
import pytest

from functions.lib import catalog
from functions.lib.config import DEFAULT_PORTS, Settings
from functions.lib.layout import CHAMPION_KEY
from functions.lib.store import open_store
from tests.conftest import FunctionProcess, canonical
from workflows.lib.tracking import EXPERIMENT
from workflows.local import cli, status
from workflows.local.processes import free_port

pytestmark = pytest.mark.integration

CHAMPION = {
    "version": "3",
    "sha256": "0" * 64,
    "metrics": {"test_accuracy": 0.9},
    "promoted_at": "2026-12-01",
}


def home(tmp_path: Path) -> Settings:
    """A catalog holding two ingested dandelions, a failed grass and a pending one; a champion."""
    settings = Settings.from_env({"DANDELION_HOME": str(tmp_path)})
    engine = catalog.open_catalog(settings.db_url)
    for n in range(2):
        catalog.record(engine, canonical("grass", n), "grass")
        sha256 = f"{n:064d}"
        ingested = {"status": "ingested", "url_s3": f"raw/dandelion/{sha256}.jpg", "sha256": sha256}
        catalog.record(engine, canonical("dandelion", n), "dandelion", **ingested)
    assert catalog.record_failure(engine, canonical("grass", 0), "refused")
    open_store(settings.store_url).put(CHAMPION_KEY, json.dumps(CHAMPION).encode(), "application/json")
    return settings


def test_status_reports_the_catalog_champion_runs_and_services(tmp_path, mlflow_server, capsys) -> None:
    settings = home(tmp_path)
    predict = FunctionProcess("predict", {"DANDELION_HOME": str(tmp_path / "empty")}, ready="/metrics")
    ingest = FunctionProcess("ingest-one-url", {"DANDELION_HOME": str(tmp_path)})
    try:
        mlflow.set_experiment(EXPERIMENT)
        with mlflow.start_run() as run:
            mlflow.log_metric("test_accuracy", 0.75)
        ports = {part: free_port() for part in DEFAULT_PORTS} | {
            "predict": predict.port,
            "ingest-one-url": ingest.port,
        }
        settings = Settings.from_env({"DANDELION_HOME": str(tmp_path), "MLFLOW_TRACKING_URI": mlflow_server})
        report = status.collect(settings, ports)
    finally:
        predict.stop()
        ingest.stop()
    newest = report["runs"][0]
    assert (newest["run_id"], newest["status"], newest["test_accuracy"]) == (
        run.info.run_id,
        "FINISHED",
        0.75,
    )
    lines = status.render(report).splitlines()
    assert lines[:18] == [
        "services:",
        "  predict           answers 503",
        "  ingest-one-url    up",
        "  validate-label    down",
        "  web               down",
        "  mlflow            down",
        "  retrain-webhook   down",
        "  prometheus        down",
        "  alertmanager      down",
        "  workflow-metrics  down",
        "catalog:          dandelion      grass      total",
        "  pending                 0          1          1",
        "  ingested                2          0          2",
        "  failed                  0          1          1",
        "  excluded                0          0          0",
        "labels: 0 waiting for an admin; 0 accepted since the last training, 10 more start the next",
        "champion: model 3, test accuracy 0.9, promoted 2026-12-01",
        "runs:",
    ]
    assert lines[18] == f"  {run.info.run_id}  FINISHED  {newest['started']}  test accuracy 0.75"


def test_status_without_mlflow_or_services_says_so_in_one_line(tmp_path) -> None:
    settings = home(tmp_path)
    ports = {part: free_port() for part in DEFAULT_PORTS}  # nothing listens: a machine where none runs
    report = status.collect(settings, ports)
    assert report["services"] == dict.fromkeys(status.HEALTH, "down")
    assert report["runs"] == {"error": f"MLflow is not running at http://127.0.0.1:{ports['mlflow']}"}
    assert status.render(report).splitlines()[-2:] == [
        "champion: model 3, test accuracy 0.9, promoted 2026-12-01",
        f"runs: MLflow is not running at http://127.0.0.1:{ports['mlflow']}",
    ]


def test_dandelion_status_json_prints_the_report(tmp_path, monkeypatch, capsys) -> None:
    home(tmp_path)
    monkeypatch.setenv("DANDELION_HOME", str(tmp_path))
    assert cli.main(["status", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert set(report) == {"services", "catalog", "champion", "runs"}
    assert report["catalog"]["rows"]["failed"] == {"dandelion": 0, "grass": 1}
    assert report["champion"] == CHAMPION
