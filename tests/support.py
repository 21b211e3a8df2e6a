"""Shared by tests and benchmarks: where things are, and small real models (the training code, one
epoch, a few real images)."""

from __future__ import annotations

import contextlib
import hashlib
import http.server
import os
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

from PIL import Image

from functions.lib.catalog import CANONICAL_PREFIX
from functions.lib.labels import LABELS
from functions.lib.layout import MODEL_NAME, raw_key
from functions.lib.preprocessing import Preprocessing
from functions.lib.store import open_store

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
DATASET = SHARED / "datasets" / "greenr"


@contextlib.contextmanager
def loopback_server(handler: type[http.server.BaseHTTPRequestHandler]) -> Iterator[http.server.HTTPServer]:
    """`handler` served on a free loopback port from daemon threads for as long as the block runs: a
    peer that misbehaves (drips, redirects, answers what a test needs) holds no thread past it. Quiet:
    no request line on stderr."""
    quiet = type(handler.__name__, (handler,), {"log_message": lambda _self, *_args: None})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), quiet)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


def s3_environment(endpoint: str) -> dict[str, str]:
    """What points boto3 at a moto server: its endpoint and the dummy credentials moto accepts."""
    return {
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_ACCESS_KEY_ID": "test",
        "AWS_SECRET_ACCESS_KEY": "test",
        "AWS_DEFAULT_REGION": "us-east-1",
    }


def mirrored_env(home: Path, mirror_port: int, ingest_port: int) -> dict[str, str]:
    """The environment of a local stack on a fresh `home` whose source URLs come from a loopback mirror."""
    return dict(
        os.environ,
        DANDELION_HOME=str(home),
        DANDELION_SOURCE_MIRROR=f"{CANONICAL_PREFIX}=http://127.0.0.1:{mirror_port}/",
        DANDELION_ALLOW_PRIVATE_URLS="1",
        DANDELION_INGEST_URL=f"http://127.0.0.1:{ingest_port}/",
    )


def tiny_training_set(prep: Preprocessing, per_class: int) -> tuple[list[Image.Image], list[int]]:
    """The first `per_class` dataset photos of each class, resized as training loads them, and labels."""
    images, labels = [], []
    for index, label in enumerate(prep.classes):
        for n in range(per_class):
            images.append(prep.resized(Image.open(DATASET / label / f"{n:08d}.jpg")))
            labels.append(index)
    return images, labels


def train_tiny_model(seed: int, per_class: int = 10, backbone: str = "scratch") -> tuple[bytes, dict]:
    """ONNX bytes and metadata (without a version) of a model trained by the training code on the first
    `per_class` photos of each class, one in five held out for calibration: one epoch from scratch, or a
    head fitted on the pretrained backbone's features."""
    from workflows.lib.dataset import Example
    from workflows.lib.training import TrainConfig, fit

    with tempfile.TemporaryDirectory() as folder:
        store = open_store(Path(folder).as_uri())
        examples = []
        for label in LABELS:
            for n in range(per_class):
                data = (DATASET / label / f"{n:08d}.jpg").read_bytes()
                sha256 = hashlib.sha256(data).hexdigest()
                store.put(raw_key(label, sha256), data, "image/jpeg")
                examples.append(
                    Example(raw_key(label, sha256), label, sha256, "val" if n % 5 == 4 else "train")
                )
        fitted = fit(backbone, TrainConfig(epochs=1, seed=seed), store, examples, lambda *_: None)
    metadata = {
        "name": MODEL_NAME,
        **fitted.prep.to_dict(),
        "dataset_version": f"tiny-{backbone}-{seed}",
        "metrics": {"test_accuracy": 0.5},
        "num_parameters": fitted.num_parameters,
        "mlflow_run_id": f"run-{seed}",
    }
    return fitted.onnx_bytes, metadata


def publish_model(store_url: str, version: str, model: tuple[bytes, dict]) -> dict:
    """Publish a tiny model as `version` exactly as promotion does; returns the pointer."""
    from workflows.lib.promotion import publish
    from workflows.lib.tracking import ModelVersion

    onnx_bytes, metadata = model
    registered = ModelVersion(
        version=version,
        run_id=metadata["mlflow_run_id"],
        dataset_version=metadata["dataset_version"],
        metrics=metadata["metrics"],
        onnx_bytes=onnx_bytes,
        prep=Preprocessing.from_dict(metadata),
        num_parameters=metadata["num_parameters"],
        code_version=None,
    )
    return publish(open_store(store_url), registered)
