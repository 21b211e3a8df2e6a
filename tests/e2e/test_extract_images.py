"""extract-images end to end: the Hera definition, run by the local runner, calling the real function."""

from pathlib import Path

import pytest
import requests
from sqlalchemy import select

from functions.lib import catalog
from functions.lib.config import Settings
from functions.lib.labels import LABELS
from functions.lib.layout import read_champion
from functions.lib.store import open_store
from tests.conftest import DATASET, FunctionProcess, canonical, function_env
from workflows.local.runner import WorkflowFailed
from workflows.local.stack import run_workflow

pytestmark = pytest.mark.e2e

SUBSET = [(canonical(label, n), label) for label in LABELS for n in range(0, 200, 16)]  # 26 rows


def table(engine) -> list[dict]:
    with engine.connect() as conn:
        return [dict(r) for r in conn.execute(select(catalog.plants_data).order_by("id")).mappings()]


def settings_for(db_url: str, store_url: str, ingest_url: str) -> Settings:
    return Settings.from_env(
        {
            "DANDELION_DB_URL": db_url,
            "DANDELION_STORE_URL": store_url,
            "DANDELION_INGEST_URL": ingest_url + "/",
        }
    )


def test_extract_images_on_mariadb_and_s3_then_again_changes_nothing(
    mysql_url: str, s3_url: str, source: str, monkeypatch
) -> None:
    engine = catalog.open_catalog(mysql_url)
    for url, label in SUBSET:
        catalog.record(engine, url, label, status="pending")
    function = FunctionProcess("ingest-one-url", function_env(mysql_url, s3_url, source))
    monkeypatch.setenv("DANDELION_DB_URL", mysql_url)  # the steps read the environment, as in a pod
    try:
        settings = settings_for(mysql_url, s3_url, function.url)
        first = run_workflow("extract-images", {}, settings)["summary"]
        assert first == {"total": 26, "ingested": 26, "unchanged": 0, "failed": 0, "failures": []}
        assert catalog.counts_by_status(engine) == {"pending": 0, "ingested": 26, "failed": 0, "excluded": 0}
        objects = sorted(open_store(s3_url).keys("raw/"))
        assert len(objects) == 26
        assert {k.split("/")[1] for k in objects} == {"dandelion", "grass"}
        snapshot = table(engine)

        second = run_workflow("extract-images", {}, settings)["summary"]
        assert second == {"total": 0, "ingested": 0, "unchanged": 0, "failed": 0, "failures": []}
        assert table(engine) == snapshot
        assert sorted(open_store(s3_url).keys("raw/")) == objects
    finally:
        function.stop()


def test_too_many_failures_fail_the_workflow(tmp_path: Path, source: str, monkeypatch) -> None:
    db_url, store_url = f"sqlite:///{tmp_path / 'c.db'}", (tmp_path / "o").as_uri()
    engine = catalog.open_catalog(db_url)
    catalog.record(engine, canonical("grass", 1), "grass", status="pending")
    for path in ("/hostile/page.jpg", "/hostile/missing.jpg"):
        catalog.record(engine, source + path, "grass", status="pending")
    function = FunctionProcess("ingest-one-url", function_env(db_url, store_url, source))
    monkeypatch.setenv("DANDELION_DB_URL", db_url)
    try:
        settings = settings_for(db_url, store_url, function.url)
        with pytest.raises(
            WorkflowFailed,
            match=r"summarise: exit code 1: \S+ExtractionFailed: 2 of 3 rows failed, over the 50%",
        ):
            run_workflow("extract-images", {"max-failed-fraction": "0.5"}, settings)
        lenient = run_workflow("extract-images", {"max-failed-fraction": "1"}, settings)["summary"]
        assert (lenient["total"], lenient["unchanged"], lenient["failed"]) == (2, 0, 2)
        assert catalog.counts_by_status(engine) == {"pending": 0, "ingested": 1, "failed": 2, "excluded": 0}
    finally:
        function.stop()


def test_weekly_retrain_extracts_then_trains_from_the_template_refs(
    tmp_path: Path, source: str, mlflow_server: str, monkeypatch
) -> None:
    db_url, store_url = f"sqlite:///{tmp_path / 'c.db'}", (tmp_path / "o").as_uri()
    engine = catalog.open_catalog(db_url)
    for url, label in SUBSET:
        catalog.record(engine, url, label, status="pending")
    function = FunctionProcess("ingest-one-url", function_env(db_url, store_url, source))
    env = function_env(db_url, store_url, None) | {"DANDELION_HOME": str(tmp_path / "predict")}
    predict = FunctionProcess("predict", env, ready="/v2/health/live")
    monkeypatch.setenv("DANDELION_DB_URL", db_url)
    monkeypatch.setenv("DANDELION_STORE_URL", store_url)
    monkeypatch.setenv("DANDELION_PREDICT_URL", predict.url)
    try:
        assert requests.get(f"{predict.url}/health").status_code == 503  # no champion yet
        settings = settings_for(db_url, store_url, function.url)
        result = run_workflow("weekly-retrain", {"epochs": "1", "min-accuracy": "0"}, settings)["rollout"]
        assert catalog.counts_by_status(engine)["ingested"] == 26
        champion = read_champion(open_store(store_url))
        assert result == {
            "version": champion["version"],
            "rolled_out": True,
            "how": f"local predict function at {predict.url}/model/reload now serves model "
            f"{champion['version']}",
        }
        image = (DATASET / "grass" / "00000003.jpg").read_bytes()
        answer = requests.post(f"{predict.url}/predict", files={"file": ("g.jpg", image)}).json()
        assert answer["model_version"] == champion["version"]
    finally:
        predict.stop()
        function.stop()
