"""Argo Events: what starts `train-model` besides the weekly schedule. A webhook EventSource receives the
validate-label function's CloudEvent (enough new labels) and Alertmanager's webhook (live quality dropped);
a Sensor submits `train-model` for either, at most `RETRAINS_PER_HOUR` times an hour, so a burst of
events does not start a burst of trainings (and the WorkflowTemplate's mutex lets one run at a time).

Written as plain manifests: Hera models Argo Events' specs, but not the Workflow a trigger carries.
`tests/unit/test_render.py` validates both against the Argo Events schemas.
"""

from __future__ import annotations

from typing import Any

from functions.lib.config import DEFAULT_PORTS
from functions.lib.retrain import LABELS_EVENT
from workflows import defaults

EVENT_SOURCE = "dandelion"
PORT = DEFAULT_PORTS["retrain-webhook"]
ENDPOINTS = {"labels": "/retrain", "alertmanager": "/alerts"}  # event name -> webhook path
RETRAINS_PER_HOUR = 2


def event_source() -> dict[str, Any]:
    return {
        "apiVersion": "argoproj.io/v1alpha1",
        "kind": "EventSource",
        "metadata": {"name": EVENT_SOURCE},
        "spec": {
            "service": {"ports": [{"port": PORT, "targetPort": PORT}]},
            "webhook": {
                name: {"port": str(PORT), "endpoint": endpoint, "method": "POST"}
                for name, endpoint in ENDPOINTS.items()
            },
        },
    }


# What each event must carry to start a training: (path, value) in the payload the webhook EventSource
# hands on, {"header": ..., "body": <the request's JSON>}. The local stack's webhook applies the same.
FILTERS = {
    "labels": (("body.type", LABELS_EVENT),),
    "alertmanager": (("body.status", "firing"), ("body.commonLabels.alertname", defaults.QUALITY_ALERT)),
}
DEPENDENCIES = {"labels": "new-labels", "alertmanager": "quality-drop"}  # event name -> dependency


def matches(event_name: str, payload: dict[str, Any]) -> bool:
    """Whether `payload` passes the Sensor's filters for `event_name`."""

    def at(path: str) -> Any:
        value: Any = payload
        for part in path.split("."):
            value = value.get(part) if isinstance(value, dict) else None
        return value

    return all(at(path) == value for path, value in FILTERS[event_name])


def _dependency(event_name: str) -> dict[str, Any]:
    data = [{"path": path, "type": "string", "value": [value]} for path, value in FILTERS[event_name]]
    return {
        "name": DEPENDENCIES[event_name],
        "eventSourceName": EVENT_SOURCE,
        "eventName": event_name,
        "filters": {"data": data},
    }


def sensor() -> dict[str, Any]:
    workflow = {
        "apiVersion": "argoproj.io/v1alpha1",
        "kind": "Workflow",
        "metadata": {"generateName": "train-model-"},
        "spec": {"workflowTemplateRef": {"name": "train-model"}},
    }
    return {
        "apiVersion": "argoproj.io/v1alpha1",
        "kind": "Sensor",
        "metadata": {"name": "dandelion-retrain"},
        "spec": {
            "template": {"serviceAccountName": defaults.SENSOR_SERVICE_ACCOUNT},
            "dependencies": [_dependency(event_name) for event_name in DEPENDENCIES],
            "triggers": [
                {
                    "template": {
                        "name": "train-model",
                        "conditions": " || ".join(DEPENDENCIES.values()),
                        "argoWorkflow": {"operation": "submit", "source": {"resource": workflow}},
                    },
                    "rateLimit": {"unit": "Hour", "requestsPerUnit": RETRAINS_PER_HOUR},
                }
            ],
        },
    }
