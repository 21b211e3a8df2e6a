"""Benchmark `predict`: cold start, warm latency and throughput, memory, and the serving install size.

Method, all in one run on this machine:
- The models: one per backbone, trained by the training code on 40 photos (a head on the pretrained
  EfficientNet-Lite0's features, the default; one epoch of the CNN from scratch; speed does not depend
  on accuracy), each promoted into a temporary file:// store and measured alone.
- Images: 20 dataset images re-encoded as 400x300 JPEGs (quality 90), sent as multipart `file`.
- Cold start: a fresh process (`functions-framework --target predict`, as in the container) with an
  empty model cache, timed from process start to the first 200 from POST /predict (polling), median
  of 7.
- Warm: one process, 100 requests of warm-up, then 1 client sending 1000 sequential requests (p50,
  p99 of the client-side latency), then 8 clients (threads with keep-alive connections) for 15 s
  (throughput). The clients are plain `http.client` connections in this process, on the same 2 cores.
- In-process limit: decode + preprocess + inference of the same images in a tight loop in this
  process for 10 s, with one and with two onnxruntime intra-op threads; the better rate is the
  limit, and the 8-client throughput is reported as a share of it. The one-thread time per image,
  subtracted from the warm p50, is what serving over HTTP adds (`p50_overhead_ms`).
- Phone photo: decode + preprocess of one 4000x3000 JPEG (a dataset image enlarged, quality 90), as
  the function does it (reduced-scale JPEG decoding) and with a full decode, median of 10 each.
- Memory: resident set size of the warm function's processes (gunicorn's arbiter and its worker).
- Profile (with `--profile-with PATH_TO_PY_SPY`): py-spy samples the warm worker (500 Hz, threads
  on CPU only) while one client sends sequential requests for 20 s; each sample is charged to the
  innermost frame that belongs to a known part (onnxruntime, Pillow, the multipart parser, Prometheus
  metrics, logging, JSON, uvicorn, Starlette, Werkzeug, Dandelion's own code), reported in ms per request.
- Install: a fresh virtual environment with `pip install .[serving]`; the size of its
  site-packages, and that importing the predict function there loads no torch.
"""

from __future__ import annotations

import argparse
import collections
import http.client
import io
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import psutil
from PIL import Image

from functions.lib.config import BACKBONES, Settings
from functions.lib.images import open_checked
from functions.lib.onnx_classifier import OnnxClassifier
from functions.lib.preprocessing import Preprocessing
from tests.bench.report import save
from tests.support import DATASET, ROOT, publish_model, train_tiny_model
from workflows.local.processes import free_port, start_function, stop

MiB = 1024 * 1024


def jpegs(count: int = 20) -> list[bytes]:
    paths = sorted(DATASET.glob("*/*.jpg"))[:: 400 // count][:count]
    out = []
    for path in paths:
        buffer = io.BytesIO()
        Image.open(path).convert("RGB").resize((400, 300)).save(buffer, format="JPEG", quality=90)
        out.append(buffer.getvalue())
    return out


def multipart(image: bytes) -> tuple[bytes, str]:
    boundary = uuid.uuid4().hex
    body = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="i.jpg"\r\n'
            f"Content-Type: image/jpeg\r\n\r\n"
        ).encode()
        + image
        + f"\r\n--{boundary}--\r\n".encode()
    )
    return body, f"multipart/form-data; boundary={boundary}"


class Client:
    """One keep-alive connection posting prepared bodies to /predict."""

    def __init__(self, port: int, bodies: list[tuple[bytes, str]]) -> None:
        self.connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        self.bodies = bodies

    def post(self, n: int) -> int:
        body, content_type = self.bodies[n % len(self.bodies)]
        self.connection.request("POST", "/predict", body, {"Content-Type": content_type})
        response = self.connection.getresponse()
        response.read()
        return response.status


def cold_start(env: dict[str, str], body: tuple[bytes, str]) -> float:
    port = free_port()
    env = env | {"DANDELION_HOME": tempfile.mkdtemp()}  # an empty model cache, as in a new pod
    started = time.perf_counter()
    process = start_function("predict", port, env)
    try:
        while True:
            try:
                if Client(port, [body]).post(0) == 200:
                    return time.perf_counter() - started
            except ConnectionError:
                time.sleep(0.002)
    finally:
        stop(process)


