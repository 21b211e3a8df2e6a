"""The validate-label function's HTTP API: anyone submits an image with a label; an admin (bearer token)
lists, views and decides on submissions and on the labels the audit suspects. The function itself
(`functions/validate_label.py`) only wires it.
"""

from __future__ import annotations

import base64
import contextlib
import hmac
import threading
import time
from collections.abc import Callable
from typing import Any

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import REGISTRY, Collector
from starlette.responses import Response

from functions.lib import openapi, retrain
from functions.lib.api import Request, Route, json_response, metrics, read_event
from functions.lib.config import Settings
from functions.lib.errors import BadRequest, DandelionError, Forbidden, Unauthorized
from functions.lib.submissions import Labeller, Submission, pending_count

FORM_FIELDS = ("label", "predicted_class", "confidence", "model_version")
FIELDS_BYTES = 64 * 1024  # room for the form's fields or the JSON around the image
DECISION_BYTES = 4096


def submission_limit(settings: Settings, request: Request) -> int:
    """The most a submission's body may hold: the image as it is (multipart) or in base64 (a third larger),
    and its fields."""
    if request.mimetype == "multipart/form-data":
        return settings.max_upload_bytes + FIELDS_BYTES
    return settings.max_upload_bytes * 4 // 3 + FIELDS_BYTES


def _optional_float(value: Any, name: str) -> float | None:
    if value in (None, ""):
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        raise BadRequest(f"{name} must be a number") from None


def _optional_str(value: Any, name: str) -> str | None:
    if value in (None, ""):
        return None
    if not isinstance(value, str):
        raise BadRequest(f"{name} must be a string")
    return value


def _submission(fields: dict[str, Any], image: bytes) -> Submission:
    label = fields.get("label")
    if not isinstance(label, str) or not label:
        raise BadRequest("field 'label' is required: dandelion or grass")
    return Submission(
        image=image,
        label=label,
        predicted_class=_optional_str(fields.get("predicted_class"), "predicted_class"),
        confidence=_optional_float(fields.get("confidence"), "confidence"),
        model_version=_optional_str(fields.get("model_version"), "model_version"),
    )


def parse_submission(request: Request) -> Submission:
    """A submission as multipart (`file` and form fields) or as JSON, plain or a CloudEvent, whose
    `image` is the image in base64."""
    if request.mimetype == "multipart/form-data":
        parts = request.files.getlist("file")
        if len(parts) != 1:
            raise BadRequest("send exactly one image as the multipart field 'file'")
        image = parts[0].read()
        if not image:
            raise BadRequest("the 'file' part is empty")
        return _submission({name: request.form.get(name) for name in FORM_FIELDS}, image)
    data = read_event(request)
    encoded = data.get("image")
    if not isinstance(encoded, str) or not encoded:
        raise BadRequest("field 'image' is required: the image in base64")
    try:
        image = base64.b64decode(encoded, validate=True)
    except ValueError:  # binascii.Error, or a ValueError of its own for characters outside ASCII
        raise BadRequest("field 'image' is not valid base64") from None
    return _submission(data, image)


class PendingCollector(Collector):
    """`dandelion_pending_submissions`, counted in the database at each scrape: every instance reports
    the same truth, whichever took the submissions."""

    def __init__(self, labeller: Callable[[], Labeller]) -> None:
        self.labeller = labeller

    def collect(self) -> Any:
        try:
            pending = pending_count(self.labeller().engine)
        except DandelionError:
            return  # the catalog is down: no sample rather than a failed scrape
        yield GaugeMetricFamily("dandelion_pending_submissions", "Submissions waiting for an admin", pending)


def routes(labeller: Callable[[], Labeller]) -> list[Route]:
    """`labeller` builds the labeller on the first request (the cold start)."""
    registered = threading.Lock()
    retrying: list[threading.Thread] = []

    def started() -> Labeller:
        """The labeller, with the pending gauge registered and the outbox retried in the background."""
        built = labeller()
        with registered:
            if not retrying:
                REGISTRY.register(PendingCollector(labeller))
                retrying.append(threading.Thread(target=_retry_outbox, args=(built,), daemon=True))
                retrying[0].start()
        return built

    def admin(request: Request) -> Labeller:
        built = started()
        token = built.settings.admin_token
        if token is None:
            raise Forbidden("the admin routes are disabled: DANDELION_ADMIN_TOKEN is not set")
        scheme, _, given = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(given.encode(), token.encode()):
            raise Unauthorized("send the admin token as 'Authorization: Bearer <token>'")
        return built

    def submit(request: Request) -> Response:
        built = started()
        submission_id, new = built.submit(parse_submission(request))
        return json_response({"id": submission_id, "status": "pending", "new": new}, 202)

    def listing(request: Request) -> Response:
        built = admin(request)
        try:
            limit = int(request.args.get("limit", "100"))
        except ValueError:
            raise BadRequest("limit must be a whole number") from None
        rows = built.listing(request.args.get("status", "pending"), request.args.get("kind"), limit)
        for row in rows:
            row["image_url"] = f"/submissions/{row['id']}/image"
        return json_response({"submissions": rows})

    def show(request: Request, submission_id: int) -> Response:
        return json_response(admin(request).get(submission_id))

    def image(request: Request, submission_id: int) -> Response:
        data, content_type = admin(request).image(submission_id)
        return Response(data, media_type=content_type)

    def decide(request: Request, submission_id: int) -> Response:
        built = admin(request)
        body = read_event(request)
        decision, label = body.get("decision"), body.get("label")
        if not isinstance(decision, str):
            raise BadRequest(
                "field 'decision' is required: accept or reject an upload; keep, relabel or exclude a suspect"
            )
        if label is not None and not isinstance(label, str):
            raise BadRequest("field 'label' must be a string")
        return json_response(built.decide(submission_id, decision, label))

    def retraining(request: Request) -> Response:
        built = admin(request)
        return json_response(retrain.status(built.engine, built.settings.retrain_min_new_labels))

    def health(_request: Request) -> Response:
        started()
        return json_response({"status": "healthy"})

    return [
        Route("/submissions", submit, ("POST",), submission_limit),
        Route("/submissions", listing),
        Route("/submissions/<int:submission_id>", show),
        Route(
            "/submissions/<int:submission_id>", decide, ("POST",), lambda _settings, _request: DECISION_BYTES
        ),
        Route("/submissions/<int:submission_id>/image", image),
        Route("/retrain", retraining),
        Route("/health", health),
        Route("/metrics", metrics),
        openapi.route("validate_label"),
    ]


def _retry_outbox(labeller: Labeller) -> None:
    """While the instance lives, post what the outbox still holds (a receiver that was down)."""
    while True:
        time.sleep(labeller.settings.outbox_retry_seconds)
        with contextlib.suppress(DandelionError):  # the catalog is down: the next round tries again
            labeller.deliver_events()
