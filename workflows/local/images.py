"""The cluster's images, built with podman on this machine: `make images` (after podman-setup.sh).

Every artifact of skaffold.yaml (its image name and Dockerfile target) is built from the repository root
with the same Dockerfile the CD workflow builds with Docker, tagged `<image>:latest` as the manifests name
them (podman files them under `localhost/`). podman keeps every layer: a rebuild after a source change
redoes only the COPY of the sources, in seconds.

What differs from a cluster build, all through standard build arguments and secrets:
- BASE_IMAGE is `localhost/dandelion-base` (Debian bookworm's own Python 3.11, made by podman-setup.sh),
  since no image registry is reachable here;
- the machine's CA bundle is passed as the optional build secret `ca` when it exists, so that pip inside
  the build trusts what this machine trusts (it is mounted for the RUN only: no layer keeps it);
- the workflows image takes torch, torchvision and their CUDA libraries from the wheel indexes on this
  machine's disk (those pip is configured with, served on loopback for the build's duration) instead of
  downloading several GB: PIP_EXTRA_INDEX_URL instead of skaffold's TORCH_INDEX_URL (PyTorch's CPU index,
  unreachable here).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar
from urllib.parse import unquote, urlsplit

import yaml

from workflows.local.processes import QuietHandler, serve_directory

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "platform" / "docker" / "Dockerfile"
LOCAL_BASE = "localhost/dandelion-base"
CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
# The loopback ports the machine's wheel indexes are served on during a build: fixed, because the URL is
# a build argument, and a build argument that changes invalidates podman's cached layers.
WHEEL_INDEX_PORT = 3141
TORCH_TARGET = "workflows"


def podman() -> list[str]:
    """Root's podman, where podman-setup.sh imported the base (through sudo when not root)."""
    return ["podman"] if os.geteuid() == 0 else ["sudo", "podman"]


@dataclass(frozen=True)
class Image:
    """One skaffold artifact: its image name, and the Dockerfile target that builds it."""

    name: str
    target: str

    @property
    def tag(self) -> str:
        return f"{self.name}:latest"


def images(skaffold: Path = ROOT / "skaffold.yaml") -> list[Image]:
    """The images skaffold builds (its default pipeline), in its order."""
    config = yaml.safe_load(skaffold.read_text())
    return [Image(a["image"], a["docker"]["target"]) for a in config["build"]["artifacts"]]


def local_indexes(python: str = sys.executable) -> list[Path]:
    """The folders of the PEP 503 indexes pip reads here beside PyPI (`file://` extra index URLs in pip's
    configuration): where this machine keeps torch and its CUDA libraries."""
    listing = subprocess.run(  # noqa: S603  # this interpreter's own pip
        [python, "-m", "pip", "config", "list"], capture_output=True, text=True, check=True
    ).stdout
    folders = []
    for line in listing.splitlines():
        key, _, value = line.partition("=")
        if not key.endswith("extra-index-url"):
            continue
        for url in value.strip("'\"").split():
            parts = urlsplit(url)
            folder = Path(unquote(parts.path))
            if parts.scheme == "file" and folder.is_dir() and folder not in folders:
                folders.append(folder)
    return folders


class _WheelHandler(QuietHandler):
    """Serves an index folder's parent, and counts the wheels it sends (the build's log names them
    without saying where they came from)."""

    wheels: ClassVar[list[int]] = []

    def do_GET(self) -> None:
        super().do_GET()
        path = Path(self.translate_path(self.path))
        if path.suffix == ".whl" and path.is_file():
            self.wheels.append(path.stat().st_size)


@contextlib.contextmanager
def served_indexes(folders: Sequence[Path], port: int = WHEEL_INDEX_PORT) -> Iterator[list[str]]:
    """Serve each index folder over loopback HTTP (the build runs on the host's network), on `port`,
    `port + 1`...; yields their URLs. The index pages link to `../../files/...`: each folder's parent is
    served, and the index is the folder under it."""
    servers = [serve_directory(folder.parent, port + n, _WheelHandler) for n, folder in enumerate(folders)]
    _WheelHandler.wheels.clear()
    try:
        yield [f"http://127.0.0.1:{port + n}/{folder.name}/" for n, folder in enumerate(folders)]
    finally:
        for server in servers:
            server.shutdown()
            server.server_close()
        if _WheelHandler.wheels:
            print(
                f"{len(_WheelHandler.wheels)} wheels ({sum(_WheelHandler.wheels) / 1e6:.0f} MB) "
                "came from this machine's indexes",
                flush=True,
            )


