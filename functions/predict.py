"""The `predict` function (functions-framework target `predict`): the champion served with onnxruntime,
no torch. Wiring only: the routes are in `functions.lib.predict_api`, the model's lifecycle in
`functions.lib.model_server`."""

from __future__ import annotations

import functions_framework.aio
from starlette.requests import Request
from starlette.responses import Response

from functions.lib.api import HttpApi, on_first_call
from functions.lib.model_server import ModelServer
from functions.lib.predict_api import routes

API = HttpApi("predict", routes(on_first_call(ModelServer.from_settings)))


@functions_framework.aio.http
async def predict(request: Request) -> Response:
    return await API.serve(request)