# The parts a request's CPU time is charged to: the innermost frame whose file matches wins.
PARTS = (
    ("onnxruntime", "onnxruntime/"),
    ("Pillow (decode, resize)", "PIL/"),
    ("multipart parsing", "werkzeug/formparser.py", "werkzeug/sansio/multipart.py"),
    ("Prometheus metrics", "prometheus_client/"),
    ("logging", "logging/"),
    ("JSON", "json/"),
    ("uvicorn, h11 (HTTP, sockets)", "uvicorn/", "h11/"),
    ("Starlette, anyio, asyncio (dispatch, hand-off to a thread)", "starlette/", "anyio/", "asyncio/"),
    ("Werkzeug routing, functions-framework", "werkzeug/", "functions_framework/"),
    ("Dandelion (preprocessing, routing)", "functions/"),
)


def charge(stack: str) -> str:
    """The part a py-spy collapsed stack (root;...;leaf) is charged to."""
    for frame in reversed(stack.split(";")):
        for part, *paths in PARTS:
            if any(path in frame for path in paths):
                return part
    return "other (interpreter, threading)"


def profile(py_spy: str, worker: int, client: Client, seconds: float = 20) -> dict[str, float]:
    """CPU milliseconds per request in each part, from py-spy samples of the worker under one client."""
    with tempfile.TemporaryDirectory() as out:
        raw = Path(out) / "stacks.txt"
        command = [py_spy, "record", "--pid", str(worker), "--rate", "500", "--format", "raw"]
        sampler = subprocess.Popen(
            [*command, "--duration", str(seconds), "--output", str(raw), "--nonblocking"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        time.sleep(1)  # attached
        requests, deadline = 0, time.monotonic() + seconds - 2
        while time.monotonic() < deadline:
            assert client.post(requests) == 200
            requests += 1
        sampler.wait()
        samples: collections.Counter[str] = collections.Counter()
        for line in raw.read_text().splitlines():
            stack, _, count = line.rpartition(" ")
            samples[charge(stack)] += int(count)
    # Samples taken while no request ran are idle threads (py-spy skips those) or a handful; per request:
    return {
        part: round(1000 * n / 500 / requests, 2) for part, n in sorted(samples.items(), key=lambda i: -i[1])
    }


def warm(env: dict[str, str], bodies: list[tuple[bytes, str]], py_spy: str | None = None) -> dict:
    port = free_port()
    process = start_function("predict", port, env | {"DANDELION_HOME": tempfile.mkdtemp()})
    try:
        client = Client(port, bodies)
        while True:
            try:
                if client.post(0) == 200:
                    break
            except ConnectionError:
                client = Client(port, bodies)
                time.sleep(0.05)
        for n in range(100):
            assert client.post(n) == 200
        latencies = []
        for n in range(1000):
            started = time.perf_counter()
            assert client.post(n) == 200
            latencies.append(time.perf_counter() - started)
        counts, failures, finished = [0] * 8, [0], threading.Event()

        def hammer(index: int) -> None:
            own = Client(port, bodies)
            while not finished.is_set():
                if own.post(counts[index] + index) == 200:
                    counts[index] += 1
                else:
                    failures[0] += 1

        threads = [threading.Thread(target=hammer, args=(i,)) for i in range(8)]
        started = time.perf_counter()
        for thread in threads:
            thread.start()
        time.sleep(15)
        finished.set()
        for thread in threads:
            thread.join()
        elapsed = time.perf_counter() - started
        arbiter = psutil.Process(process.pid)
        workers = arbiter.children()
        memory = {
            "arbiter": arbiter.memory_info().rss / MiB,
            "worker": sum(worker.memory_info().rss for worker in workers) / MiB,
        }
        profiled = (
            {}
            if py_spy is None
            else {"profile_cpu_ms_per_request": profile(py_spy, workers[0].pid, Client(port, bodies))}
        )
    finally:
        stop(process)
    latencies.sort()
    return {
        "p50_ms_1_client": round(1000 * latencies[len(latencies) // 2], 2),
        "p99_ms_1_client": round(1000 * latencies[int(len(latencies) * 0.99)], 2),
        "throughput_1_client_per_s": round(len(latencies) / sum(latencies), 1),
        "throughput_8_clients_per_s": round(sum(counts) / elapsed, 1),
        "failed_requests_8_clients": failures[0],
        "rss_mib": {k: round(v, 1) for k, v in memory.items()} | {"total": round(sum(memory.values()), 1)},
        **profiled,
    }


def in_process_rate(
    model: tuple[bytes, dict], images: list[bytes], threads: int, seconds: float = 10
) -> float:
    onnx_bytes, metadata = model
    classifier = OnnxClassifier(onnx_bytes, Preprocessing.from_dict(metadata), threads)
    done, deadline = 0, time.perf_counter() + seconds
    started = time.perf_counter()
    while time.perf_counter() < deadline:
        image = open_checked(images[done % len(images)], Settings.max_image_pixels, classifier.prep.draft)
        classifier.probabilities(classifier.prep(image)[None])
        done += 1
    return done / (time.perf_counter() - started)


def phone_photo_preprocess_ms(repeats: int = 10) -> dict[str, float]:
    prep = Preprocessing()
    buffer = io.BytesIO()
    Image.open(sorted(DATASET.glob("*/*.jpg"))[0]).convert("RGB").resize((4000, 3000)).save(
        buffer, format="JPEG", quality=90
    )
    photo = buffer.getvalue()
    timings: dict[str, list[float]] = {"reduced_scale_decode": [], "full_decode": []}
    for _ in range(repeats):
        for name, draft in (("reduced_scale_decode", prep.draft), ("full_decode", None)):
            started = time.perf_counter()
            prep(open_checked(photo, Settings.max_image_pixels, draft))
            timings[name].append(1000 * (time.perf_counter() - started))
    return {name: round(statistics.median(values), 1) for name, values in timings.items()}


def serving_install() -> dict:
    with tempfile.TemporaryDirectory() as venv:
        subprocess.run([sys.executable, "-m", "venv", venv], check=True)
        python = f"{venv}/bin/python"
        subprocess.run(
            [python, "-m", "pip", "install", "--quiet", f"{ROOT}[serving]"], check=True, capture_output=True
        )
        site = subprocess.run(
            [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            check=True,
            capture_output=True,
            text=True,
        ).stdout.strip()
        size = sum(f.stat().st_size for f in Path(site).rglob("*") if f.is_file())
        probe = "import sys, time; t = time.perf_counter(); import functions.predict; "
        probe += "print(time.perf_counter() - t, 'torch' in sys.modules)"
        out = subprocess.run([python, "-c", probe], check=True, capture_output=True, text=True, cwd=venv)
        seconds, torch_loaded = out.stdout.split()
    return {
        "site_packages_mib": round(size / MiB, 1),
        "import_predict_s": round(float(seconds), 3),
        "torch_imported": torch_loaded == "True",
    }


def measure(
    model: tuple[bytes, dict], images: list[bytes], bodies: list[tuple[bytes, str]], py_spy: str | None
) -> dict:
    """Cold start, warm latency and throughput, memory, and the in-process limit of one model."""
    with tempfile.TemporaryDirectory() as store:
        store_url = Path(store).as_uri()
        publish_model(store_url, "1", model)
        env = dict(os.environ, DANDELION_STORE_URL=store_url)
        colds = [cold_start(env, bodies[0]) for _ in range(7)]
        served = warm(env, bodies, py_spy)
    rates = {threads: in_process_rate(model, images, threads) for threads in (1, 2)}
    limit, one_thread_ms = max(rates.values()), 1000 / rates[1]
    return {
        "model_mib": round(len(model[0]) / MiB, 1),
        "cold_start_s": {"median": round(statistics.median(colds), 3), "all": [round(c, 3) for c in colds]},
        **served,
        "in_process_per_s_by_onnxruntime_threads": {k: round(v, 1) for k, v in rates.items()},
        "in_process_ms_1_thread": round(one_thread_ms, 2),
        "p50_overhead_ms": round(served["p50_ms_1_client"] - one_thread_ms, 2),
        "in_process_limit_per_s": round(limit, 1),
        "throughput_8_clients_share_of_limit": round(served["throughput_8_clients_per_s"] / limit, 2),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--skip-install", action="store_true", help="skip measuring the serving install")
    parser.add_argument("--profile-with", metavar="PY_SPY", help="py-spy's path: profile the warm worker")
    args = parser.parse_args()
    images = jpegs()
    bodies = [multipart(image) for image in images]
    result = {
        "benchmark": "predict",
        "backbones": {
            backbone: measure(
                train_tiny_model(seed=0, per_class=20, backbone=backbone), images, bodies, args.profile_with
            )
            for backbone in BACKBONES
        },
        "phone_photo_4000x3000_preprocess_ms": phone_photo_preprocess_ms(),
    }
    if not args.skip_install:
        result["serving_install"] = serving_install()
    default, scratch = result["backbones"][Settings.backbone], result["backbones"]["scratch"]
    result["targets_met"] = (
        default["cold_start_s"]["median"] < 1.0
        and default["p50_overhead_ms"] <= 2.0
        and scratch["p50_ms_1_client"] < 10
        and default["throughput_8_clients_share_of_limit"] >= 0.7
        and all(b["rss_mib"]["worker"] < 250 for b in (default, scratch))
        and all(b["failed_requests_8_clients"] == 0 for b in (default, scratch))
    )
    save(result)
    return 0 if result["targets_met"] else 1


if __name__ == "__main__":
    sys.exit(main())
