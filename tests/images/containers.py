"""The images run with podman as their pods run them: the image's own user and command, the pod's
environment and nothing of this process's, the host's network (where the tests' MariaDB, moto's S3 server,
MLflow and the source mirror listen on loopback) and, where the manifests say so, a read-only root
filesystem with a tmpfs on /tmp (the pods' emptyDir), every capability dropped and no privilege
escalation. `make images` builds the images; a test fails, never skips, when podman or an image is
missing."""

from __future__ import annotations

import json
import os
import shutil
import signal
import stat
import subprocess
import time
import uuid
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.conftest import DOCUMENTED
from workflows.local.images import CA_BUNDLE, Image, images, podman
from workflows.local.processes import FUNCTION_TARGETS, free_port

IMAGES: dict[str, Image] = {image.target: image for image in images()}
SERVING = ("predict", "ingest-one-url", "validate-label", "web")  # the images `make test` builds
STOP_GRACE = 10  # seconds between SIGTERM and SIGKILL when a test stops a container
UID = 10001  # the pods' runAsUser (platform/base/functions/*.yaml), the images' USER
# The pods' securityContext: every capability dropped, no privilege escalation; with readOnlyRootFilesystem,
# nothing writable but the emptyDir on /tmp.
POD_SECURITY = ("--cap-drop", "ALL", "--security-opt", "no-new-privileges")
READ_ONLY_ROOT = ("--read-only", "--read-only-tmpfs=false", "--tmpfs", "/tmp:rw,exec,mode=1777")
# What a pod gets from its ConfigMap and Secret, taken from this process's environment when set there
# (moto's endpoint and dummy credentials, MLflow's address); the rest each test passes itself.
POD_VARIABLES = (
    "AWS_ENDPOINT_URL",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_DEFAULT_REGION",
    "MLFLOW_TRACKING_URI",
)


