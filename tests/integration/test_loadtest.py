"""The Locust load test runs headless against a real predict function and fails on any failed request."""

import subprocess
import sys

import pytest
import requests

from tests.conftest import FunctionProcess
from tests.integration.test_predict_function import predict_env
from tests.support import ROOT, publish_model

pytestmark = pytest.mark.integration


def locust(url: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "locust", "-f", str(ROOT / "tests" / "load" / "locustfile.py")]
    command += ["--headless", "--host", url, "--users", "4", "--spawn-rate", "4", "--run-time", "4s"]
    return subprocess.run([*command, "--only-summary"], capture_output=True, text=True, timeout=120)


def test_locust_passes_against_a_serving_function_and_fails_without_a_model(tmp_path, tiny_models) -> None:
    store_url = (tmp_path / "objects").as_uri()
    function = FunctionProcess("predict", predict_env(tmp_path, store_url), ready="/v2/health/live")
    try:
        refused = locust(function.url)  # no model yet: every prediction is a 503
        assert refused.returncode == 1
        publish_model(store_url, "1", tiny_models[0])
        requests.post(f"{function.url}/model/reload").raise_for_status()
        run = locust(function.url)
    finally:
        function.stop()
    assert run.returncode == 0, run.stderr[-3000:]
    summary = run.stderr + run.stdout
    assert "POST     /predict" in summary and "/v2/models/dandelion-grass/infer" in summary
    assert "0(0.00%)" in summary
