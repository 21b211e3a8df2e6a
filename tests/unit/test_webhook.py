"""The local retrain webhook over real HTTP: the Sensor's filters, one training at a time, and the
Sensor's hourly budget, so that repeated notifications do not start repeated trainings."""

import threading

import requests

from functions.lib.retrain import LABELS_EVENT
from workflows import defaults
from workflows.local.processes import free_port
from workflows.local.webhook import RetrainWebhook
from workflows.retrain_events import RETRAINS_PER_HOUR

LABELS = {"specversion": "1.0", "type": LABELS_EVENT, "source": "validate-label", "id": "1", "data": {}}
FIRING = {"status": "firing", "commonLabels": {"alertname": defaults.QUALITY_ALERT, "model_version": "2"}}


def test_events_start_one_training_at_a_time_within_the_hourly_budget() -> None:
    release, started = threading.Event(), []

    def retrain(event_name: str) -> None:
        started.append(event_name)
        release.wait(10)

    port = free_port()
    webhook = RetrainWebhook(port, retrain).start()
    url = f"http://127.0.0.1:{port}"
    try:
        post = lambda path, body: requests.post(f"{url}{path}", json=body, timeout=5).status_code  # noqa: E731
        assert post("/retrain", LABELS) == 202
        assert post("/alerts", FIRING) == 429  # a training runs
        release.set()
        while webhook.running.locked():
            threading.Event().wait(0.05)
        assert post("/alerts", FIRING | {"status": "resolved"}) == 204  # filtered out
        assert post("/alerts", {"status": "firing", "commonLabels": {"alertname": "Other"}}) == 204
        assert post("/alerts", FIRING) == 202
        while webhook.running.locked():
            threading.Event().wait(0.05)
        assert RETRAINS_PER_HOUR == 2 and post("/alerts", FIRING) == 429  # the hour's budget is spent
        assert requests.post(f"{url}/alerts", data=b"{", timeout=5).status_code == 400
        assert post("/elsewhere", FIRING) == 404
        assert started == ["labels", "alertmanager"]
    finally:
        webhook.shutdown()
        webhook.server_close()
