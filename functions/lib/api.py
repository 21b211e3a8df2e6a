"""What every function's HTTP API shares: routing with Werkzeug's `Map`, the error-to-status mapping,
request bodies and events, JSON logs and request metrics."""

from __future__ import annotations

import asyncio
import contextvars
import functools
import io
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

from prometheus_client import CONTENT_TYPE_LATEST, Counter, Histogram, generate_latest
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import Headers, QueryParams
from starlette.requests import ClientDisconnect
from starlette.requests import Request as AsgiRequest
from starlette.responses import Response
from werkzeug import exceptions as http_errors
from werkzeug.datastructures import FileStorage, MultiDict
from werkzeug.formparser import FormDataParser
from werkzeug.http import parse_options_header
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

Handler = Callable[..., Response]  # (request, **the rule's variables) -> response

# The metrics' labels are bounded whatever clients send: a path is counted by the rule it matched (or as
# UNMATCHED), and a method only reaches a function when functions-framework's router knows it.
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


@functools.cache
def settings() -> Settings:
    """The function's settings, read from the environment on the first request, not at import."""
    return Settings.from_env()


def on_first_call(build: Callable[[Settings], T]) -> Callable[[], T]:
    """`build(settings())` made on the first call, the function's cold start, and kept: nothing is read
    or connected at import, when functions-framework loads the module before forking."""
    return functools.cache(lambda: build(settings()))


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


def json_response(body: Any, status: int = 200) -> Response:
    return Response(json.dumps(body, default=_json_default), status, media_type="application/json")


def error_body(path: str, exc: DandelionError) -> dict[str, str]:
    """Dandelion's routes name the error and explain it; the Open Inference Protocol's routes put the
    message in `error`, which is what KServe v2 clients (tritonclient, KServe's) show, the code beside it."""
    if path == "/v2" or path.startswith("/v2/"):
        return {"error": str(exc), "code": exc.code}
    return {"error": exc.code, "message": str(exc)}


def error_response(path: str, exc: DandelionError) -> Response:
    response = json_response(error_body(path, exc), exc.status)
    if isinstance(exc, MethodNotAllowed):
        response.headers["Allow"] = ", ".join(exc.allow)  # RFC 9110: a 405 says what is allowed
    if exc.retry_after is not None:
        response.headers["Retry-After"] = str(exc.retry_after)  # RFC 9110: when a 503 is worth retrying
    return response


class Request:
    """One request as a handler sees it, in a worker thread, its body already read in full: the headers,
    the query's arguments and the body, with the form and files of a multipart body parsed on first use
    as Flask parses them (Werkzeug's parser and limits)."""

    def __init__(self, headers: Headers, query: QueryParams) -> None:
        self.headers, self.body = headers, b""
        self.args = MultiDict(query.multi_items())  # Werkzeug's: a repeated argument's first value wins

    @functools.cached_property
    def _content_type(self) -> tuple[str, dict[str, str]]:
        mimetype, options = parse_options_header(self.headers.get("Content-Type"))
        return mimetype.lower(), options

    @property
    def mimetype(self) -> str:
        return self._content_type[0]

    @functools.cached_property
    def _form(self) -> tuple[MultiDict[str, str], MultiDict[str, FileStorage]]:
        parser = FormDataParser(max_form_memory_size=500_000, max_form_parts=1000)  # Flask's defaults
        _, form, files = parser.parse(
            io.BytesIO(self.body), self.mimetype, len(self.body), self._content_type[1]
        )
        return form, files

    @property
    def form(self) -> MultiDict[str, str]:
        return self._form[0]

    @property
    def files(self) -> MultiDict[str, FileStorage]:
        return self._form[1]

    def close(self) -> None:
        """Close the files a parsed multipart body spilled to disk (parts over 500 KB), as Flask does."""
        if "_form" in self.__dict__:
            for upload in self.files.values():
                upload.close()


@dataclass(frozen=True)
class Route:
    """A Werkzeug rule (`/submissions/<int:id>`), the methods it answers, its handler, and for a route
    that takes a body the most it reads (from the settings and the request's headers). GET routes answer
    HEAD too, as Werkzeug's routing adds it; the server then sends the headers alone."""

    rule: str
    handler: Handler
    methods: tuple[str, ...] = ("GET",)
    body_limit: Callable[[Settings, Request], int] | None = None


