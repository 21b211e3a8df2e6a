"""The predict function's HTTP API: Dandelion's REST routes and the Open Inference Protocol (KServe v2)
routes, each a few lines over `ModelServer` (the model's lifecycle) and `inference_protocol` (the v2
encodings). The function itself (`functions/predict.py`) only wires these routes to functions-framework.
"""

from __future__ import annotations

import importlib.metadata
from collections.abc import Callable

import flask

from functions.lib import inference_protocol as v2
from functions.lib import openapi
from functions.lib.api import Route, json_response, metrics, read_body
from functions.lib.errors import BadRequest, Unavailable
from functions.lib.layout import MODEL_NAME
from functions.lib.model_server import ModelServer, describe


def _uploads(request: flask.Request, limit: int) -> tuple[list[bytes], bool]:
    """The images sent, and whether several `file` parts were (then the answer is a list)."""
    body = read_body(request, limit)
    if request.mimetype == "multipart/form-data":
        parts = request.files.getlist("file")
        if not parts:
            raise BadRequest("no file: send the image as the multipart field 'file'")
        images = [part.read() for part in parts]
        if not all(images):
            raise BadRequest("a 'file' part is empty")
        return images, len(images) > 1
    if not body:
        raise BadRequest("no file: send the image as the multipart field 'file' or as an image/* body")
    return [body], False


def routes(server: Callable[[], ModelServer]) -> list[Route]:
    """`server` builds the model server on the first request (the cold start)."""

    def predict(request: flask.Request) -> flask.Response:
        images, several = _uploads(request, server().settings.max_upload_bytes)
        answers = describe(*server().predict(images))
        return json_response(answers if several else answers[0])

    def health(_request: flask.Request) -> flask.Response:
        try:
            model = server().current()
        except Unavailable as exc:
            return json_response({"status": "unavailable", "model_loaded": False, "reason": str(exc)}, 503)
        return json_response(
            {
                "status": "healthy",
                "model_loaded": True,
                "model_version": model.version,
                "pinned": server().pinned,
            }
        )

    def model_info(_request: flask.Request) -> flask.Response:
        return json_response(server().current().info())

    def reload(_request: flask.Request) -> flask.Response:
        """Look for a new champion now rather than at the next poll; loads nothing but the champion."""
        server().refresh(force=True)
        return json_response(server().current().info())

    def v2_server(_request: flask.Request) -> flask.Response:
        version = importlib.metadata.version("dandelion")
        return json_response(
            {"name": "dandelion-predict", "version": version, "extensions": ["binary_tensor_data"]}
        )

    def v2_live(_request: flask.Request) -> flask.Response:
        return json_response({"live": True})

    def v2_ready(_request: flask.Request) -> flask.Response:
        try:
            server().current()
        except Unavailable:
            return json_response({"ready": False}, 503)
        return json_response({"ready": True})

    def v2_model_ready(_request: flask.Request) -> flask.Response:
        try:
            model = server().current()
        except Unavailable:
            return json_response({"name": MODEL_NAME, "ready": False}, 503)
        return json_response({"name": MODEL_NAME, "versions": [model.version], "ready": True})

    def v2_metadata(_request: flask.Request) -> flask.Response:
        model = server().current()
        return json_response(v2.model_metadata([model.version], len(model.classes)))

    def v2_infer(request: flask.Request) -> flask.Response:
        if request.content_encoding:
            raise BadRequest(
                f"Content-Encoding {request.content_encoding!r} is not supported; send it uncompressed"
            )
        body = read_body(request, server().settings.max_upload_bytes)
        infer = v2.parse_request(body, request.headers.get(v2.HEADER_LENGTH))
        model, probabilities, _seconds = server().predict(infer.images)
        payload, header_length = v2.encode_response(infer, model.version, model.classes, probabilities)
        if header_length is None:
            return flask.Response(payload, mimetype="application/json")
        response = flask.Response(payload, mimetype="application/octet-stream")
        response.headers[v2.HEADER_LENGTH] = str(header_length)
        return response

    v2_model = f"/v2/models/{MODEL_NAME}"
    return [
        Route("/predict", predict, ("POST",)),
        Route("/health", health),
        Route("/model/info", model_info),
        Route("/model/reload", reload, ("POST",)),
        Route("/metrics", metrics),
        openapi.route("predict"),
        Route("/v2", v2_server),
        Route("/v2/health/live", v2_live),
        Route("/v2/health/ready", v2_ready),
        Route(v2_model, v2_metadata),
        Route(f"{v2_model}/ready", v2_model_ready),
        Route(f"{v2_model}/infer", v2_infer, ("POST",)),
    ]
