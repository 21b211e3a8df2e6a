"""Generated files are committed; these tests fail when the Python and the committed files drift apart.

Regenerate on purpose with `make render`.
"""

import json
from pathlib import Path

import jsonschema
import pytest
import yaml

from tests.support import ROOT, SHARED
from workflows.local.validation import strict
from workflows.manifests import manifests, rendered_files

KUBECONFORM = SHARED / "schemas" / "kubeconform"


@pytest.mark.parametrize("relative", sorted(rendered_files()))
def test_committed_platform_file_matches_the_python(relative: str) -> None:
    committed = ROOT / "platform" / relative
    assert committed.is_file(), f"platform/{relative} is missing: run `make render`"
    assert committed.read_text() == rendered_files()[relative], (
        f"platform/{relative} drifted: run `make render`"
    )


def schema_for(manifest: dict) -> dict:
    group = manifest["apiVersion"].split("/")[0]
    version = manifest["apiVersion"].split("/")[1]
    return strict(
        json.loads((KUBECONFORM / group / f"{manifest['kind'].lower()}_{version}.json").read_text())
    )


# The rendered objects; the folders' kustomization.yaml (which includes them in platform/base) is not one.
ARGO_YAML = sorted(p for p in (ROOT / "platform").glob("argo*/*.yaml") if p.name != "kustomization.yaml")


