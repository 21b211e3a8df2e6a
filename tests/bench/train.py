"""Benchmark `train`: the default recipe on all 400 images through `dandelion run train-model`, then a
retraining after 10 new labels.

Method: a fresh DANDELION_HOME (SQLite catalog, file:// store) with all 400 images ingested from a
loopback mirror (extract-images, not timed), a real MLflow server; then the wall time of the whole
`dandelion run train-model` command (process start, snapshot, training, label audit, evaluation,
registration, promotion, roll-out) with its default parameters and an empty feature cache. The metrics
are those the evaluate step measured with onnxruntime on the frozen test split (20 % of the images,
chosen by digest): accuracy, balanced accuracy, accuracy on the test images the audit did not flag, and
the expected calibration error before and after temperature scaling; the suspects are the audit's table
in the MLflow run. Then 10 new labelled photos (dataset photos mirrored left to right: new bytes) are
submitted and accepted through validate-label's library, and `dandelion run train-model` is timed again:
only the new photos' features are computed.
Targets on a 2-core machine: under 3 minutes for the first training, under 30 s for the retraining.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import mlflow
from PIL import Image, ImageOps

from functions.lib.config import Settings
from functions.lib.labels import LABELS
from functions.lib.layout import metadata_key, read_champion
from functions.lib.store import open_store
from functions.lib.submissions import Labeller, Submission
from tests.bench.report import save
from tests.support import DATASET, mirrored_env
from workflows.lib.tracking import AUDIT_TABLE
from workflows.local.processes import (
    free_port,
    serve_directory,
    start_function,
    start_mlflow,
    stop,
    wait_healthy,
)

NEW_LABELS = 10


def dandelion(env: dict[str, str], *args: str) -> str:
    command = [sys.executable, "-m", "workflows.local.cli", *args]
    return subprocess.run(command, env=env, check=True, capture_output=True, text=True).stdout


def timed_training(env: dict[str, str]) -> float:
    """Wall time of `dandelion run train-model`, the command as a user runs it."""
    started = time.perf_counter()
    dandelion(env, "run", "train-model")
    return time.perf_counter() - started


def add_new_labels(env: dict[str, str]) -> None:
    """Ten photos nobody has labelled yet, submitted and accepted as an admin would."""
    labeller = Labeller.from_settings(Settings.from_env(env))
    for n in range(NEW_LABELS):
        label = LABELS[n % 2]
        out = io.BytesIO()
        ImageOps.mirror(Image.open(DATASET / label / f"{n:08d}.jpg").convert("RGB")).save(out, "JPEG")
        submission_id, _new = labeller.submit(Submission(out.getvalue(), label))
        labeller.decide(submission_id, "accept", None)


def first_run(store_url: str) -> tuple[dict, mlflow.entities.Run]:
    """The champion the first training promoted, and its MLflow run."""
    store = open_store(store_url)
    champion = read_champion(store)
    if champion is None:
        raise SystemExit("the first training promoted nothing")
    metadata = json.loads(store.get(metadata_key(champion["version"])))
    return champion, mlflow.MlflowClient().get_run(metadata["mlflow_run_id"])


def report(champion: dict, run: mlflow.entities.Run, first: float, retrain: float, retrained: dict) -> dict:
    metrics = run.data.metrics
    client = mlflow.MlflowClient()
    suspects = client.load_table(run.info.experiment_id, AUDIT_TABLE, [run.info.run_id])
    return {
        "benchmark": "train",
        "backbone": run.data.params["backbone"],
        "wall_time_s": round(first, 1),
        "promoted_version": champion["version"],
        "test": {
            name: round(metrics[f"test_{name}"], 4)
            for name in (
                *("accuracy", "balanced_accuracy", "accuracy_unflagged"),
                *("ece_uncalibrated", "ece", "log_loss_uncalibrated", "log_loss"),
            )
        }
        | {"images": int(metrics["test_images"]), "images_unflagged": int(metrics["test_images_unflagged"])},
        "calibration": {
            "fitted_on": run.data.params["calibrated_on"],
            **{
                name: round(metrics[f"calibration_{name}"], 4)
                for name in ("accuracy", "ece_before", "ece_after", "images")
            },
        },
        "temperature": round(float(run.data.params["temperature"]), 3),
        "suspected_labels": {
            "count": len(suspects),
            "keys": [
                f"{row.key} ({row.given_label} -> {row.suggested_label}, {row.split})"
                for row in suspects.itertuples()
            ],
        },
        "retrain_after_10_new_labels": {
            "wall_time_s": round(retrain, 1),
            "features_computed": int(retrained["features_computed"]),
            "features_computed_by_the_audit": int(retrained["audit_features_computed"]),
        },
        "targets_met": first < 180 and retrain < 30,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mirror", type=Path, required=True, help="the greenr dataset folder to serve")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as directory:
        home = Path(directory)
        mirror = serve_directory(args.mirror)
        ingest_port, mlflow_port = free_port(), free_port()
        env = mirrored_env(home, mirror.server_port, ingest_port)
        env["MLFLOW_TRACKING_URI"] = os.environ["MLFLOW_TRACKING_URI"] = f"http://127.0.0.1:{mlflow_port}"
        processes = [
            start_function("ingest-one-url", ingest_port, env),
            start_mlflow(home, (home / "objects").as_uri(), mlflow_port),
        ]
        try:
            wait_healthy(f"http://127.0.0.1:{ingest_port}/health", processes[0])
            wait_healthy(f"http://127.0.0.1:{mlflow_port}/health", processes[1], timeout=120)
            dandelion(env, "seed")
            dandelion(env, "run", "extract-images")
            first = timed_training(env)
            champion, run = first_run((home / "objects").as_uri())
            add_new_labels(env)
            retrain = timed_training(env)
            latest = mlflow.search_runs(
                [run.info.experiment_id], order_by=["attributes.start_time DESC"], max_results=1
            ).iloc[0]
            retrained = {k.removeprefix("metrics."): v for k, v in latest.items() if k.startswith("metrics.")}
            result = report(champion, run, first, retrain, retrained)
        finally:
            for process in processes:
                stop(process)
            mirror.shutdown()
    save(result)
    return 0 if result["targets_met"] else 1


if __name__ == "__main__":
    sys.exit(main())
