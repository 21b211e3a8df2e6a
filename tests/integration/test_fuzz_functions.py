"""Each function's OpenAPI document fuzzed against its real process with schemathesis: every generated
request, valid or not by the document (its examples, boundary values of every field, random data, wrong
media types and methods), must get an answer that is not a 5xx and that the document describes: status
code, content type, body schema. predict serves a tiny real model; ingest-one-url (private addresses
refused, as in production) and validate-label (with an admin token, which the fuzzer sends where the
document asks for it) run on MariaDB and S3 (moto's server).

`make test` sends up to DANDELION_FUZZ_EXAMPLES (default 50) random requests per operation, with seed 0:
the same requests every run. `make fuzz` raises the number, with a fresh seed (DANDELION_FUZZ_SEED repeats
a run). What each function was sent and answered, and the seed, are written to
test-output/fuzz/<function>.json: the figures SECURITY.md reports.
"""

from __future__ import annotations

import json
import os
import random
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest
import requests
import schemathesis
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from functions.lib.openapi import document
from tests.conftest import FunctionProcess, function_env, new_bucket, throwaway_database
from tests.support import ROOT, publish_model
from workflows.local.processes import FUNCTION_TARGETS

pytestmark = pytest.mark.integration

EXAMPLES = int(os.environ.get("DANDELION_FUZZ_EXAMPLES", "50"))
SEED = int(
    os.environ.get("DANDELION_FUZZ_SEED")
    or (random.randrange(2**32) if "DANDELION_FUZZ_EXAMPLES" in os.environ else 0)
)
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]
TOKEN = "fuzz-admin-token"
REPORTS = ROOT / "test-output" / "fuzz"


def fuzz_schema(target: str, **auth: dict[str, str]) -> schemathesis.BaseSchema:
    """The function's document (what its process serves at /openapi.json), configured for the run: its
    seed, and no example database (nothing carried over from another run)."""
    config = {
        "seed": SEED,
        "generation": {"max-examples": EXAMPLES, "database": "none"},
        "suppress-health-check": ["too_slow", "filter_too_much", "data_too_large"],
        **({"auth": {"openapi": auth}} if auth else {}),
    }
    return schemathesis.openapi.from_dict(document(target), config=schemathesis.Config.from_dict(config))


@dataclass
class Fuzzed:
    """A function process under fuzzing, and the status of every answer it gave."""

    name: str
    process: FunctionProcess
    statuses: Counter[int] = field(default_factory=Counter)
    first: float = 0.0  # when the first request was sent, and the last answer came
    last: float = 0.0

    def send(self, case: schemathesis.Case) -> None:
        self.first = self.first or time.monotonic()
        response = case.call(base_url=self.process.url, timeout=60)
        self.last = time.monotonic()
        self.statuses[response.status_code] += 1
        case.validate_response(response, checks=CHECKS)


def fuzzed(name: str, env: dict[str, str], log: os.PathLike[str]) -> Iterator[Fuzzed]:
    """The function `name` started as a process; once fuzzed, what it was sent is written as the run's
    figures, and it is stopped."""
    process = FunctionProcess(name, env, log=log)
    try:
        served = requests.get(f"{process.url}/openapi.json", timeout=30).json()
        assert served == document(FUNCTION_TARGETS[name])  # what is fuzzed is what the process serves
        run = Fuzzed(name, process)
        yield run
        report = {
            "function": name,
            "examples_per_operation": EXAMPLES,
            "seed": SEED,
            "requests": sum(run.statuses.values()),
            "by_status": {str(status): n for status, n in sorted(run.statuses.items())},
            "server_errors": sum(n for status, n in run.statuses.items() if status >= 500),
            "seconds": round(run.last - run.first, 1),
        }
        REPORTS.mkdir(parents=True, exist_ok=True)
        (REPORTS / f"{name}.json").write_text(json.dumps(report, indent=2) + "\n")
    finally:
        process.stop()


@pytest.fixture(scope="module")
def store(s3_endpoint: str) -> str:
    return new_bucket()


@pytest.fixture(scope="module")
def catalog(mysql_server: dict) -> Iterator[str]:
    with throwaway_database(mysql_server) as url:
        yield url


@pytest.fixture(scope="module")
def predict(tmp_path_factory: pytest.TempPathFactory, tiny_models: list, store: str) -> Iterator[Fuzzed]:
    home = tmp_path_factory.mktemp("fuzz-predict")
    publish_model(store, "1", tiny_models[0])
    env = dict(os.environ, DANDELION_HOME=str(home), DANDELION_STORE_URL=store)
    yield from fuzzed("predict", env, home / "predict.log")


@pytest.fixture(scope="module")
def ingest(tmp_path_factory: pytest.TempPathFactory, catalog: str, store: str) -> Iterator[Fuzzed]:
    home = tmp_path_factory.mktemp("fuzz-ingest")
    env = dict(function_env(catalog, store, source=None, allow_private=False), DANDELION_HOME=str(home))
    yield from fuzzed("ingest-one-url", env, home / "ingest.log")


@pytest.fixture(scope="module")
def labels(tmp_path_factory: pytest.TempPathFactory, catalog: str, store: str) -> Iterator[Fuzzed]:
    home = tmp_path_factory.mktemp("fuzz-labels")
    env = dict(
        function_env(catalog, store, source=None, allow_private=False),
        DANDELION_HOME=str(home),
        DANDELION_ADMIN_TOKEN=TOKEN,
        DANDELION_RETRAIN_WEBHOOK="http://127.0.0.1:9/retrain",  # nothing listens: the outbox keeps it
    )
    yield from fuzzed("validate-label", env, home / "labels.log")


@fuzz_schema("predict").parametrize()
def test_predict_answers_every_request_as_its_document_says(case: schemathesis.Case, predict: Fuzzed) -> None:
    predict.send(case)


@fuzz_schema("ingest_one_url").parametrize()
def test_ingest_answers_every_request_as_its_document_says(case: schemathesis.Case, ingest: Fuzzed) -> None:
    ingest.send(case)


@fuzz_schema("validate_label", admin={"bearer": TOKEN}).parametrize()
def test_validate_label_answers_every_request_as_its_document_says(
    case: schemathesis.Case, labels: Fuzzed
) -> None:
    labels.send(case)
