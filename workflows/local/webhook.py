"""The local stack's retrain webhook: what Argo Events' EventSource and Sensor do in the cluster
(`workflows/retrain_events.py`). It accepts validate-label's CloudEvent at /retrain and Alertmanager's
webhook at /alerts, applies the Sensor's filters, and runs `retrain` in a thread of its own, one at a
time and at most `RETRAINS_PER_HOUR` an hour: an event that arrives while a training runs, or past the
hour's budget, is answered 429 and dropped, as the template's mutex and the Sensor's rate limit would
hold it back."""

from __future__ import annotations

import http.server
import json
import logging
import threading
import time
from collections.abc import Callable

from workflows.retrain_events import ENDPOINTS, RETRAINS_PER_HOUR, matches

log = logging.getLogger("dandelion.webhook")
MAX_BODY = 1024 * 1024  # Argo Events' webhook default (maxPayloadSize)


class RetrainWebhook(http.server.ThreadingHTTPServer):
    def __init__(self, port: int, retrain: Callable[[str], None]) -> None:
        self.retrain = retrain
        self.running = threading.Lock()
        self.events = {endpoint: name for name, endpoint in ENDPOINTS.items()}
        self.started: list[float] = []  # when each training started (time.monotonic())
        super().__init__(("127.0.0.1", port), _Handler)

    def start(self) -> RetrainWebhook:
        threading.Thread(target=self.serve_forever, daemon=True).start()
        return self

    def receive(self, event_name: str, body: bytes) -> int:
        """The status to answer; starts a training when the event passes the filters and none runs."""
        try:
            payload = {"body": json.loads(body)}
        except ValueError:
            return 400
        if not matches(event_name, payload):
            return 204  # not an event that retrains: accepted and ignored, as the Sensor filters it
        if not self.running.acquire(blocking=False):
            log.info("a training is running: %s event dropped", event_name)
            return 429
        now = time.monotonic()
        if sum(now - started < 3600 for started in self.started) >= RETRAINS_PER_HOUR:
            self.running.release()
            log.info("%d trainings started in the last hour: %s event dropped", RETRAINS_PER_HOUR, event_name)
            return 429
        self.started.append(now)
        threading.Thread(target=self._train, args=(event_name,), daemon=True).start()
        return 202

    def _train(self, event_name: str) -> None:
        try:
            self.retrain(event_name)
        except Exception:
            log.exception("the training started by a %s event failed", event_name)
        finally:
            self.running.release()


class _Handler(http.server.BaseHTTPRequestHandler):
    server: RetrainWebhook

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        event_name = self.server.events.get(self.path)
        if event_name is None:
            status = 404
        elif length > MAX_BODY:
            status = 413
        else:
            status = self.server.receive(event_name, self.rfile.read(length))
        self.send_response(status)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        log.debug(format, *args)
