"""The body-pace watcher (functions.lib.api): one thread that expires every request body falling behind
its deadline, woken by a new body only when that body's deadline comes before the watcher's next look."""

import socket
import time
from collections.abc import Callable, Iterator

import pytest

from functions.lib.api import _BodyPace, _PaceWatcher


@pytest.fixture
def paces() -> Iterator[Callable[[float], _BodyPace]]:
    """Makes bodies on real connections (socket pairs), due in so many seconds and not yet watched; every
    socket is closed afterwards."""
    pairs: list[tuple[socket.socket, socket.socket]] = []

    def make(seconds: float) -> _BodyPace:
        pairs.append(socket.socketpair())
        pace = _BodyPace(None)  # no connection: the module's own watcher leaves it alone
        pace.connection, pace.deadline = pairs[-1][0], time.monotonic() + seconds
        return pace

    yield make
    for pair in pairs:
        for end in pair:
            end.close()


def test_a_body_due_before_the_watchers_next_look_is_expired_on_time(
    paces: Callable[[float], _BodyPace],
) -> None:
    watcher = _PaceWatcher()
    patient = paces(30)
    watcher.watch(patient)
    time.sleep(0.2)  # the watcher now sleeps until the patient body's deadline
    later = paces(60)
    watcher.watch(later)  # due after that look: no need to wake the watcher
    assert watcher._wakes_at == patient.deadline
    hasty = paces(0.3)
    watcher.watch(hasty)  # due before it: the watcher must wake and expire it
    deadline = time.monotonic() + 5
    while not hasty.expired and time.monotonic() < deadline:
        time.sleep(0.05)
    assert hasty.expired and not patient.expired and not later.expired
    assert hasty.connection.recv(1) == b""  # type: ignore[union-attr]  # its read side was shut down
    assert watcher._wakes_at == patient.deadline  # the next look, for what is left
