"""Calibrated confidence: temperature scaling (Guo et al., 2017) fitted on held-out logits, and the
expected calibration error that says whether a confidence of 0.9 is right about nine times in ten.

The temperature divides the logits inside the exported ONNX graph, so predict needs nothing new: the
softmax it already computes is the calibrated probability.
"""

from __future__ import annotations

import itertools

import numpy as np
from scipy.optimize import minimize_scalar
from scipy.special import log_softmax, softmax

BINS = 10
TEMPERATURE_RANGE = (0.05, 20.0)


def nll(logits: np.ndarray, labels: np.ndarray) -> float:
    """The mean negative log-likelihood of the labels under softmax(logits)."""
    return float(-log_softmax(logits, axis=1)[np.arange(len(labels)), labels].mean())


def fit_temperature(logits: np.ndarray, labels: np.ndarray) -> float:
    """The temperature T minimising the negative log-likelihood of softmax(logits / T); 1.0 (no change)
    when there is nothing to fit on."""
    if len(labels) == 0:
        return 1.0

    return float(
        minimize_scalar(lambda t: nll(logits / t, labels), bounds=TEMPERATURE_RANGE, method="bounded").x
    )


def expected_calibration_error(probabilities: np.ndarray, labels: np.ndarray, bins: int = BINS) -> float:
    """Over equal-width confidence bins: the sum of (share of images in the bin) times the gap between
    the bin's accuracy and its mean confidence."""
    if len(labels) == 0:
        return 0.0
    confidence = probabilities.max(axis=1)
    correct = probabilities.argmax(axis=1) == labels
    edges = np.linspace(0.0, 1.0, bins + 1)
    error = 0.0
    for low, high in itertools.pairwise(edges):
        in_bin = (confidence > low) & (confidence <= high)
        if in_bin.any():
            error += in_bin.mean() * abs(correct[in_bin].mean() - confidence[in_bin].mean())
    return float(error)


def calibrated(logits: np.ndarray, temperature: float) -> np.ndarray:
    return softmax(logits / temperature, axis=1)
