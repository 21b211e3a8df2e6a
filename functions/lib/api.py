"""What every function's HTTP API shares: routing with Werkzeug's `Map`, the error-to-status mapping,
request bodies and events, JSON logs and request metrics."""

from __future__ import annotations

import contextlib
import contextvars
import functools
import io
import json
import logging
import math
import re
import socket
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar

import flask
import functions_framework
from prometheus_client import CONTENT_TYPE_LATEST, Counter, Histogram, generate_latest
from werkzeug import exceptions as http_errors
from werkzeug.routing import Map, Rule

from functions.lib.config import Settings
from functions.lib.errors import (
    BadRequest,
    DandelionError,
    MethodNotAllowed,
    NotFound,
    RequestTimeout,
    TooLarge,
)

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
    response = flask.Response(
        json.dumps(error_body(path, exc)), status=exc.status, mimetype="application/json"
    )
    if isinstance(exc, MethodNotAllowed):
        response.headers["Allow"] = ", ".join(exc.allow)  # RFC 9110: a 405 says what is allowed
    if exc.retry_after is not None:
        response.headers["Retry-After"] = str(exc.retry_after)  # RFC 9110: when a 503 is worth retrying
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

    def answer_unrouted(self) -> None:
        """Answer functions-framework's own 404s too (paths its router sends nowhere near the target: one
        with a line break, /favicon.ico, /robots.txt), which would otherwise be Flask's HTML page: this
        API then routes them, to its JSON 404, logged and counted. Called when functions-framework loads
        the module; elsewhere its `errorhandler` is a stand-in that does nothing."""
        functions_framework.errorhandler(404)(lambda _error: self.handle(flask.request))

    def handle(self, request: flask.Request) -> flask.Response:
        """Answer one request: what the functions-framework target calls."""
        configure_logging()
        token = request_id.set(incoming_request_id(request.headers.get(REQUEST_ID_HEADER, "")))
        try:
            started = time.perf_counter()
            route, response = self._answer(request)
            if _body_pending(request) and not response.is_streamed:
                # functions-framework reads whatever body is left after any answer that is not streamed,
                # with no deadline: exactly what a size limit or a slow client must not get. Streamed,
                # the rest is left to gunicorn, which drains it within its own bound or closes.
                response.response = iter([response.get_data()])
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


# A request body must keep pace, whatever size it declares: it has BODY_GRACE_SECONDS, plus one second per
# MIN_BODY_RATE bytes received (Apache's mod_reqtimeout `body=5,MinRate=65536`). A client that drips holds
# one of the server's threads for seconds, not hours.
BODY_GRACE_SECONDS = 5.0
MIN_BODY_RATE = 64 * 1024  # bytes per second
BODY_CHUNK = 64 * 1024
_BODY_READ = "dandelion.body_read"  # in the WSGI environ once the whole body has been read


def _body_pending(request: flask.Request) -> bool:
    """Whether the request carries a body that nobody has read in full."""
    carries = (
        bool(request.content_length) or "chunked" in request.headers.get("Transfer-Encoding", "").lower()
    )
    return carries and _BODY_READ not in request.environ


class _BodyPace:
    """One body as it is read: when it falls behind its pace, the watcher shuts the connection's read
    side down, so that the read blocked under it returns (the ingest download's deadline does the same)."""

    def __init__(self, connection: socket.socket | None) -> None:
        self.connection = connection
        self.started = time.monotonic()
        self.deadline = self.started + BODY_GRACE_SECONDS
        self.expired = False
        if connection is not None:  # gunicorn's socket; a test client has none, and no clock
            _PACES.watch(self)

    def expect(self, received: int, coming: int) -> None:
        """`received` bytes are in and `coming` more are being read: when they must have arrived by."""
        self.deadline = self.started + BODY_GRACE_SECONDS + (received + coming) / MIN_BODY_RATE

    def expire(self) -> None:
        self.expired = True
        with contextlib.suppress(OSError):
            self.connection.shutdown(socket.SHUT_RD)  # type: ignore[union-attr]

    def close(self) -> None:
        if self.connection is not None:
            _PACES.forget(self)


