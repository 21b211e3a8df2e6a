"""The platform as the web app sees it: predict and validate-label over HTTP, the model registry through
MLflow's client. Every call is bounded in time, and every failure becomes a `WebError` whose message a
person can act on (what failed, and the function's own explanation), never a traceback.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

import requests

from functions.lib.api import REQUEST_ID_HEADER
from functions.lib.layout import MODEL_NAME

TIMEOUT = (3.05, 30.0)  # connect, read: a function that is down or stuck answers in seconds, not never
MAX_VERSIONS = 50  # the newest registered versions plotted


class WebError(Exception):
    """Something the person at the page should read: a part is down, slow, or refused the request."""


def _message(response: requests.Response) -> str:
    """The function's own explanation of an error answer (its JSON `message`), or the HTTP reason."""
    try:
        body = response.json()
    except ValueError:
        return response.reason or "no explanation"
    if isinstance(body, dict):
        return str(body.get("message") or body.get("error") or body)
    return str(body)


@dataclass(frozen=True)
class Service:
    """One function, by the name a person knows it by, at its base URL."""

    name: str
    url: str

    def call(
        self, method: str, path: str, headers: dict[str, str] | None = None, **kwargs: Any
    ) -> requests.Response:
        """One request, with an id of its own that the function logs it under."""
        headers = {REQUEST_ID_HEADER: f"web-{uuid.uuid4().hex}", **(headers or {})}
        url = f"{self.url.rstrip('/')}{path}"
        try:
            response = requests.request(method, url, headers=headers, timeout=TIMEOUT, **kwargs)
        except requests.ConnectionError:
            raise WebError(f"{self.name} is not reachable at {self.url}: is it running?") from None
        except requests.Timeout:
            raise WebError(f"{self.name} did not answer within {TIMEOUT[1]:.0f} s: try again later") from None
        if response.status_code >= 400:
            raise WebError(f"{self.name} answered {response.status_code}: {_message(response)}")
        return response


@dataclass(frozen=True)
class Functions:
    """The two functions the page uses."""

    predict: Service
    labels: Service

    @classmethod
    def at(cls, predict_url: str, labels_url: str) -> Functions:
        return cls(Service("predict", predict_url), Service("validate-label", labels_url))

    def classify(self, name: str, image: bytes) -> dict[str, Any]:
        return self.predict.call("POST", "/predict", files={"file": (name, image)}).json()

    def model_info(self) -> dict[str, Any]:
        return self.predict.call("GET", "/model/info").json()

    def submit(self, name: str, image: bytes, label: str, said: dict[str, Any]) -> dict[str, Any]:
        """A correction: the image, the label the person chose, and what the model had said."""
        fields = {
            "label": label,
            "predicted_class": said["predicted_class"],
            "confidence": str(said["confidence"]),
            "model_version": said["model_version"],
        }
        return self.labels.call("POST", "/submissions", files={"file": (name, image)}, data=fields).json()

    def queue(self, token: str, limit: int) -> list[dict[str, Any]]:
        """Pending items of both kinds (uploads and suspected labels), oldest first."""
        params: dict[str, str | int] = {"status": "pending", "limit": limit}
        answer = self.labels.call("GET", "/submissions", params=params, headers=_bearer(token))
        return answer.json()["submissions"]

    def image(self, token: str, submission_id: int) -> bytes:
        return self.labels.call("GET", f"/submissions/{submission_id}/image", headers=_bearer(token)).content

    def decide(self, token: str, submission_id: int, decision: str, label: str | None) -> dict[str, Any]:
        body = {"decision": decision} | ({"label": label} if label else {})
        return self.labels.call(
            "POST", f"/submissions/{submission_id}", json=body, headers=_bearer(token)
        ).json()

    def retraining(self, token: str) -> dict[str, Any]:
        return self.labels.call("GET", "/retrain", headers=_bearer(token)).json()


def _bearer(token: str) -> dict[str, str]:
    if not token.strip():
        raise WebError("enter the admin token first")
    return {"Authorization": f"Bearer {token.strip()}"}


def registered_versions() -> list[dict[str, Any]]:
    """The newest registered versions of the model with their run's test metrics and start time, oldest
    first; the registry's alias says which one is the champion."""
    import mlflow
    from mlflow.exceptions import MlflowException

    client = mlflow.MlflowClient()
    try:
        versions = client.search_model_versions(
            f"name = '{MODEL_NAME}'", max_results=MAX_VERSIONS, order_by=["version_number DESC"]
        )
        rows = []
        for version in versions:
            run = client.get_run(version.run_id) if version.run_id else None
            rows.append(
                {
                    "version": int(version.version),
                    "aliases": list(version.aliases),
                    "created_at": version.creation_timestamp,
                    "run_id": version.run_id,
                    "trained_at": run.info.start_time if run else None,
                    "dataset_version": (version.tags or {}).get("dataset_version"),
                    "metrics": {
                        k: v for k, v in (run.data.metrics if run else {}).items() if k.startswith("test_")
                    },
                }
            )
    except (MlflowException, requests.RequestException) as exc:
        raise WebError(f"MLflow's registry could not be read: {exc}") from None
    return sorted(rows, key=lambda row: row["version"])
