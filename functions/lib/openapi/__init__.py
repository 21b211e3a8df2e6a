"""Each function's OpenAPI 3.1 document, written once as YAML beside this file (with `common.yaml`'s
shared components merged in) and served at GET /openapi.json; tests validate real answers against it."""

from __future__ import annotations

import copy
import functools
from importlib import resources
from typing import Any

import yaml
from starlette.responses import Response

from functions.lib.api import Request, Route, json_response


@functools.cache
def _load(name: str) -> dict[str, Any]:
    return yaml.safe_load(resources.files(__package__).joinpath(name).read_text())


def document(function: str) -> dict[str, Any]:
    """The document of `function` (a target name: predict, ingest_one_url, validate_label)."""
    own = copy.deepcopy(_load(f"{function}.yaml"))
    components = own.setdefault("components", {})
    for kind, entries in _load("common.yaml")["components"].items():
        components[kind] = entries | components.get(kind, {})
    return own


def route(function: str) -> Route:
    def serve(_request: Request) -> Response:
        return json_response(document(function))

    return Route("/openapi.json", serve)
