"""`make up`'s orchestration (`workflows.local.stack.local_stack`) on a fresh home: it starts its own MLflow
server, the three functions and the retrain webhook, seeds, extracts all 400 images from a loopback
mirror, trains (one epoch here) and serves the champion; accepting enough labels in validate-label then
retrains through the webhook, on a snapshot that holds them; on the way out every process stops and the
environment is restored."""

import hashlib
import json
import os
import time
from pathlib import Path

import pytest
import requests
from gradio_client import Client

from functions.lib import catalog, retrain
from functions.lib.config import Settings
from functions.lib.layout import manifest_key
from functions.lib.store import open_store
from tests.support import DATASET
from workflows.local.processes import free_port
from workflows.local.stack import local_stack

pytestmark = pytest.mark.e2e

CLEARED = ("MLFLOW_TRACKING_URI", "DANDELION_DB_URL", "DANDELION_STORE_URL", "DANDELION_SOURCE_MIRROR")
TOKEN = "local-admin-token"
NEW_LABELS = 3


def wait_for(condition, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.5)


def test_local_stack_trains_serves_retrains_on_new_labels_and_stops_everything(
    tmp_path: Path, monkeypatch
) -> None:
    for name in CLEARED:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("DANDELION_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("DANDELION_ADMIN_TOKEN", TOKEN)
    monkeypatch.setenv("DANDELION_RETRAIN_MIN_NEW_LABELS", str(NEW_LABELS))
    parts = ("predict", "ingest-one-url", "validate-label", "web", "mlflow", "retrain-webhook")
    ports = {part: free_port() for part in parts}
    lines: list[str] = []
    images = [(DATASET / "grass" / f"{n:08d}.jpg").read_bytes() for n in (3, 5, 8)]
    with local_stack(DATASET, ports, {"epochs": "1", "min-accuracy": "0"}, lines.append) as urls:
        assert urls == {part: f"http://127.0.0.1:{port}" for part, port in ports.items()}
        image = (DATASET / "dandelion" / "00000001.jpg").read_bytes()
        answer = requests.post(f"{urls['predict']}/predict", files={"file": ("d.jpg", image)}, timeout=30)
        assert answer.status_code == 200 and answer.json()["model_version"] == "1"
        assert requests.get(f"{urls['mlflow']}/health", timeout=5).status_code == 200
        assert os.environ["MLFLOW_TRACKING_URI"] == urls["mlflow"]
        champion, _plot, _links = Client(urls["web"], verbose=False).predict(api_name="/model")
        assert champion.startswith("### Model 1 serves\nTrained ")  # the page reads predict and MLflow

        # People correct the model; an admin accepts; the third accept starts a training.
        admin = {"Authorization": f"Bearer {TOKEN}"}
        for data in images:
            sent = requests.post(
                f"{urls['validate-label']}/submissions",
                files={"file": ("g.jpg", data)},
                data={"label": "dandelion"},
                timeout=30,
            )
            assert (sent.status_code, sent.json()["new"]) == (202, True)
            decided = requests.post(
                f"{urls['validate-label']}/submissions/{sent.json()['id']}",
                json={"decision": "accept"},
                headers=admin,
                timeout=30,
            )
            assert decided.status_code == 200
        wait_for(lambda: any(line.startswith("retrain (labels): ") for line in lines), 300)
        settings = Settings.from_env()
        engine, store = catalog.open_catalog(settings.db_url), open_store(settings.store_url)
        with engine.connect() as connection:
            assert retrain.accepted_since_training(connection) == 0  # the training took them
        newest = max(store.keys("datasets/"), key=lambda key: len(store.get(key)))
        manifest = store.get(newest).decode()
        for data in images:
            assert f"raw/dandelion/{hashlib.sha256(data).hexdigest()}.jpg,dandelion," in manifest
        assert newest != manifest_key("")  # a real snapshot key

    mirror = lines[0].removeprefix(f"mirror of {DATASET} on ")
    assert lines[1:4] == [
        "seeded 400 new catalog rows",
        'extract-images: {"total": 400, "ingested": 400, "unchanged": 0, "failed": 0}',
        "catalog: {'pending': 0, 'ingested': 400, 'failed': 0, 'excluded': 0}",
    ]
    assert lines[4] == "no champion yet: running train-model (a few minutes)"
    assert json.loads(lines[5].removeprefix("train-model: ")) == {
        "version": "1",
        "rolled_out": True,
        "how": f"local predict function at {urls['predict']}/model/reload now serves model 1",
    }
    assert f"validate-label: {urls['validate-label']}/submissions  (admin token: {TOKEN})" in lines
    assert f"web: {urls['web']}/  (the page: classify, correct, review, the model)" in lines
    for url in (*urls.values(), mirror):
        with pytest.raises(requests.ConnectionError):
            requests.get(url, timeout=5)
    assert not any(name in os.environ for name in CLEARED)
