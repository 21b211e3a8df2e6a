"""Promotion: the quality gate, and publishing the champion where serving finds it.

The registry decides: the alias `champion` names the version that serves, and the pointer predict reads
(`models/champion.json`) is written from it, never the other way. A candidate passes the gate when its
test accuracy reaches the floor and is not below the champion's, the champion being re-evaluated on the
candidate's own frozen test split (so both are measured on the same images). Publishing writes
`models/<version>/model.onnx` and `metadata.json` first and `models/champion.json` last, each a whole
object, so a reader sees the old champion or the new one, never half of either; should it fail after the
alias moved, publishing again (`dandelion promote VERSION`) brings the pointer to the alias.
"""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime
from typing import Any

from functions.lib.layout import CHAMPION_KEY, MODEL_NAME, metadata_key, model_key
from functions.lib.store import ObjectStore
from workflows.lib import tracking
from workflows.lib.evaluation import evaluate
from workflows.lib.tracking import ModelVersion


def gate(candidate: float, champion: float | None, floor: float) -> str | None:
    """Why the candidate must not be promoted, or None when it may be."""
    if candidate < floor:
        return f"test accuracy {candidate:.4f} is below the floor {floor:.4f}"
    if champion is not None and candidate < champion:
        return f"test accuracy {candidate:.4f} is below the champion's {champion:.4f} on the same split"
    return None


def decide(
    store: ObjectStore, candidate: ModelVersion, champion: ModelVersion | None, min_accuracy: float
) -> dict[str, Any]:
    """The gate's decision, and what it was based on. The champion is fed with its own preprocessing,
    which may differ from the candidate's (input size, normalisation)."""
    champion_accuracy = None
    if champion is not None:
        report = evaluate(champion.onnx_bytes, champion.prep, store, candidate.dataset_version)
        champion_accuracy = report.metrics["test_accuracy"]
    reason = gate(candidate.metrics["test_accuracy"], champion_accuracy, min_accuracy)
    return {
        "previous_champion": champion.version if champion else None,
        "champion_accuracy_same_split": champion_accuracy,
        "promoted": reason is None,
        "reason": reason or "passed the quality gate",
    }


def metadata(model: ModelVersion) -> dict[str, Any]:
    """`metadata.json`: what serving needs (the preprocessing) and how the model was made."""
    return {
        "name": MODEL_NAME,
        "version": model.version,
        **model.prep.to_dict(),
        "dataset_version": model.dataset_version,
        "metrics": model.metrics,
        "num_parameters": model.num_parameters,
        "model_sha256": hashlib.sha256(model.onnx_bytes).hexdigest(),  # what a cached copy is checked against
        "mlflow_run_id": model.run_id,
        "code_version": model.code_version,
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }


def publish(store: ObjectStore, model: ModelVersion) -> dict[str, Any]:
    """Export the model and its metadata, then point `champion.json` at it; returns the pointer. The
    ONNX bytes are the registered ones, which evaluation measured: what serves is what was measured."""
    store.put(model_key(model.version), model.onnx_bytes, "application/octet-stream")
    store.put(metadata_key(model.version), json.dumps(metadata(model), indent=2).encode(), "application/json")
    pointer = {
        "version": model.version,
        "key": model_key(model.version),
        "sha256": hashlib.sha256(model.onnx_bytes).hexdigest(),
        "metrics": model.metrics,
        "promoted_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    store.put(CHAMPION_KEY, json.dumps(pointer, indent=2).encode(), "application/json")
    return pointer


def publish_champion(store: ObjectStore) -> dict[str, Any] | None:
    """Write the pointer from the registry's alias: the one way the pointer changes."""
    champion = tracking.champion()
    return publish(store, champion) if champion else None


def make_champion(store: ObjectStore, version: str) -> dict[str, Any] | None:
    """`dandelion promote VERSION`: move the alias by hand (to roll back, say), then the pointer."""
    tracking.set_champion(version)
    return publish_champion(store)
