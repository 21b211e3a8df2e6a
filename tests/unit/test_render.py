"""Generated files are committed; these tests fail when the Python and the committed files drift apart.

Regenerate on purpose with `make render`.
"""

import json
from pathlib import Path

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


def schema_for(manifest: dict) -> dict:
    group = manifest["apiVersion"].split("/")[0]
    version = manifest["apiVersion"].split("/")[1]
    return json.loads((KUBECONFORM / group / f"{manifest['kind'].lower()}_{version}.json").read_text())


@pytest.mark.parametrize("path", sorted((ROOT / "platform" / "argo").glob("*.yaml")), ids=lambda p: p.name)
def test_argo_yaml_validates_against_the_argo_v4_schema(path: Path) -> None:
    manifest = yaml.safe_load(path.read_text())
    jsonschema.validate(manifest, schema_for(manifest), cls=jsonschema.Draft7Validator)


def test_every_step_runs_hera_runner_entry_points_that_import() -> None:
    import importlib

    for manifest in manifests():
        spec = manifest["spec"].get("workflowSpec", manifest["spec"])
        for template in spec["templates"]:
            if "script" in template:
                module, function = template["script"]["args"][-1].split(":")
                assert callable(getattr(importlib.import_module(module), function))
