"""Classification metrics on a frozen split, computed from the served (ONNX) model's predictions."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


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


def confusion_figure(matrix: np.ndarray, classes: Sequence[str]):  # -> matplotlib Figure
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
