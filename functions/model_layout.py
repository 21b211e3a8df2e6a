"""Where promoted models live in the object store: promotion writes this layout, predict reads it."""

from __future__ import annotations

import json
from typing import Any

from functions.errors import NotFound
from functions.store import ObjectStore

MODEL_NAME = "dandelion-grass"
CHAMPION_KEY = "models/champion.json"


def model_key(version: str) -> str:
    return f"models/{version}/model.onnx"


def metadata_key(version: str) -> str:
    return f"models/{version}/metadata.json"


def read_champion(store: ObjectStore) -> dict[str, Any] | None:
    """The pointer to the serving model, or None before the first promotion."""
    try:
        return json.loads(store.get(CHAMPION_KEY))
    except NotFound:
        return None
