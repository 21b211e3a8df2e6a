"""Promotion: the quality gate, and publishing a model where serving finds it.

A candidate is promoted when its test accuracy reaches the floor and is not below the current champion's,
the champion being re-evaluated on the candidate's own frozen test split (so both are measured on the
same images). Publishing writes `models/<version>/model.onnx` and `metadata.json` first and
`models/champion.json` last, each a whole object, so a reader sees the old champion or the new one,
never half of either.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from functions.lib.layout import CHAMPION_KEY, MODEL_NAME, metadata_key, model_key, read_champion
from functions.lib.preprocessing import Preprocessing
from functions.lib.store import ObjectStore
from workflows.lib.evaluation import evaluate


@dataclass(frozen=True)
class Candidate:
    """A registered model version and what publishing it needs."""

    version: str
    run_id: str
    dataset_version: str
    metrics: dict[str, float]
    onnx_bytes: bytes
    prep: Preprocessing
    num_parameters: int
    code_version: str | None


def gate(candidate: float, champion: float | None, floor: float) -> str | None:
    """Why the candidate must not be promoted, or None when it may be."""
    if candidate < floor:
        return f"test accuracy {candidate:.4f} is below the floor {floor:.4f}"
    if champion is not None and candidate < champion:
        return f"test accuracy {candidate:.4f} is below the champion's {champion:.4f} on the same split"
    return None


def champion_accuracy(store: ObjectStore, dataset_version: str) -> tuple[str | None, float | None]:
    """The current champion's version and its test accuracy on `dataset_version`'s test split, fed with
    the preprocessing it was trained with; (None, None) before the first promotion."""
    champion = read_champion(store)
    if champion is None:
        return None, None
    # The champion may have been trained with other preprocessing (input size, normalisation): its own.
    prep = Preprocessing.from_dict(json.loads(store.get(metadata_key(champion["version"]))))
    report = evaluate(store.get(champion["key"]), prep, store, dataset_version)
    return champion["version"], report.metrics["test_accuracy"]


def metadata(candidate: Candidate) -> dict[str, Any]:
    """`metadata.json`: what serving needs (the preprocessing) and how the model was made."""
    return {
        "name": MODEL_NAME,
        "version": candidate.version,
        **candidate.prep.to_dict(),
        "dataset_version": candidate.dataset_version,
        "metrics": candidate.metrics,
        "num_parameters": candidate.num_parameters,
        "mlflow_run_id": candidate.run_id,
        "code_version": candidate.code_version,
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }


def publish(store: ObjectStore, version: str, onnx_bytes: bytes, metadata: dict[str, Any]) -> dict[str, Any]:
    """Export the model and its metadata, then point `champion.json` at it; returns the pointer."""
    store.put(model_key(version), onnx_bytes, "application/octet-stream")
    store.put(metadata_key(version), json.dumps(metadata, indent=2).encode(), "application/json")
    pointer = {
        "version": version,
        "key": model_key(version),
        "sha256": hashlib.sha256(onnx_bytes).hexdigest(),
        "metrics": metadata["metrics"],
        "promoted_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    store.put(CHAMPION_KEY, json.dumps(pointer, indent=2).encode(), "application/json")
    return pointer


def promote(store: ObjectStore, candidate: Candidate, min_accuracy: float) -> dict[str, Any]:
    """Gate the candidate and publish it when it passes; returns the decision and what it was based on."""
    previous, previous_accuracy = champion_accuracy(store, candidate.dataset_version)
    decision = {"previous_champion": previous, "champion_accuracy_same_split": previous_accuracy}
    reason = gate(candidate.metrics["test_accuracy"], previous_accuracy, min_accuracy)
    if reason:
        return decision | {"promoted": False, "reason": reason}
    # The ONNX bytes published are the ones evaluated: what serves is what was measured.
    publish(store, candidate.version, candidate.onnx_bytes, metadata(candidate))
    return decision | {"promoted": True, "reason": "passed the quality gate"}
