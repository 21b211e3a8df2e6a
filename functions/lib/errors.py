"""The exception hierarchy; each class carries the HTTP status it maps to (see functions.lib.api), and a
class worth retrying the seconds after which to retry (the answer's Retry-After)."""

from __future__ import annotations


class DandelionError(Exception):
    """Base of every error Dandelion reports on purpose; `code` is the stable machine-readable name."""

    status = 500
    code = "internal_error"
    retry_after: int | None = None


class ConfigError(DandelionError):
    """The environment is wrong: a deployment mistake, reported at start."""

    code = "bad_configuration"


class BadRequest(DandelionError):
    status = 400
    code = "bad_request"


class Unauthorized(DandelionError):
    status = 401
    code = "unauthorized"


class Forbidden(DandelionError):
    """Authenticated or not, this is not allowed: the admin routes with no admin token configured."""

    status = 403
    code = "forbidden"


class URLRefused(DandelionError):
    """The URL points somewhere ingestion must not go (private address, bad scheme after a redirect)."""

    status = 403
    code = "url_refused"


class NotFound(DandelionError):
    status = 404
    code = "not_found"


class MethodNotAllowed(DandelionError):
    status = 405
    code = "method_not_allowed"

    def __init__(self, message: str, allow: list[str]) -> None:
        super().__init__(message)
        self.allow = allow  # the methods the route answers: the 405's Allow header


class Conflict(DandelionError):
    status = 409
    code = "conflict"


class TooLarge(DandelionError):
    status = 413
    code = "too_large"


class NotAnImage(DandelionError):
    status = 415
    code = "not_an_image"


class UpstreamError(DandelionError):
    """The source server failed us: unreachable, an error status, too many redirects."""

    status = 502
    code = "upstream_error"


class Unavailable(DandelionError):
    """A backing service (catalog, object store) is down: worth retrying later."""

    status = 503
    code = "unavailable"
    retry_after = 5


class RequestTimeout(DandelionError):
    """The client did not send its request body in time."""

    status = 408
    code = "request_timeout"


class UpstreamTimeout(UpstreamError):
    status = 504
    code = "upstream_timeout"
