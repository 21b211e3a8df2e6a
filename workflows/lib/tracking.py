"""MLflow, in one module: the training run and what it logs, the model as a pyfunc, the evaluation's
metrics and figures, and the registry, which decides the champion (the alias `champion`).

Everything else in the workflows reaches MLflow through these functions; MLFLOW_TRACKING_URI says where.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import inspect
import io
import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlflow
import mlflow.pyfunc
import pandas as pd
from mlflow.data.pandas_dataset import from_pandas
from mlflow.exceptions import MlflowException
from PIL import Image

from functions.lib.image_model import INPUT_COLUMN, ImageClassifier
from functions.lib.layout import MODEL_NAME, manifest_key
from functions.lib.preprocessing import Preprocessing
from functions.lib.store import ObjectStore
from functions.lib.submissions import Suspect
from workflows.lib import dataset
from workflows.lib.evaluation import Report, confusion_figure
from workflows.progress import report_progress

EXPERIMENT = "dandelion"
AUDIT_TABLE = "label_audit.json"  # the label audit's suspects, a table artifact of the run
AUDIT_COLUMNS = ("key", "sha256", "given_label", "suggested_label", "self_confidence", "split")
CHAMPION_ALIAS = "champion"
# What the registered model needs to run anywhere MLflow runs it, pinned as pyproject pins it here.
MODEL_REQUIREMENTS = ("mlflow", "onnxruntime", "Pillow", "numpy", "pandas")


@dataclass(frozen=True)
class ModelVersion:
    """A registered version of the model and what serving and publishing need from it."""

    version: str
    run_id: str
    dataset_version: str
    metrics: dict[str, float]  # the test metrics evaluate-model logged
    onnx_bytes: bytes
    prep: Preprocessing
    num_parameters: int
    code_version: str | None


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


def _jpeg(image: Image.Image) -> bytes:
    out = io.BytesIO()
    image.convert("RGB").save(out, format="JPEG", quality=90)
    return out.getvalue()


def log_pyfunc(onnx_bytes: bytes, prep: Preprocessing, example: Image.Image) -> str:
    """Log the model as a pyfunc (`functions.lib.image_model`): the ONNX graph and its preprocessing as
    artifacts, the `functions` package as code, a signature and an input example made from `example`.
    Returns the model URI."""
    with tempfile.TemporaryDirectory() as folder:
        paths = {"model": Path(folder, "model.onnx"), "preprocessing": Path(folder, "preprocessing.json")}
        paths["model"].write_bytes(onnx_bytes)
        paths["preprocessing"].write_text(json.dumps(prep.to_dict()))
        package = Path(inspect.getfile(ImageClassifier)).parents[1]  # functions/, the model's code
        info = mlflow.pyfunc.log_model(
            name="model",
            python_model=str(package / "lib" / "mlflow_model.py"),  # models from code: nothing pickled
            artifacts={name: str(path) for name, path in paths.items()},
            code_paths=[str(package)],  # copied in, so that any environment with the requirements loads it
            input_example=pd.DataFrame({INPUT_COLUMN: [_jpeg(example)]}),
            pip_requirements=[f"{name}=={importlib.metadata.version(name)}" for name in MODEL_REQUIREMENTS],
        )
    return str(info.model_uri)


def train_run(
    store: ObjectStore, snapshot: dict[str, Any], backbone: str, epochs: int, seed: int
) -> dict[str, Any]:
    """Train on the snapshot inside a new MLflow run that logs the parameters, the metrics (per epoch for
    the scratch CNN), the dataset, the calibration, the weights, the preprocessing and the model (a
    pyfunc). Returns the run id, the model URI and the temperature that calibrates it."""
    # torch is imported here, not with this module: the other steps need MLflow but not torch.
    from workflows.lib.training import TrainConfig, compute_dtype, fit

    version = snapshot["dataset_version"]
    examples, config = dataset.load(store, version), TrainConfig(epochs=epochs, seed=seed)
    mlflow.set_experiment(EXPERIMENT)  # created on first use, so a fresh tracking server needs no setup
    with mlflow.start_run(tags={"dataset_version": version, "code_version": code_version()}) as run:
        mlflow.log_params(config.to_dict())
        mlflow.log_params(
            {
                "backbone": backbone,
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
            report_progress(
                f"epoch {epoch}: " + ", ".join(f"{k} {v:.4f}" for k, v in sorted(metrics.items()))
            )

        fitted = fit(backbone, config, store, examples, log_epoch)
        mlflow.log_params({f"prep_{k}": v for k, v in fitted.prep.to_dict().items()})
        mlflow.log_params(
            {
                "num_parameters": fitted.num_parameters,
                "temperature": fitted.temperature,
                "calibrated_on": fitted.calibrated_on,
            }
        )
        mlflow.log_metrics(fitted.metrics)
        mlflow.pytorch.log_state_dict(fitted.weights, "pytorch")
        mlflow.log_dict(fitted.prep.to_dict(), "preprocessing.json")
        example = dataset.load_images(store, examples[:1], fitted.prep)[0][0]
        model_uri = log_pyfunc(fitted.onnx_bytes, fitted.prep, example)
    return {"run_id": run.info.run_id, "model_uri": model_uri, "temperature": fitted.temperature}


def load_model(model_uri: str) -> tuple[bytes, Preprocessing]:
    """A logged model's ONNX graph and the preprocessing saved with it: exactly what would serve."""
    with tempfile.TemporaryDirectory() as folder:
        local = Path(mlflow.artifacts.download_artifacts(artifact_uri=model_uri, dst_path=folder))
        prep = Preprocessing.from_dict(json.loads((local / "artifacts" / "preprocessing.json").read_text()))
        return (local / "artifacts" / "model.onnx").read_bytes(), prep


