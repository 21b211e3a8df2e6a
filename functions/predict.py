"""The `predict` function (functions-framework target `predict`): the champion served with onnxruntime,
no torch. Wiring only: the routes are in `functions.lib.predict_api`, the model's lifecycle in
`functions.lib.model_server`."""

from __future__ import annotations

import flask
import functions_framework

from functions.lib.api import HttpApi, on_first_call
from functions.lib.model_server import ModelServer
from functions.lib.predict_api import routes

API = HttpApi("predict", routes(on_first_call(ModelServer.from_settings)))
API.answer_unrouted()


@functions_framework.http
def predict(request: flask.Request) -> flask.Response:
    return API.handle(request)
