"""What every function's HTTP API shares: routing with Werkzeug's `Map`, the error-to-status mapping,
request bodies and events, JSON logs and request metrics."""

from __future__ import annotations

import contextvars
import functools
import json
import logging
import re
import sys
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar

import flask
from prometheus_client import CONTENT_TYPE_LATEST, Counter, Histogram, generate_latest
from werkzeug import exceptions as http_errors
from werkzeug.routing import Map, Rule

from functions.lib.config import Settings
from functions.lib.errors import BadRequest, DandelionError, MethodNotAllowed, NotFound, TooLarge

Handler = Callable[..., flask.Response]  # (request, **the rule's variables) -> response

# Methods counted by name; anything else a client invents is counted as "other", so that no client
# can grow the metrics without bound.
KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
UNMATCHED = "unmatched"

REQUESTS = Counter(
    "dandelion_http_requests_total", "HTTP requests answered", ["function", "route", "method", "status"]
)
LATENCY = Histogram(
    "dandelion_http_request_duration_seconds",
    "Time to answer an HTTP request, by the route that matched",
    ["function", "route"],
)

log = logging.getLogger("dandelion")

# The request id: taken from the caller's `X-Request-ID` when it is a sane token (the web app and the
# workflows send one, so one id follows a request across functions), else made here; every log line of
# the request carries it, and the answer returns it.
REQUEST_ID_HEADER = "X-Request-ID"
_SANE_ID = re.compile(r"[A-Za-z0-9._:-]{1,64}")
request_id: contextvars.ContextVar[str | None] = contextvars.ContextVar("request_id", default=None)


def incoming_request_id(given: str) -> str:
    return given if _SANE_ID.fullmatch(given) else uuid.uuid4().hex


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
            **({"request_id": request_id.get()} if request_id.get() else {}),
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


def _json_default(value: Any) -> str:
    """Times as RFC 3339 (OpenAPI's date-time; the catalog keeps UTC without a zone), else the text."""
    if isinstance(value, datetime):
        return (value if value.tzinfo else value.replace(tzinfo=UTC)).isoformat()
    return str(value)


def json_response(body: Any, status: int = 200) -> flask.Response:
    return flask.Response(json.dumps(body, default=_json_default), status=status, mimetype="application/json")


def error_body(path: str, exc: DandelionError) -> dict[str, str]:
    """Dandelion's routes name the error and explain it; the Open Inference Protocol's routes put the
    message in `error`, which is what KServe v2 clients (tritonclient, KServe's) show, the code beside it."""
    if path == "/v2" or path.startswith("/v2/"):
        return {"error": str(exc), "code": exc.code}
    return {"error": exc.code, "message": str(exc)}


def error_response(path: str, exc: DandelionError) -> flask.Response:
    body = json.dumps(error_body(path, exc))
    if isinstance(exc, TooLarge):
        # Streamed, because functions-framework reads the whole request body after any other
        # answer: exactly what a size limit must not do.
        response = flask.Response(iter([body]), status=exc.status, mimetype="application/json")
    else:
        response = flask.Response(body, status=exc.status, mimetype="application/json")
    if isinstance(exc, MethodNotAllowed):
        response.headers["Allow"] = ", ".join(exc.allow)  # RFC 9110: a 405 says what is allowed
    return response


@dataclass(frozen=True)
class Route:
    """A Werkzeug rule (`/submissions/<int:id>`), the methods it answers, and its handler. GET routes
    answer HEAD too, as Werkzeug's routing adds it; the server then sends the headers alone."""

    rule: str
    handler: Handler
    methods: tuple[str, ...] = ("GET",)


