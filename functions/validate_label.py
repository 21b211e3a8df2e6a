"""The `validate-label` function (functions-framework target `validate_label`). Wiring only: the routes
are in `functions.lib.validate_api`, submissions and decisions in `functions.lib.submissions`."""

from __future__ import annotations

import flask
import functions_framework

from functions.lib.api import HttpApi, on_first_call
from functions.lib.submissions import Labeller
from functions.lib.validate_api import routes

API = HttpApi("validate-label", routes(on_first_call(Labeller.from_settings)))
API.answer_unrouted()


@functions_framework.http
def validate_label(request: flask.Request) -> flask.Response:
    return API.handle(request)