class HttpApi:
    """One function's routes. Every answer is JSON; every failure becomes the status its error class
    says, with a 500 only for a bug (logged, never shown); each request is logged and counted by the
    rule that matched, never by the raw path. The body is read in the event loop, so that a client that
    sends slowly holds a coroutine, never a thread; the handler runs in a worker thread."""

    def __init__(self, function: str, routes: Iterable[Route]) -> None:
        self.function = function
        self.routes = list(routes)  # one rule may have a route per method: each is its own endpoint
        self.map = Map(
            [
                Rule(route.rule, endpoint=index, methods=route.methods)
                for index, route in enumerate(self.routes)
            ]
        )

    def _match(self, method: str, path: str) -> tuple[Route, Mapping[str, Any]]:
        # A trailing slash is accepted anywhere (`/predict/` is `/predict`) instead of redirected.
        stripped = path.rstrip("/") or "/"
        try:
            index, arguments = self.map.bind("localhost").match(stripped, method=method)
            return self.routes[int(index)], arguments
        except http_errors.MethodNotAllowed as exc:
            allowed = sorted(exc.valid_methods or [])
            usable = ", ".join(m for m in allowed if m != "HEAD")
            raise MethodNotAllowed(f"{method} is not allowed on {stripped}; use {usable}", allowed) from None
        except http_errors.HTTPException:  # NotFound, or a redirect the map would want: neither is served
            raise NotFound(f"no route {path!r}") from None

    async def _answer(self, request: AsgiRequest, method: str, path: str) -> tuple[str, Response, bool]:
        """The rule that matched, the answer, and whether the body (if any) was read in full."""
        route, complete = UNMATCHED, not _carries_body(request.headers)
        try:
            matched, arguments = self._match(method, path)
            route = matched.rule
            ours = Request(request.headers, request.query_params)
            if matched.body_limit is not None:
                ours.body = await receive_body(request, matched.body_limit(settings(), ours))
                complete = True
            try:
                return route, await run_in_threadpool(matched.handler, ours, **arguments), complete
            finally:
                ours.close()
        except DandelionError as exc:
            if exc.status >= 500:
                log.warning(
                    "request failed",
                    extra={"fields": {"function": self.function, "error": exc.code, "detail": str(exc)}},
                )
            return route, error_response(path, exc), complete
        except http_errors.HTTPException as exc:  # Werkzeug's own, from parsing a body (a bad multipart)
            description = exc.description or "the request could not be parsed"
            error = TooLarge(description) if exc.code == 413 else BadRequest(description)
            return route, error_response(path, error), complete
        except Exception:
            log.exception("unexpected error", extra={"fields": {"function": self.function, "path": path}})
            message = "unexpected error; the function's log has the details"
            return route, json_response({"error": "internal_error", "message": message}, 500), complete

    async def serve(self, request: AsgiRequest) -> Response:
        """Answer one request: what the functions-framework target (ASGI) awaits."""
        configure_logging()
        method, path = request.scope["method"], request.scope["path"]
        token = request_id.set(incoming_request_id(request.headers.get(REQUEST_ID_HEADER, "")))
        try:
            started = time.perf_counter()
            route, response, complete = await self._answer(request, method, path)
            if not complete:
                # A body left unread (refused, too slow, or sent to a route that takes none) is not
                # drained at the client's pace: the connection closes after the answer.
                response.headers["Connection"] = "close"
            elapsed = time.perf_counter() - started
            response.headers[REQUEST_ID_HEADER] = request_id.get() or ""
            self._record(method, path, route, response.status_code, elapsed)
        finally:
            request_id.reset(token)
        return response

    def _record(self, method: str, path: str, route: str, status: int, elapsed: float) -> None:
        LATENCY.labels(self.function, route).observe(elapsed)
        REQUESTS.labels(self.function, route, method, str(status)).inc()
        log.info(
            "request",
            extra={
                "fields": {
                    "function": self.function,
                    "method": method[:16],
                    "path": path[:200],
                    "status": status,
                    "seconds": round(elapsed, 4),
                }
            },
        )


def metrics(_request: Request) -> Response:
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)


# A request body must keep pace, whatever size it declares: it has BODY_GRACE_SECONDS, plus one second per
# MIN_BODY_RATE bytes received (Apache's mod_reqtimeout `body=5,MinRate=65536`). A client that drips is
# cut off with a 408 in seconds, not hours.
BODY_GRACE_SECONDS = 5.0
MIN_BODY_RATE = 64 * 1024  # bytes per second
BODY_CHUNK = 64 * 1024


def _chunked(headers: Headers) -> bool:
    return "chunked" in headers.get("Transfer-Encoding", "").lower()


def _carries_body(headers: Headers) -> bool:
    return _chunked(headers) or bool(headers.get("Content-Length", "").lstrip("0"))  # digits (h11)


async def receive_body(request: AsgiRequest, limit: int) -> bytes:
    """The whole body, refused with 413 from its Content-Length before anything is read, or (chunked)
    as soon as it passes `limit`, and with 408 when it falls behind its pace."""
    # A chunked body's Content-Length, if any, is ignored, as the server frames it (RFC 9112, 6.3).
    declared = None if _chunked(request.headers) else request.headers.get("Content-Length")
    length = int(declared) if declared is not None else None  # the server has checked it is a number
    if length is not None and length > limit:
        raise TooLarge(f"the request body is over the {limit}-byte limit")
    loop = asyncio.get_running_loop()
    started = loop.time()
    chunks: list[bytes] = []
    received = 0
    stream = request.stream()
    while True:
        coming = BODY_CHUNK if length is None else min(BODY_CHUNK, length - received)
        try:
            async with asyncio.timeout_at(started + BODY_GRACE_SECONDS + (received + coming) / MIN_BODY_RATE):
                chunk = await anext(stream, None)
        except TimeoutError:
            seconds = loop.time() - started
            raise RequestTimeout(
                f"the request body did not keep pace: {received} bytes in {seconds:.0f} s"
            ) from None
        except ClientDisconnect:
            raise BadRequest("the request body could not be read: the client went away") from None
        if chunk is None:
            return b"".join(chunks)
        chunks.append(chunk)
        received += len(chunk)
        if received > limit:
            raise TooLarge(f"the request body is over the {limit}-byte limit")


NESTED_TOO_DEEPLY = "the body's JSON is nested too deeply"


def read_event(request: Request) -> dict[str, Any]:
    """The JSON object a request carries, plain or as a CloudEvent (binary or structured mode)."""
    body = request.body
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