class HttpApi:
    """One function's routes. Every answer is JSON; every failure becomes the status its error class
    says, with a 500 only for a bug (logged, never shown); each request is logged and counted by the
    rule that matched, never by the raw path."""

    def __init__(self, function: str, routes: Iterable[Route]) -> None:
        self.function = function
        self.routes = list(routes)  # one rule may have a route per method: each is its own endpoint
        self.map = Map(
            [
                Rule(route.rule, endpoint=index, methods=route.methods)
                for index, route in enumerate(self.routes)
            ]
        )

    def _match(self, request: flask.Request) -> tuple[Route, Mapping[str, Any]]:
        # A trailing slash is accepted anywhere (`/predict/` is `/predict`) instead of redirected.
        path = request.path.rstrip("/") or "/"
        try:
            index, arguments = self.map.bind("localhost").match(path, method=request.method)
            return self.routes[int(index)], arguments
        except http_errors.MethodNotAllowed as exc:
            allowed = sorted(exc.valid_methods or [])
            usable = ", ".join(m for m in allowed if m != "HEAD")
            raise MethodNotAllowed(
                f"{request.method} is not allowed on {path}; use {usable}", allowed
            ) from None
        except http_errors.HTTPException:  # NotFound, or a redirect the map would want: neither is served
            raise NotFound(f"no route {request.path!r}") from None

    def _answer(self, request: flask.Request) -> tuple[str, flask.Response]:
        route = UNMATCHED
        try:
            matched, arguments = self._match(request)
            route = matched.rule
            return route, matched.handler(request, **arguments)
        except DandelionError as exc:
            if exc.status >= 500:
                log.warning(
                    "request failed",
                    extra={"fields": {"function": self.function, "error": exc.code, "detail": str(exc)}},
                )
            return route, error_response(request.path, exc)
        except http_errors.HTTPException as exc:  # Werkzeug's own, from parsing a body (a bad multipart)
            description = exc.description or "the request could not be parsed"
            error = TooLarge(description) if exc.code == 413 else BadRequest(description)
            return route, error_response(request.path, error)
        except Exception:
            log.exception(
                "unexpected error", extra={"fields": {"function": self.function, "path": request.path}}
            )
            message = "unexpected error; the function's log has the details"
            return route, json_response({"error": "internal_error", "message": message}, 500)

    def handle(self, request: flask.Request) -> flask.Response:
        """Answer one request: what the functions-framework target calls."""
        configure_logging()
        token = request_id.set(incoming_request_id(request.headers.get(REQUEST_ID_HEADER, "")))
        try:
            started = time.perf_counter()
            route, response = self._answer(request)
            elapsed = time.perf_counter() - started
            response.headers[REQUEST_ID_HEADER] = request_id.get()
            self._record(request, route, response, elapsed)
        finally:
            request_id.reset(token)
        return response

    def _record(self, request: flask.Request, route: str, response: flask.Response, elapsed: float) -> None:
        method = request.method if request.method in KNOWN_METHODS else "other"
        LATENCY.labels(self.function, route).observe(elapsed)
        REQUESTS.labels(self.function, route, method, str(response.status_code)).inc()
        log.info(
            "request",
            extra={
                "fields": {
                    "function": self.function,
                    "method": request.method[:16],
                    "path": request.path[:200],
                    "status": response.status_code,
                    "seconds": round(elapsed, 4),
                }
            },
        )


def metrics(_request: flask.Request) -> flask.Response:
    return flask.Response(generate_latest(), mimetype=CONTENT_TYPE_LATEST)


def read_body(request: flask.Request, limit: int) -> bytes:
    """The whole body, refused with 413 from its Content-Length before anything is read, or (chunked)
    as soon as it passes `limit`; later parsing (multipart) works from this copy."""
    request.max_content_length = limit + 1  # a body of limit + 1 bytes tells "over" from "exactly"
    try:
        body = request.get_data(cache=True)
    except http_errors.RequestEntityTooLarge:
        body = None
    if body is None or len(body) > limit:
        raise TooLarge(f"the request body is over the {limit}-byte limit")
    return body


NESTED_TOO_DEEPLY = "the body's JSON is nested too deeply"


def read_event(request: flask.Request, limit: int) -> dict[str, Any]:
    """The JSON object a request carries, plain or as a CloudEvent (binary or structured mode), refused
    past `limit` bytes."""
    body = read_body(request, limit)
    if "ce-specversion" in request.headers or request.mimetype == "application/cloudevents+json":
        from cloudevents.exceptions import GenericException
        from cloudevents.http import from_http

        try:
            data = from_http(dict(request.headers), body).data
        except GenericException as exc:
            raise BadRequest(f"not a valid CloudEvent: {exc}") from None
        except RecursionError:
            raise BadRequest(NESTED_TOO_DEEPLY) from None
    else:
        data = body
    if isinstance(data, bytes | str):
        try:
            data = json.loads(data or b"null")
        except ValueError:
            raise BadRequest("the body is not valid JSON") from None
        except RecursionError:
            raise BadRequest(NESTED_TOO_DEEPLY) from None
    if not isinstance(data, dict):
        raise BadRequest("the body must be a JSON object")
    return data


def require_str(data: Mapping[str, Any], name: str) -> str:
    value = data.get(name)
    if not isinstance(value, str) or not value.strip():
        raise BadRequest(f"field {name!r} must be a non-empty string")
    return value.strip()
