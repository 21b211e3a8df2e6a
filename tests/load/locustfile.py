"""Load test of predict and validate-label with real images, through each way of asking them.

`make loadtest` (tests/load/run.py) runs it headless against functions it starts; it also runs alone,
against predict at --host and, when DANDELION_LABELS_URL is set, validate-label there (its admin
token in DANDELION_ADMIN_TOKEN). Images come from DANDELION_LOADTEST_IMAGES (default: the shared dataset).

What fails the run: any answer that is neither right nor deliberate back-pressure. A 429 or 503 with
Retry-After is back-pressure: counted on a line of its own ("... [back-pressure]"), not as a failure. A
kind of request that was never served fails the run too: a service that only pushes back is down, not
loaded.
"""

from __future__ import annotations

import base64
import functools
import os
import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

from locust import HttpUser, between, events, task
from locust.clients import ResponseContextManager

from functions.lib.labels import LABELS

DEFAULT_IMAGES = Path(__file__).resolve().parents[3] / "shared" / "datasets" / "greenr"
BACK_PRESSURE = (429, 503)
BACK_PRESSURE_TAG = " [back-pressure]"


@functools.cache
def images(count: int = 40) -> list[tuple[str, bytes]]:
    """(label, JPEG bytes) of `count` photos, the same ones on every run."""
    folder = Path(os.environ.get("DANDELION_LOADTEST_IMAGES") or DEFAULT_IMAGES)
    paths = sorted(folder.glob("*/*.jpg"))
    if not paths:
        raise SystemExit(f"no images under {folder}: set DANDELION_LOADTEST_IMAGES")
    chosen = random.Random(0).sample(paths, min(count, len(paths)))
    return [(path.parent.name, path.read_bytes()) for path in chosen]


def image() -> bytes:
    return random.choice(images())[1]


def judge(response: ResponseContextManager, valid: Callable[[Any], bool]) -> None:
    """Settle one answer: right (2xx and `valid` holds of its JSON), back-pressure, or a failure."""
    if response.status_code in BACK_PRESSURE and response.headers.get("Retry-After"):
        meta = response.request_meta
        response.request_meta = {**meta, "name": meta["name"] + BACK_PRESSURE_TAG}  # a line of its own
        response.success()
    elif not response.ok:
        response.failure(f"HTTP {response.status_code}: {response.text[:200]}")
    elif not valid(response.json()):
        response.failure(f"unexpected answer: {response.text[:200]}")


def classes(answer: Any) -> bool:
    return isinstance(answer, dict) and answer.get("predicted_class") in LABELS


class PredictUser(HttpUser):
    wait_time = between(0.01, 0.1)

    @task(8)
    def predict_multipart(self) -> None:
        with self.client.post("/predict", files={"file": ("image.jpg", image())}, catch_response=True) as r:
            judge(r, classes)

    @task(2)
    def predict_raw_body(self) -> None:
        headers = {"Content-Type": "image/jpeg"}
        with self.client.post("/predict", data=image(), headers=headers, catch_response=True) as r:
            judge(r, classes)

    @task(2)
    def infer_open_inference_protocol(self) -> None:
        pair = [image(), image()]
        request = {
            "inputs": [
                {
                    "name": "image",
                    "datatype": "BYTES",
                    "shape": [2],
                    "data": [base64.b64encode(data).decode() for data in pair],
                }
            ],
            "outputs": [{"name": "predicted_class"}],
        }
        path = "/v2/models/dandelion-grass/infer"
        with self.client.post(path, json=request, catch_response=True) as r:
            judge(r, lambda answer: set(answer["outputs"][0]["data"]) <= set(LABELS))

    @task(1)
    def health(self) -> None:
        with self.client.get("/health", catch_response=True) as r:
            judge(r, lambda answer: answer.get("model_loaded") is True)


LABELS_URL = os.environ.get("DANDELION_LABELS_URL")


class LabelsUser(HttpUser):
    """validate-label: people submitting photos with a label, an admin reading the queue. Its requests
    carry whole URLs: Locust's --host names predict, and overrides every user's own."""

    abstract = LABELS_URL is None  # without validate-label's address, predict alone is loaded
    wait_time = between(0.05, 0.2)

    @task(4)
    def submit(self) -> None:
        label, data = random.choice(images())
        files = {"file": ("photo.jpg", data, "image/jpeg")}
        with self.client.post(
            f"{LABELS_URL}/submissions",
            files=files,
            data={"label": label},
            name="/submissions",
            catch_response=True,
        ) as r:
            judge(r, lambda answer: answer.get("status") == "pending")

    @task(2)
    def review_queue(self) -> None:
        admin = {"Authorization": f"Bearer {os.environ.get('DANDELION_ADMIN_TOKEN', '')}"}
        with self.client.get(
            f"{LABELS_URL}/submissions?limit=50",
            headers=admin,
            name="/submissions (admin)",
            catch_response=True,
        ) as r:
            judge(r, lambda answer: isinstance(answer.get("submissions"), list))

    @task(1)
    def health(self) -> None:
        with self.client.get(
            f"{LABELS_URL}/health", name="/health (validate-label)", catch_response=True
        ) as r:
            judge(r, lambda answer: answer == {"status": "healthy"})


@events.quitting.add_listener
def every_kind_was_served(environment: Any, **_kwargs: Any) -> None:
    """Fail the run when some kind of request was never answered right (only pushed back, or failed)."""
    stats = environment.runner.stats
    names = {(entry.method, entry.name.removesuffix(BACK_PRESSURE_TAG)) for entry in stats.entries.values()}
    served = {
        (entry.method, entry.name)
        for entry in stats.entries.values()
        if entry.num_requests > entry.num_failures and not entry.name.endswith(BACK_PRESSURE_TAG)
    }
    never = sorted(f"{method} {name}" for method, name in names - served)
    if never:
        print(f"never served: {', '.join(never)}")
        environment.process_exit_code = 1
