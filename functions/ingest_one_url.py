"""The `ingest-one-url` function (functions-framework target `ingest_one_url`). Wiring only: the route is
in `functions.lib.ingest_api`, ingestion itself in `functions.lib.ingest`."""

from __future__ import annotations

import flask
import functions_framework

from functions.lib.api import HttpApi, on_first_call
from functions.lib.ingest import Ingestor
from functions.lib.ingest_api import routes

API = HttpApi("ingest-one-url", routes(on_first_call(Ingestor.from_settings)))
API.answer_unrouted()


@functions_framework.http
def ingest_one_url(request: flask.Request) -> flask.Response:
    return API.handle(request)