class _PaceWatcher:
    """One thread, started with the first body, expires every body that falls behind: a thread per body
    cost half a millisecond of a 5 ms prediction. Deadlines only move later, so waking at the earliest
    one known and looking again is enough, and a new body wakes the watcher only when it sleeps past
    that body's deadline (when idle): not once per request, which cost each a thread switch."""

    def __init__(self) -> None:
        self._changed = threading.Condition()
        self._paces: set[_BodyPace] = set()
        self._thread: threading.Thread | None = None
        self._wakes_at = math.inf  # when the watcher looks next (inf: when notified)

    def watch(self, pace: _BodyPace) -> None:
        with self._changed:
            self._paces.add(pace)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="body-pace", daemon=True)
                self._thread.start()
            if pace.deadline < self._wakes_at:
                self._wakes_at = pace.deadline  # the watcher's own look sets it again
                self._changed.notify()

    def forget(self, pace: _BodyPace) -> None:
        with self._changed:  # once this returns, the watcher no longer touches the connection
            self._paces.discard(pace)

    def _run(self) -> None:
        with self._changed:
            while True:
                now = time.monotonic()
                late = {pace for pace in self._paces if pace.deadline <= now}
                for pace in late:
                    pace.expire()
                self._paces -= late
                self._wakes_at = min((pace.deadline for pace in self._paces), default=math.inf)
                self._changed.wait(None if self._wakes_at == math.inf else self._wakes_at - now)


_PACES = _PaceWatcher()


def _receive(request: flask.Request, limit: int) -> bytes:
    """Read the body from the server's input at its pace, up to `limit` + 1 bytes."""
    length = request.content_length  # None when chunked
    source = request.environ["wsgi.input"]
    pace = _BodyPace(request.environ.get("gunicorn.socket"))
    chunks: list[bytes] = []
    received = 0
    try:
        while length is None or received < length:
            coming = BODY_CHUNK if length is None else min(BODY_CHUNK, length - received)
            pace.expect(received, coming)
            chunk = source.read(coming)
            if not chunk:
                break
            chunks.append(chunk)
            received += len(chunk)
            if received > limit:
                raise TooLarge(f"the request body is over the {limit}-byte limit")
    except DandelionError:
        raise
    except Exception as exc:  # the connection broke, or a malformed chunked encoding
        if not pace.expired:
            raise BadRequest(f"the request body could not be read: {type(exc).__name__}") from None
    finally:
        pace.close()
    if pace.expired and received != length:  # all in just as the deadline passed is all in
        seconds = time.monotonic() - pace.started
        raise RequestTimeout(f"the request body did not keep pace: {received} bytes in {seconds:.0f} s")
    if length is not None and received < length:
        raise BadRequest(f"the request body ended after {received} of its {length} bytes")
    return b"".join(chunks)


def read_body(request: flask.Request, limit: int) -> bytes:
    """The whole body, refused with 413 from its Content-Length before anything is read, or (chunked)
    as soon as it passes `limit`, and with 408 when it does not keep pace; later parsing (multipart)
    works from this copy."""
    if _BODY_READ not in request.environ:
        if request.content_length is not None and request.content_length > limit:
            raise TooLarge(f"the request body is over the {limit}-byte limit")
        body = _receive(request, limit)
        request.environ["wsgi.input"] = io.BytesIO(body)  # what Werkzeug reads and parses from here on
        request.environ[_BODY_READ] = True
    body = request.get_data(cache=True)
    if len(body) > limit:
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
        except RecursionError:
            raise BadRequest(NESTED_TOO_DEEPLY) from None
        # The library lets some malformed events through as Python's own errors: a specversion that is an
        # object (TypeError), an id that is null or a body that is not UTF-8 (ValueError).
        except (GenericException, TypeError, ValueError) as exc:
            raise BadRequest(f"not a valid CloudEvent: {exc}") from None
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
