"""`train-model` (snapshot, train, evaluate, register, promote, roll out) and `weekly-retrain`.

Each step hands its JSON result, grown by what it adds, to the next. Training logs to MLflow
(MLFLOW_TRACKING_URI); promotion goes through the quality gate against the current champion, evaluated
on the candidate's frozen test split. No `from __future__ import annotations`: Hera reads the signatures.
"""

import importlib.metadata
import io
import json
import os
import subprocess
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from hera.workflows import DAG, CronWorkflow, Parameter, Resources, Task, WorkflowTemplate
from hera.workflows.models import TemplateRef
from PIL import Image

from functions import model_layout
from functions.catalog import open_catalog
from functions.config import Settings
from functions.preprocessing import Preprocessing
from functions.store import ObjectStore, open_store
from workflows import dataset, promotion
from workflows.extraction import CLUSTER_INGEST_URL
from workflows.steps import step

EXPERIMENT = "dandelion"
TRAIN_ARGUMENTS = {"epochs": "45", "seed": "0", "min-accuracy": "0.85"}


def _store() -> ObjectStore:
    return open_store(Settings.from_env().store_url)


def _images(store: ObjectStore, examples: list[dataset.Example], prep: Preprocessing) -> tuple[list, list]:
    """The examples' images, resized once (`prep.resized`), and their class indices."""

    def load(example: dataset.Example) -> Image.Image:
        return prep.resized(Image.open(io.BytesIO(store.get(example.key))))

    with ThreadPoolExecutor(8) as pool:
        images = list(pool.map(load, examples))
    return images, [prep.classes.index(e.label) for e in examples]


def _split(examples: list[dataset.Example], name: str) -> list[dataset.Example]:
    return [e for e in examples if e.split == name]


def code_version() -> str:
    """The image's build sets DANDELION_CODE_VERSION; a checkout falls back to its git commit."""
    if os.environ.get("DANDELION_CODE_VERSION"):
        return os.environ["DANDELION_CODE_VERSION"]
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"],
        capture_output=True,
        text=True,
        cwd=Path(__file__).parent,
        check=False,
    ).stdout.strip()
    return commit or importlib.metadata.version("dandelion")


@step()
def snapshot_dataset() -> dict[str, Any]:
    """Freeze the ingested rows into a manifest; the same rows give the same version."""
    settings = Settings.from_env()
    version, examples = dataset.snapshot(open_catalog(settings.db_url), open_store(settings.store_url))
    return {"dataset_version": version, "images": dict(Counter(e.split for e in examples))}


@step(resources=Resources(cpu_request=2, memory_request="3Gi"))
def train_model(
    snapshot: dict[str, Any],
    epochs: int = int(TRAIN_ARGUMENTS["epochs"]),
    seed: int = int(TRAIN_ARGUMENTS["seed"]),
) -> dict[str, Any]:
    """Train on the snapshot's train split, log everything to a new MLflow run, log the model (ONNX)."""
    import mlflow
    import onnx
    import pandas as pd

    from workflows.training import TrainConfig, compute_dtype, export_onnx, parameter_count, train

    store, version = _store(), snapshot["dataset_version"]
    examples, prep, config = (
        dataset.load(store, version),
        Preprocessing(),
        TrainConfig(epochs=epochs, seed=seed),
    )
    train_set = _images(store, _split(examples, "train"), prep)
    val_set = _images(store, _split(examples, "val"), prep)
    mlflow.set_experiment(EXPERIMENT)
    with mlflow.start_run(tags={"dataset_version": version, "code_version": code_version()}) as run:
        mlflow.log_params(config.to_dict() | {f"prep_{k}": v for k, v in prep.to_dict().items()})
        mlflow.log_params(
            {
                "dataset_version": version,
                "compute_dtype": str(compute_dtype(config.precision)).removeprefix("torch."),
                **{f"images_{k}": v for k, v in snapshot["images"].items()},
            }
        )
        frame = pd.DataFrame([e.__dict__ for e in examples])
        mlflow.log_input(
            mlflow.data.from_pandas(
                frame,
                source=store.url(dataset.manifest_key(version)),
                targets="label",
                name=f"greenr-{version}",
                digest=version,
            ),
            context="training",
        )
        model = train(config, prep, *train_set, *val_set, lambda epoch, m: mlflow.log_metrics(m, step=epoch))
        mlflow.log_param("num_parameters", parameter_count(model))
        mlflow.pytorch.log_state_dict(model.state_dict(), "pytorch")
        mlflow.log_dict(prep.to_dict(), "preprocessing.json")
        info = mlflow.onnx.log_model(
            onnx.load_from_string(export_onnx(model, prep)),
            name="model",
            save_as_external_data=False,
            pip_requirements=["onnxruntime==1.31.1"],
        )
    return snapshot | {"run_id": run.info.run_id, "model_uri": info.model_uri}