def log_evaluation(run_id: str, report: Report) -> None:
    """The test metrics, and the confusion matrix as a figure and as JSON, on the training run."""
    client = mlflow.MlflowClient()
    for key, value in report.metrics.items():
        client.log_metric(run_id, key, value)
    client.log_figure(run_id, confusion_figure(report.matrix, report.classes), "confusion_matrix.png")
    client.log_dict(
        run_id, {"classes": list(report.classes), "matrix": report.matrix.tolist()}, "confusion_matrix.json"
    )


def log_audit(run_id: str, suspects: list[Suspect], counts: dict[str, int]) -> None:
    """The label audit's suspects as a table (MLflow shows it with the run), and its counts."""
    client = mlflow.MlflowClient()
    rows = [(s.key, s.sha256, s.given, s.suggested, s.self_confidence, s.split) for s in suspects]
    client.log_table(run_id, pd.DataFrame(rows, columns=list(AUDIT_COLUMNS)), AUDIT_TABLE)
    for key, value in counts.items():
        client.log_metric(run_id, key, value)


def flagged(run_id: str) -> frozenset[str]:
    """SHA-256 of the images the run's label audit suspected."""
    client = mlflow.MlflowClient()
    experiment_id = client.get_run(run_id).info.experiment_id
    return frozenset(client.load_table(experiment_id, AUDIT_TABLE, run_ids=[run_id])["sha256"])


@contextlib.contextmanager
def audit_run(dataset_version: str) -> Iterator[str]:
    """A run of its own for an audit outside training (`dandelion audit-labels`); yields its id."""
    mlflow.set_experiment(EXPERIMENT)
    tags = {"dataset_version": dataset_version, "code_version": code_version()}
    with mlflow.start_run(run_name="audit-labels", tags=tags) as run:
        yield run.info.run_id


def register(model_uri: str, dataset_version: str) -> str:
    """Every candidate is registered; promotion decides which one serves. Returns its version."""
    registered = mlflow.register_model(model_uri, MODEL_NAME, tags={"dataset_version": dataset_version})
    return str(registered.version)


def model_version(version: str) -> ModelVersion:
    """A registered version with its model, its test metrics and the facts of its run."""
    client = mlflow.MlflowClient()
    registered = client.get_model_version(MODEL_NAME, version)
    if registered.run_id is None:
        raise ValueError(f"{MODEL_NAME} version {version} was not logged by a run")
    run = client.get_run(registered.run_id)
    onnx_bytes, prep = load_model(f"models:/{MODEL_NAME}/{version}")
    return ModelVersion(
        version=str(registered.version),
        run_id=registered.run_id,
        dataset_version=registered.tags["dataset_version"],
        metrics={k: v for k, v in run.data.metrics.items() if k.startswith("test_")},
        onnx_bytes=onnx_bytes,
        prep=prep,
        num_parameters=int(run.data.params["num_parameters"]),
        code_version=run.data.tags.get("code_version"),
    )


def champion() -> ModelVersion | None:
    """The version the alias `champion` names: the one source of truth for what serves."""
    try:
        aliases = mlflow.MlflowClient().get_registered_model(MODEL_NAME).aliases
    except MlflowException as exc:
        if exc.error_code == "RESOURCE_DOES_NOT_EXIST":  # nothing registered yet
            return None
        raise
    version = aliases.get(CHAMPION_ALIAS)
    return model_version(str(version)) if version is not None else None


def set_champion(version: str) -> None:
    """Move the alias by hand (`dandelion promote`: a roll-back, or a roll-forward past the gate)."""
    client = mlflow.MlflowClient()
    client.set_registered_model_alias(MODEL_NAME, CHAMPION_ALIAS, version)
    client.set_model_version_tag(MODEL_NAME, version, "promotion", "manual")


def record_promotion(version: str, decision: dict[str, Any]) -> None:
    """The registry's side of the gate's decision: the alias moves to a promoted version; a rejected one
    keeps its reason as a tag; both keep what the gate compared them with."""
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
