"""`make up`'s orchestration (`workflows.local.stack.local_stack`) on a fresh home: it starts its own MLflow
server, the three functions, the web app, the retrain webhook, Prometheus and Alertmanager, seeds,
extracts all 400 images from a loopback mirror, trains (one epoch here) and serves the champion. Then
people correct the model: the real Prometheus sees the corrected-prediction ratio pass its threshold,
fires the live-quality alert, the real Alertmanager posts it to the webhook, and train-model runs once
on a snapshot that holds the corrections; then enough newly accepted labels start the next training
through validate-label's CloudEvent, on a snapshot that holds them. Every dashboard panel and recording
rule then returns data from that Prometheus. On the way out every process stops and the environment
is restored."""

import hashlib
import io
import json
import os
import time
from pathlib import Path

import pytest
import requests
import yaml
from gradio_client import Client
from PIL import Image

from functions.lib import catalog, retrain
from functions.lib.config import Settings
from functions.lib.layout import manifest_key
from functions.lib.store import open_store
from observability.grafana.dashboards import expressions
from tests.support import DATASET
from workflows import defaults
from workflows.local.monitoring import CONFIGS
from workflows.local.processes import free_port
from workflows.local.stack import local_stack

pytestmark = pytest.mark.e2e

CLEARED = ("MLFLOW_TRACKING_URI", "DANDELION_DB_URL", "DANDELION_STORE_URL", "DANDELION_SOURCE_MIRROR")
TOKEN = "local-admin-token"
CORRECTED = 25  # reviewed predictions, all corrected: past the alert's 20 reviews and 20 %
NEW_LABELS = 26  # accepted labels that start a retraining: the corrections alone stay below it
DASHBOARDS = Path(__file__).parents[2] / "observability" / "grafana" / "dashboards"


def wait_for(condition, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.5)


def query(prometheus: str, expr: str) -> list[dict]:
    """The instant vector Prometheus answers for `expr`; a query it cannot parse fails here."""
    answer = requests.get(f"{prometheus}/api/v1/query", params={"query": expr}, timeout=30)
    assert answer.status_code == 200, (expr, answer.text)
    return answer.json()["data"]["result"]


def correct(urls: dict[str, str], image: bytes, name: str) -> str:
    """Ask predict, then submit the other label with what the model said, and accept it as an admin."""
    said = requests.post(f"{urls['predict']}/predict", files={"file": (name, image)}, timeout=30).json()
    label = "grass" if said["predicted_class"] == "dandelion" else "dandelion"
    keys = ("predicted_class", "confidence", "model_version")
    accept(urls, image, name, label, {k: str(said[k]) for k in keys})
    return label


def new_photo(path: Path) -> bytes:
    """A photo the catalog does not hold yet: a dataset photo turned a quarter, re-encoded."""
    out = io.BytesIO()
    Image.open(path).convert("RGB").rotate(90, expand=True).save(out, format="JPEG", quality=90)
    return out.getvalue()


def accept(
    urls: dict[str, str], image: bytes, name: str, label: str, said: dict[str, str] | None = None
) -> None:
    """Submit `image` with `label` (and what the model said, if anything), and accept it as an admin."""
    sent = requests.post(
        f"{urls['validate-label']}/submissions",
        files={"file": (name, image)},
        data={"label": label, **(said or {})},
        timeout=30,
    )
    assert (sent.status_code, sent.json()["new"]) == (202, True)
    decided = requests.post(
        f"{urls['validate-label']}/submissions/{sent.json()['id']}",
        json={"decision": "accept"},
        headers={"Authorization": f"Bearer {TOKEN}"},
        timeout=30,
    )
    assert decided.status_code == 200