def _onnx_bytes(model_uri: str) -> bytes:
    import mlflow.onnx

    return mlflow.onnx.load_model(model_uri).SerializeToString()


def _accuracy(
    onnx_bytes: bytes, prep: Preprocessing, images: list, labels: list[int]
) -> tuple[list[int], float]:
    from functions.runtime import OnnxClassifier

    predictions = OnnxClassifier(onnx_bytes, prep).classify(images).argmax(axis=1).tolist()
    return predictions, sum(p == y for p, y in zip(predictions, labels, strict=True)) / max(1, len(labels))


def _preprocessing(run_id: str) -> Preprocessing:
    import mlflow

    return Preprocessing.from_dict(mlflow.artifacts.load_dict(f"runs:/{run_id}/preprocessing.json"))


@step()
def evaluate_model(trained: dict[str, Any]) -> dict[str, Any]:
    """Test metrics of the exported ONNX model (what will serve) on the frozen test split, to MLflow."""
    import mlflow

    from workflows.evaluation import confusion, confusion_figure, metrics

    client, prep, store = mlflow.MlflowClient(), _preprocessing(trained["run_id"]), _store()
    images, labels = _images(store, _split(dataset.load(store, trained["dataset_version"]), "test"), prep)
    predictions, _ = _accuracy(_onnx_bytes(trained["model_uri"]), prep, images, labels)
    results = metrics(labels, predictions, prep.classes)
    for key, value in results.items():
        client.log_metric(trained["run_id"], key, value)
    matrix = confusion(labels, predictions, len(prep.classes))
    client.log_figure(trained["run_id"], confusion_figure(matrix, prep.classes), "confusion_matrix.png")
    client.log_dict(
        trained["run_id"], {"classes": list(prep.classes), "matrix": matrix.tolist()}, "confusion_matrix.json"
    )
    return trained | {"metrics": results}


@step()
def register_model(evaluated: dict[str, Any]) -> dict[str, Any]:
    """Every candidate is registered; promotion decides which one serves."""
    import mlflow

    registered = mlflow.register_model(
        evaluated["model_uri"],
        model_layout.MODEL_NAME,
        tags={"dataset_version": evaluated["dataset_version"]},
    )
    return evaluated | {"version": str(registered.version)}


