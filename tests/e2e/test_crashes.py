"""Processes killed mid-work (SIGKILL: no handler runs, nothing is cleaned up) and run again, as a node
failure or an OOM kill would leave them: nothing is lost, nothing is done twice, nothing is left over."""

from __future__ import annotations

import collections
import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from functions.lib import catalog
from functions.lib.labels import LABELS
from functions.lib.layout import CHAMPION_KEY, MODEL_NAME
from functions.lib.store import open_store
from tests.conftest import DATASET, PODS_PRELOAD, FunctionProcess, SourceHandler, canonical, function_env
from tests.faults import LONG, disagreement, wait_until
from tests.support import loopback_server, publish_model
from workflows.local.processes import start
from workflows.local.runner import LocalRunner, Pods, WorkflowFailed
from workflows.manifests import manifests

pytestmark = pytest.mark.e2e

ROWS = [(canonical(label, n), label) for label in LABELS for n in range(8)]  # 16 rows


class CountingSource(SourceHandler):
    """The dataset's mirror, half a second per answer (an extraction lasts long enough to be killed
    midway), counting the downloads of each path."""

    downloads: ClassVar[collections.Counter[str]] = collections.Counter()
    lock: ClassVar[threading.Lock] = threading.Lock()

    def do_GET(self) -> None:
        with self.lock:
            self.downloads[self.path] += 1
        time.sleep(0.5)
        super().do_GET()


@pytest.fixture
def counting_source() -> Iterator[str]:
    CountingSource.downloads.clear()
    with loopback_server(CountingSource) as server:
        yield f"http://127.0.0.1:{server.server_port}"


def gone(process_group: int) -> bool:
    try:
        os.killpg(process_group, 0)
    except ProcessLookupError:
        return True
    return False


def ingestions_answered(url: str) -> float:
    """Ingestion attempts the function has finished, whatever their outcome."""
    families = text_string_to_metric_families(requests.get(f"{url}/metrics", timeout=30).text)
    return sum(s.value for f in families for s in f.samples if s.name == "dandelion_ingest_total")


def extract(env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    """`dandelion run extract-images`, in a session of its own: its steps' processes are in its group."""
    return start([sys.executable, "-m", "workflows.local.cli", "run", "extract-images"], env, log)


def test_extraction_killed_midway_then_run_again_ingests_each_row_once(
    tmp_path: Path, mysql_url: str, s3_url: str, counting_source: str
) -> None:
    engine, store = catalog.open_catalog(mysql_url), open_store(s3_url)
    for url, label in ROWS:
        catalog.record(engine, url, label, status="pending")
    function = FunctionProcess("ingest-one-url", function_env(mysql_url, s3_url, counting_source))
    env = function_env(mysql_url, s3_url, counting_source) | {
        "DANDELION_INGEST_URL": f"{function.url}/",
        "DANDELION_HOME": str(tmp_path),
    }
    killed = extract(env, tmp_path / "killed.log")
    try:
        wait_until(lambda: catalog.counts_by_status(engine)["ingested"] > 0, 120, "a first row ingested")
        os.kill(killed.pid, signal.SIGKILL)  # the runner alone, as the kernel's OOM killer would
        killed.wait()
        at_kill = catalog.counts_by_status(engine)["ingested"]
        wait_until(lambda: gone(killed.pid), 10, "every process of the killed run gone")
        # What the killed run had asked for is finished by the function (it never saw the client go).
        wait_until(
            lambda: ingestions_answered(function.url) == sum(CountingSource.downloads.values()),
            30,
            "the function done with what the killed run had asked",
        )
        rerun = extract(env, tmp_path / "rerun.log")
        assert rerun.wait(timeout=300) == 0, (tmp_path / "rerun.log").read_text()[-3000:]
    finally:
        function.stop()
        with contextlib.suppress(ProcessLookupError):
            os.killpg(killed.pid, signal.SIGKILL)
    assert 0 < at_kill < len(ROWS)
    assert catalog.counts_by_status(engine) == {"pending": 0, "ingested": 16, "failed": 0, "excluded": 0}
    assert len(list(store.keys("raw/"))) == 16
    assert disagreement(engine, store) == (set(), set())
    assert sorted(CountingSource.downloads.values()) == [1] * 16  # each image downloaded once, in all
    print(f"killed with {at_kill} of {len(ROWS)} rows ingested")


def killed() -> int:
    """A pod's process dying at once, as the OOM killer or a lost node ends it."""
    os.kill(os.getpid(), signal.SIGKILL)
    return 0


class PromotionKilled(Pods):
    """The pods of train-model, but promote-model's process is killed as it starts: the model has been
    trained, exported to ONNX, evaluated and registered; the gate, the alias and the pointer are not."""

    def run(self, args: list[str], env: dict[str, str], stdout: Path, stderr: Path) -> int:
        if args[args.index("-e") + 1].endswith(":promote_model"):
            return self.execute(killed)
        return super().run(args, env, stdout, stderr)


def test_a_step_killed_fails_with_137_and_the_next_step_runs() -> None:
    with Pods(PODS_PRELOAD) as pods:
        broken = pods.pool
        assert pods.execute(killed) == Pods.KILLED
        assert pods.pool is not broken  # the killed step's pool is replaced...
        assert pods.execute(int) == 0  # ...and the next step runs in it


@LONG  # about 20 s; test_training's crash between the alias and the pointer runs in `make test`
def test_training_killed_between_export_and_promotion_leaves_the_champion_serving(
    ingested_platform,
    tiny_models,
    tmp_path: Path,
    monkeypatch,
) -> None:
    import mlflow

    settings, store = ingested_platform
    monkeypatch.setenv("DANDELION_BACKBONE", "scratch")
    publish_model(settings.store_url, "7", tiny_models[0])  # the champion before this training
    pointer, models = store.get(CHAMPION_KEY), sorted(store.keys("models/"))
    env = dict(os.environ, DANDELION_HOME=str(tmp_path / "predict"), DANDELION_MODEL_POLL_SECONDS="1")
    predict = FunctionProcess("predict", env)
    try:
        pods = PromotionKilled(PODS_PRELOAD)
        runner = LocalRunner(manifests(), pods=pods)
        with pytest.raises(WorkflowFailed, match="promote-model: exit code 137"):
            runner.run("train-model", {"epochs": "1", "min-accuracy": "0"})
        (candidate,) = mlflow.MlflowClient().search_model_versions(f"name='{MODEL_NAME}'")
        assert candidate.aliases == []  # registered, never promoted
        assert (store.get(CHAMPION_KEY), sorted(store.keys("models/"))) == (pointer, models)
        time.sleep(2.5)  # two of predict's polls of the pointer
        health = requests.get(f"{predict.url}/health", timeout=30).json()
        image = (DATASET / "grass" / "00000009.jpg").read_bytes()
        answer = requests.post(f"{predict.url}/predict", files={"file": ("g.jpg", image)}, timeout=30)
    finally:
        predict.stop()
    assert (health["model_version"], answer.status_code, answer.json()["model_version"]) == ("7", 200, "7")
