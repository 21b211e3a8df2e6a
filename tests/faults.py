"""Faults for tests to inject, and what must hold through them.

A throw-away MariaDB and a moto S3 server run in processes of their own (their own data directory, socket
and port; never the machine's MariaDB) that a test kills (SIGKILL), freezes (SIGSTOP) and starts again on
the same port and data. `Load` keeps a few clients sending real requests through the fault and keeps
every answer. `disagreement` says where the catalog and the store disagree.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pymysql
import pytest
import requests
from sqlalchemy import Engine, select

from functions.lib import catalog
from functions.lib.store import ObjectStore
from functions.lib.submissions import submissions
from tests.support import s3_environment
from workflows.local.processes import free_port, start, stop

# The slow variants (a frozen server, training killed) run under `make faults` only.
LONG = pytest.mark.skipif(
    os.environ.get("DANDELION_LONG_FAULTS") != "1", reason="long: DANDELION_LONG_FAULTS=1"
)

MARIADBD = Path("/usr/sbin/mariadbd")


def wait_until(condition: Callable[[], bool], seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not within {seconds:.0f} s")
        time.sleep(0.1)


class Daemon:
    """A server in a session of its own, on a port that stays its own across restarts."""

    def __init__(self, log: Path) -> None:
        self.port = free_port()
        self.log = log
        self.process: subprocess.Popen[bytes] | None = None

    def command(self) -> list[str]:
        raise NotImplementedError

    def environment(self) -> dict[str, str]:
        return dict(os.environ)

    def ready(self) -> bool:
        raise NotImplementedError

    def start(self) -> None:
        self.process = start(self.command(), self.environment(), self.log)
        wait_until(lambda: self._alive() and self.ready(), 60, f"{self.command()[0]} on port {self.port}")

    def _alive(self) -> bool:
        if self.process is not None and self.process.poll() is not None:
            raise RuntimeError(f"{self.command()[0]} exited with {self.process.returncode}; see {self.log}")
        return True

    def _signal(self, sig: signal.Signals) -> None:
        assert self.process is not None
        os.killpg(self.process.pid, sig)

    def kill(self) -> None:
        """SIGKILL: the server dies with whatever it had not written down."""
        self._signal(signal.SIGKILL)
        assert self.process is not None
        self.process.wait()

    def freeze(self) -> None:
        """SIGSTOP: connections open and requests go in, nothing comes back."""
        self._signal(signal.SIGSTOP)

    def thaw(self) -> None:
        self._signal(signal.SIGCONT)

    def fail(self, fault: str) -> None:
        """`kill` or `freeze`."""
        if fault == "kill":
            self.kill()
        else:
            self.freeze()

    def revive(self, fault: str) -> None:
        """Undo `fail(fault)`: start again on the same port and data, or thaw."""
        if fault == "kill":
            self.start()
        else:
            self.thaw()

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.thaw()
            stop(self.process)


class ThrowawayMariaDB(Daemon):
    """Debian's mariadbd on a data directory made for it, root without a password on its own port."""

    def __init__(self, home: Path) -> None:
        super().__init__(home / "mariadbd.log")
        self.home = home
        self.datadir = home / "data"
        self.user = ["--user=root"] if os.geteuid() == 0 else []  # mariadbd refuses root unless told
        subprocess.run(
            [
                shutil.which("mariadb-install-db") or "mariadb-install-db",
                "--no-defaults",
                f"--datadir={self.datadir}",
                "--auth-root-authentication-method=normal",
                "--skip-test-db",
                *self.user,
            ],
            check=True,
            capture_output=True,
        )

    def command(self) -> list[str]:
        return [
            str(MARIADBD),
            "--no-defaults",
            f"--datadir={self.datadir}",
            f"--socket={self.home / 'mariadbd.sock'}",
            f"--pid-file={self.home / 'mariadbd.pid'}",
            f"--port={self.port}",
            "--bind-address=127.0.0.1",
            "--skip-name-resolve",
            "--innodb-buffer-pool-size=32M",
            *self.user,
        ]

    def connect(self, **kwargs: object) -> pymysql.Connection:
        return pymysql.connect(host="127.0.0.1", port=self.port, user="root", password="", **kwargs)

    def ready(self) -> bool:
        try:
            self.connect(connect_timeout=1).close()
        except pymysql.err.OperationalError:
            return False
        return True

    def database(self, name: str) -> str:
        """A new database; its SQLAlchemy URL."""
        with contextlib.closing(self.connect(autocommit=True)) as connection, connection.cursor() as cursor:
            cursor.execute(f"CREATE DATABASE {name} CHARACTER SET utf8mb4")
        return f"mysql+pymysql://root@127.0.0.1:{self.port}/{name}?charset=utf8mb4"


