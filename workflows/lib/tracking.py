"""MLflow, in one module: the training run and what it logs, loading a run's model back, the evaluation's
metrics and figures, the registry (every candidate registered, the alias `champion` on the promoted one).

Everything else in the workflows reaches MLflow through these functions; MLFLOW_TRACKING_URI says where.
"""

from __future__ import annotations

import importlib.metadata
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import mlflow
import mlflow.onnx
import onnx
import pandas as pd
from mlflow.data.pandas_dataset import from_pandas

from functions.lib.layout import MODEL_NAME, manifest_key
from functions.lib.preprocessing import Preprocessing
from functions.lib.store import ObjectStore
from workflows.lib import dataset
from workflows.lib.evaluation import Report, confusion_figure
from workflows.lib.promotion import Candidate

EXPERIMENT = "dandelion"
CHAMPION_ALIAS = "champion"


def code_version() -> str:
    """The image's build sets DANDELION_CODE_VERSION; a checkout falls back to its git commit."""
    if os.environ.get("DANDELION_CODE_VERSION"):
        return os.environ["DANDELION_CODE_VERSION"]
    git = shutil.which("git")
    if git is None:
        return importlib.metadata.version("dandelion")
    commit = subprocess.run(  # noqa: S603  # a fixed command, no user input
        [git, "rev-parse", "--short", "HEAD"],
        capture_output=True,
        text=True,
        cwd=Path(__file__).parent,
        check=False,
    ).stdout.strip()
    return commit or importlib.metadata.version("dandelion")


def train_run(store: ObjectStore, snapshot: dict[str, Any], epochs: int, seed: int) -> tuple[str, str]:
    """Train on the snapshot's train split inside a new MLflow run that logs the parameters, the
    per-epoch metrics, the dataset, the state dict, the preprocessing and the ONNX model.
    Returns (run id, model URI)."""
    # torch is imported here, not with this module: the other steps need MLflow but not torch.
    from workflows.lib.training import TrainConfig, compute_dtype, export_onnx, parameter_count, train

    version = snapshot["dataset_version"]
    examples, prep, config = (
        dataset.load(store, version),
        Preprocessing(),
        TrainConfig(epochs=epochs, seed=seed),
    )
    train_set = dataset.load_images(store, dataset.split(examples, "train"), prep)
    val_set = dataset.load_images(store, dataset.split(examples, "val"), prep)
    mlflow.set_experiment(EXPERIMENT)  # created on first use, so a fresh tracking server needs no setup
    with mlflow.start_run(tags={"dataset_version": version, "code_version": code_version()}) as run:
        mlflow.log_params(config.to_dict() | {f"prep_{k}": v for k, v in prep.to_dict().items()})
        mlflow.log_params(
            {
                "dataset_version": version,
                "compute_dtype": str(compute_dtype(config.precision)).removeprefix("torch."),
                **{f"images_{k}": v for k, v in snapshot["images"].items()},
            }
        )
        mlflow.log_input(
            from_pandas(
                pd.DataFrame([e.__dict__ for e in examples]),
                source=store.url(manifest_key(version)),
                targets="label",
                name=f"greenr-{version}",
                digest=version,
            ),
            context="training",
        )

        def log_epoch(epoch: int, metrics: dict[str, float]) -> None:
            mlflow.log_metrics(metrics, step=epoch)

        model = train(config, prep, *train_set, *val_set, log_epoch)
        mlflow.log_param("num_parameters", parameter_count(model))
        mlflow.pytorch.log_state_dict(model.state_dict(), "pytorch")
        mlflow.log_dict(prep.to_dict(), "preprocessing.json")
        info = mlflow.onnx.log_model(
            onnx.load_from_string(export_onnx(model, prep)),
            name="model",
            save_as_external_data=False,
            # The serving dependency as pyproject pins it: whatever is installed here is that pin.
            pip_requirements=[f"onnxruntime=={importlib.metadata.version('onnxruntime')}"],
        )
    return run.info.run_id, info.model_uri


def load_model(run_id: str, model_uri: str) -> tuple[bytes, Preprocessing]:
    """A run's ONNX model and the preprocessing saved with it: exactly what would serve."""
    onnx_bytes = mlflow.onnx.load_model(model_uri).SerializeToString()
    prep = Preprocessing.from_dict(mlflow.artifacts.load_dict(f"runs:/{run_id}/preprocessing.json"))
    return onnx_bytes, prep


def log_evaluation(run_id: str, report: Report) -> None:
    """The test metrics, and the confusion matrix as a figure and as JSON, on the training run."""
    client = mlflow.MlflowClient()
    for key, value in report.metrics.items():
        client.log_metric(run_id, key, value)
    client.log_figure(run_id, confusion_figure(report.matrix, report.classes), "confusion_matrix.png")
    client.log_dict(
        run_id, {"classes": list(report.classes), "matrix": report.matrix.tolist()}, "confusion_matrix.json"
    )


def register(model_uri: str, dataset_version: str) -> str:
    """Every candidate is registered; promotion decides which one serves. Returns its version."""
    registered = mlflow.register_model(model_uri, MODEL_NAME, tags={"dataset_version": dataset_version})
    return str(registered.version)


def candidate(registered: dict[str, Any]) -> Candidate:
    """A registered version with what promotion needs: its model, preprocessing, metrics and run facts."""
    onnx_bytes, prep = load_model(registered["run_id"], registered["model_uri"])
    run = mlflow.MlflowClient().get_run(registered["run_id"])
    return Candidate(
        version=registered["version"],
        run_id=registered["run_id"],
        dataset_version=registered["dataset_version"],
        metrics=registered["metrics"],
        onnx_bytes=onnx_bytes,
        prep=prep,
        num_parameters=int(run.data.params["num_parameters"]),
        code_version=run.data.tags.get("code_version"),
    )


def record_promotion(version: str, decision: dict[str, Any]) -> None:
    """The registry's side of the decision: the alias moves to a promoted version; a rejected one keeps
    its reason as a tag; both keep what the gate compared them with."""
    client = mlflow.MlflowClient()
    if decision["champion_accuracy_same_split"] is not None:
        compared = f"{decision['previous_champion']}: {decision['champion_accuracy_same_split']}"
        client.set_model_version_tag(MODEL_NAME, version, "champion_accuracy_same_split", compared)
    if decision["promoted"]:
        client.set_registered_model_alias(MODEL_NAME, CHAMPION_ALIAS, version)
        client.set_model_version_tag(MODEL_NAME, version, "promotion", "accepted")
    else:
        client.set_model_version_tag(MODEL_NAME, version, "promotion", "rejected")
        client.set_model_version_tag(MODEL_NAME, version, "rejection_reason", decision["reason"])
