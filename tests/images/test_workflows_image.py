"""The workflow steps' image (torch inside; `make test-images` builds and runs it, `make test` leaves it
out): every step of weekly-retrain run as Argo's executor runs it, each in a container of its own from
that image, against MariaDB, moto's S3 server and a real MLflow server. The ingest-one-url and predict
containers play the Knative Services the steps call: extraction ingests 16 real photos through the one,
and the roll-out puts the other onto the model that training promoted."""

from __future__ import annotations

import importlib.metadata
import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import mlflow
import pytest

from functions.lib import catalog
from functions.lib.config import Settings
from functions.lib.labels import LABELS
from functions.lib.layout import metadata_key, read_champion
from functions.lib.store import open_store
from tests.conftest import DATASET, canonical
from tests.images.containers import (
    IMAGES,
    POD_SECURITY,
    UID,
    Container,
    build_secret_traces,
    inspect,
    pod_environment,
    probe,
    run_podman,
)
from tests.integration.test_predict_function import expected
from workflows.local.images import podman
from workflows.local.runner import LocalRunner
from workflows.local.stack import local_parameters
from workflows.manifests import manifests

pytestmark = [pytest.mark.images, pytest.mark.workflows_image]

ROWS = [(canonical(label, n), label) for label in LABELS for n in range(0, 200, 25)]  # 16 rows
TAG = IMAGES["workflows"].tag
GRASS = (DATASET / "grass" / "00000003.jpg").read_bytes()
SCRIPT = "/argo/staging/script"  # where Argo's executor writes a script template's source
# What a step's pod gets from its ConfigMap and Secret, and from the template itself (hera__*).
POD_PREFIXES = ("DANDELION_", "AWS_", "MLFLOW_", "hera__")


class ContainerPods:
    """The local runner's pods as containers of the workflows image: the template's command and arguments
    with the source Argo writes at /argo/staging/script, the pod's variables only, and a /tmp that this
    process reads the output parameters from afterwards, where Argo's executor reads them."""

    def __init__(self) -> None:
        self.stdout: dict[str, str] = {}

    def __enter__(self) -> ContainerPods:
        return self

    def __exit__(self, *_exc: object) -> None:
        pass

    def run(self, args: list[str], env: dict[str, str], stdout: Path, stderr: Path) -> int:
        source = Path(args[-1])
        tmp = source.parent / "tmp"  # the runner maps the pod's /tmp here
        tmp.mkdir(exist_ok=True)
        tmp.chmod(0o777)  # an emptyDir: writable by the image's user
        command = [*podman(), "run", "--rm", "--network", "host", *POD_SECURITY]
        command += ["--volume", f"{tmp}:/tmp:rw", "--volume", f"{source}:{SCRIPT}:ro"]
        for name, value in env.items():
            if name.startswith(POD_PREFIXES) and name != "DANDELION_HOME":
                command += ["--env", f"{name}={value.replace(str(tmp), '/tmp')}"]
        command += [TAG, "python", *args[:-1], SCRIPT]
        with stdout.open("wb") as out, stderr.open("wb") as err:
            code = subprocess.run(command, stdout=out, stderr=err, check=False, timeout=900).returncode
        self.stdout[args[args.index("-e") + 1]] = stdout.read_text()
        return code


def script_steps(objects: list[dict[str, Any]]) -> set[str]:
    """Every Hera step the manifests define, by its entrypoint."""
    return {
        template["script"]["args"][3]
        for manifest in objects
        for template in LocalRunner.spec(manifest).get("templates", [])
        if "script" in template
    }


@pytest.fixture
def predict_on_s3(s3_url: str) -> Iterator[Container]:
    """predict on the store training promotes into; no champion yet, so /health answers 503 until then."""
    container = Container("predict", pod_environment(DANDELION_STORE_URL=s3_url), ready="/v2/health/live")
    yield container
    container.stop()


def test_weekly_retrain_runs_every_step_in_the_workflows_image(
    mysql_url: str,
    s3_url: str,
    mlflow_server: str,
    ingest: Container,
    predict_on_s3: Container,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    inspect(TAG)
    engine = catalog.open_catalog(mysql_url)
    for url, label in ROWS:
        catalog.record(engine, url, label, status="pending")
    for name, value in {
        "DANDELION_DB_URL": mysql_url,
        "DANDELION_STORE_URL": s3_url,
        "DANDELION_INGEST_URL": f"{ingest.url}/",
        "DANDELION_PREDICT_URL": predict_on_s3.url,
    }.items():
        monkeypatch.setenv(name, value)
    pods, objects = ContainerPods(), manifests()
    runner = LocalRunner(objects, pods=pods)
    parameters = local_parameters(runner, "weekly-retrain", Settings.from_env())
    outputs = runner.run("weekly-retrain", parameters | {"epochs": "1", "min-accuracy": "0"})

    assert set(pods.stdout) == script_steps(objects)
    assert "View run" in pods.stdout["workflows.train_model:train_model"]  # MLflow printed; outputs are files
    summary, rollout = json.loads(outputs.parameters["summary"]), json.loads(outputs.parameters["rollout"])
    assert summary == {"total": 16, "ingested": 16, "unchanged": 0, "failed": 0, "failures": []}
    store = open_store(s3_url)
    assert len(list(store.keys("raw/"))) == 16
    champion = read_champion(store)
    assert (rollout["version"], rollout["rolled_out"]) == (champion["version"], True)
    reload = f"{predict_on_s3.url}/model/reload"
    assert rollout["how"] == f"local predict function at {reload} now serves model {champion['version']}"
    metadata = json.loads(store.get(metadata_key(champion["version"])))
    assert mlflow.MlflowClient().get_run(metadata["mlflow_run_id"]).info.status == "FINISHED"
    # The predict container now serves what training promoted, as onnxruntime gives it here.
    health = predict_on_s3.http.get(f"{predict_on_s3.url}/health", timeout=30)
    assert (health.status_code, health.json()["model_version"]) == (200, champion["version"])
    served = predict_on_s3.http.post(
        f"{predict_on_s3.url}/predict", files={"file": ("g.jpg", GRASS)}, timeout=30
    )
    probabilities = expected((store.get(champion["key"]), metadata), GRASS)
    assert served.json()["probabilities"] == pytest.approx(
        dict(zip(LABELS, probabilities, strict=True)), abs=1e-6
    )


def test_the_workflows_image_runs_as_the_pods_user_and_keeps_no_build_secret() -> None:
    """Argo's templates set no read-only root: the steps write only /tmp, and cannot change the packages."""
    assert inspect(TAG)["Config"]["User"] == f"{UID}:{UID}"
    assert probe(TAG)[:3] == [f"{UID} {UID} /tmp", "/app/probe written", "/opt/venv/probe Permission denied"]
    assert build_secret_traces(TAG) == []
    torch = run_podman(
        "run", "--rm", TAG, "python", "-c", "import torch, torchvision; print(torch.__version__)"
    )
    assert torch.stdout.startswith(importlib.metadata.version("torch")), torch.stderr
