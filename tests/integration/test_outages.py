"""The catalog's database and the object store fail under load: killed (SIGKILL) or frozen (SIGSTOP).
The functions keep answering, each failure a 503 with Retry-After and the JSON error body, never a 500 or
a hang; they recover by themselves when the service comes back (the same processes); nothing is left
half-applied: once the clients have sent again what got a 503, every object is named by a row and every
row's object exists. A frozen service takes the functions' timeouts (about 20 s) to show: those variants
run with DANDELION_LONG_FAULTS=1 (`make faults`)."""

from __future__ import annotations

import functools
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest
import requests

from functions.lib import catalog
from tests.conftest import canonical, function_env
from tests.faults import (
    LONG,
    MARIADBD,
    Answer,
    Daemon,
    Load,
    MotoS3,
    ThrowawayMariaDB,
    disagreement,
    problem,
)
from tests.integration.test_ingest_function import Service
from tests.integration.test_validate_label import ADMIN, Labels, photo

pytestmark = pytest.mark.integration

FAULTS = ["kill", pytest.param("freeze", marks=LONG)]
URLS = 24  # distinct URLs the ingest clients cycle through
PHOTOS = 12  # distinct photos submitted, then accepted
CLIENT_TIMEOUT = 60  # no answer in this long counts as a hang
# What each kind of request may answer besides a 503. An accept is of the submission the last submit of
# its photo made (its id comes from that answer: a failed insert may skip AUTO_INCREMENT ids); a photo not
# yet submitted is submitted first (202); a repeat is a 409.
OK = {"ingest": {200, 201}, "submit": {202}, "accept": {200, 202, 409}}


@pytest.fixture(scope="module")
def mariadb(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ThrowawayMariaDB]:
    if not MARIADBD.exists():
        pytest.skip(f"no {MARIADBD}: Debian's mariadb-server is needed for the outage tests")
    server = ThrowawayMariaDB(tmp_path_factory.mktemp("mariadb"))
    server.start()
    yield server
    server.stop()


@pytest.fixture
def moto(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[MotoS3]:
    server = MotoS3(tmp_path)
    server.start()
    for name, value in server.client_environment().items():
        monkeypatch.setenv(name, value)  # this process's store, and the functions it starts
    yield server
    server.stop()


class Stack:
    """ingest-one-url and validate-label on one catalog and one store, as in a cluster."""

    def __init__(self, tmp: Path, db_url: str, store_url: str, source: str) -> None:
        self.ingest = Service(db_url, store_url, function_env(db_url, store_url, source))
        self.labels = Labels(
            tmp, db_url, store_url, "http://127.0.0.1:9/retrain", DANDELION_RETRAIN_MIN_NEW_LABELS="1000"
        )
        self.engine, self.store = self.ingest.engine, self.ingest.store
        self.submitted: dict[int, int] = {}  # photo -> the id its submission got

    def send(self, kind: str, n: int) -> requests.Response:
        if kind == "ingest":
            label = ("dandelion", "grass")[n % 2]
            body = {"url": canonical(label, 100 + n % URLS), "label": label}
            return requests.post(self.ingest.url + "/", json=body, timeout=CLIENT_TIMEOUT)
        k = n % PHOTOS
        if kind == "submit" or k not in self.submitted:
            files = {"file": ("photo.jpg", photo(k), "image/jpeg")}
            answer = requests.post(
                f"{self.labels.url}/submissions", files=files, data={"label": "grass"}, timeout=CLIENT_TIMEOUT
            )
            if answer.status_code == 202:
                self.submitted[k] = answer.json()["id"]
            return answer
        return requests.post(
            f"{self.labels.url}/submissions/{self.submitted[k]}",
            json={"decision": "accept"},
            headers=ADMIN,
            timeout=CLIENT_TIMEOUT,
        )

    def alive(self) -> bool:
        processes = [self.ingest.function.process, *(i.process for i in self.labels.instances)]
        return all(process.poll() is None for process in processes)

    def stop(self) -> None:
        self.ingest.function.stop()
        self.labels.stop()


def recovered(load: Load, since: float) -> float:
    """Wait until every kind of request succeeded again after `since`; returns how long that took."""
    for kind in load.kinds:
        load.wait_for(functools.partial(served, kind), since, 60, f"{kind} served again")
    return time.monotonic() - since


def served(kind: str, answer: Answer) -> bool:
    return answer.kind == kind and answer.status in OK[kind]


def through(stack: Stack, server: Daemon, fault: str) -> str:
    """Serve a steady load through `fault` of `server`, and check every answer and the data after it."""
    with Load(stack.send, tuple(OK)) as load:
        recovered(load, time.monotonic())
        failed = time.monotonic()
        server.fail(fault)
        load.wait_for(lambda a: a.status == 503, failed, 60, f"a 503 after the {fault}")
        down = time.monotonic() - failed
        time.sleep(1)
        server.revive(fault)
        back = recovered(load, time.monotonic())
    assert stack.alive()  # recovered by themselves, not restarted
    for kind in load.kinds:  # what a client does afterwards: send again what got a 503
        for n in range(max(URLS, PHOTOS)):
            answer = stack.send(kind, n)
            assert answer.status_code in OK[kind], (kind, n, answer.status_code, answer.text)
    check(load.answers)
    assert disagreement(stack.engine, stack.store) == (set(), set())
    assert catalog.counts_by_status(stack.engine)["ingested"] == URLS + PHOTOS
    return (
        f"{fault}: {len(load.answers)} answers, {sum(a.status == 503 for a in load.answers)} of them 503, "
        f"the first {down:.1f} s after the {fault}; all served again {back:.1f} s after the revival; "
        f"slowest answer {max(a.seconds for a in load.answers):.1f} s"
    )


def check(answers: list[Answer]) -> None:
    problems = [p for a in answers if (p := problem(a, OK[a.kind]))]
    assert problems == [], f"{len(problems)} of {len(answers)} answers neither served nor 503: {problems[:5]}"


@pytest.mark.parametrize("fault", FAULTS)
def test_the_database_fails_under_load(
    tmp_path: Path, mariadb: ThrowawayMariaDB, source: str, fault: str
) -> None:
    db_url = mariadb.database(f"outage_{uuid.uuid4().hex[:8]}")
    stack = Stack(tmp_path, db_url, (tmp_path / "objects").as_uri(), source)
    try:
        print(through(stack, mariadb, fault))
    finally:
        stack.stop()


@pytest.mark.parametrize("fault", FAULTS)
def test_the_object_store_fails_under_load(
    tmp_path: Path, mariadb: ThrowawayMariaDB, moto: MotoS3, source: str, fault: str
) -> None:
    bucket = f"outage-{uuid.uuid4().hex[:8]}"
    boto3.client("s3").create_bucket(Bucket=bucket)
    stack = Stack(tmp_path, mariadb.database(bucket.replace("-", "_")), f"s3://{bucket}/data", source)
    try:
        print(through(stack, moto, fault))
    finally:
        stack.stop()
