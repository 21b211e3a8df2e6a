"""Every step of every workflow run as Argo's executor runs it: the pod's own command line,
`python -m hera.workflows.runner -e <entrypoint> <inputs file>`, started here in a process of its own (no
fork server), with a real MLflow server. Each step's output parameters are read from the files the
template names and handed on as Argo hands them; the workflow's outputs are parsed as JSON, as any
consumer of them would parse them."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from functions.lib import catalog
from functions.lib.config import Settings
from functions.lib.labels import LABELS
from functions.lib.layout import read_champion
from functions.lib.store import open_store
from tests.conftest import FunctionProcess, canonical, function_env
from workflows.local.runner import LocalRunner
from workflows.local.stack import local_parameters
from workflows.manifests import manifests

pytestmark = pytest.mark.e2e

ROWS = [(canonical(label, n), label) for label in LABELS for n in range(0, 200, 25)]  # 16 rows


class CommandLinePods:
    """Starts each step with exactly the pod's command line, and keeps what each printed."""

    def __init__(self) -> None:
        self.stdout: dict[str, str] = {}

    def __enter__(self) -> "CommandLinePods":
        return self

    def __exit__(self, *_exc: object) -> None:
        pass

    def run(self, args: list[str], env: dict[str, str], stdout: Path, stderr: Path) -> int:
        with stdout.open("wb") as out, stderr.open("wb") as err:
            code = subprocess.run(
                [sys.executable, *args], env=env, stdout=out, stderr=err, check=False, timeout=600
            ).returncode
        self.stdout[args[args.index("-e") + 1]] = stdout.read_text()
        return code


def test_weekly_retrain_runs_every_step_through_the_pod_command_line(
    tmp_path: Path, source: str, mlflow_server: str, monkeypatch
) -> None:
    db_url, store_url = f"sqlite:///{tmp_path / 'c.db'}", (tmp_path / "objects").as_uri()
    engine = catalog.open_catalog(db_url)
    for url, label in ROWS:
        catalog.record(engine, url, label, status="pending")
    function = FunctionProcess("ingest-one-url", function_env(db_url, store_url, source))
    for name, value in {"DANDELION_DB_URL": db_url, "DANDELION_STORE_URL": store_url}.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("DANDELION_INGEST_URL", f"{function.url}/")
    pods = CommandLinePods()
    try:
        runner = LocalRunner(manifests(), pods=pods)
        parameters = local_parameters(runner, "weekly-retrain", Settings.from_env())
        outputs = runner.run("weekly-retrain", parameters | {"epochs": "1", "min-accuracy": "0"})
    finally:
        function.stop()

    # Every step of both WorkflowTemplates ran through the CronWorkflow's templateRefs.
    steps = {entrypoint.split(":")[1] for entrypoint in pods.stdout}
    assert steps == {
        "list_pending",
        "ingest_row",
        "summarise",
        "snapshot_dataset",
        "train_model",
        "audit_labels",
        "evaluate_model",
        "register_model",
        "promote_model",
        "roll_out",
        "count_labels_trained",
    }
    # MLflow printed to the training step's stdout, which Argo would take as its result; the output
    # parameters, read from their files, are untouched by it.
    assert "View run" in pods.stdout["workflows.train_model:train_model"]
    summary, rollout = json.loads(outputs.parameters["summary"]), json.loads(outputs.parameters["rollout"])
    assert summary == {"total": 16, "ingested": 16, "unchanged": 0, "failed": 0, "failures": []}
    champion = read_champion(open_store(store_url))
    assert (rollout["version"], rollout["rolled_out"]) == (champion["version"], True)
