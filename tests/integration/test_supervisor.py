"""The local stack's supervisor on a real function process: a kill -9 is reported and the function is
started again and answers; closing stops every process, the restarted one and its worker included."""

import os
import signal
from functools import partial

import pytest
import requests

from tests.faults import wait_until
from workflows.local.processes import free_port, start_function, wait_healthy
from workflows.local.supervisor import Supervisor

pytestmark = pytest.mark.integration


def group_gone(pgid: int) -> bool:
    """Whether no process of the group is left (a killed arbiter's orphaned worker is reaped by init: not
    at once, so callers wait for it)."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return True
    return False


def test_a_killed_function_is_reported_restarted_and_everything_stops_on_close(tmp_path) -> None:
    port = free_port()
    log = tmp_path / "ingest-one-url.log"
    env = dict(os.environ, DANDELION_HOME=str(tmp_path))
    lines: list[str] = []
    with Supervisor(
        {"ingest-one-url": partial(start_function, "ingest-one-url", port, env, log)},
        lines.append,
        {"ingest-one-url": log},
        interval=0.1,
    ) as supervisor:
        first = supervisor.processes["ingest-one-url"]
        wait_healthy(f"http://127.0.0.1:{port}/health", first)
        os.kill(first.pid, signal.SIGKILL)  # the arbiter dies; its worker is left behind
        wait_until(lambda: supervisor.processes["ingest-one-url"] is not first, 30, f"a restart: {lines}")
        second = supervisor.processes["ingest-one-url"]
        wait_healthy(f"http://127.0.0.1:{port}/health", second)
        wait_until(lambda: group_gone(first.pid), 10, "the orphaned worker went with it, freeing the port")
        assert requests.get(f"http://127.0.0.1:{port}/health", timeout=5).json()["status"] == "healthy"
    assert lines == [f"ingest-one-url exited with code -9; restarting it in 1 s (log: {log})"]
    assert second.poll() is not None
    wait_until(lambda: group_gone(second.pid), 10, "every process stopped")
