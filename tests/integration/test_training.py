"""train-model through the local runner, a real MLflow server, and real catalogs and stores.

Small and fast on purpose: 32 real images, one epoch. Accuracy is the benchmark's business.
"""

import base64
import hashlib
import io
import json
import os
import sys
from pathlib import Path

import mlflow
import pandas as pd
import pytest
import requests
from PIL import Image

from functions.lib import catalog
from functions.lib.config import Settings
from functions.lib.ingest import Ingestor
from functions.lib.labels import LABELS
from functions.lib.layout import CHAMPION_KEY, MODEL_NAME, read_champion
from functions.lib.onnx_classifier import OnnxClassifier
from functions.lib.preprocessing import Preprocessing
from functions.lib.store import FileStore
from tests.conftest import DATASET, TRAINING_SUBSET, FunctionProcess, canonical
from workflows.lib import dataset, promotion
from workflows.local import cli
from workflows.local.processes import free_port, start, stop, wait_healthy
from workflows.local.stack import run_workflow

pytestmark = pytest.mark.integration


def ingested_sha256(settings: Settings, labels, n: int) -> list[str]:
    engine = catalog.open_catalog(settings.db_url)
    return [catalog.get(engine, canonical(label, n))["sha256"] for label in labels]


def train(settings: Settings, **parameters: str) -> dict:
    return run_workflow("train-model", {"epochs": "1", "min-accuracy": "0"} | parameters, settings)["rollout"]


@pytest.mark.parametrize(
    ("ingested_platform", "backbone"),
    [
        (("sqlite", "file"), "efficientnet-lite0"),
        (("sqlite", "file"), "scratch"),
        (("mysql", "s3"), "efficientnet-lite0"),
    ],
    indirect=["ingested_platform"],
    ids=["embedded", "embedded-scratch", "mariadb-s3"],
)
def test_a_run_is_tracked_registered_promoted_and_exported(ingested_platform, backbone, monkeypatch) -> None:
    settings, store = ingested_platform
    monkeypatch.setenv("DANDELION_BACKBONE", backbone)
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
    per_class = {f"test_{m}_{label}" for m in ("precision", "recall", "f1", "share") for label in LABELS}
    confusion = {f"test_confusion_{true}_as_{predicted}" for true in LABELS for predicted in LABELS}
    assert {
        "train_loss",
        "train_accuracy",
        "calibration_accuracy",
        "calibration_ece_before",
        "calibration_ece_after",
        "test_accuracy",
        "test_balanced_accuracy",
        "test_ece",
        "test_ece_uncalibrated",
        "test_accuracy_unflagged",
        "test_images_unflagged",
        "audit_suspects",
        "audit_queued",
        *per_class,
        *confusion,
    } <= set(run.data.metrics)
    assert sum(run.data.metrics[name] for name in confusion) == run.data.metrics["test_images"]
    assert [m.step for m in client.get_metric_history(run.info.run_id, "train_loss")] == [0]
    assert run.data.metrics["train_loss"] > 0
    if backbone == "scratch":
        assert run.data.params["compute_dtype"] in ("float32", "bfloat16")
    else:  # the training computed the train and validation images' features; the audit, the test images'
        assert run.data.metrics["features_cached"] == 0
        assert run.data.metrics["audit_features_computed"] == run.data.metrics["test_images"]
    assert (run.data.params["backbone"], run.data.params["epochs"]) == (backbone, "1")
    assert 0.05 <= float(run.data.params["temperature"]) <= 20
    dataset_version = run.data.tags["dataset_version"]
    assert run.inputs.dataset_inputs[0].dataset.name == f"greenr-{dataset_version}"
    assert {a.path for a in client.list_artifacts(run.info.run_id)} >= {
        "confusion_matrix.png",
        "confusion_matrix.json",
        "label_audit.json",
        "preprocessing.json",
        "pytorch",
    }
    audit = mlflow.MlflowClient().load_table(run.info.experiment_id, "label_audit.json", [run.info.run_id])
    assert list(audit.columns) == [
        "key",
        "sha256",
        "given_label",
        "suggested_label",
        "self_confidence",
        "split",
    ]
    assert len(audit) == run.data.metrics["audit_suspects"]

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
    assert metadata["mean"] == ([127 / 255] * 3 if backbone != "scratch" else list(Preprocessing().mean))
    assert (metadata["input_size"], metadata["dataset_version"]) == (128, dataset_version)
    assert metadata["mlflow_run_id"] == run.info.run_id
    assert metadata["metrics"] == {k: v for k, v in run.data.metrics.items() if k.startswith("test_")}
    assert store.exists(f"datasets/{dataset_version}/manifest.csv")
    served = OnnxClassifier(onnx_bytes, Preprocessing.from_dict(metadata))
    probabilities = served.classify([Image.open(DATASET / "grass" / "00000001.jpg")])
    assert probabilities.shape == (1, 2) and abs(probabilities.sum() - 1) < 1e-6


