"""The offline schemas `make validate` reads (`../shared/schemas`), rebuilt from their public sources.

The project's machines have them beside the repository; a GitHub runner does not, so CI fetches the same
upstream files, at the commits `../shared/schemas/README.md` records, and derives the kubeconform tree
from them as that README describes: each CRD's schema with unknown fields refused wherever it lists the
known ones, int-or-string as either, `apiVersion`, `kind` and the metadata's names and string maps
pinned; Argo Events' kinds cut from its JSON Schema with the fields the controller does not require
relaxed. `tests/unit/test_schemas.py` derives the tree from the local copies and finds it equal to the
one the machines have.

    python -m workflows.local.schemas DEST          fetch the upstream files into DEST, then derive
    python -m workflows.local.schemas DEST --derive-only
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

RAW = "https://raw.githubusercontent.com"
KNATIVE = ("knative/serving", "7ed4aa2ab601e3a33c6552285f6e0d910747351d")  # knative-v1.23.0
ARGO = ("argoproj/argo-workflows", "16a52d67daf2f4a8a76fa8bec02a76a46aa46257")  # v4.1.2
EVENTS = ("argoproj/argo-events", "d13fde07d944c081c25574305911908c80faa98e")  # v1.9.11
SKAFFOLD = ("GoogleContainerTools/skaffold", "b0d643a5b5944a7d3f82bd5c00d5eaa0902226bd")  # v2.24.0
PROMETHEUS = (
    "prometheus-operator/prometheus-operator",
    "f8fafd475f3d132e239432ae6172de60a6cb6516",
)  # v0.93.0
ARGO_CRDS, OPERATOR_CRDS = "manifests/base/crds/full", "example/prometheus-operator-crd"

# Local file -> (repository, commit, path upstream): the copies ../shared/schemas holds.
UPSTREAM: dict[str, tuple[str, str, str]] = {
    "knative-serving/service.yaml": (*KNATIVE, "config/core/300-resources/service.yaml"),
    **{
        f"argo-workflows/argoproj.io_{plural}.yaml": (*ARGO, f"{ARGO_CRDS}/argoproj.io_{plural}.yaml")
        for plural in ("workflows", "workflowtemplates", "cronworkflows")
    },
    "argo-workflows/schema.json": (*ARGO, "api/jsonschema/schema.json"),
    **{
        f"argo-events/argoproj.io_{plural}.yaml": (*EVENTS, f"manifests/base/crds/argoproj.io_{plural}.yaml")
        for plural in ("sensors", "eventsources", "eventbus")
    },
    "argo-events/schema.json": (*EVENTS, "api/jsonschema/schema.json"),
    "skaffold/v4beta14.json": (*SKAFFOLD, "docs-v2/content/en/schemas/v4beta14.json"),
    **{
        f"prometheus-operator/monitoring.coreos.com_{plural}.yaml": (
            *PROMETHEUS,
            f"{OPERATOR_CRDS}/monitoring.coreos.com_{plural}.yaml",
        )
        for plural in ("servicemonitors", "prometheusrules")
    },
}
# CRDs the README derives from but does not keep: fetched beside the others, under `upstream-only/`.
ONLY_DERIVED = {
    f"upstream-only/argoproj.io_{plural}.yaml": (*ARGO, f"{ARGO_CRDS}/argoproj.io_{plural}.yaml")
    for plural in ("clusterworkflowtemplates", "workfloweventbindings")
}
# kubeconform/<group>/<kind>_<version>.json -> the CRD it is derived from, and the version.
FROM_CRDS = {
    "serving.knative.dev/service_v1.json": ("knative-serving/service.yaml", "v1"),
    "argoproj.io/workflow_v1alpha1.json": ("argo-workflows/argoproj.io_workflows.yaml", "v1alpha1"),
    "argoproj.io/workflowtemplate_v1alpha1.json": (
        "argo-workflows/argoproj.io_workflowtemplates.yaml",
        "v1alpha1",
    ),
    "argoproj.io/cronworkflow_v1alpha1.json": ("argo-workflows/argoproj.io_cronworkflows.yaml", "v1alpha1"),
    "argoproj.io/clusterworkflowtemplate_v1alpha1.json": (
        "upstream-only/argoproj.io_clusterworkflowtemplates.yaml",
        "v1alpha1",
    ),
    "argoproj.io/workfloweventbinding_v1alpha1.json": (
        "upstream-only/argoproj.io_workfloweventbindings.yaml",
        "v1alpha1",
    ),
    "monitoring.coreos.com/servicemonitor_v1.json": (
        "prometheus-operator/monitoring.coreos.com_servicemonitors.yaml",
        "v1",
    ),
    "monitoring.coreos.com/prometheusrule_v1.json": (
        "prometheus-operator/monitoring.coreos.com_prometheusrules.yaml",
        "v1",
    ),
}
EVENT_KINDS = ("Sensor", "EventSource", "EventBus")
EVENTS_PREFIX = "io.argoproj.events.v1alpha1."
# Required upstream (every Go field without omitempty) but not by the controller; upstream examples omit them.
RELAXED = {
    "WebhookContext": ("url",),
    "WebhookEventSource": ("url",),
    "EventContext": ("id", "source", "specversion", "type", "datacontenttype", "subject", "time"),
    "HTTPTrigger": ("payload",),
    "CustomTrigger": ("secure", "payload"),
    "AzureServiceBusEventSource": ("topicName", "subscriptionName"),
    "AzureServiceBusTrigger": ("topicName", "subscriptionName"),
}
LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml's: the Argo CRDs are 2.8 MB each
DRAFT_07 = "http://json-schema.org/draft-07/schema#"
STRING_MAP = {"type": "object", "additionalProperties": {"type": "string"}}
METADATA = {
    "type": "object",
    "properties": {
        "name": {"type": "string"},
        "generateName": {"type": "string"},
        "namespace": {"type": "string"},
        "labels": STRING_MAP,
        "annotations": STRING_MAP,
    },
}


def fetch(dest: Path) -> None:
    """Every upstream file, at its recorded commit, into `dest`."""
    for local, (repository, commit, path) in (UPSTREAM | ONLY_DERIVED).items():
        target = dest / local
        target.parent.mkdir(parents=True, exist_ok=True)
        url = f"{RAW}/{repository}/{commit}/{path}"
        with urllib.request.urlopen(url, timeout=60) as answer:  # noqa: S310 (fixed https URLs)
            target.write_bytes(answer.read())


def strict(node: Any, root: bool = False) -> Any:
    """A CRD's openAPIV3Schema as JSON Schema that refuses unknown fields below the root, as kubectl's
    strict validation does, and takes an int-or-string as either (a quantity's pattern is dropped)."""
    if isinstance(node, list):
        return [strict(item) for item in node]
    if not isinstance(node, dict):
        return node
    out = {
        key: {name: strict(schema) for name, schema in value.items()}
        if key in ("properties", "patternProperties", "definitions")
        else strict(value)
        for key, value in node.items()
        if key != "x-kubernetes-int-or-string"
    }
    if node.get("x-kubernetes-int-or-string"):
        out.pop("type", None)
        out.pop("pattern", None)
        out = {"anyOf": [{"type": "integer"}, {"type": "string"}], **out}
    if "properties" in node and not root and not node.get("x-kubernetes-preserve-unknown-fields"):
        out["additionalProperties"] = False
    return out


def from_crd(crd: dict[str, Any], version: str) -> dict[str, Any]:
    (served,) = (v for v in crd["spec"]["versions"] if v["name"] == version)
    schema = strict(served["schema"]["openAPIV3Schema"], root=True)
    group, kind = crd["spec"]["group"], crd["spec"]["names"]["kind"]
    schema["properties"]["apiVersion"] = {"type": "string", "enum": [f"{group}/{version}"]}
    schema["properties"]["kind"] = {"type": "string", "enum": [kind]}
    schema["properties"]["metadata"] = METADATA
    return schema | {"$schema": DRAFT_07, "title": f"{kind} {group}/{version}"}


def _references(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        if isinstance(node.get("$ref"), str):
            yield node["$ref"].rsplit("/", 1)[-1]
        for value in node.values():
            yield from _references(value)
    elif isinstance(node, list):
        for value in node:
            yield from _references(value)


def from_events_schema(schema: dict[str, Any], kind: str) -> dict[str, Any]:
    """One Argo Events kind: the definitions reachable from it, with `RELAXED` dropped from `required`."""
    definitions, top = schema["definitions"], f"{EVENTS_PREFIX}{kind}"
    reachable, todo = set(), [top]
    while todo:
        name = todo.pop()
        if name not in reachable:
            reachable.add(name)
            todo += _references(definitions[name])
    cut = {name: copy.deepcopy(definitions[name]) for name in sorted(reachable)}
    for short, fields in RELAXED.items():
        definition = cut.get(f"{EVENTS_PREFIX}{short}", {})
        if "required" in definition:
            definition["required"] = [field for field in definition["required"] if field not in fields]
            if not definition["required"]:
                del definition["required"]
    return {
        "$schema": DRAFT_07,
        "title": f"{kind} argoproj.io/v1alpha1",
        "$ref": f"#/definitions/{top}",
        "definitions": cut,
    }


def derived(source: Path) -> dict[str, dict[str, Any]]:
    """The kubeconform tree from the upstream files under `source`, by path below `kubeconform/`; a CRD
    that is not there (the README keeps only the derived schema of two) is left out."""
    tree = {
        path: from_crd(yaml.load((source / crd).read_text(), Loader=LOADER), version)  # noqa: S506
        for path, (crd, version) in FROM_CRDS.items()
        if (source / crd).exists()
    }
    events = json.loads((source / "argo-events" / "schema.json").read_text())
    for kind in EVENT_KINDS:
        tree[f"argoproj.io/{kind.lower()}_v1alpha1.json"] = from_events_schema(events, kind)
    return tree


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "dest", type=Path, help="where the schemas go (../shared/schemas beside the repository)"
    )
    parser.add_argument("--derive-only", action="store_true", help="derive from the upstream files in DEST")
    args = parser.parse_args(argv)
    if not args.derive_only:
        fetch(args.dest)
    for path, schema in derived(args.dest).items():
        target = args.dest / "kubeconform" / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(json.dumps(schema, indent=2) + "\n")
    print(f"schemas in {args.dest}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
