"""Promotion: the quality gate, and publishing a model where serving finds it.

Publishing writes `models/<version>/model.onnx` and `metadata.json` first and `models/champion.json`
last, each a whole object, so a reader sees the old champion or the new one, never half of either.
"""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime
from typing import Any

from functions.model_layout import CHAMPION_KEY, metadata_key, model_key
from functions.store import ObjectStore


def gate(candidate: float, champion: float | None, floor: float) -> str | None:
    """Why the candidate must not be promoted, or None when it may be."""
    if candidate < floor:
        return f"test accuracy {candidate:.4f} is below the floor {floor:.4f}"
    if champion is not None and candidate < champion:
        return f"test accuracy {candidate:.4f} is below the champion's {champion:.4f} on the same split"
    return None


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
