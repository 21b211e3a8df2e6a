"""Load test of the predict function with real images, through each way of asking it.

`make loadtest` runs it headless against the local stack for a bounded time; Locust exits non-zero
when any request failed. Images come from DANDELION_LOADTEST_IMAGES (default: the shared dataset).
"""

from __future__ import annotations

import base64
import functools
import os
import random
from pathlib import Path

from locust import HttpUser, between, task

from functions.lib.labels import LABELS

DEFAULT_IMAGES = Path(__file__).resolve().parents[3] / "shared" / "datasets" / "greenr"


@functools.cache
def images(count: int = 40) -> list[bytes]:
    folder = Path(os.environ.get("DANDELION_LOADTEST_IMAGES") or DEFAULT_IMAGES)
    paths = sorted(folder.glob("*/*.jpg"))
    if not paths:
        raise SystemExit(f"no images under {folder}: set DANDELION_LOADTEST_IMAGES")
    return [path.read_bytes() for path in random.Random(0).sample(paths, min(count, len(paths)))]


class PredictUser(HttpUser):
    wait_time = between(0.01, 0.1)

    def _check(self, response, classes: list[str]) -> None:
        if not set(classes) <= set(LABELS) or not classes:
            response.failure(f"unexpected classes {classes!r}")

    @task(8)
    def predict_multipart(self) -> None:
        files = {"file": ("image.jpg", random.choice(images()))}
        with self.client.post("/predict", files=files, catch_response=True) as response:
            if response.ok:
                self._check(response, [response.json()["predicted_class"]])

    @task(2)
    def predict_raw_body(self) -> None:
        headers = {"Content-Type": "image/jpeg"}
        body = random.choice(images())
        with self.client.post("/predict", data=body, headers=headers, catch_response=True) as response:
            if response.ok:
                self._check(response, [response.json()["predicted_class"]])

    @task(2)
    def infer_open_inference_protocol(self) -> None:
        pair = random.sample(images(), 2)
        request = {
            "inputs": [
                {
                    "name": "image",
                    "datatype": "BYTES",
                    "shape": [2],
                    "data": [base64.b64encode(image).decode() for image in pair],
                }
            ],
            "outputs": [{"name": "predicted_class"}],
        }
        path = "/v2/models/dandelion-grass/infer"
        with self.client.post(path, json=request, catch_response=True) as response:
            if response.ok:
                self._check(response, response.json()["outputs"][0]["data"])

    @task(1)
    def health(self) -> None:
        self.client.get("/health")
