"""The `ingest-one-url` function (functions-framework target `ingest_one_url`). Wiring only: the route is
in `functions.lib.ingest_api`, ingestion itself in `functions.lib.ingest`."""

from __future__ import annotations

import functions_framework.aio
from starlette.requests import Request
from starlette.responses import Response

from functions.lib.api import HttpApi, on_first_call
from functions.lib.ingest import Ingestor
from functions.lib.ingest_api import routes

API = HttpApi("ingest-one-url", routes(on_first_call(Ingestor.from_settings)))


@functions_framework.aio.http
async def ingest_one_url(request: Request) -> Response:
    return await API.serve(request)