def run_podman(*args: str, check: bool = True, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    if not shutil.which("podman"):
        pytest.fail("podman is not installed: `make images` installs it and builds the images")
    return subprocess.run([*podman(), *args], capture_output=True, text=True, check=check, timeout=timeout)


def inspect(tag: str) -> dict[str, Any]:
    """`podman image inspect` of a built image; fails the test when it was not built."""
    answer = run_podman("image", "inspect", tag, check=False)
    if answer.returncode != 0:
        pytest.fail(f"image {tag} is missing: `make images` builds it ({answer.stderr.strip()})")
    return json.loads(answer.stdout)[0]


def pod_environment(**values: str) -> dict[str, str]:
    """The pod's variables: the ones this process's fixtures set (POD_VARIABLES), then `values`."""
    return {name: os.environ[name] for name in POD_VARIABLES if name in os.environ} | values


def readable(path: Path) -> Path:
    """Let the pods' user (not root) read a tree the tests wrote, as a mounted volume would be."""
    for item in [path, *path.rglob("*")]:
        item.chmod(0o755 if item.is_dir() else 0o644)
    return path


class Container:
    """One image, started detached as its pod would start it, listening on a free loopback port ($PORT)
    and bound to loopback ($HOST) since it shares the host's network. `ready` is polled for 200 (None:
    not waited for); `cold_start` is the seconds from `podman run` to that first 200.

    Tests talk to it through `http`, whose connections close after each answer: functions-framework's
    gunicorn does not stop on SIGTERM while a client keeps an idle connection open (it waits for its
    30 s graceful timeout), and requests leaves such connections open, which `stop` would mistake for a
    container that ignores SIGTERM."""

    def __init__(
        self,
        target: str,
        env: Mapping[str, str],
        *,
        read_only: bool = True,
        mounts: Iterable[tuple[Path, str, str]] = (),
        ready: str | None = "/health",
        timeout: float = 120,
    ) -> None:
        self.image = IMAGES[target]
        inspect(self.image.tag)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.name = f"dandelion-test-{target}-{uuid.uuid4().hex[:8]}"
        self.http = requests.Session()
        self.http.headers["Connection"] = "close"
        command = ["run", "--detach", "--name", self.name, "--network", "host", *POD_SECURITY]
        if read_only:
            command += READ_ONLY_ROOT
        for source, target_path, mode in mounts:
            command += ["--volume", f"{source}:{target_path}:{mode}"]
        for name, value in {**env, "HOST": "127.0.0.1", "PORT": str(self.port)}.items():
            command += ["--env", f"{name}={value}"]
        self.started = time.monotonic()  # as `podman run` starts
        run_podman(*command, self.image.tag)
        if target in FUNCTION_TARGETS:  # its answers are checked against its OpenAPI document
            DOCUMENTED[self.url] = FUNCTION_TARGETS[target]
        try:
            self.cold_start = self.wait(ready, timeout) - self.started if ready else None
        except BaseException:  # its logs are in the failure: leave nothing running
            self.remove()
            raise

    def running(self) -> bool:
        state = run_podman("container", "inspect", "--format", "{{.State.Running}}", self.name, check=False)
        return state.stdout.strip() == "true"

    def logs(self) -> str:
        answer = run_podman("logs", self.name, check=False)
        return (answer.stdout + answer.stderr)[-4000:]

    def wait(self, path: str, timeout: float) -> float:
        """Poll `path` until it answers 200; returns when it did (time.monotonic)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if self.http.get(f"{self.url}{path}", timeout=5).status_code == 200:
                    return time.monotonic()
            except (requests.ConnectionError, requests.Timeout):
                pass
            if not self.running():
                pytest.fail(f"{self.name} exited before {path} answered 200:\n{self.logs()}")
            time.sleep(0.2)
        pytest.fail(f"{self.name}: {path} did not answer 200 in {timeout:.0f} s:\n{self.logs()}")

    def exec(self, *command: str) -> subprocess.CompletedProcess[str]:
        return run_podman("exec", self.name, *command, check=False)

    def stop(self) -> None:
        """As Kubernetes stops a pod: SIGTERM, then SIGKILL after a grace period. A container that needed
        the SIGKILL (exit code 137) fails the test: its pod would hold up every scale-down and roll-out."""
        self.http.close()
        run_podman("stop", "--time", str(STOP_GRACE), self.name, check=False)
        code = run_podman("container", "inspect", "--format", "{{.State.ExitCode}}", self.name, check=False)
        self.remove()
        assert code.stdout.strip() != str(128 + signal.SIGKILL), (
            f"{self.name} ignored SIGTERM for {STOP_GRACE} s"
        )

    def remove(self) -> None:
        run_podman("rm", "--force", self.name, check=False)
        DOCUMENTED.pop(self.url, None)


# Run inside an image as its user: what it is, and where it can write.
PROBE = """
import os
print(os.getuid(), os.getgid(), os.environ["HOME"])
for path in ("/app/probe", "/opt/venv/probe", "/etc/probe", "/var/tmp/probe", "/tmp/probe"):
    try:
        open(path, "w").close()
        print(path, "written")
    except OSError as error:
        print(path, error.strerror)
"""


def probe(tag: str, *options: str) -> list[str]:
    """PROBE's lines, run in a container of `tag` with `options`."""
    return run_podman("run", "--rm", *options, tag, "python", "-c", PROBE).stdout.splitlines()


def base_of(tag: str) -> str:
    """The BASE_IMAGE an image was built on, as the build recorded it."""
    return inspect(tag)["Annotations"]["org.opencontainers.image.base.name"]


def added_layers(tag: str) -> set[Path]:
    """The layers the Dockerfile added on top of the base image (whose own files are Debian's)."""
    return set(layer_folders(tag)) - set(layer_folders(base_of(tag)))


def build_secret_traces(tag: str) -> list[str]:
    """What an image kept of its build secret (`make images` passes this machine's CA bundle as the secret
    `ca` to every pip install): copies in the layers its Dockerfile added, pip settings that name it."""
    copies = [str(path) for path in copies_of(CA_BUNDLE.read_bytes(), added_layers(tag))]
    pip = ("PIP_CERT=", "PIP_EXTRA_INDEX_URL=")
    return copies + [variable for variable in inspect(tag)["Config"]["Env"] if variable.startswith(pip)]


def layer_folders(tag: str) -> list[Path]:
    """Every layer of an image, as podman's overlay storage keeps it unpacked (one folder per layer)."""
    data = inspect(tag)["GraphDriver"]["Data"]
    folders = [data["UpperDir"], *filter(None, data.get("LowerDir", "").split(":"))]
    return [Path(folder) for folder in folders]


def copies_of(secret: bytes, folders: Iterable[Path]) -> Iterator[Path]:
    """Files in `folders` whose bytes are the secret's, and anything left under a run/secrets folder
    (where a build mounts its secrets). Symbolic links are not followed: they point into the host. A
    folder that cannot be read (podman's storage is root's) fails the scan instead of passing it."""
    for folder in folders:
        for directory, _folders, files in os.walk(folder, onerror=_raise):
            for name in files:
                path = Path(directory, name)
                if path.relative_to(folder).as_posix().startswith("run/secrets/"):
                    yield path
                    continue
                status = path.lstat()
                if (
                    stat.S_ISREG(status.st_mode)
                    and status.st_size == len(secret)
                    and path.read_bytes() == secret
                ):
                    yield path


def _raise(error: OSError) -> None:
    raise error
