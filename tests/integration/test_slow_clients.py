"""Slow clients cannot stop a function answering anyone else. Clients that send their request body at a
byte a second are each cut off with a 408 once the body falls behind its pace (5 s, then 64 KiB/s), and
whoever waits behind them is served within that bound, even while they reconnect. Clients that send their
request headers a byte at a time hold a connection each, never a thread: functions-framework's ASGI server
(uvicorn's worker under gunicorn) reads every connection in one event loop."""

from __future__ import annotations

import contextlib
import io
import json
import random
import select
import socket
import threading
import time
from collections.abc import Callable, Iterator

import pytest
import requests
from PIL import Image

from functions.lib.api import BODY_GRACE_SECONDS, MIN_BODY_RATE
from tests.conftest import DATASET, FunctionProcess, canonical, function_env
from tests.faults import wait_until
from tests.integration.test_predict_function import predict_env
from tests.support import publish_model

pytestmark = pytest.mark.integration

DRIPPERS = 8
BOUND = BODY_GRACE_SECONDS + 5  # seconds: the grace a dripper gets, and a margin for a loaded machine
TIMED_OUT = "HTTP/1.1 408 Request Timeout"
IMAGE = (DATASET / "dandelion" / "00000001.jpg").read_bytes()


class Dripper:
    """One client that sends a request's headers, then its body a byte a second; cut off, it starts
    again, until stopped. Keeps how each of its requests ended: the status line, or "closed"."""

    def __init__(self, port: int, head: bytes) -> None:
        self.port, self.head = port, head
        self.endings: list[tuple[str, float]] = []  # (how, after how many seconds)
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.stopped.is_set():
            self.endings.append(self._once())

    def _once(self) -> tuple[str, float]:
        started = time.monotonic()
        with socket.create_connection(("127.0.0.1", self.port)) as connection:
            connection.sendall(self.head)
            while not self.stopped.is_set():
                try:
                    connection.sendall(b"x")
                except OSError:
                    return "closed", time.monotonic() - started
                readable, _, _ = select.select([connection], [], [], 1.0)
                if readable:
                    return self.answer(connection), time.monotonic() - started
        return "stopped", time.monotonic() - started

    @staticmethod
    def answer(connection: socket.socket) -> str:
        """The status line and the JSON body of the answer the server sent before closing; "closed" when
        it closed without one."""
        connection.settimeout(5)
        received = b""
        with contextlib.suppress(OSError):
            while chunk := connection.recv(4096):
                received += chunk
        if not received:
            return "closed"
        status, _, rest = received.partition(b"\r\n")
        body = rest.partition(b"\r\n\r\n")[2]
        return f"{status.decode()} {json.loads(body)}"


@contextlib.contextmanager
def dripping(targets: list[tuple[int, bytes]]) -> Iterator[list[Dripper]]:
    """DRIPPERS clients dripping at each (port, head); once they all hold a server thread, the caller runs;
    then they go on until each has had its first request ended."""
    drippers = [Dripper(port, head) for port, head in targets for _ in range(DRIPPERS)]
    try:
        time.sleep(2)
        yield drippers
        wait_until(
            lambda: all(d.endings for d in drippers), BOUND + 5, "every dripper's first request ending"
        )
    finally:
        for dripper in drippers:
            dripper.stopped.set()
        for dripper in drippers:
            dripper.thread.join()


def cut_off_in_time(drippers: list[Dripper]) -> list[float]:
    """Each dripper's first request was answered 408 within the bound; when, in seconds."""
    first = [dripper.endings[0] for dripper in drippers]
    assert {how.partition(" {")[0] for how, _ in first} == {TIMED_OUT}, first
    assert max(seconds for _, seconds in first) < BOUND, first
    return sorted(round(seconds, 1) for _, seconds in first)


def head(method_path: str, content_type: str, length: int = 1000) -> bytes:
    return (
        f"{method_path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: {content_type}\r\n"
        f"Content-Length: {length}\r\nConnection: close\r\n\r\n"
    ).encode()


def timed(call: Callable[[], requests.Response]) -> tuple[requests.Response, float]:
    started = time.monotonic()
    response = call()
    return response, time.monotonic() - started


