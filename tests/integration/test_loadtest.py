"""The Locust load test runs headless against real predict and validate-label functions and fails on any
failed request, and on a kind of request never served (predict without a model pushes back only)."""

import os
import subprocess
import sys

import pytest
import requests

from tests.conftest import FunctionProcess
from tests.integration.test_predict_function import predict_env
from tests.support import ROOT, publish_model

pytestmark = pytest.mark.integration

TOKEN = "load-test-admin"


def locust(url: str, labels_url: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "locust", "-f", str(ROOT / "tests" / "load" / "locustfile.py")]
    command += ["--headless", "--host", url, "--users", "4", "--spawn-rate", "4", "--run-time", "4s"]
    env = dict(os.environ, DANDELION_LABELS_URL=labels_url, DANDELION_ADMIN_TOKEN=TOKEN)
    return subprocess.run([*command, "--only-summary"], capture_output=True, text=True, timeout=120, env=env)


def test_locust_passes_against_serving_functions_and_fails_without_a_model(tmp_path, tiny_models) -> None:
    store_url = (tmp_path / "objects").as_uri()
    function = FunctionProcess("predict", predict_env(tmp_path, store_url), ready="/v2/health/live")
    labels_env = predict_env(tmp_path, store_url, DANDELION_ADMIN_TOKEN=TOKEN)
    labels = FunctionProcess("validate-label", labels_env | {"DANDELION_RETRAIN_MIN_NEW_LABELS": "100000"})
    try:
        refused = locust(function.url, labels.url)  # no model yet: every prediction is a 503
        assert refused.returncode == 1
        assert (
            "never served: GET /health, POST /predict, POST /v2/models/dandelion-grass/infer"
            in refused.stdout
        )
        assert "POST     /predict [back-pressure]" in refused.stderr + refused.stdout
        publish_model(store_url, "1", tiny_models[0])
        requests.post(f"{function.url}/model/reload").raise_for_status()
        run = locust(function.url, labels.url)
    finally:
        function.stop()
        labels.stop()
    assert run.returncode == 0, run.stderr[-3000:]
    summary = run.stderr + run.stdout
    for line in ("POST     /predict", "/v2/models/dandelion-grass/infer", "POST     /submissions", "(admin)"):
        assert line in summary
    assert "0(0.00%)" in summary and "back-pressure" not in summary
