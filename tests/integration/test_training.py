"""train-model through the local runner, a real MLflow server, and real catalogs and stores.

Small and fast on purpose: 32 real images, one epoch. Accuracy is the benchmark's business.
"""

import hashlib
import io
import json
import os

import mlflow
import pytest
from PIL import Image

from functions.lib import catalog
from functions.lib.config import Settings
from functions.lib.ingest import Ingestor
from functions.lib.labels import LABELS
from functions.lib.layout import CHAMPION_KEY, MODEL_NAME, read_champion
from functions.lib.onnx_classifier import OnnxClassifier
from functions.lib.preprocessing import Preprocessing
from functions.lib.store import FileStore, open_store
from tests.conftest import DATASET, canonical
from workflows.lib.promotion import Candidate, promote
from workflows.local.processes import free_port
from workflows.local.stack import run_workflow

pytestmark = pytest.mark.integration

SUBSET = [(label, n) for label in LABELS for n in range(0, 200, 12)]  # 34 images


@pytest.fixture
def platform(request, tmp_path, source, mlflow_server, monkeypatch):
    """A catalog and store holding SUBSET, ingested for real; the steps' environment points at them."""
    db_kind, store_kind = getattr(request, "param", ("sqlite", "file"))
    db_url = request.getfixturevalue("mysql_url") if db_kind == "mysql" else f"sqlite:///{tmp_path / 'c.db'}"
    store_url = request.getfixturevalue("s3_url") if store_kind == "s3" else (tmp_path / "objects").as_uri()
    env = {
        "DANDELION_DB_URL": db_url,
        "DANDELION_STORE_URL": store_url,
        "DANDELION_ALLOW_PRIVATE_URLS": "1",
        "DANDELION_SOURCE_MIRROR": f"{catalog.CANONICAL_PREFIX}={source}/",
        "DANDELION_PREDICT_URL": f"http://127.0.0.1:{free_port()}",  # none: roll-out says so
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    settings = Settings.from_env()
    ingestor = Ingestor.from_settings(settings)
    for label, n in SUBSET:
        ingestor.ingest(canonical(label, n), label)
    return settings, open_store(store_url)


def train(settings: Settings, **parameters: str) -> dict:
    return run_workflow("train-model", {"epochs": "1", "min-accuracy": "0"} | parameters, settings)["rollout"]


@pytest.mark.parametrize(
    "platform", [("sqlite", "file"), ("mysql", "s3")], indirect=True, ids=["embedded", "mariadb-s3"]
)
def test_a_run_is_tracked_registered_promoted_and_exported(platform) -> None:
    settings, store = platform
    rolled = train(settings)
    assert rolled == {
        "version": rolled["version"],
        "rolled_out": True,
        "how": f"no predict function answers at {os.environ['DANDELION_PREDICT_URL']}/model/reload; "
        "it loads the champion when it starts",
    }
    client = mlflow.MlflowClient()
    version = client.get_model_version(MODEL_NAME, rolled["version"])
    assert client.get_model_version_by_alias(MODEL_NAME, "champion").version == version.version
    assert version.tags["promotion"] == "accepted"
    run = client.get_run(version.run_id)
    assert {
        "train_loss",
        "train_accuracy",
        "val_loss",
        "val_accuracy",
        "test_accuracy",
        "test_precision_grass",
        "test_recall_dandelion",
        "test_f1_grass",
    } <= set(run.data.metrics)
    assert [m.step for m in client.get_metric_history(run.info.run_id, "train_loss")] == [0]
    assert run.data.params["epochs"] == "1"
    assert run.data.params["precision"] == "auto"
    assert run.data.params["compute_dtype"] in ("float32", "bfloat16")
    dataset_version = run.data.tags["dataset_version"]
    assert run.inputs.dataset_inputs[0].dataset.name == f"greenr-{dataset_version}"
    assert {a.path for a in client.list_artifacts(run.info.run_id)} >= {
        "confusion_matrix.png",
        "confusion_matrix.json",
        "preprocessing.json",
        "pytorch",
    }

    pointer = read_champion(store)
    assert (pointer["version"], pointer["key"]) == (
        rolled["version"],
        f"models/{rolled['version']}/model.onnx",
    )
    onnx_bytes = store.get(pointer["key"])
    assert pointer["sha256"] == hashlib.sha256(onnx_bytes).hexdigest()
    assert pointer["metrics"]["test_accuracy"] == run.data.metrics["test_accuracy"]
    metadata = json.loads(store.get(f"models/{rolled['version']}/metadata.json"))
    assert metadata["classes"] == ["dandelion", "grass"]
    assert (metadata["input_size"], metadata["dataset_version"]) == (128, dataset_version)
    assert metadata["mlflow_run_id"] == run.info.run_id
    assert store.exists(f"datasets/{dataset_version}/manifest.csv")
    served = OnnxClassifier(onnx_bytes, Preprocessing.from_dict(metadata))
    probabilities = served.classify([Image.open(DATASET / "grass" / "00000001.jpg")])
    assert probabilities.shape == (1, 2) and abs(probabilities.sum() - 1) < 1e-6


def test_the_gate_refuses_a_worse_model_and_keeps_the_champion(platform) -> None:
    settings, store = platform
    first = train(settings)
    champion = read_champion(store)
    rejected = train(settings, **{"min-accuracy": "1.01"})
    assert rejected["rolled_out"] is False
    assert rejected["reason"].startswith("test accuracy ") and rejected["reason"].endswith(
        "below the floor 1.0100"
    )
    assert read_champion(store) == champion
    client = mlflow.MlflowClient()
    assert client.get_model_version_by_alias(MODEL_NAME, "champion").version == first["version"]
    tags = client.get_model_version(MODEL_NAME, rejected["version"]).tags
    assert (tags["promotion"], tags["rejection_reason"]) == ("rejected", rejected["reason"])


def test_the_champion_is_re_evaluated_on_the_candidate_split(platform) -> None:
    settings, store = platform
    train(settings)
    champion = read_champion(store)
    second = train(settings, seed="1")
    # Same rows, same frozen test split: the champion scores there what it scored when it was promoted.
    tags = mlflow.MlflowClient().get_model_version(MODEL_NAME, second["version"]).tags
    expected = f"{champion['version']}: {champion['metrics']['test_accuracy']}"
    assert tags["champion_accuracy_same_split"] == expected


def test_a_crash_between_export_and_pointer_leaves_the_old_champion_serving_ready(
    platform, monkeypatch
) -> None:
    """Promotion itself, in this process (a step runs in a process of its own, out of a test's reach),
    with the store failing exactly at the pointer write."""
    settings, store = platform
    train(settings)
    champion = read_champion(store)
    metadata = json.loads(store.get(f"models/{champion['version']}/metadata.json"))
    candidate = Candidate(
        version="2",
        run_id=metadata["mlflow_run_id"],
        dataset_version=metadata["dataset_version"],
        metrics={"test_accuracy": 1.0},
        onnx_bytes=store.get(champion["key"]),
        prep=Preprocessing.from_dict(metadata),
        num_parameters=metadata["num_parameters"],
        code_version=None,
    )
    real_put = FileStore.put

    def crash_on_pointer(self, key, data, content_type="application/octet-stream"):
        if key == CHAMPION_KEY:
            raise OSError("killed before the pointer write")
        real_put(self, key, data, content_type)

    monkeypatch.setattr(FileStore, "put", crash_on_pointer)
    with pytest.raises(OSError, match="killed before the pointer write"):
        promote(store, candidate, min_accuracy=0)
    assert read_champion(store) == champion
    exported = {k.split("/")[1] for k in store.keys("models/") if k != CHAMPION_KEY}
    assert len(exported) == 2  # the new model was exported, but nothing points at it
    metadata = json.loads(store.get(f"models/{champion['version']}/metadata.json"))
    onnx_bytes = store.get(champion["key"])
    assert hashlib.sha256(onnx_bytes).hexdigest() == champion["sha256"]
    image = Image.open(io.BytesIO((DATASET / "dandelion" / "00000002.jpg").read_bytes()))
    assert OnnxClassifier(onnx_bytes, Preprocessing.from_dict(metadata)).classify([image]).shape == (1, 2)
