"""What every function shares over HTTP: routing, the error-to-status mapping, events, logs, metrics."""

from __future__ import annotations

import functools
import json
import logging
import sys
import time
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

import flask
from prometheus_client import CONTENT_TYPE_LATEST, Counter, Histogram, generate_latest
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

from functions.lib.config import Settings
from functions.lib.errors import BadRequest, DandelionError, MethodNotAllowed, NotFound, TooLarge

Handler = Callable[[flask.Request], flask.Response]
Routes = Mapping[str, Mapping[str, Handler]]

MAX_EVENT_BYTES = 64 * 1024

REQUESTS = Counter(
    "dandelion_http_requests_total", "HTTP requests answered", ["function", "route", "method", "status"]
)
LATENCY = Histogram("dandelion_http_request_seconds", "Time to answer an HTTP request", ["function", "route"])

log = logging.getLogger("dandelion")

T = TypeVar("T")


def on_first_call(build: Callable[[Settings], T]) -> Callable[[], T]:
    """`build(Settings.from_env())` made on the first call, the function's cold start, and kept: nothing
    is read or connected at import, when functions-framework loads the module before forking."""
    return functools.cache(lambda: build(Settings.from_env()))


class JsonFormatter(logging.Formatter):
    """One JSON object per line: what log collectors in a cluster parse without configuration."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "ts": self.formatTime(record, "%Y-%m-%dT%H:%M:%S"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
            **getattr(record, "fields", {}),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def configure_logging() -> None:
    """Idempotent; called by each function on its first request."""
    if not any(isinstance(h.formatter, JsonFormatter) for h in log.handlers):
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(JsonFormatter())
        log.addHandler(handler)
        log.setLevel(logging.INFO)
        log.propagate = False


def json_response(body: Any, status: int = 200) -> flask.Response:
    return flask.Response(json.dumps(body, default=str), status=status, mimetype="application/json")


def error_response(exc: DandelionError) -> flask.Response:
    body = {"error": exc.code, "message": str(exc)}
    if isinstance(exc, TooLarge):
        # Streamed, because functions-framework reads the whole request body after any other
        # answer: exactly what a size limit must not do.
        return flask.Response(iter([json.dumps(body)]), status=exc.status, mimetype="application/json")
    return json_response(body, exc.status)


def _handle(function: str, routes: Routes, request: flask.Request) -> tuple[str, flask.Response]:
    path = request.path.rstrip("/") or "/"
    methods = routes.get(path)
    route = path if methods is not None else "unmatched"  # bounded label values for the metrics
    try:
        if methods is None:
            raise NotFound(f"no route {request.path!r}")
        handler = methods.get(request.method)
        if handler is None:
            raise MethodNotAllowed(f"{request.method} is not allowed on {path}; use {', '.join(methods)}")
        return route, handler(request)
    except DandelionError as exc:
        if exc.status >= 500:
            log.warning(
                "request failed",
                extra={"fields": {"function": function, "error": exc.code, "detail": str(exc)}},
            )
        return route, error_response(exc)
    except HTTPException as exc:
        body = {"error": (exc.name or "http_error").lower().replace(" ", "_"), "message": exc.description}
        return route, json_response(body, exc.code or 400)
    except Exception:
        log.exception("unexpected error", extra={"fields": {"function": function, "path": request.path}})
        return route, json_response(
            {"error": "internal_error", "message": "unexpected error; the function's log has the details"},
            500,
        )


def dispatch(function: str, routes: Routes, request: flask.Request) -> flask.Response:
    """Route by path and method; every failure becomes a JSON error with the status its class says."""
    configure_logging()
    started = time.perf_counter()
    route, response = _handle(function, routes, request)
    elapsed = time.perf_counter() - started
    LATENCY.labels(function, route).observe(elapsed)
    REQUESTS.labels(function, route, request.method, str(response.status_code)).inc()
    log.info(
        "request",
        extra={
            "fields": {
                "function": function,
                "method": request.method,
                "path": request.path,
                "status": response.status_code,
                "seconds": round(elapsed, 4),
            }
        },
    )
    return response


def metrics(_request: flask.Request) -> flask.Response:
    return flask.Response(generate_latest(), mimetype=CONTENT_TYPE_LATEST)


def read_body(request: flask.Request, limit: int) -> bytes:
    """The whole body, refused with 413 from its Content-Length before anything is read, or (chunked)
    as soon as it passes `limit`; later parsing (multipart) works from this copy."""
    request.max_content_length = limit + 1  # a body of limit + 1 bytes tells "over" from "exactly"
    try:
        body = request.get_data(cache=True)
    except RequestEntityTooLarge:
        body = None
    if body is None or len(body) > limit:
        raise TooLarge(f"the request body is over the {limit}-byte limit")
    return body


def read_event(request: flask.Request) -> dict[str, Any]:
    """The JSON object a request carries, plain or as a CloudEvent (binary or structured mode)."""
    body = read_body(request, MAX_EVENT_BYTES)
    if "ce-specversion" in request.headers or request.mimetype == "application/cloudevents+json":
        from cloudevents.exceptions import GenericException
        from cloudevents.http import from_http

        try:
            data = from_http(dict(request.headers), body).data
        except GenericException as exc:
            raise BadRequest(f"not a valid CloudEvent: {exc}") from None
    else:
        data = body
    if isinstance(data, bytes | str):
        try:
            data = json.loads(data or b"null")
        except ValueError:
            raise BadRequest("the body is not valid JSON") from None
    if not isinstance(data, dict):
        raise BadRequest("the body must be a JSON object")
    return data


def require_str(data: Mapping[str, Any], name: str) -> str:
    value = data.get(name)
    if not isinstance(value, str) or not value.strip():
        raise BadRequest(f"field {name!r} must be a non-empty string")
    return value.strip()
