import hashlib
import json
from pathlib import Path

import pytest

from functions.lib.layout import CHAMPION_KEY, read_champion
from functions.lib.preprocessing import Preprocessing
from functions.lib.store import FileStore
from workflows.lib.promotion import gate, publish
from workflows.lib.tracking import ModelVersion


@pytest.mark.parametrize(
    ("candidate", "champion", "reason"),
    [
        (0.90, None, None),
        (0.90, 0.90, None),
        (0.84, None, "test accuracy 0.8400 is below the floor 0.8500"),
        (0.90, 0.93, "test accuracy 0.9000 is below the champion's 0.9300 on the same split"),
    ],
)
def test_gate(candidate: float, champion: float | None, reason: str | None) -> None:
    assert gate(candidate, champion, floor=0.85) == reason


class RecordingStore(FileStore):
    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.order: list[str] = []

    def put(self, key: str, data: bytes, content_type: str = "application/octet-stream") -> None:
        super().put(key, data, content_type)
        self.order.append(key)


def test_publish_writes_the_pointer_last(tmp_path: Path) -> None:
    store = RecordingStore(tmp_path)
    assert read_champion(store) is None
    model = ModelVersion(
        "7", "run-7", "d-1", {"test_accuracy": 0.97}, b"onnx-bytes", Preprocessing(), 1000, "abc"
    )
    pointer = publish(store, model)
    assert store.order == ["models/7/model.onnx", "models/7/metadata.json", CHAMPION_KEY]
    assert read_champion(store) == pointer
    assert (pointer["version"], pointer["key"]) == ("7", "models/7/model.onnx")
    assert pointer["sha256"] == hashlib.sha256(b"onnx-bytes").hexdigest()
    metadata = json.loads(store.get("models/7/metadata.json"))
    assert metadata.pop("created_at")
    assert metadata == {
        "name": "dandelion-grass",
        "version": "7",
        "input_size": 128,
        "resize": 144,
        "mean": [0.485, 0.456, 0.406],
        "std": [0.229, 0.224, 0.225],
        "classes": ["dandelion", "grass"],
        "dataset_version": "d-1",
        "metrics": {"test_accuracy": 0.97},
        "num_parameters": 1000,
        "model_sha256": hashlib.sha256(b"onnx-bytes").hexdigest(),
        "mlflow_run_id": "run-7",
        "code_version": "abc",
    }