def served_meanwhile(predict: FunctionProcess, ingest: FunctionProcess, row: int) -> list[float]:
    """Health and a prediction from predict and the ingestion of canonical grass `row`, each answered
    as it should be; how many seconds each took."""
    body = {"url": canonical("grass", row), "label": "grass"}
    served = [
        timed(lambda: requests.get(f"{predict.url}/health", timeout=30)),
        timed(lambda: requests.post(f"{predict.url}/predict", files={"file": ("d.jpg", IMAGE)}, timeout=30)),
        timed(lambda: requests.post(f"{ingest.url}/", json=body, timeout=30)),
    ]
    health, prediction, ingestion = (answer for answer, _ in served)
    assert (health.status_code, prediction.status_code, ingestion.status_code) == (200, 200, 201)
    assert (prediction.json()["model_version"], ingestion.json()["outcome"]) == ("1", "ingested")
    return [round(seconds, 1) for _, seconds in served]


@pytest.fixture(scope="module")
def functions(tmp_path_factory: pytest.TempPathFactory, tiny_models, source: str) -> Iterator[tuple]:
    """predict (serving a tiny model) and ingest-one-url, as their containers run them."""
    tmp = tmp_path_factory.mktemp("slow-clients")
    store_url = (tmp / "objects").as_uri()
    publish_model(store_url, "1", tiny_models[0])
    predict = FunctionProcess("predict", predict_env(tmp, store_url))
    db_url = f"sqlite:///{tmp / 'c.db'}"
    ingest = FunctionProcess("ingest-one-url", function_env(db_url, store_url, source))
    yield predict, ingest
    predict.stop()
    ingest.stop()


def test_dripping_bodies_neither_starve_predict_and_ingestion_nor_hold_them(functions) -> None:
    predict, ingest = functions
    targets = [
        (predict.port, head("POST /predict", "image/jpeg")),
        (ingest.port, head("POST /", "application/json")),
    ]
    with dripping(targets) as drippers:
        seconds = served_meanwhile(predict, ingest, row=5)
    assert max(seconds) < BOUND, seconds
    cut = cut_off_in_time(drippers)  # asserts each dripper got its 408 within the bound
    print(f"health, predict, ingest served in {seconds} s; drippers cut at {cut} s")


def test_a_slow_client_that_keeps_pace_is_served(functions) -> None:
    """Past the grace, but at twice the minimum rate: a slow uplink, not an attack."""
    predict, _ = functions
    noise = Image.frombytes("RGB", (600, 600), random.Random(0).randbytes(600 * 600 * 3))
    out = io.BytesIO()
    noise.save(out, format="JPEG", quality=95)
    image = out.getvalue()
    rate = 2 * MIN_BODY_RATE
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", predict.port)) as connection:
        connection.sendall(head("POST /predict", "image/jpeg", len(image)))
        time.sleep(BODY_GRACE_SECONDS - 1)
        for offset in range(0, len(image), rate // 8):
            connection.sendall(image[offset : offset + rate // 8])
            time.sleep(1 / 8)
        answer = Dripper.answer(connection)
    seconds = time.monotonic() - started
    assert answer.startswith("HTTP/1.1 200 OK {"), answer
    assert seconds > BODY_GRACE_SECONDS + 1, seconds  # past the grace: the pace, not a deadline, let it in


class HeaderDripper:
    """One client that sends a request line, then header bytes one every half second, until stopped."""

    def __init__(self, port: int) -> None:
        self.connection = socket.create_connection(("127.0.0.1", port))
        self.connection.sendall(b"POST / HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")

    def drip(self) -> None:
        with contextlib.suppress(OSError):  # a server may close a connection it no longer wants
            self.connection.sendall(b"a")


def test_dripping_headers_hold_no_thread(functions) -> None:
    """Eight times as many header drippers per function as gunicorn's threaded worker had threads (each
    of which such a client held until it finished its headers): the functions answer everyone else at
    once, however long the drippers go on."""
    predict, ingest = functions
    drippers = [HeaderDripper(port) for port in (predict.port, ingest.port) for _ in range(8 * DRIPPERS)]
    try:
        for _ in range(4):  # two seconds of dripping before and while the others ask
            for dripper in drippers:
                dripper.drip()
            time.sleep(0.5)
        seconds = served_meanwhile(predict, ingest, row=6)
    finally:
        for dripper in drippers:
            dripper.connection.close()
    assert max(seconds) < 2, seconds