@step()
def promote_model(registered: dict[str, Any], min_accuracy: float = 0.85) -> dict[str, Any]:
    """The gate: at least `min_accuracy`, and not below the champion re-evaluated on the same test split."""
    import mlflow

    client, store, version = mlflow.MlflowClient(), _store(), registered["version"]
    prep = _preprocessing(registered["run_id"])
    candidate = registered["metrics"]["test_accuracy"]
    champion, champion_accuracy = model_layout.read_champion(store), None
    if champion:
        metadata = json.loads(store.get(model_layout.metadata_key(champion["version"])))
        champion_prep = Preprocessing.from_dict(metadata)
        test = _split(dataset.load(store, registered["dataset_version"]), "test")
        _, champion_accuracy = _accuracy(
            store.get(champion["key"]), champion_prep, *_images(store, test, champion_prep)
        )
    result = registered | {
        "previous_champion": champion["version"] if champion else None,
        "champion_accuracy_same_split": champion_accuracy,
    }
    reason = promotion.gate(candidate, champion_accuracy, min_accuracy)
    if reason:
        client.set_model_version_tag(model_layout.MODEL_NAME, version, "promotion", "rejected")
        client.set_model_version_tag(model_layout.MODEL_NAME, version, "rejection_reason", reason)
        return result | {"promoted": False, "reason": reason}
    run = client.get_run(registered["run_id"])
    metadata = {
        "name": model_layout.MODEL_NAME,
        "version": version,
        **prep.to_dict(),
        "dataset_version": registered["dataset_version"],
        "metrics": registered["metrics"],
        "num_parameters": int(run.data.params["num_parameters"]),
        "mlflow_run_id": registered["run_id"],
        "code_version": run.data.tags.get("code_version"),
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    promotion.publish(store, version, _onnx_bytes(registered["model_uri"]), metadata)
    client.set_registered_model_alias(model_layout.MODEL_NAME, "champion", version)
    client.set_model_version_tag(model_layout.MODEL_NAME, version, "promotion", "accepted")
    return result | {"promoted": True, "reason": "passed the quality gate"}


@step()
def roll_out(promoted: dict[str, Any]) -> dict[str, Any]:
    """Move serving onto the new champion: on Knative, pin the predict Service to the version."""
    from workflows.rollout import roll_out_predict

    if not promoted["promoted"]:
        return {"version": promoted["version"], "rolled_out": False, "reason": promoted["reason"]}
    return {"version": promoted["version"], "rolled_out": True, "how": roll_out_predict(promoted["version"])}


def train_model_template() -> WorkflowTemplate:
    with (
        WorkflowTemplate(
            name="train-model",
            entrypoint="train",
            service_account_name="dandelion-workflows",
            arguments=[Parameter(name=k, value=v) for k, v in TRAIN_ARGUMENTS.items()],
        ) as template,
        DAG(name="train", inputs=[Parameter(name=n) for n in TRAIN_ARGUMENTS]),
    ):
        snapshot = snapshot_dataset()
        trained = train_model(
            arguments={
                "snapshot": snapshot.result,
                "epochs": "{{inputs.parameters.epochs}}",
                "seed": "{{inputs.parameters.seed}}",
            }
        )
        evaluated = evaluate_model(arguments={"trained": trained.result})
        registered = register_model(arguments={"evaluated": evaluated.result})
        promoted = promote_model(
            arguments={"registered": registered.result, "min_accuracy": "{{inputs.parameters.min-accuracy}}"}
        )
        rolled = roll_out(arguments={"promoted": promoted.result})
        snapshot >> trained >> evaluated >> registered >> promoted >> rolled
    return template


def weekly_retrain() -> CronWorkflow:
    """Extraction then training every Monday at 03:00 UTC; a run still going blocks the next."""
    extract_arguments = {"ingest-url": CLUSTER_INGEST_URL, "limit": "0", "max-failed-fraction": "0.1"}
    with (
        CronWorkflow(
            name="weekly-retrain",
            schedules=["0 3 * * 1"],
            timezone="UTC",
            concurrency_policy="Forbid",
            starting_deadline_seconds=3600,
            entrypoint="retrain",
            service_account_name="dandelion-workflows",
            arguments=[Parameter(name=k, value=v) for k, v in (extract_arguments | TRAIN_ARGUMENTS).items()],
        ) as cron,
        DAG(name="retrain", inputs=[Parameter(name=n) for n in extract_arguments | TRAIN_ARGUMENTS]),
    ):
        extract = Task(
            name="extract-images",
            template_ref=TemplateRef(name="extract-images", template="extract"),
            arguments={n: f"{{{{inputs.parameters.{n}}}}}" for n in extract_arguments},
        )
        train = Task(
            name="train-model",
            template_ref=TemplateRef(name="train-model", template="train"),
            arguments={n: f"{{{{inputs.parameters.{n}}}}}" for n in TRAIN_ARGUMENTS},
        )
        extract >> train
    return cron
