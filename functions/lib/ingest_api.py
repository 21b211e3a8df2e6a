"""The ingest-one-url function's HTTP API: `POST /` with {"url", "label"}, as JSON or as a CloudEvent,
over `Ingestor`; the function itself (`functions/ingest_one_url.py`) only wires it to functions-framework.
"""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import Counter
from starlette.responses import Response

from functions.lib import openapi
from functions.lib.api import Request, Route, json_response, metrics, read_event, require_str
from functions.lib.ingest import Ingestor

MAX_EVENT_BYTES = 64 * 1024  # a URL and a label, as JSON or a CloudEvent
OUTCOMES = Counter("dandelion_ingest_total", "Ingestion attempts by outcome", ["outcome"])


def routes(ingestor: Callable[[], Ingestor]) -> list[Route]:
    """`ingestor` builds the ingestor on the first request (the cold start)."""

    def ingest(request: Request) -> Response:
        data = read_event(request)
        url, label = require_str(data, "url"), require_str(data, "label")
        try:
            outcome, row = ingestor().ingest(url, label)
        except Exception as exc:
            OUTCOMES.labels(getattr(exc, "code", "internal_error")).inc()
            raise
        OUTCOMES.labels(outcome).inc()
        return json_response({"outcome": outcome, **row}, 201 if outcome == "ingested" else 200)

    def health(_request: Request) -> Response:
        ingestor()
        return json_response({"status": "healthy"})

    return [
        Route("/", ingest, ("POST",), lambda _s, _r: MAX_EVENT_BYTES),
        Route("/health", health),
        Route("/metrics", metrics),
        openapi.route("ingest_one_url"),
    ]
