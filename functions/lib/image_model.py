"""The model as MLflow registers it: a pyfunc that takes encoded images and answers what predict answers.

The registered version holds the ONNX graph and the preprocessing it was trained with as artifacts, and
this package as code, so `mlflow.pyfunc.load_model("models:/dandelion-grass@champion")` or
`mlflow models serve` classify image bytes exactly as the predict function does: the same checks, the
same preprocessing, the same onnxruntime session. Only workflow steps and MLflow's own tools import this
module; the predict function does not need MLflow.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd
from mlflow.pyfunc import PythonModel

from functions.lib.config import Settings
from functions.lib.images import open_checked
from functions.lib.onnx_classifier import OnnxClassifier
from functions.lib.preprocessing import Preprocessing

INPUT_COLUMN = "image"  # encoded image bytes (JPEG, PNG, ...), one per row


class ImageClassifier(PythonModel):
    """pyfunc: a DataFrame with an `image` column of bytes in; `predicted_class`, `confidence` and one
    probability column per class out, in the model's class order."""

    def load_context(self, context: Any) -> None:
        prep = Preprocessing.from_dict(json.loads(Path(context.artifacts["preprocessing"]).read_text()))
        self.classifier = OnnxClassifier(Path(context.artifacts["model"]).read_bytes(), prep)
        self.max_pixels = Settings.from_env().max_image_pixels  # a decompression bomb is refused here too

    def predict(
        self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None
    ) -> pd.DataFrame:
        prep = self.classifier.prep
        images = [
            open_checked(bytes(data), self.max_pixels, prep.draft) for data in model_input[INPUT_COLUMN]
        ]
        probabilities = self.classifier.classify(images)
        answer = pd.DataFrame(probabilities, columns=list(prep.classes))
        answer.insert(0, "confidence", probabilities.max(axis=1))
        answer.insert(0, "predicted_class", [prep.classes[i] for i in probabilities.argmax(axis=1)])
        return answer
