"""Benchmark `train`: the default training on all 400 images, through `dandelion run train-model`.

Method: a fresh DANDELION_HOME (SQLite catalog, file:// store) with all 400 images ingested from a
loopback mirror (extract-images, not timed), a real MLflow server; then the wall time of the whole
`dandelion run train-model` command (process start, snapshot, training, ONNX export, evaluation,
registration, promotion) with its default parameters. Accuracy, precision and recall are those the
evaluate step measured with onnxruntime on the frozen test split (20 % of the images, chosen by digest).
Targets on a 2-core machine: test accuracy at least 0.95, under 5 minutes.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from functions.lib.layout import read_champion
from functions.lib.store import open_store
from tests.support import mirrored_env
from workflows.local.processes import (
    free_port,
    serve_directory,
    start_function,
    start_mlflow,
    stop,
    wait_healthy,
)


def dandelion(env: dict[str, str], *args: str) -> str:
    command = [sys.executable, "-m", "workflows.local.cli", *args]
    return subprocess.run(command, env=env, check=True, capture_output=True, text=True).stdout


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mirror", type=Path, required=True, help="the greenr dataset folder to serve")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as directory:
        home = Path(directory)
        mirror = serve_directory(args.mirror)
        ingest_port, mlflow_port = free_port(), free_port()
        env = mirrored_env(home, mirror.server_port, ingest_port)
        env["MLFLOW_TRACKING_URI"] = f"http://127.0.0.1:{mlflow_port}"
        processes = [
            start_function("ingest-one-url", ingest_port, env),
            start_mlflow(home, (home / "objects").as_uri(), mlflow_port),
        ]
        try:
            wait_healthy(f"http://127.0.0.1:{ingest_port}/health", processes[0])
            wait_healthy(f"http://127.0.0.1:{mlflow_port}/health", processes[1], timeout=120)
            dandelion(env, "seed")
            dandelion(env, "run", "extract-images")
            started = time.perf_counter()
            dandelion(env, "run", "train-model")
            elapsed = time.perf_counter() - started
            champion = read_champion(open_store((home / "objects").as_uri()))
        finally:
            for process in processes:
                stop(process)
            mirror.shutdown()
    metrics = champion["metrics"] if champion else {}
    result = {
        "benchmark": "train",
        "wall_time_s": round(elapsed, 1),
        "promoted_version": champion and champion["version"],
        "metrics": {k: round(v, 4) for k, v in metrics.items()},
        "targets_met": bool(champion) and metrics["test_accuracy"] >= 0.95 and elapsed < 300,
    }
    print(json.dumps(result, indent=2))
    return 0 if result["targets_met"] else 1


if __name__ == "__main__":
    sys.exit(main())
