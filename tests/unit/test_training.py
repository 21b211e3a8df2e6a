"""Whatever precision training computes in, the exported ONNX model is the trained float32 model."""

import numpy as np
import pytest
import torch

from functions.lib.onnx_classifier import OnnxClassifier
from functions.lib.preprocessing import Preprocessing
from tests.support import tiny_training_set
from workflows.lib import pretrained
from workflows.lib.training import TrainConfig, export_onnx, train


@pytest.mark.parametrize("precision", ["float32", "bfloat16"])
def test_the_onnx_export_computes_what_the_trained_model_computes(precision: str) -> None:
    prep = Preprocessing()
    images, labels = tiny_training_set(prep, per_class=4)
    config = TrainConfig(epochs=1, batch_size=4, seed=0, precision=precision)
    model = train(config, prep, images, labels, [], [], lambda *_: None)
    assert all(p.dtype == torch.float32 for p in model.parameters())
    batch = np.stack([prep.normalise(prep.centre_crop(image)) for image in images])
    with torch.no_grad():
        expected = torch.softmax(model(torch.from_numpy(batch)), 1).numpy()
    served = OnnxClassifier(export_onnx(model, prep), prep).probabilities(batch)
    np.testing.assert_allclose(served, expected, atol=1e-5)


def test_an_unknown_precision_is_refused() -> None:
    with pytest.raises(ValueError, match="precision"):
        TrainConfig(precision="float16")


def test_the_pretrained_classifier_exports_what_it_computes_and_its_head_is_the_logistic_regression() -> None:
    """Trunk, pooling and head in one graph: onnxruntime gives torch's probabilities, and those are the
    fitted logistic regression's on the same features."""
    prep = pretrained.PREPROCESSING
    images, labels = tiny_training_set(prep, per_class=4)
    batch = np.stack([prep.normalise(prep.centre_crop(image)) for image in images])
    values = pretrained.features(batch)
    weight, bias = pretrained.fit_head(values, np.array(labels), len(prep.classes), seed=0)
    classifier = pretrained.Classifier(weight, bias)
    with torch.no_grad():
        expected = torch.softmax(classifier(torch.from_numpy(batch)), 1).numpy()
    served = OnnxClassifier(export_onnx(classifier, prep), prep).probabilities(batch)
    np.testing.assert_allclose(served, expected, atol=1e-5)
    regression = pretrained.head(seed=0).fit(values, np.array(labels))
    np.testing.assert_allclose(expected, regression.predict_proba(values), atol=1e-5)
