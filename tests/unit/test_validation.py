"""`make validate` (workflows/local/validation.py): the committed files validate clean, and a broken copy of
each kind of mistake is caught with a message that says what and where."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support import ROOT, SHARED
from workflows.local import validation
from workflows.local.validation import Report


@pytest.fixture(scope="module")
def clean() -> Report:
    return validation.validate(ROOT, ROOT / "platform", SHARED)


def test_everything_committed_validates_clean(clean: Report) -> None:
    assert clean.problems == []
    assert {line.split(":")[0] for line in clean.checked} >= {
        "overlays/dev",
        "overlays/prod",
        "skaffold.yaml",
        validation.DOCKERFILE,
        ".github/workflows",
    }


def test_what_could_not_be_validated_is_listed(clean: Report) -> None:
    """The Services other installs create (Kourier, Argo's server, Grafana) are named, not skipped."""
    assert any("argo-server" in line and "not checked" in line for line in clean.unvalidated)


# ---------------------------------------------------------------------------------------------------------
# Broken copies of platform/


def real_secrets(folder: str, names: list[str]) -> list[str]:
    """The overlays' uncommitted secrets/<workload>.env (and an old secrets.env): copies use the examples."""
    return [n for n in names if n == "secrets.env" or (Path(folder).name == "secrets" and n.endswith(".env"))]


@pytest.fixture
def platform(tmp_path: Path) -> Path:
    copy = tmp_path / "platform"
    shutil.copytree(ROOT / "platform", copy, ignore=real_secrets)
    return copy


def edit(
    platform: Path, kind: str, name: str, change: Callable[[dict[str, Any]], None], api: str = ""
) -> None:
    """Change the first object `kind`/`name` (apiVersion starting with `api`) found under `platform`."""
    for path in sorted(platform.rglob("*.yaml")):
        documents = list(yaml.safe_load_all(path.read_text()))
        for document in documents:
            if (
                isinstance(document, dict)
                and document.get("kind") == kind
                and str(document.get("apiVersion", "")).startswith(api)
                and (document.get("metadata") or {}).get("name") == name
            ):
                change(document)
                path.write_text(yaml.safe_dump_all(documents, sort_keys=False))
                return
    raise AssertionError(f"no {kind}/{name} under {platform}")


def problems(platform: Path) -> list[str]:
    return validation.check_platform(platform, ROOT, shared=SHARED).problems


def first_container(service: dict[str, Any]) -> dict[str, Any]:
    return service["spec"]["template"]["spec"]["containers"][0]


def test_an_unknown_field_in_a_knative_service(platform: Path) -> None:
    edit(
        platform,
        "Service",
        "predict",
        lambda s: first_container(s).update(imagePullPolice="Always"),
        "serving",
    )
    found = problems(platform)
    for overlay in ("dev", "prod"):
        assert (
            f"overlays/{overlay}: Service/predict: spec.template.spec.containers[0]: "
            "Additional properties are not allowed ('imagePullPolice' was unexpected)"
        ) in found


def test_a_wrong_type_in_a_deployment(platform: Path) -> None:
    deployment = next(
        d
        for path in sorted((platform / "base").rglob("*.yaml"))
        for d in yaml.safe_load_all(path.read_text())
        if isinstance(d, dict) and d.get("kind") == "Deployment"
    )
    name = deployment["metadata"]["name"]
    edit(platform, "Deployment", name, lambda d: d["spec"].update(replicas="one"))
    assert (
        f"overlays/dev: Deployment/{name}: spec.replicas: 'one' is not of type 'integer', 'null'"
        in problems(platform)
    )


def test_an_image_skaffold_does_not_build_and_nobody_pinned(platform: Path) -> None:
    """A typo in an artifact's name: the manifest would pull an image that exists nowhere."""
    edit(platform, "Service", "web", lambda s: first_container(s).update(image="dandelion-webapp"), "serving")
    found = problems(platform)
    assert any(
        line.startswith("overlays/dev: Service/web: image 'dandelion-webapp")
        and "is neither built by skaffold" in line
        for line in found
    ), found
    assert "overlays/dev: skaffold builds 'dandelion-web', but no object uses it" in found


def test_a_reference_to_a_secret_or_a_key_that_does_not_exist(platform: Path) -> None:
    def misspell(service: dict[str, Any]) -> None:
        for source in first_container(service)["envFrom"]:
            if "secretRef" in source:
                source["secretRef"]["name"] = "dandelion-secret"

    def misspell_key(deployment: dict[str, Any]) -> None:
        variables = deployment["spec"]["template"]["spec"]["containers"][0]["env"]
        reference = next(
            v["valueFrom"]["secretKeyRef"] for v in variables if "secretKeyRef" in v.get("valueFrom", {})
        )
        reference["key"] = "NO_SUCH_KEY"

    edit(platform, "Service", "ingest-one-url", misspell, "serving")
    edit(platform, "Deployment", "mlflow", misspell_key)
    found = problems(platform)
    key = re.compile(
        r"overlays/prod: Deployment/mlflow: spec\.template\.spec\.containers\[0\]\.env\[\d+\]\.valueFrom\."
        r"secretKeyRef names key 'NO_SUCH_KEY', which Secret 'dandelion-mlflow-secrets-\w+' does not have"
    )
    assert any(key.fullmatch(line) for line in found), found
    assert any(
        line.startswith("overlays/dev: Service/ingest-one-url: spec.template.spec.containers[0].envFrom[")
        and line.endswith(
            "names Secret 'dandelion-secret', which the overlay does not define in namespace dandelion"
        )
        for line in found
    ), found


def retrain_task(name: str) -> Callable[[Callable[[dict[str, Any]], None]], Callable[[dict[str, Any]], None]]:
    """Apply a change to the task `name` of the weekly-retrain CronWorkflow's DAG."""

    def wrap(change: Callable[[dict[str, Any]], None]) -> Callable[[dict[str, Any]], None]:
        def apply(cron: dict[str, Any]) -> None:
            tasks = cron["spec"]["workflowSpec"]["templates"][0]["dag"]["tasks"]
            change(next(task for task in tasks if task["name"] == name))

        return apply

    return wrap


def test_a_template_reference_to_a_template_that_does_not_exist(platform: Path) -> None:
    @retrain_task("extract-images")
    def wrong_template(task: dict[str, Any]) -> None:
        task["templateRef"]["template"] = "extract-all"

    edit(platform, "CronWorkflow", "weekly-retrain", wrong_template)
    assert (
        "overlays/dev: CronWorkflow/weekly-retrain: template 'retrain' dag.tasks[0] 'extract-images': "
        "templateRef names template 'extract-all', which WorkflowTemplate 'extract-images' does not have"
    ) in problems(platform)


def test_a_parameter_the_target_does_not_declare(platform: Path) -> None:
    @retrain_task("train-model")
    def extra_parameter(task: dict[str, Any]) -> None:
        task["arguments"]["parameters"].append({"name": "epoch", "value": "3"})

    edit(platform, "CronWorkflow", "weekly-retrain", extra_parameter)
    assert (
        "overlays/dev: CronWorkflow/weekly-retrain: template 'retrain' dag.tasks[1] 'train-model': "
        "passes parameter 'epoch', which WorkflowTemplate 'train-model' template 'train' does not declare"
    ) in problems(platform)


def test_a_url_to_a_service_or_port_that_does_not_exist(platform: Path) -> None:
    def wrong_urls(template: dict[str, Any]) -> None:
        parameters = template["spec"]["arguments"]["parameters"]
        parameters[0]["value"] = "http://ingest.dandelion.svc.cluster.local/"
        parameters.append({"name": "store", "value": "http://minio.dandelion.svc.cluster.local:9009"})

    edit(platform, "WorkflowTemplate", "extract-images", wrong_urls)
    found = problems(platform)
    assert (
        "overlays/dev: WorkflowTemplate/extract-images: spec.arguments.parameters[0].value: "
        "http://ingest.dandelion.svc.cluster.local names Service 'ingest', "
        "which namespace dandelion does not have"
    ) in found
    assert (
        "overlays/dev: WorkflowTemplate/extract-images: spec.arguments.parameters[3].value: "
        "http://minio.dandelion.svc.cluster.local:9009: Service 'minio' does not serve port 9009 "
        "(it serves [9000, 9001])"
    ) in found


def test_a_service_monitor_scraping_a_port_no_service_has(platform: Path) -> None:
    edit(
        platform,
        "ServiceMonitor",
        "dandelion-functions",
        lambda m: m["spec"]["endpoints"][0].update(port="http"),
    )
    assert any(
        line.startswith(
            "overlays/dev: ServiceMonitor/dandelion-functions: spec.endpoints[0].port 'http' is not a"
        )
        for line in problems(platform)
    )


def test_the_command_prints_one_line_per_problem_and_exits_1(platform: Path) -> None:
    edit(
        platform,
        "Service",
        "predict",
        lambda s: first_container(s).update(imagePullPolice="Always"),
        "serving",
    )
    done = subprocess.run(
        [sys.executable, "-m", "workflows.local.validation", "--platform", str(platform)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
    )
    assert done.returncode == 1
    assert "Traceback" not in done.stdout + done.stderr
    problem_lines = [line for line in done.stdout.splitlines() if "imagePullPolice" in line]
    assert [line.split(":")[0] for line in problem_lines] == ["overlays/dev", "overlays/prod"]
    assert re.fullmatch(r"\d+ problem\(s\)", done.stdout.splitlines()[-1])


# ---------------------------------------------------------------------------------------------------------
# skaffold.yaml, the Dockerfile, the GitHub workflows: checked in a copy of the repository's top level


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """The repository's top level, linked entry by entry; replace an entry with a real file to break it."""
    copy = tmp_path / "repository"
    copy.mkdir()
    for entry in ROOT.iterdir():
        if entry.name not in {".git", ".venv"}:
            (copy / entry.name).symlink_to(entry, target_is_directory=entry.is_dir())
    return copy


def own_copy(root: Path, relative: str) -> Path:
    """Make `relative` (and the folders above it) real copies inside `root`, ready to be edited."""
    parts = Path(relative).parts
    for depth in range(1, len(parts) + 1):
        path = root.joinpath(*parts[:depth])
        if path.is_symlink():
            target = path.resolve()
            path.unlink()
            if target.is_dir():
                path.mkdir()
                for entry in target.iterdir():
                    (path / entry.name).symlink_to(entry, target_is_directory=entry.is_dir())
            else:
                shutil.copyfile(target, path)
    return root / relative


def test_a_bad_skaffold_field(root: Path) -> None:
    path = own_copy(root, "skaffold.yaml")
    config = yaml.safe_load(path.read_text())
    config["build"]["artifacts"][0]["docker"]["targt"] = "predict"
    config["build"]["artifacts"][1]["docker"]["target"] = "ingest"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    found = validation.check_skaffold(root, SHARED).problems
    assert (
        "skaffold.yaml: build.artifacts[0].docker: "
        "Additional properties are not allowed ('targt' was unexpected)"
    ) in found
    assert (
        "skaffold.yaml: artifact 'dandelion-ingest-one-url': "
        f"target 'ingest' is not a stage of {validation.DOCKERFILE}"
    ) in found


def test_a_dockerfile_hadolint_refuses(root: Path) -> None:
    path = own_copy(root, validation.DOCKERFILE)
    path.write_text(path.read_text() + "\nRUN cd /tmp && echo done\n")
    found = validation.check_dockerfile(root).problems
    line = len(path.read_text().splitlines())
    assert any(p.startswith(f"{validation.DOCKERFILE}:{line}: hadolint DL3003 (warning)") for p in found), (
        found
    )


def test_a_dockerignore_that_lets_the_virtualenv_in(root: Path) -> None:
    own_copy(root, ".dockerignore").write_text(".git\n**/secrets/*.env\n")
    assert validation.check_dockerfile(root).problems == [
        ".dockerignore: does not keep .venv out of the build context"
    ]


def test_dockerignore_rules_as_docker_reads_them() -> None:
    assert validation.dockerignored([".venv"], ".venv")
    assert validation.dockerignored(["**/secrets.env"], "platform/overlays/dev/secrets.env")
    assert validation.dockerignored(["*", "!functions"], ".git")
    assert not validation.dockerignored(["*", "!functions"], "functions")
    assert not validation.dockerignored(["platform/overlays/*/secrets.env", "!platform"], ".venv")


def test_a_github_workflow_actionlint_refuses(root: Path) -> None:
    path = own_copy(root, ".github/workflows/ci.yml")
    text = path.read_text()
    path.write_text(text.replace("${{ github.ref }}", "${{ github.reff }}", 1).replace("@v5.0.0", "@v5", 1))
    found = validation.check_github_workflows(root).problems
    line = next(n for n, text in enumerate(path.read_text().splitlines(), 1) if "github.reff" in text)
    assert any(
        p.startswith(f".github/workflows/ci.yml:{line}:")
        and 'actionlint [expression]: property "reff" is not defined' in p
        for p in found
    ), found
    assert any(
        p.endswith("'actions/checkout@v5' is not pinned to a full version (vX.Y.Z) or a commit")
        for p in found
    )