def build_command(
    image: Image, base: str, ca: Path | None, build_args: dict[str, str] | None = None
) -> list[str]:
    """`podman build` of one image, from the repository root, keeping layers (podman's default)."""
    command = [*podman(), "build", "--network", "host", "--layers", "-f", str(DOCKERFILE)]
    command += ["--target", image.target, "--tag", image.tag, "--build-arg", f"BASE_IMAGE={base}"]
    for name, value in (build_args or {}).items():
        command += ["--build-arg", f"{name}={value}"]
    if ca is not None:
        command += ["--secret", f"id=ca,src={ca}"]
    return [*command, str(ROOT)]


def image_size(tag: str) -> int:
    """The image's size in bytes, as `podman images` reports it (every layer, uncompressed)."""
    output = subprocess.run(  # noqa: S603  # podman with fixed arguments
        [*podman(), "image", "inspect", "--format", "{{.Size}}", tag],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return int(output.strip())


def code_version() -> str | None:
    """`git describe` of this checkout (the workflows image's CODE_VERSION), None outside of one."""
    git = shutil.which("git")
    if git is None:
        return None
    described = subprocess.run(  # noqa: S603  # a fixed command
        [git, "describe", "--always", "--dirty"], cwd=ROOT, capture_output=True, text=True, check=False
    )
    return described.stdout.strip() or None


def build(image: Image, base: str, ca: Path | None, log: Path | None = None) -> float:
    """Build one image; returns the seconds it took. The torch image reads the machine's wheel indexes."""
    with contextlib.ExitStack() as stack:
        build_args = {}
        if image.target == TORCH_TARGET:
            urls = stack.enter_context(served_indexes(local_indexes()))
            if urls:
                build_args["PIP_EXTRA_INDEX_URL"] = " ".join(urls)
            version = code_version()
            if version:
                build_args["CODE_VERSION"] = version
        command = build_command(image, base, ca, build_args)
        print("$", shlex.join(command), flush=True)
        output = stack.enter_context(log.open("w")) if log else None
        started = time.monotonic()
        finished = subprocess.run(command, stdout=output, stderr=subprocess.STDOUT, check=False)  # noqa: S603
        seconds = time.monotonic() - started
    if finished.returncode != 0:
        where = f" (its output: {log})" if log else ""
        raise SystemExit(f"building {image.tag} failed with exit code {finished.returncode}{where}")
    return seconds


def main(argv: list[str] | None = None) -> int:
    known = images()
    parser = argparse.ArgumentParser(
        prog="python -m workflows.local.images", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument(
        "targets",
        nargs="*",
        metavar="target",
        help=f"Dockerfile targets to build (default: all of {', '.join(i.target for i in known)})",
    )
    parser.add_argument("--base", default=LOCAL_BASE, help="the BASE_IMAGE build argument")
    parser.add_argument(
        "--ca", type=Path, default=CA_BUNDLE, help="CA bundle passed as the build secret `ca`, if it exists"
    )
    parser.add_argument("--logs", type=Path, help="write each build's output to LOGS/<target>.log")
    args = parser.parse_args(argv)
    by_target = {i.target: i for i in known}
    unknown = [t for t in args.targets if t not in by_target]
    if unknown:
        parser.error(f"no such target: {', '.join(unknown)}")
    ca = args.ca if args.ca.is_file() else None
    if args.logs:
        args.logs.mkdir(parents=True, exist_ok=True)
    built = []
    for image in [by_target[t] for t in args.targets] if args.targets else known:
        log = args.logs / f"{image.target}.log" if args.logs else None
        built.append((image, build(image, args.base, ca, log)))
    for image, seconds in built:
        print(f"{image.tag}: {image_size(image.tag) / 1e6:.0f} MB, built in {seconds:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
