"""Where everything lives: the object-store layout of DESIGN.md, and the local folders under DANDELION_HOME.

Every key Dandelion reads or writes is built here, so ingestion, the dataset snapshot, promotion and the
predict function cannot disagree about a path.

| key | written by | read by |
|---|---|---|
| `raw/<label>/<sha256>.jpg` | ingest-one-url, validate-label (accepted) | the dataset snapshot, training |
| `incoming/<sha256>.<ext>` | validate-label (submitted) | validate-label (the admin's review) |
| `datasets/<dataset_version>/manifest.csv` | the snapshot step | training, evaluation, promotion |
| `features/<backbone identity>/<sha256>.npy` | training (pretrained backbone) | training, the label audit |
| `models/<version>/model.onnx`, `metadata.json` | promotion | predict |
| `models/champion.json` | promotion, last | predict, the gate, `dandelion up` |
| `mlflow-artifacts/...` | the local MLflow server | MLflow clients |
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from functions.lib.errors import NotFound, Unavailable
from functions.lib.store import ObjectStore

# The served model's name: in the MLflow registry (whose version numbers name the folders under
# models/) and in the Open Inference Protocol routes.
MODEL_NAME = "dandelion-grass"
CHAMPION_KEY = "models/champion.json"
# The local MLflow server keeps its artifacts in the same store, under this prefix.
MLFLOW_ARTIFACTS = "mlflow-artifacts"


def raw_key(label: str, sha256: str) -> str:
    """An ingested image, content-addressed; non-JPEG sources are re-encoded, hence always .jpg."""
    return f"raw/{label}/{sha256}.jpg"


def incoming_key(sha256: str, extension: str) -> str:
    """A submitted image as it was sent, until an admin accepts (then it is copied to raw/) or rejects it."""
    return f"incoming/{sha256}.{extension}"


def manifest_key(dataset_version: str) -> str:
    return f"datasets/{dataset_version}/manifest.csv"


def feature_key(backbone: str, sha256: str) -> str:
    """An image's features under one backbone (weights and preprocessing): a retrain computes only the
    new images', and no other backbone or image can ever be served from the key."""
    return f"features/{backbone}/{sha256}.npy"


def features_prefix(backbone: str) -> str:
    return f"features/{backbone}/"


def model_key(version: str) -> str:
    return f"models/{version}/model.onnx"


def metadata_key(version: str) -> str:
    return f"models/{version}/metadata.json"


def model_cache(home: Path) -> Path:
    """The predict function's local copy of the models it served, with the same keys as the store."""
    return home / "model-cache"


def read_champion(store: ObjectStore) -> dict[str, Any] | None:
    """The pointer to the serving model, or None before the first promotion. A pointer that is not one
    (truncated, hand-edited) makes the model unavailable, a 503 that says why, not a crash."""
    try:
        pointer = json.loads(store.get(CHAMPION_KEY))
    except NotFound:
        return None
    except ValueError:
        raise Unavailable(f"{CHAMPION_KEY} is not valid JSON") from None
    if not (
        isinstance(pointer, dict) and all(isinstance(pointer.get(k), str) for k in ("version", "sha256"))
    ):
        raise Unavailable(f"{CHAMPION_KEY} does not name a version and its sha256")
    return pointer
