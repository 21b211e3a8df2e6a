"""`make up`'s orchestration (`workflows.local.stack.local_stack`) on a fresh home: it starts its own MLflow
server and both functions, seeds, extracts all 400 images from a loopback mirror, trains (one epoch here),
serves the champion, and stops every process and restores the environment when it ends."""

import json
import os
from pathlib import Path

import pytest
import requests

from tests.support import DATASET
from workflows.local.processes import free_port
from workflows.local.stack import local_stack

pytestmark = pytest.mark.e2e

CLEARED = ("MLFLOW_TRACKING_URI", "DANDELION_DB_URL", "DANDELION_STORE_URL", "DANDELION_SOURCE_MIRROR")


def test_local_stack_trains_without_a_champion_serves_it_and_stops_everything(
    tmp_path: Path, monkeypatch
) -> None:
    for name in CLEARED:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("DANDELION_HOME", str(tmp_path / "home"))
    ports = {"predict": free_port(), "ingest-one-url": free_port(), "mlflow": free_port()}
    lines: list[str] = []
    with local_stack(DATASET, ports, {"epochs": "1", "min-accuracy": "0"}, lines.append) as urls:
        assert urls == {part: f"http://127.0.0.1:{port}" for part, port in ports.items()}
        image = (DATASET / "dandelion" / "00000001.jpg").read_bytes()
        answer = requests.post(f"{urls['predict']}/predict", files={"file": ("d.jpg", image)}, timeout=30)
        assert answer.status_code == 200 and answer.json()["model_version"] == "1"
        assert requests.get(f"{urls['mlflow']}/health", timeout=5).status_code == 200
        assert os.environ["MLFLOW_TRACKING_URI"] == urls["mlflow"]

    mirror = lines[0].removeprefix(f"mirror of {DATASET} on ")
    assert lines[1:4] == [
        "seeded 400 new catalog rows",
        'extract-images: {"total": 400, "ingested": 400, "unchanged": 0, "failed": 0}',
        "catalog: {'pending': 0, 'ingested': 400, 'failed': 0}",
    ]
    assert lines[4] == "no champion yet: running train-model (a few minutes)"
    assert json.loads(lines[5].removeprefix("train-model: ")) == {
        "version": "1",
        "rolled_out": True,
        "how": f"local predict function at {urls['predict']}/model/reload now serves model 1",
    }
    for url in (*urls.values(), mirror):
        with pytest.raises(requests.ConnectionError):
            requests.get(url, timeout=5)
    assert not any(name in os.environ for name in CLEARED)
