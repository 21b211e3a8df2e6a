"""Roll-out: put the predict function on a newly promoted model.

On Knative the predict Service is pinned by its first environment variable, DANDELION_MODEL_VERSION
(platform/ keeps it first): a JSON Patch, guarded by a `test` of that name, replaces its value and
Knative rolls a new revision. Without a cluster, the local predict function (DANDELION_PREDICT_URL) is
asked to look at `models/champion.json` now (POST /model/reload) instead of at its next poll.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import requests

from functions.lib.config import Settings

SERVICE_ACCOUNT = Path("/var/run/secrets/kubernetes.io/serviceaccount")


def predict_patch(version: str) -> list[dict[str, str]]:
    # JSON Patch addresses list items by index: the `test` makes the patch fail, instead of changing
    # another variable, if someone reorders the Service's environment.
    env = "/spec/template/spec/containers/0/env/0"
    return [
        {"op": "test", "path": f"{env}/name", "value": "DANDELION_MODEL_VERSION"},
        {"op": "replace", "path": f"{env}/value", "value": version},
    ]


def reload_local_predict(version: str) -> str:
    url = f"{Settings.from_env().predict_url}/model/reload"
    try:
        response = requests.post(url, timeout=60)
    except requests.ConnectionError:
        return f"no predict function answers at {url}; it loads the champion when it starts"
    response.raise_for_status()
    serving = response.json()["version"]
    if serving != version:  # e.g. a process pinned by DANDELION_MODEL_VERSION: say so, do not pretend
        raise RuntimeError(f"{url} still serves model {serving}, not {version}")
    return f"local predict function at {url} now serves model {version}"


def roll_out_predict(version: str) -> str:
    # Every pod has these variables and the mounted service-account token; nothing else does.
    host = os.environ.get("KUBERNETES_SERVICE_HOST")
    if not host:
        return reload_local_predict(version)
    namespace = (SERVICE_ACCOUNT / "namespace").read_text().strip()
    port = os.environ.get("KUBERNETES_SERVICE_PORT", "443")
    response = requests.patch(
        f"https://{host}:{port}/apis/serving.knative.dev/v1/namespaces/{namespace}/services/predict",
        data=json.dumps(predict_patch(version)),
        headers={
            "Authorization": f"Bearer {(SERVICE_ACCOUNT / 'token').read_text().strip()}",
            "Content-Type": "application/json-patch+json",
        },
        verify=str(SERVICE_ACCOUNT / "ca.crt"),
        timeout=30,
    )
    response.raise_for_status()
    return f"knative service {namespace}/predict pinned to model {version}"
