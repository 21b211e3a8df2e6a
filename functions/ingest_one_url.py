"""The `ingest-one-url` function: POST / with {"url", "label"} (JSON or CloudEvent); a thin shim."""

from __future__ import annotations

import functools

import flask
import functions_framework
from prometheus_client import Counter

from functions.config import Settings
from functions.http import dispatch, json_response, metrics, read_event, require_str
from functions.ingest import Ingestor

OUTCOMES = Counter("dandelion_ingest_total", "Ingestion attempts by outcome", ["outcome"])


@functools.cache
def _ingestor() -> Ingestor:
    """Built on the first request (the cold start), not at import."""
    return Ingestor.from_settings(Settings.from_env())


def _ingest(request: flask.Request) -> flask.Response:
    data = read_event(request)
    url, label = require_str(data, "url"), require_str(data, "label")
    try:
        outcome, row = _ingestor().ingest(url, label)
    except Exception as exc:
        OUTCOMES.labels(getattr(exc, "code", "internal_error")).inc()
        raise
    OUTCOMES.labels(outcome).inc()
    return json_response({"outcome": outcome, **row}, 201 if outcome == "ingested" else 200)


def _health(_request: flask.Request) -> flask.Response:
    _ingestor()
    return json_response({"status": "healthy"})


ROUTES = {"/": {"POST": _ingest}, "/health": {"GET": _health}, "/metrics": {"GET": metrics}}


@functions_framework.http
def ingest_one_url(request: flask.Request) -> flask.Response:
    return dispatch("ingest-one-url", ROUTES, request)
