"""`make up` on ports already taken (a `make up` still running, another server): one clear error before
anything starts, naming each taken port and its part, instead of a part failing to bind while `up`
waits on, or talks to, whatever listens there."""

import socket
from collections.abc import Iterator

import pytest

from functions.lib.config import DEFAULT_PORTS
from workflows.local import monitoring
from workflows.local.processes import free_port
from workflows.local.stack import local_stack


@pytest.fixture
def listener() -> Iterator[int]:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        yield taken.getsockname()[1]


def test_up_refuses_taken_ports_before_starting_anything(
    listener: int, tmp_path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DANDELION_HOME", str(tmp_path))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setattr(monitoring, "missing", lambda: ["prometheus"])  # as on a machine without it
    ports = {part: free_port() for part in DEFAULT_PORTS} | {"predict": listener, "mlflow": listener}
    lines: list[str] = []
    with pytest.raises(RuntimeError) as refused, local_stack(None, ports, report=lines.append):
        pass
    assert str(refused.value) == (
        f"ports already in use: {listener} (predict), {listener} (mlflow); is another `make up` running? "
        "`dandelion status` shows what answers there"
    )
    assert lines == [] and list(tmp_path.iterdir()) == []  # nothing started, nothing written


def test_a_tracking_server_of_ones_own_needs_no_port(
    listener: int, tmp_path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With MLFLOW_TRACKING_URI set, `up` starts no MLflow: its port may be anyone's."""
    monkeypatch.setenv("DANDELION_HOME", str(tmp_path))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:9/")
    monkeypatch.setattr(monitoring, "missing", lambda: ["prometheus"])
    ports = {part: free_port() for part in DEFAULT_PORTS} | {"mlflow": listener, "web": listener}
    with (
        pytest.raises(RuntimeError, match=rf"^ports already in use: {listener} \(web\);"),
        local_stack(None, ports),
    ):
        pass
