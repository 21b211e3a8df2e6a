"""Classification metrics on a frozen split, computed from the served (ONNX) model's probabilities.

The headline is accuracy on the whole frozen test split, which the quality gate reads. Beside it:
balanced accuracy, per-class precision / recall / F1, the confusion matrix (as
`test_confusion_<true>_as_<predicted>` counts, so that it travels with the metrics into the champion's
metadata), each class's share of the split (`test_share_<class>`: predict compares the live
predicted-class mix with it), the expected calibration error and the log loss of the served confidence
and of the uncalibrated one, and accuracy on the test images the label audit did not flag, a separate
figure that never replaces the headline.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.special import softmax
from sklearn.metrics import (
    accuracy_score,
    balanced_accuracy_score,
    confusion_matrix,
    log_loss,
    precision_recall_fscore_support,
)

from functions.lib.onnx_classifier import OnnxClassifier
from functions.lib.preprocessing import Preprocessing
from functions.lib.store import ObjectStore
from workflows.lib import dataset
from workflows.lib.calibration import expected_calibration_error


@dataclass(frozen=True)
class Report:
    metrics: dict[str, float]
    matrix: np.ndarray  # the confusion matrix: rows true classes, columns predicted ones
    classes: tuple[str, ...]


def evaluate(
    onnx_bytes: bytes,
    prep: Preprocessing,
    store: ObjectStore,
    dataset_version: str,
    flagged: frozenset[str] = frozenset(),
    temperature: float = 1.0,
) -> Report:
    """The ONNX model, run by onnxruntime as predict runs it, on the dataset's frozen test split.
    `flagged`: SHA-256 of the images the label audit suspected; `temperature`: the one the model's logits
    are divided by, to measure the calibration error it removed."""
    examples = dataset.split(dataset.load(store, dataset_version), "test")
    images, labels = dataset.load_images(store, examples, prep)
    probabilities = OnnxClassifier(onnx_bytes, prep).classify(images)
    unflagged = np.array([e.sha256 not in flagged for e in examples], dtype=bool)
    return report(np.asarray(labels, dtype=int), probabilities, prep.classes, unflagged, temperature)


def report(
    labels: np.ndarray,
    probabilities: np.ndarray,
    classes: Sequence[str],
    unflagged: np.ndarray,
    temperature: float = 1.0,
) -> Report:
    """The metrics (`test_` prefixed, as MLflow logs them) of probabilities (N, classes) against labels."""
    predictions = probabilities.argmax(axis=1) if len(labels) else np.zeros(0, dtype=int)
    indices = list(range(len(classes)))
    precision, recall, f1, _support = precision_recall_fscore_support(
        labels, predictions, labels=indices, zero_division=0.0
    )
    matrix = confusion_matrix(labels, predictions, labels=indices)
    # Undo the temperature: softmax(T * log p) are the probabilities of the logits before calibration.
    uncalibrated = softmax(temperature * np.log(np.clip(probabilities, 1e-12, 1.0)), axis=1)
    result = {
        "test_accuracy": float(accuracy_score(labels, predictions)) if len(labels) else 0.0,
        "test_balanced_accuracy": float(balanced_accuracy_score(labels, predictions)) if len(labels) else 0.0,
        "test_ece": expected_calibration_error(probabilities, labels),
        "test_ece_uncalibrated": expected_calibration_error(uncalibrated, labels),
        # The negative log-likelihood: a proper score, steadier than ECE's bins on a few dozen images.
        "test_log_loss": float(log_loss(labels, probabilities, labels=indices)) if len(labels) else 0.0,
        "test_log_loss_uncalibrated": float(log_loss(labels, uncalibrated, labels=indices))
        if len(labels)
        else 0.0,
        "test_images": float(len(labels)),
        "test_images_unflagged": float(unflagged.sum()),
        "test_accuracy_unflagged": float((predictions == labels)[unflagged].mean())
        if unflagged.any()
        else 0.0,
    }
    for index, name in enumerate(classes):
        result |= {
            f"test_precision_{name}": float(precision[index]),
            f"test_recall_{name}": float(recall[index]),
            f"test_f1_{name}": float(f1[index]),
            # The class mix of the labelled data, which live predictions are compared with.
            f"test_share_{name}": float((labels == index).mean()) if len(labels) else 0.0,
        }
        for other, predicted in enumerate(classes):
            result[f"test_confusion_{name}_as_{predicted}"] = float(matrix[index, other])
    return Report(result, matrix, tuple(classes))


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
