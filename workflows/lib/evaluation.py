"""Classification metrics on a frozen split, computed from the served (ONNX) model's predictions."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from functions.lib.onnx_classifier import OnnxClassifier
from functions.lib.preprocessing import Preprocessing
from functions.lib.store import ObjectStore
from workflows.lib import dataset


@dataclass(frozen=True)
class Report:
    metrics: dict[str, float]
    matrix: np.ndarray  # the confusion matrix
    classes: tuple[str, ...]


def evaluate(onnx_bytes: bytes, prep: Preprocessing, store: ObjectStore, dataset_version: str) -> Report:
    """The ONNX model, run by onnxruntime as predict runs it, on the dataset's frozen test split."""
    images, labels = dataset.load_images(
        store, dataset.split(dataset.load(store, dataset_version), "test"), prep
    )
    predictions = OnnxClassifier(onnx_bytes, prep).classify(images).argmax(axis=1).tolist()
    return Report(
        metrics(labels, predictions, prep.classes),
        confusion(labels, predictions, len(prep.classes)),
        prep.classes,
    )


def metrics(labels: Sequence[int], predictions: Sequence[int], classes: Sequence[str]) -> dict[str, float]:
    """Accuracy, and precision / recall / F1 per class (`test_` prefixed names, as MLflow logs them)."""
    y, p = np.asarray(labels), np.asarray(predictions)
    result = {"test_accuracy": float((y == p).mean()) if len(y) else 0.0}
    for index, name in enumerate(classes):
        tp = int(((p == index) & (y == index)).sum())
        precision = tp / max(1, int((p == index).sum()))
        recall = tp / max(1, int((y == index).sum()))
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        result |= {f"test_precision_{name}": precision, f"test_recall_{name}": recall, f"test_f1_{name}": f1}
    return result


def confusion(labels: Sequence[int], predictions: Sequence[int], n_classes: int) -> np.ndarray:
    """Rows are true classes, columns predicted ones."""
    matrix = np.zeros((n_classes, n_classes), dtype=np.int64)
    np.add.at(matrix, (np.asarray(labels, dtype=int), np.asarray(predictions, dtype=int)), 1)
    return matrix


def confusion_figure(matrix: np.ndarray, classes: Sequence[str]) -> Any:  # a matplotlib Figure
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    figure, axes = plt.subplots(figsize=(4, 4))
    axes.imshow(matrix, cmap="Greens")
    axes.set_xticks(range(len(classes)), classes)
    axes.set_yticks(range(len(classes)), classes)
    axes.set_xlabel("predicted")
    axes.set_ylabel("true")
    for (row, col), value in np.ndenumerate(matrix):
        axes.text(col, row, str(value), ha="center", va="center")
    figure.tight_layout()
    return figure
