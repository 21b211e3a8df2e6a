"""The `validate-label` function (functions-framework target `validate_label`). Wiring only: the routes
are in `functions.lib.validate_api`, submissions and decisions in `functions.lib.submissions`."""

from __future__ import annotations

import functions_framework.aio
from starlette.requests import Request
from starlette.responses import Response

from functions.lib.api import HttpApi, on_first_call
from functions.lib.submissions import Labeller
from functions.lib.validate_api import routes

API = HttpApi("validate-label", routes(on_first_call(Labeller.from_settings)))


@functions_framework.aio.http
async def validate_label(request: Request) -> Response:
    return await API.serve(request)