@pytest.mark.parametrize("path", ARGO_YAML, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_argo_and_argo_events_yaml_validate_against_their_schemas(path: Path) -> None:
    """Argo Workflows v4.1.2's CRDs and Argo Events v1.9.11's schemas, as kubeconform would check them."""
    manifest = yaml.safe_load(path.read_text())
    jsonschema.validate(manifest, schema_for(manifest), cls=jsonschema.Draft7Validator)


def test_a_misspelt_sensor_field_is_refused() -> None:
    sensor = yaml.safe_load((ROOT / "platform" / "argo-events" / "sensor.yaml").read_text())
    sensor["spec"]["triggers"][0]["rateLimitt"] = sensor["spec"]["triggers"][0].pop("rateLimit")
    with pytest.raises(jsonschema.ValidationError, match="rateLimitt"):
        jsonschema.validate(sensor, schema_for(sensor), cls=jsonschema.Draft7Validator)


def test_every_workflow_reports_the_workflow_metrics_under_its_own_name() -> None:
    for manifest in manifests():
        spec = manifest["spec"].get("workflowSpec", manifest["spec"])
        declared = spec["metrics"]["prometheus"]
        assert [(m["name"], {"counter", "gauge", "histogram"} & set(m)) for m in declared] == [
            ("dandelion_workflow_runs_total", {"counter"}),
            ("dandelion_workflow_duration_seconds", {"histogram"}),
            ("dandelion_workflow_succeeded", {"gauge"}),
            ("dandelion_workflow_succeeded", {"gauge"}),
        ]
        workflow = {"key": "workflow", "value": manifest["metadata"]["name"]}
        assert all(workflow in m["labels"] for m in declared)


def test_a_metric_argo_would_refuse_is_refused_by_the_schema() -> None:
    """Argo's metric names are Prometheus names: a hyphen, usual in Argo's other names, is refused."""
    manifest = yaml.safe_load((ROOT / "platform" / "argo" / "train-model.yaml").read_text())
    manifest["spec"]["metrics"]["prometheus"][0]["name"] = "dandelion-workflow-runs"
    with pytest.raises(jsonschema.ValidationError, match="dandelion-workflow-runs"):
        jsonschema.validate(manifest, schema_for(manifest), cls=jsonschema.Draft7Validator)


def test_every_step_runs_hera_runner_entry_points_that_import() -> None:
    import importlib

    for manifest in manifests():
        spec = manifest["spec"].get("workflowSpec", manifest["spec"])
        for template in spec["templates"]:
            if "script" in template:
                module, function = template["script"]["args"][-1].split(":")
                assert callable(getattr(importlib.import_module(module), function))


# ---------------------------------------------------------------------------------------------------------
# The kustomize base: what is generated from observability/, and the contracts between its files and the
# code (the overlays are rendered and validated as a whole by `make validate`).

BASE = ROOT / "platform" / "base"


def load_all(relative: str) -> list[dict]:
    return [document for document in yaml.safe_load_all((BASE / relative).read_text()) if document]


def test_the_prometheus_rule_holds_exactly_the_groups_of_the_local_rules_file() -> None:
    [rule] = load_all("monitoring/prometheusrule.yaml")
    # The Prometheus Operator's schema has a Go regex (`^(?i)...`) that Python's `re` cannot compile:
    # validate without checking the schema itself, as `make validate` does.
    jsonschema.Draft7Validator(schema_for(rule)).validate(rule)
    rules = yaml.safe_load((ROOT / "observability" / "prometheus" / "rules.yml").read_text())
    assert rule["spec"]["groups"] == rules["groups"]


def test_each_dashboard_configmap_holds_the_committed_dashboard_for_grafanas_sidecar() -> None:
    committed = {
        path.name: path.read_text() for path in (ROOT / "observability/grafana/dashboards").glob("*.json")
    }
    config_maps = load_all("monitoring/grafana-dashboards.yaml")
    assert {name: text for cm in config_maps for name, text in cm["data"].items()} == committed
    for config_map in config_maps:
        assert config_map["metadata"]["labels"]["grafana_dashboard"] == "1"
        for text in config_map["data"].values():
            json.loads(text)


def test_the_service_monitors_select_what_the_base_defines_and_prometheus_selects_them() -> None:
    monitors = {m["metadata"]["name"]: m for m in load_all("monitoring/servicemonitors.yaml")}
    [rule] = load_all("monitoring/prometheusrule.yaml")
    for monitor in monitors.values():
        jsonschema.Draft7Validator(schema_for(monitor)).validate(monitor)
        assert monitor["metadata"]["labels"] == rule["metadata"]["labels"]
    functions = monitors["dandelion-functions"]["spec"]
    services = [
        service
        for service in load_all("functions/metrics-services.yaml")
        if functions["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    ]
    assert sorted(s["spec"]["selector"]["serving.knative.dev/service"] for s in services) == [
        "ingest-one-url",
        "predict",
        "validate-label",
    ]
    for service in services:
        assert {p["name"] for p in service["spec"]["ports"]} == {e["port"] for e in functions["endpoints"]}
        assert functions["jobLabel"] in service["metadata"]["labels"]


KNATIVE_SERVICES = ["predict", "ingest-one-url", "validate-label", "web"]


@pytest.mark.parametrize("name", KNATIVE_SERVICES)
def test_each_knative_service_validates_and_runs_locked_down(name: str) -> None:
    [service] = load_all(f"functions/{name}.yaml")
    jsonschema.Draft7Validator(schema_for(service)).validate(service)
    template = service["spec"]["template"]
    annotations = template["metadata"]["annotations"]
    assert annotations["autoscaling.knative.dev/min-scale"] == ("1" if name == "web" else "0")
    spec = template["spec"]
    assert spec["serviceAccountName"] == "dandelion-functions"
    [container] = spec["containers"]
    assert container["image"] == f"dandelion-{name}"
    assert {"cpu", "memory"} <= container["resources"]["limits"].keys()
    assert "port" not in container["readinessProbe"]["httpGet"]  # Knative probes the serving port
    assert container["securityContext"] == {
        "runAsNonRoot": True,
        "runAsUser": 10001,
        "runAsGroup": 10001,
        "readOnlyRootFilesystem": True,
        "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    assert {"name": "tmp", "mountPath": "/tmp"} in container["volumeMounts"]


def test_the_roll_out_patch_applies_to_the_deployed_predict_service() -> None:
    """workflows/lib/rollout.py patches env/0 of the predict Service as platform/ defines it."""
    import jsonpatch

    from workflows.lib.rollout import predict_patch

    [service] = load_all("functions/predict.yaml")
    patched = jsonpatch.apply_patch(service, predict_patch("7"))
    assert patched["spec"]["template"]["spec"]["containers"][0]["env"][0] == {
        "name": "DANDELION_MODEL_VERSION",
        "value": "7",
    }


def test_the_workflows_account_may_patch_predict_and_report_outputs_and_nothing_more() -> None:
    role = next(d for d in load_all("rbac/workflows.yaml") if d["kind"] == "Role")
    assert role["rules"] == [
        {"apiGroups": ["argoproj.io"], "resources": ["workflowtaskresults"], "verbs": ["create", "patch"]},
        {
            "apiGroups": ["serving.knative.dev"],
            "resources": ["services"],
            "resourceNames": ["predict"],
            "verbs": ["patch"],
        },
    ]
