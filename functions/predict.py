"""The `predict` function: the champion served with onnxruntime (no torch); a thin shim over
`functions.serving`. Dandelion's REST routes and the Open Inference Protocol (KServe v2) routes."""

from __future__ import annotations

import functools
import importlib.metadata

import flask
import functions_framework

from functions import inference_protocol as v2
from functions.config import Settings
from functions.errors import BadRequest, Unavailable
from functions.http import dispatch, json_response, metrics, read_body
from functions.model_layout import MODEL_NAME
from functions.serving import ModelServer, describe


@functools.cache
def _server() -> ModelServer:
    """Built on the first request (the cold start), not at import."""
    return ModelServer.from_settings(Settings.from_env())


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


def _predict(request: flask.Request) -> flask.Response:
    server = _server()
    images, several = _uploads(request, server.settings.max_upload_bytes)
    answers = describe(*server.predict(images))
    return json_response(answers if several else answers[0])


def _health(_request: flask.Request) -> flask.Response:
    server = _server()
    try:
        model = server.current()
    except Unavailable as exc:
        return json_response({"status": "unavailable", "model_loaded": False, "reason": str(exc)}, 503)
    return json_response(
        {"status": "healthy", "model_loaded": True, "model_version": model.version, "pinned": server.pinned}
    )


def _model_info(_request: flask.Request) -> flask.Response:
    return json_response(_server().current().info())


def _reload(_request: flask.Request) -> flask.Response:
    """Look for a new champion now rather than at the next poll; loads nothing but the champion."""
    server = _server()
    server.refresh(force=True)
    return json_response(server.current().info())


def _v2_server(_request: flask.Request) -> flask.Response:
    version = importlib.metadata.version("dandelion")
    return json_response(
        {"name": "dandelion-predict", "version": version, "extensions": ["binary_tensor_data"]}
    )


def _v2_live(_request: flask.Request) -> flask.Response:
    return json_response({"live": True})


def _v2_ready(_request: flask.Request) -> flask.Response:
    try:
        _server().current()
    except Unavailable:
        return json_response({"ready": False}, 503)
    return json_response({"ready": True})


def _v2_model_ready(_request: flask.Request) -> flask.Response:
    try:
        model = _server().current()
    except Unavailable:
        return json_response({"name": MODEL_NAME, "ready": False}, 503)
    return json_response({"name": MODEL_NAME, "versions": [model.version], "ready": True})


def _v2_metadata(_request: flask.Request) -> flask.Response:
    model = _server().current()
    return json_response(v2.model_metadata([model.version], len(model.classes)))


def _v2_infer(request: flask.Request) -> flask.Response:
    server = _server()
    if request.content_encoding:
        raise BadRequest(
            f"Content-Encoding {request.content_encoding!r} is not supported; send it uncompressed"
        )
    body = read_body(request, server.settings.max_upload_bytes)
    infer = v2.parse_request(body, request.headers.get(v2.HEADER_LENGTH))
    model, probabilities, _seconds = server.predict(infer.images)
    payload, header_length = v2.encode_response(infer, model.version, model.classes, probabilities)
    if header_length is None:
        return flask.Response(payload, mimetype="application/json")
    response = flask.Response(payload, mimetype="application/octet-stream")
    response.headers[v2.HEADER_LENGTH] = str(header_length)
    return response


V2_MODEL = f"/v2/models/{MODEL_NAME}"
ROUTES = {
    "/predict": {"POST": _predict},
    "/health": {"GET": _health},
    "/model/info": {"GET": _model_info},
    "/model/reload": {"POST": _reload},
    "/metrics": {"GET": metrics},
    "/v2": {"GET": _v2_server},
    "/v2/health/live": {"GET": _v2_live},
    "/v2/health/ready": {"GET": _v2_ready},
    V2_MODEL: {"GET": _v2_metadata},
    f"{V2_MODEL}/ready": {"GET": _v2_model_ready},
    f"{V2_MODEL}/infer": {"POST": _v2_infer},
}


@functions_framework.http
def predict(request: flask.Request) -> flask.Response:
    return dispatch("predict", ROUTES, request)
