"""ONNX inference with onnxruntime: what evaluation measures is exactly what serving runs."""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np
from PIL import Image

from functions.lib.preprocessing import Preprocessing


class OnnxClassifier:
    """One loaded model: ONNX bytes plus the preprocessing saved with it."""

    def __init__(self, onnx_bytes: bytes, prep: Preprocessing, threads: int | None = None) -> None:
        # Imported here, not at module level: functions-framework's gunicorn imports the function
        # before it forks its worker, and onnxruntime initialised in the parent aborts the worker
        # at exit ("terminate called after throwing an instance of 'std::system_error'").
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or min(4, os.cpu_count() or 1)
        options.inter_op_num_threads = 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        # Idle intra-op threads sleep instead of spinning: on two cores, a spinning thread takes the
        # CPU that another request's decoding needs.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.session = ort.InferenceSession(onnx_bytes, options, providers=["CPUExecutionProvider"])
        self.input_name = self.session.get_inputs()[0].name
        self.prep = prep

    def probabilities(self, batch: np.ndarray) -> np.ndarray:
        """Softmax over classes for a (N, 3, H, W) float32 batch."""
        logits = self.session.run(None, {self.input_name: batch})[0].astype(np.float64)
        exp = np.exp(logits - logits.max(axis=1, keepdims=True))
        return exp / exp.sum(axis=1, keepdims=True)

    def classify(self, images: Sequence[Image.Image], batch_size: int = 64) -> np.ndarray:
        """Probabilities for PIL images, preprocessed as the model was trained."""
        parts = [
            self.probabilities(np.stack([self.prep(image) for image in images[i : i + batch_size]]))
            for i in range(0, len(images), batch_size)
        ]
        return np.concatenate(parts) if parts else np.zeros((0, len(self.prep.classes)))