def test_local_stack_trains_serves_retrains_when_live_quality_drops_and_stops_everything(
    tmp_path: Path, monkeypatch
) -> None:
    for name in CLEARED:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("DANDELION_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("DANDELION_ADMIN_TOKEN", TOKEN)
    monkeypatch.setenv("DANDELION_RETRAIN_MIN_NEW_LABELS", str(NEW_LABELS))  # more than the corrections
    parts = ("predict", "ingest-one-url", "validate-label", "web", "mlflow", "retrain-webhook")
    parts += ("workflow-metrics", "prometheus", "alertmanager")
    ports = {part: free_port() for part in parts}
    lines: list[str] = []
    images = [(DATASET / "grass" / f"{n:08d}.jpg").read_bytes() for n in range(CORRECTED)]
    with local_stack(DATASET, ports, {"epochs": "1", "min-accuracy": "0"}, lines.append) as urls:
        assert urls == {part: f"http://127.0.0.1:{port}" for part, port in ports.items()}
        prometheus = urls["prometheus"]
        image = (DATASET / "dandelion" / "00000001.jpg").read_bytes()
        answer = requests.post(f"{urls['predict']}/predict", files={"file": ("d.jpg", image)}, timeout=30)
        assert answer.status_code == 200 and answer.json()["model_version"] == "1"
        refused = requests.post(
            f"{urls['predict']}/predict", files={"file": ("x.jpg", b"not an image")}, timeout=30
        )
        assert refused.status_code == 415
        assert requests.get(f"{urls['mlflow']}/health", timeout=5).status_code == 200
        assert os.environ["MLFLOW_TRACKING_URI"] == urls["mlflow"]
        champion, _plot, _links = Client(urls["web"], verbose=False).predict(api_name="/model")
        assert champion.startswith("### Model 1 serves\nTrained ")  # the page reads predict and MLflow

        # Prometheus scrapes every part of the stack.
        wait_for(lambda: len(query(prometheus, "up == 1")) == 6, 60)

        # People correct the model; an admin accepts. The first review is seen by Prometheus before the
        # rest, as a counter's first sample is (increase() starts from it).
        accepted = [correct(urls, images[0], "g0.jpg")]
        wait_for(lambda: query(prometheus, "dandelion_reviewed_predictions_total"), 30)
        accepted += [correct(urls, data, f"g{n}.jpg") for n, data in enumerate(images[1:], start=1)]
        wait_for(lambda: any(line.startswith("retrain (alertmanager): ") for line in lines), 300)
        firing = query(prometheus, f'ALERTS{{alertname="{defaults.QUALITY_ALERT}", alertstate="firing"}}')
        assert [alert["metric"]["model_version"] for alert in firing] == ["1"]
        time.sleep(10)  # Alertmanager and the webhook have had time to repeat themselves; neither did
        assert (
            sum(line.startswith("retrain (") for line in lines) == 1
        )  # one training, not one per notification

        settings = Settings.from_env()
        engine, store = catalog.open_catalog(settings.db_url), open_store(settings.store_url)
        with engine.connect() as connection:
            assert retrain.accepted_since_training(connection) == 0  # the training took them
        newest = max(store.keys("datasets/"), key=lambda key: len(store.get(key)))
        manifest = store.get(newest).decode()
        for data, label in zip(images, accepted, strict=True):
            assert f"raw/{label}/{hashlib.sha256(data).hexdigest()}.jpg,{label}," in manifest
        assert newest != manifest_key("")  # a real snapshot key

        # Enough new labels, accepted by an admin, start the next training themselves (validate-label's
        # CloudEvent to the webhook), and the next snapshot holds them.
        labelled = [new_photo(DATASET / "dandelion" / f"{n:08d}.jpg") for n in range(30, 30 + NEW_LABELS)]
        for n, data in enumerate(labelled):
            accept(urls, data, f"d{n}.jpg", "dandelion")
        wait_for(lambda: any(line.startswith("retrain (labels): ") for line in lines), 300)
        manifest = store.get(max(store.keys("datasets/"), key=lambda key: len(store.get(key)))).decode()
        for data in labelled:
            assert f"raw/dandelion/{hashlib.sha256(data).hexdigest()}.jpg,dandelion," in manifest

        # Every dashboard panel and every recording rule returns data from the stack's Prometheus.
        panels = [
            expr
            for path in sorted(DASHBOARDS.glob("*.json"))
            for expr in expressions(json.loads(path.read_text()))
        ]
        groups = yaml.safe_load((CONFIGS / "rules.yml").read_text())["groups"]
        recorded = [rule["record"] for group in groups for rule in group["rules"] if "record" in rule]
        wait_for(lambda: query(prometheus, "argo_workflows_dandelion_workflow_runs_total"), 30)
        empty = [expr for expr in [*panels, *recorded] if not query(prometheus, expr)]
        assert len(panels) > 20 and empty == []

    lines = [line for line in lines if not line.startswith("waiting for ")]  # as slow as the machine is
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
    served, home = lines.index("serving:"), tmp_path / "home"
    assert lines[served + 1 : served + 10] == [
        f"  web             {urls['web']}/  (classify, correct, review, the model)",
        f"  predict         {urls['predict']}/predict  (curl -F file=@image.jpg {urls['predict']}/predict)",
        f"  ingest-one-url  {urls['ingest-one-url']}/",
        f"  validate-label  {urls['validate-label']}/submissions  (admin token: {TOKEN})",
        f"  mlflow          {urls['mlflow']}",
        f"  prometheus      {urls['prometheus']}/",
        f"  alertmanager    {urls['alertmanager']}/",
        f"  logs            {home / 'logs'}/",
        f"catalog: sqlite:///{home / 'catalog.db'}  store: {(home / 'objects').as_uri()}",
    ]
    assert lines[served + 10].startswith("champion: model 1, test accuracy ")
    logged = {path.name for path in (tmp_path / "home" / "logs").iterdir()}
    assert logged == {
        f"{part}.log" for part in ("predict", "ingest-one-url", "validate-label", "web", "mlflow")
    } | {
        "prometheus.log",
        "alertmanager.log",
    }
    for url in (*urls.values(), mirror):
        with pytest.raises(requests.ConnectionError):
            requests.get(url, timeout=5)
    assert not any(name in os.environ for name in CLEARED)
