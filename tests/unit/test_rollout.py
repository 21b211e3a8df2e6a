"""The roll-out's JSON Patch, applied as the Kubernetes API server applies one (RFC 6902)."""

import copy

import jsonpatch
import pytest

from workflows.lib.rollout import predict_patch

SERVICE = {
    "apiVersion": "serving.knative.dev/v1",
    "kind": "Service",
    "metadata": {"name": "predict"},
    "spec": {
        "template": {
            "spec": {
                "containers": [
                    {
                        "image": "dandelion-predict",
                        "env": [
                            {"name": "DANDELION_MODEL_VERSION", "value": "1"},
                            {"name": "DANDELION_STORE_URL", "value": "s3://dandelion"},
                        ],
                    }
                ]
            }
        }
    },
}


def test_the_patch_pins_the_predict_service_to_the_new_model_and_changes_nothing_else() -> None:
    patched = jsonpatch.apply_patch(SERVICE, predict_patch("7"))
    expected = copy.deepcopy(SERVICE)
    expected["spec"]["template"]["spec"]["containers"][0]["env"][0]["value"] = "7"
    assert patched == expected


def test_the_patch_refuses_a_service_whose_first_variable_is_not_the_model_version() -> None:
    service = copy.deepcopy(SERVICE)
    service["spec"]["template"]["spec"]["containers"][0]["env"].reverse()
    with pytest.raises(jsonpatch.JsonPatchTestFailed):
        jsonpatch.apply_patch(service, predict_patch("7"))