class MotoS3(Daemon):
    """moto's S3 server, with a journal that brings its buckets back after a kill (tests.moto_journal)."""

    def __init__(self, home: Path) -> None:
        super().__init__(home / "moto.log")
        self.journal = home / "moto-journal"

    def command(self) -> list[str]:
        return [sys.executable, "-m", "tests.moto_journal", str(self.port)]

    def environment(self) -> dict[str, str]:
        return dict(os.environ, MOTO_RECORDER_FILEPATH=str(self.journal))

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def client_environment(self) -> dict[str, str]:
        """What points boto3 at this server."""
        return s3_environment(self.endpoint)

    def ready(self) -> bool:
        try:
            requests.get(f"{self.endpoint}/moto-api/", timeout=1)
        except requests.RequestException:
            return False
        return True


# ---------------------------------------------------------------- load


@dataclass(frozen=True)
class Answer:
    """One request's fate: its status (None: no answer at all), the Retry-After it carried, its JSON body."""

    kind: str
    sent: float  # time.monotonic() when it was sent
    seconds: float
    status: int | None
    retry_after: str | None = None
    body: object = None
    error: str = ""


@dataclass
class Load:
    """`clients` threads that each call `send(kind, n)` for n = 0, 1, 2, ... over the `kinds` in turn
    until stopped, recording every answer; a request that got none (`send`'s own timeout, a refused
    connection) is recorded without a status."""

    send: Callable[[str, int], requests.Response]
    kinds: tuple[str, ...]
    clients: int = 4
    answers: list[Answer] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _threads: list[threading.Thread] = field(default_factory=list)
    _counter: Iterator[int] = field(default_factory=itertools.count)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def _client(self) -> None:
        while not self._stop.is_set():
            with self._lock:
                n = next(self._counter)
            kind = self.kinds[n % len(self.kinds)]
            sent = time.monotonic()
            try:
                response = self.send(kind, n // len(self.kinds))
            except requests.RequestException as exc:
                answer = Answer(kind, sent, time.monotonic() - sent, None, error=repr(exc))
            else:
                try:
                    body: object = response.json()
                except ValueError:
                    body = response.text[:200]
                answer = Answer(
                    kind,
                    sent,
                    time.monotonic() - sent,
                    response.status_code,
                    response.headers.get("Retry-After"),
                    body,
                )
            with self._lock:
                self.answers.append(answer)
            if answer.status == 503:
                time.sleep(0.2)  # a client that honours Retry-After, hurried for the test

    def __enter__(self) -> Load:
        self._threads = [threading.Thread(target=self._client, daemon=True) for _ in range(self.clients)]
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join()

    def since(self, moment: float) -> list[Answer]:
        with self._lock:
            return [a for a in self.answers if a.sent >= moment]

    def wait_for(self, condition: Callable[[Answer], bool], after: float, seconds: float, what: str) -> None:
        """Block until an answer sent after `after` meets `condition`."""
        wait_until(lambda: any(condition(a) for a in self.since(after)), seconds, what)


def problem(answer: Answer, ok: set[int]) -> str | None:
    """What is wrong with one answer, if anything: it must have a status in `ok`, or be a 503 with
    Retry-After and the JSON error body."""
    if answer.status in ok:
        return None
    if (
        answer.status == 503
        and answer.retry_after is not None
        and answer.retry_after.isdigit()
        and isinstance(answer.body, dict)
        and set(answer.body) == {"error", "message"}
        and answer.body["error"] == "unavailable"
    ):
        return None
    return f"{answer.kind}: {answer.status} {answer.retry_after!r} {answer.body!r} {answer.error}"


# ---------------------------------------------------------------- the catalog against the store


def disagreement(engine: Engine, store: ObjectStore) -> tuple[set[str], set[str]]:
    """(objects under raw/ and incoming/ that no row names, rows' objects that are missing): every catalog
    row that says where its image is, and every submission."""
    objects = {store.url(key): key for prefix in ("raw/", "incoming/") for key in store.keys(prefix)}
    with engine.connect() as connection:
        named = {
            url
            for (url,) in connection.execute(
                select(catalog.plants_data.c.url_s3).where(catalog.plants_data.c.url_s3.is_not(None))
            )
        }
        named |= {store.url(key) for (key,) in connection.execute(select(submissions.c.object_key))}
    return {objects[url] for url in set(objects) - named}, named - set(objects)