def test_a_retrain_computes_features_only_for_new_images_and_the_audit_runs_alone(
    ingested_platform, capsys
) -> None:
    """The feature cache across runs, and `dandelion audit-labels` in an MLflow run of its own."""
    settings, _store = ingested_platform
    train(settings)
    ingestor = Ingestor.from_settings(settings)
    for label in LABELS:
        ingestor.ingest(canonical(label, 5), label)
    train(settings, seed="1")
    runs = mlflow.search_runs(experiment_names=["dandelion"], order_by=["attributes.start_time ASC"])
    second = runs.iloc[-1]
    new_in_fit = sum(dataset.split_of(sha) != "test" for sha in ingested_sha256(settings, LABELS, 5))
    assert second["metrics.features_computed"] == new_in_fit
    assert second["metrics.audit_features_computed"] == 2 - new_in_fit

    assert cli.main(["audit-labels"]) == 0
    summary = json.loads(capsys.readouterr().out)
    run = mlflow.get_run(summary["mlflow_run_id"])
    assert (run.info.run_name, run.data.tags["dataset_version"]) == (
        "audit-labels",
        summary["dataset_version"],
    )
    assert run.data.metrics["audit_features_computed"] == 0
    assert summary["examples"] == len(TRAINING_SUBSET) + 2
    audit = mlflow.MlflowClient().load_table(run.info.experiment_id, "label_audit.json", [run.info.run_id])
    assert list(audit["key"]) == [suspect["key"] for suspect in summary["suspects"]]
    assert cli.main(["audit-labels"]) == 0
    again = json.loads(capsys.readouterr().out)
    assert (again["suspects"], again["queued"]) == (summary["suspects"], 0)  # queued once


def test_the_gate_refuses_a_worse_model_and_keeps_the_champion(ingested_platform) -> None:
    settings, store = ingested_platform
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


def test_the_champion_is_re_evaluated_on_the_candidate_split(ingested_platform) -> None:
    settings, store = ingested_platform
    train(settings)
    champion = read_champion(store)
    second = train(settings, seed="1")
    # Same rows, same frozen test split: the champion scores there what it scored when it was promoted.
    tags = mlflow.MlflowClient().get_model_version(MODEL_NAME, second["version"]).tags
    expected = f"{champion['version']}: {champion['metrics']['test_accuracy']}"
    assert tags["champion_accuracy_same_split"] == expected


def test_a_crash_between_alias_and_pointer_leaves_the_old_champion_serving_and_publishing_repairs_it(
    ingested_platform, monkeypatch
) -> None:
    """Promotion itself, in this process (a step runs in a process of its own, out of a test's reach),
    with the store failing exactly at the pointer write, after the registry's alias moved."""
    settings, store = ingested_platform
    first = train(settings)
    champion = read_champion(store)
    second = train(settings, **{"min-accuracy": "1.01"})  # registered, not promoted
    real_put = FileStore.put

    def crash_on_pointer(self, key, data, content_type="application/octet-stream"):
        if key == CHAMPION_KEY:
            raise OSError("killed before the pointer write")
        real_put(self, key, data, content_type)

    monkeypatch.setattr(FileStore, "put", crash_on_pointer)
    with pytest.raises(OSError, match="killed before the pointer write"):
        promotion.make_champion(store, second["version"])
    assert read_champion(store) == champion  # predict keeps serving the old champion, whole
    assert store.exists(f"models/{second['version']}/model.onnx")  # exported, but nothing points at it
    metadata = json.loads(store.get(f"models/{first['version']}/metadata.json"))
    onnx_bytes = store.get(champion["key"])
    assert hashlib.sha256(onnx_bytes).hexdigest() == champion["sha256"]
    image = Image.open(io.BytesIO((DATASET / "dandelion" / "00000002.jpg").read_bytes()))
    assert OnnxClassifier(onnx_bytes, Preprocessing.from_dict(metadata)).classify([image]).shape == (1, 2)

    monkeypatch.undo()
    assert promotion.publish_champion(store)["version"] == second["version"]  # the pointer follows the alias
    assert read_champion(store)["version"] == second["version"]


