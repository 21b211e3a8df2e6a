"""How every workflow step is packaged: a Hera runner script in the workflows image.

On Argo the pod runs `python -m hera.workflows.runner -e <module>:<function>`; the local runner calls the
same entry point in-process. Configuration reaches the pod from the `dandelion-config` ConfigMap and the
`dandelion-secrets` Secret, the same variables the local processes read from their environment.
"""

from __future__ import annotations

import functools

from hera.workflows import ConfigMapEnvFrom, SecretEnvFrom, script

WORKFLOWS_IMAGE = "dandelion-workflows:latest"

step = functools.partial(
    script,
    constructor="runner",
    image=WORKFLOWS_IMAGE,
    env_from=[ConfigMapEnvFrom(name="dandelion-config"), SecretEnvFrom(name="dandelion-secrets")],
)
