"""Benchmark the container images (`make bench-images`, after `make images`): their sizes, a build with
nothing changed, and cold starts inside the containers, run as the image tests run them
(tests/images/containers.py: the pod's user, a read-only root with a tmpfs on /tmp, the host's network).

Method:
- Sizes: `podman image inspect`'s Size (every layer, uncompressed; what `podman images` shows).
- Build with nothing changed: `python -m workflows.local.images` for the images present, every layer
  from podman's cache (wall time of each `podman build`). Cold builds and a build after a source change
  are timed by hand (docs/benchmarks.md gives the commands): they need an empty cache or an edit.
- predict's cold start: the model a backbone trains on 40 photos (bench-predict's), promoted into a
  store folder mounted read-only; timed from `podman run` to the first 200 from POST /predict (polled),
  median of 7, each in a new container; the same measured for the function as a process (bench-predict's
  `cold_start`) in the same run, for comparison.
- The other images: from `podman run` to the first 200 from their readiness path (/health; the web app's
  page), once each.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import requests

from functions.lib.config import Settings
from tests.bench.predict import cold_start, jpegs, multipart
from tests.bench.report import OUTPUT, save
from tests.images.containers import IMAGES, SERVING, Container, inspect, pod_environment, readable, run_podman
from tests.support import publish_model, train_tiny_model
from workflows.local.images import CA_BUNDLE, LOCAL_BASE, build

RUNS = 7


def predict_in_container(store: Path, body: tuple[bytes, str], timeout: float = 120) -> float:
    """Seconds from `podman run` to the first 200 from POST /predict (polled every 5 ms)."""
    data, content_type = body
    container = Container(
        "predict",
        pod_environment(DANDELION_STORE_URL="file:///store"),
        mounts=[(store, "/store", "ro")],
        ready=None,
    )
    try:
        while time.monotonic() < container.started + timeout:
            with contextlib.suppress(requests.ConnectionError):
                answer = container.http.post(
                    f"{container.url}/predict", data=data, headers={"Content-Type": content_type}, timeout=30
                )
                if answer.status_code == 200:
                    return time.monotonic() - container.started
            time.sleep(0.005)
        raise TimeoutError(f"predict's container did not answer in {timeout:.0f} s:\n{container.logs()}")
    finally:
        container.stop()


def ready_in_container(target: str) -> float:
    container = Container(target, pod_environment(), ready="/" if target == "web" else "/health")
    container.stop()
    return container.cold_start or 0.0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=RUNS, help="cold starts of predict's container")
    args = parser.parse_args()
    present = [
        i for i in IMAGES.values() if run_podman("image", "exists", i.tag, check=False).returncode == 0
    ]
    result: dict = {
        "benchmark": "images",
        "sizes_mb": {i.target: round(inspect(i.tag)["Size"] / 1e6) for i in present},
    }
    ca = CA_BUNDLE if CA_BUNDLE.is_file() else None  # as `make images` passes it
    OUTPUT.mkdir(parents=True, exist_ok=True)
    result["build_unchanged_s"] = {
        i.target: round(build(i, LOCAL_BASE, ca, OUTPUT / f"build-{i.target}.log"), 1) for i in present
    }

    model = train_tiny_model(seed=0, per_class=20, backbone=Settings.backbone)
    body = multipart(jpegs(1)[0])
    with tempfile.TemporaryDirectory() as folder:
        store = Path(folder) / "objects"
        publish_model(store.as_uri(), "1", model)
        readable(store)
        containers = [predict_in_container(store, body) for _ in range(args.runs)]
        process_env = dict(os.environ, DANDELION_STORE_URL=store.as_uri())
        processes = [cold_start(process_env, body) for _ in range(args.runs)]
    result["predict_cold_start_s"] = {
        "container_median": round(statistics.median(containers), 3),
        "container_runs": [round(s, 3) for s in containers],
        "process_median": round(statistics.median(processes), 3),
    }
    others = [t for t in SERVING if t != "predict" and t in {i.target for i in present}]
    result["ready_s"] = {target: round(ready_in_container(target), 2) for target in others}
    result["targets_met"] = result["sizes_mb"].get("predict", 0) < 400
    save(result)
    return 0 if result["targets_met"] else 1


if __name__ == "__main__":
    sys.exit(main())
