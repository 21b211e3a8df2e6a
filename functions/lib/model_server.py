"""The served model's lifecycle, after KServe's `Model`: load once, a ready flag, then
preprocess → predict → postprocess, each stage timed.

A process loads the model pinned by DANDELION_MODEL_VERSION, or else the one `models/champion.json`
points to, keeping a local copy of the files. An unpinned process re-reads the pointer at most once
per DANDELION_MODEL_POLL_SECONDS, in the background, and swaps in a new champion by replacing one
reference: a request holds the model it started with until it answers, so none fails during a swap.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from prometheus_client import Counter, Gauge, Histogram, Info

from functions.lib.config import Settings
from functions.lib.errors import NotFound, TooLarge, Unavailable
from functions.lib.images import open_checked
from functions.lib.layout import metadata_key, model_cache, model_key, read_champion
from functions.lib.onnx_classifier import OnnxClassifier
from functions.lib.preprocessing import Preprocessing
from functions.lib.store import FileStore, ObjectStore, open_store

STAGE_SECONDS = Histogram(
    "dandelion_predict_stage_duration_seconds",
    "Time per prediction stage and request",
    ["stage"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
)
PREDICTIONS = Counter(
    "dandelion_predictions_total", "Images classified", ["model_version", "predicted_class"]
)
CONFIDENCE = Histogram(
    "dandelion_prediction_confidence",
    "Probability of the predicted class",
    buckets=(0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99, 1.0),
)
LOAD_SECONDS = Histogram(
    "dandelion_model_load_duration_seconds",
    "Time to fetch and load a model",
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
COLD_STARTS = Counter("dandelion_cold_starts_total", "Processes that loaded their first model")
# Info-style: one series, `dandelion_model_info{model_version="N"} 1`, replaced on a swap, so the old
# version leaves no stale series behind.
SERVING = Info("dandelion_model", "The model version this process serves")
READY = Gauge("dandelion_model_ready", "1 once this process has a model to serve, else 0")
# What the champion promised, beside what it does: its test metrics, and the class mix of the labelled
# data it was measured on, which the predicted-class mix is compared with (a shift alert).
TEST_METRICS = ("accuracy", "balanced_accuracy", "ece", "log_loss")
TEST_METRIC = Gauge(
    "dandelion_model_test_metric",
    "The served model's metrics on its frozen test split",
    ["model_version", "metric"],
)
EXPECTED_CLASS_RATIO = Gauge(
    "dandelion_model_expected_class_ratio",
    "Share of each class in the served model's labelled test data",
    ["model_version", "predicted_class"],
)

log = logging.getLogger("dandelion")


@dataclass(frozen=True)
class LoadedModel:
    version: str
    metadata: dict[str, Any]
    classifier: OnnxClassifier
    sha256: str

    @property
    def classes(self) -> tuple[str, ...]:
        return self.classifier.prep.classes

    def info(self) -> dict[str, Any]:
        prep = self.classifier.prep
        return {
            "name": self.metadata["name"],
            "version": self.version,
            "classes": list(prep.classes),
            "input_size": prep.input_size,
            "num_parameters": int(self.metadata["num_parameters"]),
            "metrics": self.metadata.get("metrics", {}),
            "dataset_version": self.metadata.get("dataset_version"),
            "mlflow_run_id": self.metadata.get("mlflow_run_id"),
            "sha256": self.sha256,
        }


class ModelFiles:
    """Models fetched from the store once into a local FileStore (same keys). The local copy is trusted
    only as far as it checks out: `metadata.json` is read from the store whenever it answers (a few
    hundred bytes; the local copy serves when the store is down), and the model must match the digest
    the pointer gives or, for a pinned version, the one its metadata recorded at export."""

    def __init__(self, store: ObjectStore, directory: Path, threads: int) -> None:
        self.store = store
        self.cache = FileStore(directory)
        self.threads = threads  # onnxruntime intra-op threads per inference (DANDELION_INFERENCE_THREADS)

    def _get(self, key: str, refetch: bool) -> bytes:
        if not refetch and self.cache.exists(key):
            return self.cache.get(key)
        data = self.store.get(key)
        self.cache.put(key, data)
        return data

    def _metadata(self, version: str) -> dict[str, Any]:
        try:
            return json.loads(self._get(metadata_key(version), refetch=True))
        except Unavailable:
            if not self.cache.exists(metadata_key(version)):
                raise
            return json.loads(self.cache.get(metadata_key(version)))

    def load(self, version: str, sha256: str | None) -> LoadedModel:
        """The model, from the local copy unless it is missing or does not match `sha256` (the pointer's)
        or, without one, the digest its metadata recorded."""
        metadata = self._metadata(version)
        expected = sha256 or metadata.get("model_sha256")
        onnx_bytes = self._get(model_key(version), refetch=False)
        digest = _sha256(onnx_bytes)
        if expected is not None and digest != expected:
            onnx_bytes = self._get(model_key(version), refetch=True)
            digest = _sha256(onnx_bytes)
        if expected is not None and digest != expected:
            raise Unavailable(
                f"model {version} in the store has sha256 {digest}, not the expected {expected}"
            )
        classifier = OnnxClassifier(onnx_bytes, Preprocessing.from_dict(metadata), self.threads)
        size = classifier.prep.input_size
        classifier.probabilities(np.zeros((1, 3, size, size), dtype=np.float32))  # warm-up
        return LoadedModel(version, metadata, classifier, digest)


def _export(model: LoadedModel) -> None:
    """The metrics that describe the served model, replaced whole so a swap leaves no stale series."""
    SERVING.info({"model_version": model.version})
    metrics = model.metadata.get("metrics", {})
    TEST_METRIC.clear()
    for name in TEST_METRICS:
        if f"test_{name}" in metrics:
            TEST_METRIC.labels(model.version, name).set(metrics[f"test_{name}"])
    EXPECTED_CLASS_RATIO.clear()
    for name in model.classes:
        if f"test_share_{name}" in metrics:
            EXPECTED_CLASS_RATIO.labels(model.version, name).set(metrics[f"test_share_{name}"])
    READY.set(1)


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class ModelServer:
    def __init__(self, settings: Settings, store: ObjectStore) -> None:
        self.settings = settings
        self.files = ModelFiles(store, model_cache(settings.home), settings.inference_threads)
        self.store = store
        self._model: LoadedModel | None = None
        self._lock = threading.Lock()
        self._next_check = 0.0
        self._why_not_ready = "no model loaded yet"

    @classmethod
    def from_settings(cls, settings: Settings) -> ModelServer:
        return cls(settings, open_store(settings.store_url))

    @property
    def pinned(self) -> bool:
        return self.settings.model_version is not None

    def _target(self) -> tuple[str, str | None] | None:
        """The version to serve and its expected digest (None when pinned), or None without a champion."""
        if self.settings.model_version:
            return self.settings.model_version, None
        pointer = read_champion(self.store)
        return (pointer["version"], pointer["sha256"]) if pointer else None

    def refresh(self, force: bool = False) -> LoadedModel | None:
        """Load the target model if it is not the one serving (at most once per poll interval unless
        forced); the swap is one assignment."""
        with self._lock:
            if not force and self._model is not None and time.monotonic() < self._next_check:
                return self._model  # another thread has just checked
            self._next_check = time.monotonic() + self.settings.model_poll_seconds
            try:
                target = self._target()
                if target is None:
                    self._why_not_ready = "no model has been promoted yet (models/champion.json is missing)"
                    return self._model
                version, sha256 = target
                current = self._model
                if current and current.version == version and sha256 in (None, current.sha256):
                    return current
                started = time.perf_counter()
                model = self.files.load(version, sha256)
            except NotFound:
                self._why_not_ready = f"model {version} is not in the object store"
                return self._model
            except Unavailable as exc:
                self._why_not_ready = str(exc)
                return self._model
            LOAD_SECONDS.observe(time.perf_counter() - started)
            if current is None:
                COLD_STARTS.inc()
            _export(model)
            log.info(
                "model loaded",
                extra={"fields": {"version": version, "previous": current and current.version}},
            )
            self._model = model
            return model

    def _refresh_in_background(self) -> None:
        if not self._lock.locked():
            threading.Thread(target=self._refresh_quietly, daemon=True).start()

    def _refresh_quietly(self) -> None:
        try:
            self.refresh(force=True)  # the caller found the check due
        except Exception:
            log.exception("checking for a new champion failed; the current model keeps serving")

    def current(self) -> LoadedModel:
        """The model to answer with: loaded on first use; a newer champion is looked for when due."""
        model = self._model
        due = time.monotonic() >= self._next_check
        if model is None:
            if due or self._lock.locked():  # the first request loads; those arriving meanwhile wait
                model = self.refresh()
            if model is None:
                raise Unavailable(self._why_not_ready)
        elif due and not self.pinned:
            # This request answers with the model it has; the pointer is re-read beside it, so a slow
            # store never delays an answer.
            self._next_check = time.monotonic() + self.settings.model_poll_seconds
            self._refresh_in_background()
        return model

    def _preprocess(self, prep: Preprocessing, payloads: Sequence[bytes]) -> list[np.ndarray]:
        """Decode and preprocess each image within one pixel budget for the whole request: each header
        is checked against what the images before it left, before that image is decoded."""
        budget = self.settings.max_image_pixels
        arrays: list[np.ndarray] = []
        for data in payloads:
            try:
                image = open_checked(data, budget, prep.draft)
            except TooLarge:
                if not arrays:
                    raise
                limit = self.settings.max_image_pixels
                raise TooLarge(
                    f"the request's images together pass the {limit}-pixel limit of one request"
                ) from None
            budget -= image.width * image.height  # as decoded: a JPEG drafted to a smaller scale costs less
            arrays.append(prep(image))
        return arrays

    def predict(self, payloads: Sequence[bytes]) -> tuple[LoadedModel, np.ndarray, float]:
        """Probabilities (N, classes) for encoded images, with the model used and the seconds taken."""
        if len(payloads) > self.settings.max_images_per_request:
            raise TooLarge(
                f"a request may carry at most {self.settings.max_images_per_request} images; "
                f"this one carries {len(payloads)}"
            )
        model = self.current()
        started = time.perf_counter()
        with STAGE_SECONDS.labels("preprocess").time():
            # The preprocessing saved with this model, not a default: serving cannot drift from training.
            batch = np.stack(self._preprocess(model.classifier.prep, payloads))
        with STAGE_SECONDS.labels("predict").time():
            probabilities = model.classifier.probabilities(batch)
        with STAGE_SECONDS.labels("postprocess").time():
            for index, confidence in zip(
                probabilities.argmax(axis=1), probabilities.max(axis=1), strict=True
            ):
                PREDICTIONS.labels(model.version, model.classes[index]).inc()
                CONFIDENCE.observe(confidence)
        return model, probabilities, time.perf_counter() - started


def describe(model: LoadedModel, probabilities: np.ndarray, seconds: float) -> list[dict[str, Any]]:
    """The /predict answer for each image."""
    return [
        {
            "predicted_class": model.classes[int(row.argmax())],
            "confidence": float(row.max()),
            "probabilities": dict(zip(model.classes, map(float, row), strict=True)),
            "model_version": model.version,
            "prediction_time": seconds,
        }
        for row in probabilities
    ]
