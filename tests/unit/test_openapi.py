"""Each function's OpenAPI document: valid OpenAPI 3.1, listing exactly the routes the function serves.
That the functions' real answers follow it is checked on every answer the function tests get (see
`every_function_answer_follows_its_openapi_document` in tests/conftest.py); the last test shows that
check failing on an answer that does not."""

import json
import re

import pytest
import requests
from openapi_core.validation.response.exceptions import InvalidData
from openapi_spec_validator import validate

from functions import ingest_one_url, predict, validate_label
from functions.lib.openapi import document
from tests.conftest import DOCUMENTED, follows_its_openapi_document

APIS = {"predict": predict.API, "ingest_one_url": ingest_one_url.API, "validate_label": validate_label.API}


@pytest.mark.parametrize("target", list(APIS))
def test_the_document_is_valid_openapi(target: str) -> None:
    validate(document(target))


@pytest.mark.parametrize("target", list(APIS))
def test_the_document_lists_exactly_the_routes_served(target: str) -> None:
    served = {
        (re.sub(r"<(?:\w+:)?(\w+)>", r"{\1}", route.rule), method.lower())
        for route in APIS[target].routes
        for method in route.methods
    }
    documented = {
        (path, method)
        for path, operations in document(target)["paths"].items()
        for method in operations
        if method != "parameters"
    }
    assert documented == served


def test_an_answer_that_breaks_the_document_fails_the_check() -> None:
    DOCUMENTED["http://127.0.0.1:1"] = "ingest_one_url"
    request = requests.Request(
        "POST", "http://127.0.0.1:1/", json={"url": "http://x/a.jpg", "label": "grass"}
    )
    answer = requests.Response()
    answer.status_code, answer.url, answer.request = 201, "http://127.0.0.1:1/", request.prepare()
    answer.headers["Content-Type"] = "application/json"
    answer._content = json.dumps({"outcome": "ingested", "label": "daisy"}).encode()
    with pytest.raises(InvalidData):
        follows_its_openapi_document(answer)
