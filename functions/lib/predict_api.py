"""The predict function's HTTP API: Dandelion's REST routes and the Open Inference Protocol (KServe v2)
routes, each a few lines over `ModelServer` (the model's lifecycle) and `inference_protocol` (the v2
encodings). The function itself (`functions/predict.py`) only wires these routes to functions-framework.
"""

from __future__ import annotations

import importlib.metadata
from collections.abc import Callable

from starlette.responses import Response

from functions.lib import inference_protocol as v2
from functions.lib import openapi
from functions.lib.api import Request, Route, json_response, metrics
from functions.lib.config import Settings
from functions.lib.errors import BadRequest, Unavailable
from functions.lib.layout import MODEL_NAME
from functions.lib.model_server import ModelServer, describe


def _uploads(request: Request) -> tuple[list[bytes], bool]:
    """The images sent, and whether several `file` parts were (then the answer is a list)."""
    if request.mimetype == "multipart/form-data":
        parts = request.files.getlist("file")
        if not parts:
            raise BadRequest("no file: send the image as the multipart field 'file'")
        images = [part.read() for part in parts]
        if not all(images):
            raise BadRequest("a 'file' part is empty")
        return images, len(images) > 1
    if not request.body:
        raise BadRequest("no file: send the image as the multipart field 'file' or as an image/* body")
    return [request.body], False


def routes(server: Callable[[], ModelServer]) -> list[Route]:
    """`server` builds the model server on the first request (the cold start)."""

    def predict(request: Request) -> Response:
        images, several = _uploads(request)
        answers = describe(*server().predict(images))
        return json_response(answers if several else answers[0])

    def health(_request: Request) -> Response:
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

    def model_info(_request: Request) -> Response:
        return json_response(server().current().info())

    def reload(_request: Request) -> Response:
        """Look for a new champion now rather than at the next poll; loads nothing but the champion."""
        server().refresh(force=True)
        return json_response(server().current().info())

    def v2_server(_request: Request) -> Response:
        version = importlib.metadata.version("dandelion")
        return json_response(
            {"name": "dandelion-predict", "version": version, "extensions": ["binary_tensor_data"]}
        )

    def v2_live(_request: Request) -> Response:
        return json_response({"live": True})

    def v2_ready(_request: Request) -> Response:
        try:
            server().current()
        except Unavailable:
            return json_response({"ready": False}, 503)
        return json_response({"ready": True})

    def v2_model_ready(_request: Request) -> Response:
        try:
            model = server().current()
        except Unavailable:
            return json_response({"name": MODEL_NAME, "ready": False}, 503)
        return json_response({"name": MODEL_NAME, "versions": [model.version], "ready": True})

    def v2_metadata(_request: Request) -> Response:
        model = server().current()
        return json_response(v2.model_metadata([model.version], len(model.classes)))

    def v2_infer(request: Request) -> Response:
        encoding = request.headers.get("Content-Encoding")
        if encoding:
            raise BadRequest(f"Content-Encoding {encoding!r} is not supported; send it uncompressed")
        infer = v2.parse_request(request.body, request.headers.get(v2.HEADER_LENGTH))
        model, probabilities, _seconds = server().predict(infer.images)
        payload, header_length = v2.encode_response(infer, model.version, model.classes, probabilities)
        if header_length is None:
            return Response(payload, media_type="application/json")
        response = Response(payload, media_type="application/octet-stream")
        response.headers[v2.HEADER_LENGTH] = str(header_length)
        return response

    def uploads(settings: Settings, _request: Request) -> int:
        return settings.max_upload_bytes

    v2_model = f"/v2/models/{MODEL_NAME}"
    return [
        Route("/predict", predict, ("POST",), uploads),
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
        Route(f"{v2_model}/infer", v2_infer, ("POST",), uploads),
    ]
