"""The registered model's definition as MLflow loads it ("models from code"): MLflow copies this file into
every logged model and runs it on load. The model itself is `functions.lib.image_model`."""

from mlflow.models import set_model

from functions.lib.image_model import ImageClassifier

set_model(ImageClassifier())
