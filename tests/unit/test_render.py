"""Generated files are committed; these tests fail when the Python and the committed files drift apart.

Regenerate on purpose with `make render`.
"""

import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from tests.support import ROOT, SHARED
from workflows.manifests import manifests, rendered_files

KUBECONFORM = SHARED / "schemas" / "kubeconform"


@pytest.mark.parametrize("relative", sorted(rendered_files()))
def test_committed_platform_file_matches_the_python(relative: str) -> None:
    committed = ROOT / "platform" / relative
    assert committed.is_file(), f"platform/{relative} is missing: run `make render`"
    assert committed.read_text() == rendered_files()[relative], (
        f"platform/{relative} drifted: run `make render`"
    )


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


def schema_for(manifest: dict) -> dict:
    group = manifest["apiVersion"].split("/")[0]
    version = manifest["apiVersion"].split("/")[1]
    return strict(
        json.loads((KUBECONFORM / group / f"{manifest['kind'].lower()}_{version}.json").read_text())
    )


ARGO_YAML = sorted((ROOT / "platform").glob("argo*/*.yaml"))


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
