"""What every torch-free image is, whatever it runs: the pods' non-root user by default, nothing writable
but /tmp on a read-only root (and, on a writable one, still no way to change the installed packages), no
build secret in any layer the Dockerfile added, and a predict image without torch under 400 MB."""

from __future__ import annotations

import secrets
import uuid
from pathlib import Path

import pytest

from tests.images.containers import (
    IMAGES,
    READ_ONLY_ROOT,
    SERVING,
    UID,
    added_layers,
    base_of,
    build_secret_traces,
    copies_of,
    inspect,
    probe,
    run_podman,
)

pytestmark = pytest.mark.images

PREDICT_SIZE_LIMIT = 400_000_000  # bytes, as `podman images` counts them (uncompressed)


@pytest.mark.parametrize("target", SERVING)
def test_the_image_runs_as_the_pods_user_on_a_read_only_root(target: str) -> None:
    tag = IMAGES[target].tag
    assert inspect(tag)["Config"]["User"] == f"{UID}:{UID}"
    assert probe(tag, *READ_ONLY_ROOT) == [
        f"{UID} {UID} /tmp",
        "/app/probe Read-only file system",
        "/opt/venv/probe Read-only file system",
        "/etc/probe Read-only file system",
        "/var/tmp/probe Read-only file system",
        "/tmp/probe written",
    ]
    # A writable root (the dev overlay, for skaffold's file sync into /app): the packages stay root's.
    assert probe(tag)[1:3] == ["/app/probe written", "/opt/venv/probe Permission denied"]


def test_the_predict_image_is_small_and_has_no_torch() -> None:
    tag = IMAGES["predict"].tag
    size = inspect(tag)["Size"]
    assert size < PREDICT_SIZE_LIMIT, f"{size / 1e6:.0f} MB"
    found = run_podman(
        "run", "--rm", tag, "python", "-c", "import importlib.util as u; print(u.find_spec('torch'))"
    )
    assert found.stdout == "None\n"


@pytest.mark.parametrize("target", SERVING)
def test_no_layer_keeps_the_build_secret(target: str) -> None:
    assert build_secret_traces(IMAGES[target].tag) == []


def test_the_layer_scan_finds_a_secret_that_a_build_leaves(tmp_path: Path) -> None:
    """The check above can fail: a build that copies its secret into the image is caught by it."""
    secret = tmp_path / "secret"
    secret.write_bytes(secrets.token_bytes(4096))
    leaky = "RUN --mount=type=secret,id=ca cp /run/secrets/ca /opt/leaked"
    (tmp_path / "Dockerfile").write_text(f"FROM {base_of(IMAGES['predict'].tag)}\n{leaky}\n")
    tag = f"localhost/dandelion-test-leak:{uuid.uuid4().hex[:8]}"
    run_podman("build", "--network", "host", "--secret", f"id=ca,src={secret}", "--tag", tag, str(tmp_path))
    try:
        found = list(copies_of(secret.read_bytes(), added_layers(tag)))
        assert [path.relative_to(path.parents[1]).as_posix() for path in found] == ["opt/leaked"]
    finally:
        run_podman("rmi", "--force", tag, check=False)