def predict_answer(url: str, image: bytes) -> dict:
    response = requests.post(f"{url}/predict", files={"file": ("i.jpg", image)}, timeout=30)
    assert response.status_code == 200, response.text
    return response.json()


def test_dandelion_promote_moves_alias_and_pointer_and_rolls_predict_back(
    ingested_platform, tmp_path
) -> None:
    settings, store = ingested_platform
    first = train(settings)["version"]
    second = train(settings, seed="1")["version"]
    env = dict(os.environ, DANDELION_HOME=str(tmp_path / "predict"))
    predict = FunctionProcess("predict", env, ready="/v2/health/live")
    os.environ["DANDELION_PREDICT_URL"] = predict.url  # where `dandelion promote` rolls out
    image = (DATASET / "grass" / "00000005.jpg").read_bytes()
    try:
        for version in (second, first):  # forward past the gate, then back
            assert cli.main(["promote", version]) == 0
            assert mlflow.MlflowClient().get_model_version_by_alias(MODEL_NAME, "champion").version == version
            assert read_champion(store)["version"] == version
            assert predict_answer(predict.url, image)["model_version"] == version
    finally:
        predict.stop()


def test_the_registered_model_classifies_image_bytes_as_predict_does(ingested_platform, tmp_path) -> None:
    """`models:/dandelion-grass@champion` as a pyfunc, and served by `mlflow models serve`, answer with
    predict's probabilities: preprocessing included, from encoded bytes."""
    settings, _ = ingested_platform
    version = train(settings)["version"]
    info = mlflow.models.get_model_info(f"models:/{MODEL_NAME}@champion")
    assert info.signature.inputs.to_dict() == [{"type": "binary", "name": "image", "required": True}]
    assert {c["name"] for c in info.signature.outputs.to_dict()} == {"predicted_class", "confidence", *LABELS}
    assert info.saved_input_example_info is not None
    images = [(DATASET / label / "00000011.jpg").read_bytes() for label in LABELS]
    predict = FunctionProcess(
        "predict", dict(os.environ, DANDELION_HOME=str(tmp_path / "predict")), ready="/health"
    )
    serve_port = free_port()
    model = f"models:/{MODEL_NAME}@champion"
    serve_command = [sys.executable, "-m", "mlflow", "models", "serve", "-m", model, "--env-manager"]
    # `mlflow models serve` starts `uvicorn` from PATH, as a user's activated environment has it.
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"
    serve = start(
        [*serve_command, "local", "--host", "127.0.0.1", "--port", str(serve_port)],
        dict(os.environ, PATH=path),
    )
    try:
        answers = [predict_answer(predict.url, image) for image in images]
        assert {a["model_version"] for a in answers} == {version}
        loaded = mlflow.pyfunc.load_model(model)
        frame = loaded.predict(pd.DataFrame({"image": images}))
        wait_healthy(f"http://127.0.0.1:{serve_port}/ping", serve, timeout=120)
        body = {
            "dataframe_split": {
                "columns": ["image"],
                "data": [[base64.b64encode(i).decode()] for i in images],
            }
        }
        served = requests.post(f"http://127.0.0.1:{serve_port}/invocations", json=body, timeout=60)
        assert served.status_code == 200, served.text
        for rows in (frame.to_dict("records"), served.json()["predictions"]):
            for row, answer in zip(rows, answers, strict=True):
                assert row["predicted_class"] == answer["predicted_class"]
                for label in LABELS:
                    assert row[label] == pytest.approx(answer["probabilities"][label], abs=1e-6)
    finally:
        stop(serve)
        predict.stop()
